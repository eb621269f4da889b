//! `runner bench`: see `crate::bench`.

use anyhow::{Context, Result};

use crate::bench::{self, BenchPlan, BenchReport};
use crate::cli::BenchArgs;
use crate::config::DataConfig;
use crate::data;
use crate::engine;
use crate::results::{cpu_model, peak_rss_mb};

pub fn execute(args: &BenchArgs) -> Result<i32> {
    let backend = engine::resolve(args.device)?;
    let variants = args
        .variants
        .iter()
        .map(|name| bench::variant(name))
        .collect::<Result<Vec<_>>>()?;

    let threads = super::init_threads(args.threads);
    let data_config = DataConfig {
        dir: args.data.clone(),
        ..DataConfig::default()
    };
    let data = data::load(&data_config).context("loading MNIST for the benchmark")?;
    let plan = BenchPlan {
        variants,
        train_batches: args.train_batches.iter().flatten().copied().collect(),
        infer_batches: args.infer_batches.iter().flatten().copied().collect(),
        seconds: args.seconds,
        epoch: !args.no_epoch,
    };
    if plan
        .train_batches
        .iter()
        .chain(&plan.infer_batches)
        .any(|&b| b == 0 || b > data.test.len())
    {
        anyhow::bail!("batch sizes must be between 1 and {}", data.test.len());
    }
    let cells = bench::cells(backend, &plan, &data);
    let epoch_seconds = if plan.epoch {
        Some(bench::epoch_seconds(backend, &data)?)
    } else {
        None
    };
    let report = BenchReport {
        device: backend.describe(),
        cpu: cpu_model(),
        threads,
        cells,
        epoch_seconds,
        epoch_train_images: plan.epoch.then_some(data.train.len()),
        peak_rss_mb: peak_rss_mb(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench::table(&report));
    }
    Ok(crate::exit::SUCCESS)
}
