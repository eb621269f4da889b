//! runner: a declarative experiment runner for LeNet-5 on MNIST-style data.
//!
//! Modules, one concept each: `config` (specs and layering), `data` (IDX
//! files and downloads), `kernels` (LeNet-5's CPU kernels, plain slices),
//! `engine` (the model on a device, behind one seam: the only module
//! that uses the dfdx crate),
//! `train` (the loop), `checkpoint` (weights as safetensors), `results`
//! (the run folder), `cli` and `commands`. `docs/architecture.md` has the
//! map.

pub mod atomic;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod engine;
pub mod execute;
pub mod exit;
pub mod export;
pub mod human;
pub mod inference;
pub mod kernels;
pub mod metrics;
pub mod report;
pub mod results;
pub mod sweep;
pub mod train;
