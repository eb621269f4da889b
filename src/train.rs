//! The training loop: batches in a seeded order, StepLR per epoch, exact
//! loss and accuracy over each split, best-epoch tracking. It drives an
//! [`Engine`] (the model and its optimizer, on whichever device) and deals
//! only in plain data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};

use crate::checkpoint::{TrainState, Weights};
use crate::config::RunConfig;
use crate::data::{epoch_order, Data, Split, CLASSES, PIXELS};
use crate::engine::{Engine, Predictor};
use crate::metrics::EpochMetrics;
use crate::results::now_rfc3339;

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

/// One SGD step; returns (summed loss, correct count) of the batch as the
/// model saw it before the update.
fn train_step(
    engine: &mut dyn Engine,
    images: Vec<f32>,
    labels: &[usize],
    lr: f32,
) -> (f64, usize) {
    score(&engine.train_step(images, labels, lr), labels)
}

/// Mean loss and accuracy over a whole split.
pub fn evaluate(model: &dyn Predictor, split: &Split, batch_size: usize) -> (f64, f64) {
    let (mut loss, mut correct) = (0.0, 0);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    let all: Vec<usize> = (0..split.len()).collect();
    for idx in all.chunks(batch_size.clamp(1, split.len().max(1))) {
        split.gather(idx, &mut pixels, &mut labels);
        let logits = model.logits(std::mem::take(&mut pixels), idx.len());
        let (l, c) = score(&logits, &labels);
        loss += l;
        correct += c;
    }
    let n = split.len().max(1) as f64;
    (loss / n, correct as f64 / n)
}

/// The state to resume from after `epochs_done` epochs.
fn state(engine: &dyn Engine, epochs_done: usize, best: Option<(usize, f64)>) -> TrainState {
    TrainState {
        epochs_done,
        best_epoch: best.map(|b| b.0),
        best_val_acc: best.map(|b| b.1),
        weights: engine.weights(),
        momentum: engine.momentum(),
    }
}

/// One epoch's training steps: the summed loss and the correct count, or
/// None when Ctrl-C stopped it (before a batch, so no step is half done).
fn train_epoch(
    engine: &mut dyn Engine,
    config: &RunConfig,
    data: &Data,
    epoch: usize,
    batch_size: usize,
    observer: &mut dyn Observer,
    (pixels, labels): &mut (Vec<f32>, Vec<usize>),
) -> Result<Option<(f64, usize)>> {
    let t = &config.train;
    let n = data.train.len();
    let lr = config.lr_at_epoch(epoch);
    let batches = n.div_ceil(batch_size);
    let order = epoch_order(n, t.seed, epoch);
    let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
    for (b, idx) in order.chunks(batch_size).enumerate() {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Ok(None);
        }
        data.train.gather(idx, pixels, labels);
        let (l, c) = train_step(engine, std::mem::take(pixels), labels, lr as f32);
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
    Ok(Some((loss_sum, correct)))
}

/// Trains up to `config.train.epochs` epochs, from `resume` if given,
/// reporting to `observer`.
pub fn fit(
    engine: &mut dyn Engine,
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
    let mut best: Option<(usize, f64)> = None;
    let mut first_epoch = 0;
    if let Some(state) = resume {
        engine.restore(&state.weights, &state.momentum)?;
        first_epoch = state.epochs_done;
        best = state.best_epoch.zip(state.best_val_acc);
    }
    let mut buffers = (Vec::with_capacity(batch_size * PIXELS), Vec::new());
    for epoch in first_epoch..t.epochs {
        let lr = config.lr_at_epoch(epoch);
        let started = Instant::now();
        let Some((loss_sum, correct)) = train_epoch(
            engine,
            config,
            data,
            epoch,
            batch_size,
            observer,
            &mut buffers,
        )?
        else {
            return Ok(Outcome::Interrupted { epochs_done: epoch });
        };
        let train_seconds = started.elapsed().as_secs_f64();
        let (val_loss, val_acc) = evaluate(engine, data.validation(), t.eval_batch_size);
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
        let state = state(engine, epoch + 1, best);
        observer.epoch_end(&metrics, is_best.then_some(&state.weights), &state)?;
        if observer.stop_early() {
            break;
        }
    }
    Ok(Outcome::Completed)
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
