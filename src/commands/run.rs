//! `runner run SPEC`: train one configuration and leave a run folder behind.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use dfdx::prelude::Device;
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::Weights;
use crate::cli::RunArgs;
use crate::config::{self, RunConfig, Sources};
use crate::data::{self, Data};
use crate::device::{self, Backend, DeviceTask};
use crate::model::ConvOps;
use crate::results::{self, EpochMetrics, RunDir, Status, Summary};
use crate::train::{Observer, Outcome, Trainer};

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

pub fn execute(args: &RunArgs) -> Result<i32> {
    let config = config::load(&Sources {
        spec: Some(&args.spec),
        sets: &args.overrides.sets,
    })?;
    let run_dir = RunDir::for_config(&args.results_dir, &config);
    if args.dry_run {
        println!("# run folder: {}", run_dir.path.display());
        print!("{}", config.to_toml());
        return Ok(0);
    }
    if let Ok(summary) = run_dir.read_summary() {
        if summary.status == Status::Completed && !args.force {
            println!(
                "{} already completed ({} epochs, best val acc {:.4}); pass --force to train it again",
                run_dir.path.display(),
                summary.epochs_completed,
                summary.best_val_acc.unwrap_or(f64::NAN)
            );
            return Ok(0);
        }
    }
    let backend = device::resolve(config.train.device)?;
    let threads = super::init_threads(config.train.threads);
    let data = data::load(&config.data).context("loading the dataset")?;
    eprintln!(
        "{}: {} train / {} test images, device {}, {} threads -> {}",
        config.name,
        data.train.len(),
        data.test.len(),
        backend.describe(),
        threads,
        run_dir.path.display()
    );
    let status = train_into(&config, &data, &run_dir, backend, threads)?;
    Ok(match status {
        Status::Interrupted => EXIT_INTERRUPTED,
        _ => 0,
    })
}

/// Trains `config` into `run_dir`, keeping `summary.json` true at every
/// moment: running, then completed, interrupted or failed (with the reason).
pub fn train_into(
    config: &RunConfig,
    data: &Data,
    run_dir: &RunDir,
    backend: Backend,
    threads: usize,
) -> Result<Status> {
    run_dir.create()?;
    run_dir.write_config(config)?;
    run_dir.write_metrics(&[])?;
    let _ = std::fs::remove_file(run_dir.file(results::BEST_FILE));
    let mut recorder = Recorder::new(config, run_dir, backend, threads);
    run_dir.write_summary(&recorder.summary)?;
    let outcome = device::dispatch(
        backend,
        Fit {
            config,
            data,
            recorder: &mut recorder,
        },
    );
    recorder.finish(&outcome)?;
    match outcome {
        Ok(Outcome::Completed) => Ok(Status::Completed),
        Ok(Outcome::Interrupted { epochs_done }) => {
            eprintln!(
                "interrupted after {epochs_done} complete epochs; results so far are in {}",
                run_dir.path.display()
            );
            Ok(Status::Interrupted)
        }
        Err(e) => Err(e.context(format!(
            "run failed; see {}",
            run_dir.file(results::SUMMARY_FILE).display()
        ))),
    }
}

struct Fit<'a, 'r> {
    config: &'a RunConfig,
    data: &'a Data,
    recorder: &'r mut Recorder<'a>,
}

impl DeviceTask for Fit<'_, '_> {
    type Output = Result<Outcome>;
    fn run<D: Device<f32>, O: ConvOps<D>>(self, dev: D, ops: O) -> Self::Output {
        let mut trainer = Trainer::new(dev, ops, self.config);
        trainer.fit(self.config, self.data, self.recorder)
    }
}

