//! Class probabilities and scores from a checkpoint, as plain data: the
//! piece of the model that `report`, `eval` and `predict` need. The model
//! is opened for inference only (no optimizer state).

use anyhow::Result;

use crate::checkpoint::Weights;
use crate::config::RunConfig;
use crate::data::{Split, CLASSES, PIXELS};
use crate::engine;
use crate::train;

/// Softmax probabilities, one row of 10 per image (`images` holds 784 floats each).
pub fn probabilities(
    config: &RunConfig,
    weights: &Weights,
    images: &[f32],
) -> Result<Vec<[f32; CLASSES]>> {
    let backend = engine::resolve(config.train.device)?;
    let model = engine::open_predictor(backend, &config.model, weights)?;
    let mut out = Vec::with_capacity(images.len() / PIXELS);
    let batch = config.train.eval_batch_size.clamp(1, 1 << 20);
    for chunk in images.chunks(batch.saturating_mul(PIXELS)) {
        let logits = model.logits(chunk.to_vec(), chunk.len() / PIXELS);
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

/// Mean cross-entropy and accuracy of `weights` over a whole split.
pub fn evaluate(config: &RunConfig, weights: &Weights, split: &Split) -> Result<(f64, f64)> {
    let backend = engine::resolve(config.train.device)?;
    let model = engine::open_predictor(backend, &config.model, weights)?;
    Ok(train::evaluate(
        model.as_ref(),
        split,
        config.train.eval_batch_size,
    ))
}

/// The most probable class (first on ties).
pub fn top_class(p: &[f32; CLASSES]) -> usize {
    crate::train::argmax(p)
}
