//! `runner bench`: training and inference throughput of LeNet-5, the time
//! of one full epoch of the PyTorch tutorial's setup, and peak memory, on whichever
//! device is chosen. Data is held in memory before timing starts, as in the
//! PyTorch reference script (`bench/pytorch_bench.py`).

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::config::{Activation, ModelConfig, Pooling, RunConfig};
use crate::data::{epoch_order, Data, Split, PIXELS};
use crate::engine::{self, Backend};
use crate::train;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Entries of `VARIANTS`, in the order to measure them.
    pub variants: Vec<Variant>,
    pub train_batches: Vec<usize>,
    pub infer_batches: Vec<usize>,
    /// Seconds of timed work per cell (after a warm-up).
    pub seconds: f64,
    /// Also time one whole epoch of the PyTorch tutorial's setup (sigmoid+avg, batch 16).
    pub epoch: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub variant: String,
    /// "train" or "infer".
    pub mode: String,
    pub batch_size: usize,
    pub images_per_sec: f64,
    pub images: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub device: String,
    /// The processor (`results::cpu_model`), when it can be read.
    pub cpu: Option<String>,
    pub threads: usize,
    pub cells: Vec<Cell>,
    /// One epoch of the PyTorch tutorial's setup: 60k images at batch 16 plus the 10k-image eval.
    pub epoch_seconds: Option<f64>,
    pub epoch_train_images: Option<usize>,
    pub peak_rss_mb: Option<f64>,
}

/// A model variant the bench measures: (name, activation, pooling).
pub type Variant = (&'static str, Activation, Pooling);

pub const VARIANTS: [Variant; 2] = [
    ("sigmoid+avg", Activation::Sigmoid, Pooling::Avg),
    ("relu+max", Activation::Relu, Pooling::Max),
];

/// The entry of `VARIANTS` called `name`.
pub fn variant(name: &str) -> Result<Variant> {
    VARIANTS.into_iter().find(|v| v.0 == name).ok_or_else(|| {
        let names: Vec<_> = VARIANTS.iter().map(|v| v.0).collect();
        anyhow::anyhow!(
            "--variants: unknown variant {name:?} (expected {})",
            names.join(", ")
        )
    })
}

fn config_for(activation: Activation, pooling: Pooling, batch_size: usize) -> RunConfig {
    let defaults = RunConfig::default();
    RunConfig {
        model: ModelConfig {
            activation,
            pooling,
            activate_c5_f6: false,
        },
        train: crate::config::TrainConfig {
            batch_size,
            ..defaults.train.clone()
        },
        ..defaults
    }
}

/// Runs `step` on successive batches until `seconds` have passed; returns (images, seconds).
fn timed(
    split: &Split,
    batch: usize,
    seconds: f64,
    mut step: impl FnMut(Vec<f32>, &[usize]),
) -> (usize, f64) {
    let order = epoch_order(split.len(), 1, 0);
    let (mut pixels, mut labels) = (Vec::with_capacity(batch * PIXELS), Vec::new());
    let mut batches = order.chunks_exact(batch).cycle();
    // Warm-up: caches, allocator, thread pool.
    for _ in 0..3 {
        split.gather(
            batches.next().expect("split holds a batch"),
            &mut pixels,
            &mut labels,
        );
        step(std::mem::take(&mut pixels), &labels);
    }
    let started = Instant::now();
    let mut images = 0;
    while started.elapsed().as_secs_f64() < seconds {
        let idx = batches.next().expect("cycle never ends");
        // Gathering the batch is part of the work, as it is in training.
        split.gather(idx, &mut pixels, &mut labels);
        step(std::mem::take(&mut pixels), &labels);
        images += idx.len();
    }
    (images, started.elapsed().as_secs_f64())
}

/// Times every cell of `plan` on `backend`.
pub fn cells(backend: Backend, plan: &BenchPlan, data: &Data) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &(name, activation, pooling) in &plan.variants {
        for &bs in &plan.train_batches {
            let config = config_for(activation, pooling, bs);
            let mut engine = engine::open(backend, &config);
            let (images, seconds) = timed(&data.train, bs, plan.seconds, |x, y| {
                engine.train_step(x, y, 1e-3);
            });
            cells.push(cell(name, "train", bs, images, seconds));
        }
        for &bs in &plan.infer_batches {
            let config = config_for(activation, pooling, bs);
            let engine = engine::open(backend, &config);
            let (images, seconds) = timed(&data.test, bs, plan.seconds, |x, y| {
                engine.logits(x, y.len());
            });
            cells.push(cell(name, "infer", bs, images, seconds));
        }
    }
    cells
}

fn cell(variant: &str, mode: &str, batch_size: usize, images: usize, seconds: f64) -> Cell {
    Cell {
        variant: variant.into(),
        mode: mode.into(),
        batch_size,
        images_per_sec: images as f64 / seconds,
        images,
        seconds,
    }
}

/// Seconds of one epoch of the PyTorch tutorial's setup, timed as `runner run` times it.
pub fn epoch_seconds(backend: Backend, data: &Data) -> Result<f64> {
    let mut config = RunConfig::default();
    config.train.epochs = 1;
    let mut engine = engine::open(backend, &config);
    struct Quiet;
    impl train::Observer for Quiet {
        fn epoch_end(
            &mut self,
            _: &crate::metrics::EpochMetrics,
            _: Option<&crate::checkpoint::Weights>,
            _: &crate::checkpoint::TrainState,
        ) -> Result<()> {
            Ok(())
        }
    }
    let started = Instant::now();
    train::fit(engine.as_mut(), &config, data, &mut Quiet, None)?;
    Ok(started.elapsed().as_secs_f64())
}

/// The report as a plain text table.
pub fn table(report: &BenchReport) -> String {
    let mut out = format!("device: {}, {} threads\n", report.device, report.threads);
    if let Some(cpu) = &report.cpu {
        out.push_str(&format!("cpu: {cpu}\n"));
    }
    out.push_str(&format!(
        "{:<12} {:<6} {:>6} {:>12}\n",
        "variant", "mode", "batch", "images/s"
    ));
    for c in &report.cells {
        out.push_str(&format!(
            "{:<12} {:<6} {:>6} {:>12.0}\n",
            c.variant, c.mode, c.batch_size, c.images_per_sec
        ));
    }
    if let Some(s) = report.epoch_seconds {
        out.push_str(&format!(
            "epoch (sigmoid+avg, batch 16, {} train images + eval of the test split): {s:.2} s\n",
            report.epoch_train_images.unwrap_or(0)
        ));
    }
    if let Some(rss) = report.peak_rss_mb {
        out.push_str(&format!("peak RSS: {rss:.0} MB\n"));
    }
    out
}
