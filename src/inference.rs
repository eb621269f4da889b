//! Class probabilities from a checkpoint, as plain data: the piece of the
//! model that `report` and `predict` need, behind the device seam.

use anyhow::Result;
use dfdx::prelude::Device;

use crate::checkpoint::Weights;
use crate::config::RunConfig;
use crate::data::{Split, CLASSES, PIXELS};
use crate::device::{self, DeviceTask};
use crate::model::{ConvOps, LeNet5};
use crate::train::Trainer;

/// Softmax probabilities, one row of 10 per image (`images` holds 784 floats each).
pub fn probabilities(
    config: &RunConfig,
    weights: &Weights,
    images: &[f32],
) -> Result<Vec<[f32; CLASSES]>> {
    let backend = device::resolve(config.train.device)?;
    device::dispatch(
        backend,
        Probabilities {
            config,
            weights,
            images,
        },
    )
}

struct Probabilities<'a> {
    config: &'a RunConfig,
    weights: &'a Weights,
    images: &'a [f32],
}

impl DeviceTask for Probabilities<'_> {
    type Output = Result<Vec<[f32; CLASSES]>>;
    fn run<D: Device<f32>, O: ConvOps<D>>(self, dev: D, ops: O) -> Self::Output {
        let mut trainer = Trainer::new(dev, ops, self.config);
        trainer.model = LeNet5::from_weights(&trainer.dev, &self.config.model, self.weights)?;
        let mut out = Vec::with_capacity(self.images.len() / PIXELS);
        for chunk in self.images.chunks(
            self.config
                .train
                .eval_batch_size
                .clamp(1, 1 << 20)
                .saturating_mul(PIXELS),
        ) {
            let logits = trainer.logits(chunk.to_vec(), chunk.len() / PIXELS);
            for row in logits.chunks_exact(CLASSES) {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                let mut p = [0.0f32; CLASSES];
                p.iter_mut().zip(&exps).for_each(|(p, e)| *p = e / sum);
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// Mean cross-entropy and accuracy of `weights` over a whole split.
pub fn evaluate(config: &RunConfig, weights: &Weights, split: &Split) -> Result<(f64, f64)> {
    let backend = device::resolve(config.train.device)?;
    device::dispatch(
        backend,
        Evaluate {
            config,
            weights,
            split,
        },
    )
}

struct Evaluate<'a> {
    config: &'a RunConfig,
    weights: &'a Weights,
    split: &'a Split,
}

impl DeviceTask for Evaluate<'_> {
    type Output = Result<(f64, f64)>;
    fn run<D: Device<f32>, O: ConvOps<D>>(self, dev: D, ops: O) -> Self::Output {
        let mut trainer = Trainer::new(dev, ops, self.config);
        trainer.model = LeNet5::from_weights(&trainer.dev, &self.config.model, self.weights)?;
        Ok(trainer.evaluate(self.split, self.config.train.eval_batch_size))
    }
}

/// The most probable class (first on ties).
pub fn top_class(p: &[f32; CLASSES]) -> usize {
    crate::train::argmax(p)
}
