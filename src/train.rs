//! The training loop: SGD with momentum and weight decay, StepLR per epoch,
//! exact loss and accuracy over each split, best-epoch tracking. Generic
//! over the dfdx device and the conv/pool implementation; everything it
//! reports to the outside is plain data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use dfdx::prelude::*;

use crate::checkpoint::{TrainState, Weights};
use crate::config::RunConfig;
use crate::data::{epoch_order, Data, Split, CLASSES, PIXELS};
use crate::model::{ConvOps, LeNet5, Param};
use crate::results::{now_rfc3339, EpochMetrics};

/// Set by the Ctrl-C handler; the loop stops at the next batch.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What the loop tells the outside world as it goes.
pub trait Observer {
    /// After each batch: batches done, batches in the epoch, mean loss and
    /// accuracy over the epoch so far.
    fn batch_end(&mut self, _done: usize, _total: usize, _loss: f64, _acc: f64) {}
    /// After each epoch; `best` holds the weights when this epoch is the best
    /// so far, and `state` is everything needed to resume after this epoch.
    fn epoch_end(
        &mut self,
        metrics: &EpochMetrics,
        best: Option<&Weights>,
        state: &TrainState,
    ) -> Result<()>;
    /// After `epoch_end`: whether early stopping ends the run here.
    fn stop_early(&self) -> bool {
        false
    }
}

/// How a fit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed,
    Interrupted { epochs_done: usize },
}

/// SGD as PyTorch defines it: g = grad + wd*p; v = mu*v + g; p -= lr*v.
/// The state lives on the host as plain vectors, so it can be saved.
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    values: Vec<Vec<f32>>,
    velocity: Vec<Vec<f32>>,
    grad: Vec<f32>,
}

impl Sgd {
    pub fn new<D: Device<f32>>(params: &[Param<D>], momentum: f64, weight_decay: f64) -> Self {
        Sgd {
            momentum: momentum as f32,
            weight_decay: weight_decay as f32,
            values: params.iter().map(|p| p.as_vec()).collect(),
            velocity: params.iter().map(|p| vec![0.0; p.shape().0]).collect(),
            grad: Vec::new(),
        }
    }

    /// The momentum buffers, in parameter order.
    pub fn velocity(&self) -> &[Vec<f32>] {
        &self.velocity
    }

    /// Restores the optimizer to `values` (the parameters) and `velocity`.
    pub fn restore(&mut self, values: Vec<Vec<f32>>, velocity: Vec<Vec<f32>>) {
        self.values = values;
        self.velocity = velocity;
    }

    /// One update of every parameter; `read_grad(param, out)` copies the
    /// parameter's gradient into `out`.
    pub fn step<D: Device<f32>>(
        &mut self,
        params: &mut [Param<D>],
        mut read_grad: impl FnMut(&Param<D>, &mut [f32]),
        lr: f32,
    ) {
        for (i, param) in params.iter_mut().enumerate() {
            self.grad.resize(param.shape().0, 0.0);
            read_grad(param, &mut self.grad);
            let (values, velocity) = (&mut self.values[i], &mut self.velocity[i]);
            for ((p, v), g) in values.iter_mut().zip(velocity.iter_mut()).zip(&self.grad) {
                let g = g + self.weight_decay * *p;
                *v = self.momentum * *v + g;
                *p -= lr * *v;
            }
            param.copy_from(values);
        }
    }
}

/// Per-sample cross-entropy summed, and correct predictions counted, from logits.
fn score(logits: &[f32], labels: &[usize]) -> (f64, usize) {
    let mut loss = 0.0f64;
    let mut correct = 0;
    for (row, &label) in logits.chunks_exact(CLASSES).zip(labels) {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - row[label] as f64;
        if argmax(row) == label {
            correct += 1;
        }
    }
    (loss, correct)
}

/// Index of the largest value (first one on ties, like torch.max).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn one_hot(labels: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; labels.len() * CLASSES];
    for (i, &l) in labels.iter().enumerate() {
        out[i * CLASSES + l] = 1.0;
    }
    out
}

pub struct Trainer<D: Device<f32>, O: ConvOps<D>> {
    pub dev: D,
    pub ops: O,
    pub model: LeNet5<D>,
    pub sgd: Sgd,
}

impl<D: Device<f32>, O: ConvOps<D>> Trainer<D, O> {
    pub fn new(dev: D, ops: O, config: &RunConfig) -> Self {
        let model = LeNet5::init(&dev, &config.model, config.train.seed);
        let sgd = Sgd::new(
            &model.params,
            config.train.momentum,
            config.train.weight_decay,
        );
        Trainer {
            dev,
            ops,
            model,
            sgd,
        }
    }

    /// One SGD step on a batch; returns (summed loss, correct count) of the
    /// batch as the model saw it before the update.
    pub fn train_step(&mut self, images: Vec<f32>, labels: &[usize], lr: f32) -> (f64, usize) {
        let n = labels.len();
        let x = self
            .dev
            .tensor_from_vec(images, (n, 1usize, 28usize, 28usize));
        let targets = self.dev.tensor_from_vec(one_hot(labels), (n, CLASSES));
        let logits = self.model.forward(&self.ops, x.traced(Gradients::leaky()));
        let (logits, tape) = logits.split_tape();
        let scored = score(&logits.as_vec(), labels);
        let loss = cross_entropy_with_logits_loss(logits.put_tape(tape), targets);
        let mut grads = loss.backward();
        let ops = &self.ops;
        self.sgd.step(
            &mut self.model.params,
            |param, out| ops.read_grad(&mut grads, param, out),
            lr,
        );
        scored
    }

