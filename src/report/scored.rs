//! A run's best checkpoint scored on its test split: the confusion matrix
//! and the first test images with their predictions, for report.md's
//! figures and report.html's run sections.

use std::collections::HashMap;

use anyhow::Result;

use super::RunRecord;
use crate::checkpoint::Weights;
use crate::data::{self, Split};
use crate::inference;
use crate::results;

/// Test images shown with their predictions: the tutorial's grid of 20.
pub const SHOWN: usize = 20;

pub struct TestScore {
    /// `counts[true][predicted]`.
    pub counts: [[u32; 10]; 10],
    /// The first `SHOWN` test images: pixels in [0, 1], label, prediction.
    pub first: Vec<(Vec<f32>, usize, usize)>,
}

impl TestScore {
    pub fn accuracy(&self) -> f64 {
        let total: u32 = self.counts.iter().flatten().sum();
        let correct: u32 = (0..10).map(|i| self.counts[i][i]).sum();
        correct as f64 / total.max(1) as f64
    }
}

/// Test splits loaded once per data configuration.
#[derive(Default)]
pub struct TestSets {
    loaded: HashMap<String, Split>,
}

impl TestSets {
    fn get(&mut self, run: &RunRecord) -> Result<&Split> {
        let mut config = run.config.data.clone();
        config.download = false;
        let key = toml::to_string(&config)?;
        if !self.loaded.contains_key(&key) {
            let split = data::load_test(&config)?;
            self.loaded.insert(key.clone(), split);
        }
        Ok(&self.loaded[&key])
    }
}

/// Scores `run`'s best checkpoint on its test split.
pub fn score(run: &RunRecord, tests: &mut TestSets) -> Result<TestScore> {
    let weights = Weights::load(&run.dir.join(results::BEST_FILE))?;
    let test = tests.get(run)?;
    let pixels: Vec<f32> = test.pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let probs = inference::probabilities(&run.config, &weights, &pixels)?;
    let mut counts = [[0u32; 10]; 10];
    for (p, &label) in probs.iter().zip(&test.labels) {
        counts[label as usize][inference::top_class(p)] += 1;
    }
    let first = (0..test.len().min(SHOWN))
        .map(|i| {
            let predicted = inference::top_class(&probs[i]);
            (test.image(i), test.labels[i] as usize, predicted)
        })
        .collect();
    Ok(TestScore { counts, first })
}
