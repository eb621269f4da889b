//! `runner eval`: test loss and accuracy of a checkpoint.

use anyhow::{Context, Result};
use dfdx::prelude::Device;

use crate::checkpoint::Weights;
use crate::cli::EvalArgs;
use crate::config::{self, RunConfig, Sources};
use crate::data;
use crate::device::{self, DeviceTask};
use crate::model::{ConvOps, LeNet5};
use crate::results;
use crate::train::Trainer;

pub fn execute(args: &EvalArgs) -> Result<i32> {
    let (config, checkpoint) = match &args.checkpoint {
        Some(file) => {
            let sources = Sources::new(args.path.as_deref(), &args.overrides.sets);
            (config::load(&sources)?, file.clone())
        }
        None => {
            let run_dir = args
                .path
                .as_ref()
                .expect("clap requires RUN_DIR without --checkpoint");
            let spec = run_dir.join(results::CONFIG_FILE);
            if !spec.is_file() {
                anyhow::bail!(
                    "{} is not a run folder: it has no {}",
                    run_dir.display(),
                    results::CONFIG_FILE
                );
            }
            let config = config::load(&Sources::new(Some(&spec), &args.overrides.sets))?;
            (config, run_dir.join(results::BEST_FILE))
        }
    };
    let weights = Weights::load(&checkpoint)?;
    let backend = device::resolve(config.train.device)?;
    super::init_threads(config.train.threads);
    let test = data::load_test(&config.data).context("loading the test split")?;
    let (loss, acc) = device::dispatch(
        backend,
        Evaluate {
            config: &config,
            weights: &weights,
            test: &test,
        },
    )
    .with_context(|| format!("evaluating {}", checkpoint.display()))?;
    println!(
        "{}: test loss {loss:.4}, test acc {acc:.4} ({} images, {} {} {})",
        checkpoint.display(),
        test.len(),
        config.model.activation,
        config.model.pooling,
        if config.model.activate_c5_f6 {
            "activated c5/f6"
        } else {
            "linear c5/f6"
        }
    );
    Ok(0)
}

struct Evaluate<'a> {
    config: &'a RunConfig,
    weights: &'a Weights,
    test: &'a data::Split,
}

impl DeviceTask for Evaluate<'_> {
    type Output = Result<(f64, f64)>;
    fn run<D: Device<f32>, O: ConvOps<D>>(self, dev: D, ops: O) -> Self::Output {
        let mut trainer = Trainer::new(dev, ops, self.config);
        trainer.model = LeNet5::from_weights(&trainer.dev, &self.config.model, self.weights)?;
        Ok(trainer.evaluate(self.test, self.config.train.eval_batch_size))
    }
}