    /// Logits for `n` images (f32 in [0, 1], 28x28 each), no gradients.
    pub fn logits(&self, images: Vec<f32>, n: usize) -> Vec<f32> {
        let x = self
            .dev
            .tensor_from_vec(images, (n, 1usize, 28usize, 28usize));
        self.model.forward(&self.ops, x).as_vec()
    }

    /// Mean loss and accuracy over a whole split.
    pub fn evaluate(&self, split: &Split, batch_size: usize) -> (f64, f64) {
        let (mut loss, mut correct) = (0.0, 0);
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        let all: Vec<usize> = (0..split.len()).collect();
        for idx in all.chunks(batch_size.clamp(1, split.len().max(1))) {
            split.gather(idx, &mut pixels, &mut labels);
            let logits = self.logits(std::mem::take(&mut pixels), idx.len());
            let (l, c) = score(&logits, &labels);
            loss += l;
            correct += c;
        }
        let n = split.len().max(1) as f64;
        (loss / n, correct as f64 / n)
    }

    /// The state to resume from after `epochs_done` epochs.
    pub fn state(&self, epochs_done: usize, best: Option<(usize, f64)>) -> TrainState {
        let weights = self.model.to_weights();
        let momentum = Weights {
            tensors: weights
                .tensors
                .iter()
                .zip(self.sgd.velocity())
                .map(|((name, shape, _), v)| (name.clone(), shape.clone(), v.clone()))
                .collect(),
        };
        TrainState {
            epochs_done,
            best_epoch: best.map(|b| b.0),
            best_val_acc: best.map(|b| b.1),
            weights,
            momentum,
        }
    }

    /// Puts the model and optimizer back into a saved state.
    pub fn restore(&mut self, state: &TrainState) -> Result<()> {
        // from_weights checks names and shapes and puts both in PARAMS order.
        let model = LeNet5::from_weights(&self.dev, &self.model.arch, &state.weights)?;
        let momentum = LeNet5::<D>::from_weights(&self.dev, &self.model.arch, &state.momentum)?;
        let values = model.params.iter().map(|p| p.as_vec()).collect();
        let velocity = momentum.params.iter().map(|p| p.as_vec()).collect();
        self.model = model;
        self.sgd.restore(values, velocity);
        Ok(())
    }

    /// Trains up to `config.train.epochs` epochs, from `resume` if given,
    /// reporting to `observer`.
    pub fn fit(
        &mut self,
        config: &RunConfig,
        data: &Data,
        observer: &mut dyn Observer,
        resume: Option<&TrainState>,
    ) -> Result<Outcome> {
        let t = &config.train;
        let n = data.train.len();
        if n == 0 || data.validation().is_empty() {
            bail!(
                "the dataset is empty (train {n} images, validation {})",
                data.validation().len()
            );
        }
        // As PyTorch's DataLoader: a batch larger than the split is the split.
        let batch_size = t.batch_size.min(n);
        let batches = n.div_ceil(batch_size);
        let mut best: Option<(usize, f64)> = None;
        let mut first_epoch = 0;
        if let Some(state) = resume {
            self.restore(state)?;
            first_epoch = state.epochs_done;
            best = state.best_epoch.zip(state.best_val_acc);
        }
        let (mut pixels, mut labels) = (Vec::with_capacity(batch_size * PIXELS), Vec::new());
        for epoch in first_epoch..t.epochs {
            let lr = config.lr_at_epoch(epoch);
            let started = Instant::now();
            let order = epoch_order(n, t.seed, epoch);
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
            for (b, idx) in order.chunks(batch_size).enumerate() {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    return Ok(Outcome::Interrupted { epochs_done: epoch });
                }
                data.train.gather(idx, &mut pixels, &mut labels);
                let (l, c) = self.train_step(std::mem::take(&mut pixels), &labels, lr as f32);
                if !l.is_finite() {
                    bail!(
                        "loss became {l} in epoch {} batch {} ({} too high?)",
                        epoch + 1,
                        b + 1,
                        if t.weight_decay > 0.0 {
                            format!("lr {lr} or weight_decay {}", t.weight_decay)
                        } else {
                            format!("lr {lr}")
                        }
                    );
                }
                loss_sum += l;
                correct += c;
                seen += idx.len();
                observer.batch_end(
                    b + 1,
                    batches,
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64,
                );
            }
            let train_seconds = started.elapsed().as_secs_f64();
            let (val_loss, val_acc) = self.evaluate(data.validation(), t.eval_batch_size);
            if !val_loss.is_finite() {
                bail!(
                    "validation loss became {val_loss} after epoch {}",
                    epoch + 1
                );
            }
            let metrics = EpochMetrics {
                epoch: epoch + 1,
                lr,
                train_loss: loss_sum / n as f64,
                train_acc: correct as f64 / n as f64,
                val_loss,
                val_acc,
                epoch_seconds: started.elapsed().as_secs_f64(),
                train_images_per_sec: n as f64 / train_seconds,
                finished_at: now_rfc3339(),
            };
            let is_best = best.is_none_or(|(_, acc)| val_acc > acc);
            if is_best {
                best = Some((epoch + 1, val_acc));
            }
            let state = self.state(epoch + 1, best);
            observer.epoch_end(&metrics, is_best.then_some(&state.weights), &state)?;
            if observer.stop_early() {
                break;
            }
        }
        Ok(Outcome::Completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_matches_hand_computed_cross_entropy() {
        let logits = [0.0f32; 10];
        let (loss, correct) = score(&logits, &[0]);
        assert!((loss - (10f64).ln()).abs() < 1e-9);
        assert_eq!(correct, 1); // ties go to the first class, as torch.max does
        let mut logits = [0.0f32; 20];
        logits[3] = 5.0;
        logits[10 + 7] = 1.0;
        let (_, correct) = score(&logits, &[3, 2]);
        assert_eq!(correct, 1);
    }
}