/// Writes each epoch's results as they come, and draws the progress.
struct Recorder<'a> {
    config: &'a RunConfig,
    run_dir: &'a RunDir,
    rows: Vec<EpochMetrics>,
    summary: Summary,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl<'a> Recorder<'a> {
    fn new(config: &'a RunConfig, run_dir: &'a RunDir, backend: Backend, threads: usize) -> Self {
        let summary = Summary {
            status: Status::Running,
            reason: None,
            name: config.name.clone(),
            run_id: config.run_id(),
            best_epoch: None,
            best_val_acc: None,
            final_val_acc: None,
            epochs_completed: 0,
            epochs_planned: config.train.epochs,
            started_at: results::now_rfc3339(),
            finished_at: None,
            wall_seconds: 0.0,
            mean_train_images_per_sec: None,
            peak_rss_mb: None,
            config_hash: config.result_hash(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            device: backend.describe().to_string(),
            threads,
            runner_version: env!("CARGO_PKG_VERSION").to_string(),
            dfdx_version: crate::DFDX_VERSION.to_string(),
            git_commit: option_env!("RUNNER_GIT_COMMIT").map(String::from),
        };
        Recorder {
            config,
            run_dir,
            rows: Vec::new(),
            summary,
            started: Instant::now(),
            bar: None,
        }
    }

    fn refresh_summary(&mut self) {
        let s = &mut self.summary;
        s.wall_seconds = self.started.elapsed().as_secs_f64();
        s.peak_rss_mb = results::peak_rss_mb();
        s.epochs_completed = self.rows.len();
        s.final_val_acc = self.rows.last().map(|r| r.val_acc);
        if !self.rows.is_empty() {
            let total: f64 = self.rows.iter().map(|r| r.train_images_per_sec).sum();
            s.mean_train_images_per_sec = Some(total / self.rows.len() as f64);
        }
    }

    fn finish(&mut self, outcome: &Result<Outcome>) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.refresh_summary();
        let (status, reason) = match outcome {
            Ok(Outcome::Completed) => (Status::Completed, None),
            Ok(Outcome::Interrupted { .. }) => (
                Status::Interrupted,
                Some("interrupted by the user (Ctrl-C)".into()),
            ),
            Err(e) => (Status::Failed, Some(format!("{e:#}"))),
        };
        self.summary.status = status;
        self.summary.reason = reason;
        self.summary.finished_at = Some(results::now_rfc3339());
        self.run_dir.write_summary(&self.summary)?;
        if status == Status::Completed {
            println!(
                "done: best val acc {:.4} at epoch {}, {:.1}s -> {}",
                self.summary.best_val_acc.unwrap_or(f64::NAN),
                self.summary.best_epoch.unwrap_or(0),
                self.summary.wall_seconds,
                self.run_dir.path.display()
            );
        }
        Ok(())
    }
}

impl Observer for Recorder<'_> {
    fn batch_end(&mut self, done: usize, total: usize, loss: f64, acc: f64) {
        let epoch = self.rows.len() + 1;
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        bar.set_prefix(format!("epoch {epoch}/{}", self.config.train.epochs));
        // Redrawing costs more than a small batch: update every few batches.
        if done % 25 == 0 || done == total {
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss:.4} acc {acc:.4}"));
        }
    }

    fn epoch_end(&mut self, m: &EpochMetrics, best: Option<&Weights>) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "epoch {:>3}/{}  lr {:.2e}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  {:.1}s  {:.0} img/s",
            m.epoch,
            self.config.train.epochs,
            m.lr,
            m.train_loss,
            m.train_acc,
            m.val_loss,
            m.val_acc,
            m.epoch_seconds,
            m.train_images_per_sec
        );
        if let Some(weights) = best {
            let mut meta = HashMap::new();
            meta.insert("epoch".to_string(), m.epoch.to_string());
            meta.insert("val_acc".to_string(), m.val_acc.to_string());
            meta.insert("config_hash".to_string(), self.summary.config_hash.clone());
            weights.save(&self.run_dir.file(results::BEST_FILE), meta)?;
            self.summary.best_epoch = Some(m.epoch);
            self.summary.best_val_acc = Some(m.val_acc);
        }
        self.rows.push(m.clone());
        self.run_dir.write_metrics(&self.rows)?;
        self.refresh_summary();
        self.run_dir.write_summary(&self.summary)
    }
}
