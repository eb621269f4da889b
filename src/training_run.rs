//! Runs one config into its run folder, the way both `runner run` and
//! `runner sweep` do it: take the folder's lock, skip a finished run, resume
//! an interrupted one from its last finished epoch, train, and keep every
//! file true at every moment (see `results` for the files).

use std::fs::File;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{TrainState, Weights};
use crate::config::RunConfig;
use crate::data::Data;
use crate::engine::{self, Backend};
use crate::export::tensorboard;
use crate::metrics::{self, EpochMetrics};
use crate::results::{self, RunDir, Status, Summary};
use crate::train::{self, Observer, Outcome};

/// How to treat what a run folder already holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Train again from scratch even if the run completed.
    pub force: bool,
    /// Train a run again whose last attempt failed.
    pub retry_failed: bool,
}

/// What became of one run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Completed {
        best_val_acc: f64,
        seconds: f64,
    },
    /// Already completed earlier: nothing to do.
    AlreadyCompleted,
    /// Failed earlier, and failed runs are not being retried.
    PreviouslyFailed(String),
    /// Another process holds the folder's lock (it is training this run).
    Busy,
    Interrupted,
    Failed(String),
}

/// Holds the lock of a run folder for as long as it lives. The OS releases
/// it when the process dies, however it dies, so a killed run never leaves
/// a stale lock behind.
pub struct RunLock {
    _file: File,
}

