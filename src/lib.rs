//! runner: a declarative experiment runner for LeNet-5 on MNIST-style data.
//!
//! Modules, one concept each: `config` (specs and layering), `data` (IDX
//! files and downloads), `model` (LeNet-5 and its conv/pool ops on dfdx),
//! `train` (the loop), `checkpoint` (weights as safetensors), `results`
//! (the run folder), `device` (the CPU/CUDA seam), `cli` and `commands`.

pub mod atomic;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod device;
pub mod execute;
pub mod inference;
pub mod model;
pub mod report;
pub mod results;
pub mod sweep;
pub mod train;

/// The dfdx version this binary was built against (recorded in summaries).
pub const DFDX_VERSION: &str = "0.13.0";
