//! The one place that names dfdx: LeNet-5 on a dfdx device, behind two
//! small object-safe traits. Everything above (`train`, `execute`,
//! `bench`, `inference`) holds a `Box<dyn Engine>` or `Box<dyn Predictor>`
//! and passes plain `Vec<f32>`s and [`Weights`].
//!
//! | file          | what it holds                                                    |
//! |---------------|------------------------------------------------------------------|
//! | `device.rs`   | [`Backend`]: `train.device` resolved against build and machine   |
//! | `model.rs`    | `LeNet5`: parameters, initialisation, forward over `LayerOps`    |
//! | `tape.rs`     | `TapeOps`: the CPU kernels (`crate::kernels`) on dfdx's tape     |
//! | `composed.rs` | `ComposedOps`: the layers as dfdx ops (CUDA, and the test oracle) |
//! | `sgd.rs`      | SGD as PyTorch defines it, in place on the parameters' device    |
//! | `trainer.rs`  | `Network` (predicts) and `Trainer` (trains): the two traits' impls |

pub mod composed;
mod device;
pub mod model;
pub mod sgd;
pub mod tape;
pub mod trainer;

use anyhow::Result;
use dfdx::prelude::Cpu;

pub use device::{resolve, Backend};

use crate::checkpoint::Weights;
use crate::config::{ModelConfig, RunConfig};
use composed::ComposedOps;
use tape::TapeOps;
use trainer::{Network, Trainer};

/// The dfdx version this binary was built with, read from Cargo.lock by
/// `build.rs` (recorded in every run summary).
pub const DFDX_VERSION: &str = env!("BUILT_WITH_DFDX_VERSION");

/// Runs the model: logits for a batch of images.
pub trait Predictor {
    /// Logits, 10 per image, for `n` images of 28x28 floats in [0, 1].
    fn logits(&self, images: Vec<f32>, n: usize) -> Vec<f32>;
}

/// Trains the model, one SGD step at a time; its state can be saved and
/// restored.
pub trait Engine: Predictor {
    /// One SGD step on a batch at learning rate `lr`; returns the logits
    /// the model gave the batch before the update.
    fn train_step(&mut self, images: Vec<f32>, labels: &[usize], lr: f32) -> Vec<f32>;
    /// The parameters, with PyTorch's names and shapes.
    fn weights(&self) -> Weights;
    /// The optimizer's momentum buffers, named as the parameters.
    fn momentum(&self) -> Weights;
    /// Puts parameters and momentum back (names and shapes checked).
    fn restore(&mut self, weights: &Weights, momentum: &Weights) -> Result<()>;
}

/// A fresh model for `config` on `backend`, ready to train.
pub fn open(backend: Backend, config: &RunConfig) -> Box<dyn Engine> {
    match backend {
        Backend::Cpu => Box::new(Trainer::new(Cpu::default(), TapeOps, config)),
        #[cfg(feature = "cuda")]
        Backend::Cuda => Box::new(Trainer::new(device::cuda(), ComposedOps, config)),
    }
}

/// The model with `weights` on `backend`, for inference only.
pub fn open_predictor(
    backend: Backend,
    arch: &ModelConfig,
    weights: &Weights,
) -> Result<Box<dyn Predictor>> {
    Ok(match backend {
        Backend::Cpu => Box::new(Network::new(Cpu::default(), TapeOps, arch, weights)?),
        #[cfg(feature = "cuda")]
        Backend::Cuda => Box::new(Network::new(device::cuda(), ComposedOps, arch, weights)?),
    })
}

/// The same model on the CPU with the composed ops instead of the kernels:
/// the reference the kernels are tested against.
pub fn open_reference(config: &RunConfig) -> Box<dyn Engine> {
    Box::new(Trainer::new(Cpu::default(), ComposedOps, config))
}