pub fn try_lock(run_dir: &RunDir) -> Result<Option<RunLock>> {
    run_dir.create()?;
    let path = run_dir.file(results::LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            run_dir.remove_stale_temporaries();
            Ok(Some(RunLock { _file: file }))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Runs `config` into `run_dir` under the given policy.
pub fn run_one(
    config: &RunConfig,
    data: &Data,
    run_dir: &RunDir,
    backend: Backend,
    threads: usize,
    policy: Policy,
) -> Result<RunOutcome> {
    let Some(_lock) = try_lock(run_dir)? else {
        return Ok(RunOutcome::Busy);
    };
    // What is there already (read under the lock, so it is not changing).
    let previous = run_dir
        .read_summary()
        .ok()
        .filter(|s| s.config_hash == config.result_hash());
    let resume = match start_from(config, run_dir, previous.as_ref(), policy) {
        Start::Skip(outcome) => return Ok(outcome),
        Start::Scratch => None,
        Start::Resume => resumable_state(config, run_dir),
    };
    let rows = rows_to_keep(config, run_dir, resume.as_ref())?;
    run_dir.write_config(config)?;
    let started_at = previous.map(|s| s.started_at);
    let mut recorder = Recorder::new(config, run_dir, backend, threads, rows, started_at);
    if let Some(state) = &resume {
        recorder.summary.best_epoch = state.best_epoch;
        recorder.summary.best_val_acc = state.best_val_acc;
    }
    run_dir.write_metrics(&recorder.rows)?;
    recorder.refresh_summary();
    run_dir.write_summary(&recorder.summary)?;
    let mut engine = engine::open(backend, config);
    let mut outcome = train::fit(
        engine.as_mut(),
        config,
        data,
        &mut recorder,
        resume.as_ref(),
    );
    if matches!(outcome, Ok(Outcome::Completed)) {
        if let Err(e) = recorder.score_test(data) {
            outcome = Err(e.context("scoring the best epoch on the test split"));
        }
    }
    recorder.finish(&outcome)?;
    Ok(match outcome {
        Ok(Outcome::Completed) => RunOutcome::Completed {
            best_val_acc: recorder.summary.best_val_acc.unwrap_or(f64::NAN),
            seconds: recorder.started.elapsed().as_secs_f64(),
        },
        Ok(Outcome::Interrupted { .. }) => RunOutcome::Interrupted,
        Err(e) => RunOutcome::Failed(format!("{e:#}")),
    })
}

/// What to do with a run folder, from what it already holds.
enum Start {
    /// Nothing to train: done already, or failed and not retried.
    Skip(RunOutcome),
    /// Train from epoch 1.
    Scratch,
    /// Continue from the saved state, if it can be trusted.
    Resume,
}

fn start_from(
    config: &RunConfig,
    run_dir: &RunDir,
    previous: Option<&Summary>,
    policy: Policy,
) -> Start {
    // A completed run's best checkpoint must be readable to count as done;
    // training is deterministic, so a damaged one is repaired by training
    // the run again from scratch: the same bits.
    let best_file = run_dir.file(results::BEST_FILE);
    let best_damaged = previous
        .is_some_and(|s| s.status == Status::Completed && Weights::verify(&best_file).is_err());
    if best_damaged {
        eprintln!(
            "{} is damaged: training the run again from scratch (deterministic: the same bits)",
            best_file.display()
        );
    }
    if policy.force || best_damaged {
        return Start::Scratch;
    }
    match previous {
        // Completed with fewer epochs than now asked for: continue it.
        Some(s) if s.is_finished(config.train.epochs) => Start::Skip(RunOutcome::AlreadyCompleted),
        Some(s) if s.status == Status::Failed && !policy.retry_failed => Start::Skip(
            RunOutcome::PreviouslyFailed(s.reason.clone().unwrap_or_default()),
        ),
        Some(s) if s.status == Status::Failed => Start::Scratch,
        _ => Start::Resume,
    }
}

/// The rows of metrics.csv that the saved state covers, checked: exactly
/// epochs 1..=k. Starting from scratch, the old checkpoints go.
fn rows_to_keep(
    config: &RunConfig,
    run_dir: &RunDir,
    resume: Option<&TrainState>,
) -> Result<Vec<EpochMetrics>> {
    let Some(state) = resume else {
        for stale in [results::BEST_FILE, results::STATE_FILE] {
            let _ = std::fs::remove_file(run_dir.file(stale));
        }
        return Ok(Vec::new());
    };
    let path = run_dir.file(results::METRICS_FILE);
    let (rows, dropped) = metrics::recover_metrics(&path, state.epochs_done)?;
    if dropped > 0 {
        eprintln!(
            "{}: dropped {dropped} damaged or duplicated line(s); rows 1-{} kept",
            path.display(),
            state.epochs_done
        );
    }
    eprintln!(
        "resuming {} after epoch {} of {}",
        run_dir.path.display(),
        state.epochs_done,
        config.train.epochs
    );
    Ok(rows)
}

/// The saved state to resume from, if there is one that can be trusted:
/// it must load, and the best checkpoint it counts on must be readable.
/// Otherwise the run starts again from scratch, saying why.
fn resumable_state(config: &RunConfig, run_dir: &RunDir) -> Option<TrainState> {
    let path = run_dir.file(results::STATE_FILE);
    if !path.exists() {
        return None;
    }
    let problem = match TrainState::load(&path, &config.result_hash()) {
        Err(e) => format!("{e:#}"),
        Ok(state) => {
            let best = run_dir.file(results::BEST_FILE);
            match (state.best_epoch, Weights::load(&best)) {
                (Some(_), Err(e)) => format!("{e:#}"),
                _ => return Some(state),
            }
        }
    };
    eprintln!("cannot resume ({problem}): training the run again from scratch");
    None
}

/// Writes each epoch's results as they come, and draws the progress.
struct Recorder<'a> {
    config: &'a RunConfig,
    run_dir: &'a RunDir,
    rows: Vec<EpochMetrics>,
    summary: Summary,
    started: Instant,
    /// Wall seconds of earlier attempts (a resumed run adds them up).
    earlier_seconds: f64,
    bar: Option<ProgressBar>,
}

impl<'a> Recorder<'a> {
    fn new(
        config: &'a RunConfig,
        run_dir: &'a RunDir,
        backend: Backend,
        threads: usize,
        rows: Vec<EpochMetrics>,
        started_at: Option<String>,
    ) -> Self {
        let earlier_seconds = rows.iter().map(|r| r.epoch_seconds).sum();
        let summary = Summary {
            status: Status::Running,
            reason: None,
            name: config.name.clone(),
            run_id: run_dir.id(),
            best_epoch: None,
            best_val_acc: None,
            final_val_acc: None,
            validation: config.data.validation.describe(),
            test_loss: None,
            test_acc: None,
            test_images: 0,
            stopped_early_at: None,
            halted_after_rung: None,
            epochs_completed: 0,
            epochs_planned: config.train.epochs,
            started_at: started_at
                .filter(|_| !rows.is_empty())
                .unwrap_or_else(results::now_rfc3339),
            finished_at: None,
            wall_seconds: 0.0,
            mean_train_images_per_sec: None,
            peak_rss_mb: None,
            config_hash: config.result_hash(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            cpu: results::cpu_model(),
            device: backend.describe(),
            threads,
            runner_version: env!("CARGO_PKG_VERSION").to_string(),
            dfdx_version: engine::DFDX_VERSION.to_string(),
            git_commit: option_env!("BUILT_FROM_GIT_COMMIT").map(String::from),
        };
        Recorder {
            config,
            run_dir,
            rows,
            summary,
            started: Instant::now(),
            earlier_seconds,
            bar: None,
        }
    }

    fn refresh_summary(&mut self) {
        let s = &mut self.summary;
        s.wall_seconds = self.earlier_seconds + self.started.elapsed().as_secs_f64();
        s.peak_rss_mb = results::peak_rss_mb();
        s.epochs_completed = self.rows.len();
        s.stopped_early_at = self
            .config
            .train
            .early_stopping
            .as_ref()
            .and_then(|es| es.stop_epoch(&self.rows));
        s.final_val_acc = self.rows.last().map(|r| r.val_acc);
        if !self.rows.is_empty() {
            let total: f64 = self.rows.iter().map(|r| r.train_images_per_sec).sum();
            s.mean_train_images_per_sec = Some(total / self.rows.len() as f64);
        }
    }

    /// Scores the best epoch's weights once on the test split, when it was
    /// not the validation split (then `best_val_acc` is its score already).
    fn score_test(&mut self, data: &Data) -> Result<()> {
        self.summary.test_images = data.test.len();
        if data.held_out.is_none() {
            return Ok(());
        }
        let best = Weights::load(&self.run_dir.file(results::BEST_FILE))?;
        let (loss, acc) = crate::inference::evaluate(self.config, &best, &data.test)?;
        self.summary.test_loss = Some(loss);
        self.summary.test_acc = Some(acc);
        Ok(())
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
        self.run_dir.write_summary(&self.summary)
    }
}

impl Observer for Recorder<'_> {
    fn stop_early(&self) -> bool {
        self.summary.stopped_early_at.is_some()
    }

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
        if done.is_multiple_of(25) || done == total {
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss:.4} acc {acc:.4}"));
        }
    }

    fn epoch_end(
        &mut self,
        m: &EpochMetrics,
        best: Option<&Weights>,
        state: &TrainState,
    ) -> Result<()> {
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
        // Order matters for a kill at any point: the best weights, then the
        // rows, then the state that says this epoch is done. A rerun resumes
        // from the state and drops rows past it, so nothing is lost or doubled.
        if let Some(weights) = best {
            // What `eval --checkpoint` needs to score it as the right model.
            let mut meta = self.config.model.to_metadata();
            meta.insert("epoch".to_string(), m.epoch.to_string());
            meta.insert("val_acc".to_string(), m.val_acc.to_string());
            meta.insert("config_hash".to_string(), self.summary.config_hash.clone());
            weights.save(&self.run_dir.file(results::BEST_FILE), &meta)?;
            self.summary.best_epoch = Some(m.epoch);
            self.summary.best_val_acc = Some(m.val_acc);
        }
        self.rows.push(m.clone());
        self.run_dir.write_metrics(&self.rows)?;
        if self.config.train.tensorboard {
            let dir = self.run_dir.file(tensorboard::RUN_SUBDIR);
            tensorboard::write(&dir, &self.rows)?;
        }
        state.save(
            &self.run_dir.file(results::STATE_FILE),
            &self.summary.config_hash,
        )?;
        self.refresh_summary();
        self.run_dir.write_summary(&self.summary)
    }
}
