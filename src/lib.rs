//! runner: a declarative experiment runner for LeNet-5 on MNIST-style data.
//!
//! Modules, one concept each:
//! - `cli` (every flag) and `commands` (one file per subcommand), `exit`
//!   (exit codes), `human` (durations in words);
//! - `config` (every key once, layering, validation), `data` (IDX files,
//!   downloads, the validation split);
//! - `kernels` (LeNet-5's CPU kernels on plain slices), `engine` (the
//!   model on a device, behind one seam: the only module that uses dfdx),
//!   `train` (the loop), `inference` (scoring and predicting), `bench`;
//! - `checkpoint` (weights as safetensors), `results` (the run folder),
//!   `metrics` (metrics.csv), `atomic` (atomic writes), `training_run`
//!   (one run into its folder: lock, resume, record);
//! - `sweep` (grids and their schedules), `report` (comparing runs, the
//!   formats, figures, report.html, live views), `export` (TensorBoard).
//!
//! `docs/architecture.md` has the map.

pub mod atomic;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod engine;
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
pub mod training_run;
