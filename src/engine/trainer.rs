//! The engine on a dfdx device: LeNet-5 with the layer implementation that
//! suits the device ([`Network`], all `eval` and `predict` need), and with
//! its SGD state ([`Trainer`], for training).

use anyhow::Result;
use dfdx::prelude::*;

use super::model::{LayerOps, LeNet5};
use super::sgd::{Sgd, SgdDevice};
use super::{Engine, Predictor};
use crate::checkpoint::Weights;
use crate::config::{ModelConfig, RunConfig};
use crate::data::CLASSES;

/// The model on a device: predicts, does not train.
pub struct Network<D: Device<f32>, O: LayerOps<D>> {
    dev: D,
    ops: O,
    model: LeNet5<D>,
}

impl<D: Device<f32>, O: LayerOps<D>> Network<D, O> {
    /// The model with `weights` (names and shapes checked).
    pub fn new(dev: D, ops: O, arch: &ModelConfig, weights: &Weights) -> Result<Self> {
        let model = LeNet5::from_weights(&dev, arch, weights)?;
        Ok(Network { dev, ops, model })
    }

    fn images(&self, images: Vec<f32>, n: usize) -> Tensor<(usize, usize, usize, usize), f32, D> {
        self.dev
            .tensor_from_vec(images, (n, 1usize, 28usize, 28usize))
    }
}

impl<D: Device<f32>, O: LayerOps<D>> Predictor for Network<D, O> {
    fn logits(&self, images: Vec<f32>, n: usize) -> Vec<f32> {
        let x = self.images(images, n);
        self.model.forward(&self.ops, x).as_vec()
    }
}

/// The model and its optimizer: trains.
pub struct Trainer<D: SgdDevice, O: LayerOps<D>> {
    net: Network<D, O>,
    sgd: Sgd<D>,
}

impl<D: SgdDevice, O: LayerOps<D>> Trainer<D, O> {
    /// A fresh model, initialised from `config.train.seed`.
    pub fn new(dev: D, ops: O, config: &RunConfig) -> Self {
        let model = LeNet5::init(&dev, &config.model, config.train.seed);
        let sgd = Sgd::new(
            &model.params,
            config.train.momentum,
            config.train.weight_decay,
        );
        Trainer {
            net: Network { dev, ops, model },
            sgd,
        }
    }
}

fn one_hot(labels: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; labels.len() * CLASSES];
    for (i, &l) in labels.iter().enumerate() {
        out[i * CLASSES + l] = 1.0;
    }
    out
}

impl<D: SgdDevice, O: LayerOps<D>> Predictor for Trainer<D, O> {
    fn logits(&self, images: Vec<f32>, n: usize) -> Vec<f32> {
        self.net.logits(images, n)
    }
}

impl<D: SgdDevice, O: LayerOps<D>> Engine for Trainer<D, O> {
    fn train_step(&mut self, images: Vec<f32>, labels: &[usize], lr: f32) -> Vec<f32> {
        let net = &mut self.net;
        let n = labels.len();
        let x = net.images(images, n);
        let targets = net.dev.tensor_from_vec(one_hot(labels), (n, CLASSES));
        let logits = net.model.forward(&net.ops, x.traced(Gradients::leaky()));
        let (logits, tape) = logits.split_tape();
        let before_update = logits.as_vec();
        let loss = cross_entropy_with_logits_loss(logits.put_tape(tape), targets);
        let mut grads = loss.backward();
        self.sgd.step(&mut net.model.params, &mut grads, lr);
        before_update
    }

    fn weights(&self) -> Weights {
        self.net.model.to_weights()
    }

    fn momentum(&self) -> Weights {
        let tensors = self
            .weights()
            .tensors
            .into_iter()
            .zip(self.sgd.velocity(&self.net.model.params))
            .map(|((name, shape, _), v)| (name, shape, v))
            .collect();
        Weights { tensors }
    }

    fn restore(&mut self, weights: &Weights, momentum: &Weights) -> Result<()> {
        let (dev, arch) = (&self.net.dev, &self.net.model.arch);
        // from_weights checks names and shapes and puts both in PARAMS order.
        let model = LeNet5::from_weights(dev, arch, weights)?;
        let velocity = LeNet5::<D>::from_weights(dev, arch, momentum)?;
        let velocity: Vec<Vec<f32>> = velocity.params.iter().map(|p| p.as_vec()).collect();
        self.sgd.restore(&model.params, &velocity);
        self.net.model = model;
        Ok(())
    }
}
