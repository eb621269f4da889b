//! How a sweep's runs are scheduled: one small trait, one file per method.
//!
//! A `Schedule` decides from the run folders alone (never from which
//! process finished first), so one process, `--jobs N`, `--shard I/N`, a
//! Slurm array and a rerun after `kill -9` reach the same decisions.
//! `commands::sweep` only drives it: train this process's share of what
//! `next` says, then (for a stage that must finish before the next
//! decision) whatever nobody else is training, wait for the rest, ask
//! again.
//!
//! A new method is one file here implementing `Schedule`, and one arm in
//! `for_grid`.

mod all;
pub mod halving;
mod hyperband;
mod tpe;

use std::path::Path;

use anyhow::Result;

use super::grid::Grid;
use super::PlannedRun;
use crate::results::Status;

/// What to train now, decided from the run folders.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The stage (a rung, a batch): a new number means a new decision.
    pub stage: usize,
    /// What a stage is called in messages: "rung", "batch".
    pub noun: &'static str,
    /// Said when a stage starts ("rung 2 of 3: 9 runs at 3 epochs").
    pub header: Option<String>,
    /// The runs of this stage, each with its epoch budget.
    pub runs: Vec<PlannedRun>,
    /// Every run of the stage must be finished before the next decision:
    /// a process then also trains the stage's runs nobody is training,
    /// and waits for the others.
    pub barrier: bool,
    /// No stage comes after this one.
    pub last: bool,
    /// Runs the schedule stopped, with the (0-based) stage that stopped
    /// them: their summaries record it, so reports say so.
    pub halted: Vec<(usize, usize)>,
}

pub trait Schedule {
    /// Refuses settings the runs cannot follow, before anything trains.
    fn check(&self, runs: &[PlannedRun]) -> Result<()>;
    /// A line for `sweep --list`: what the method will spend, if it says.
    fn outline(&self, runs: &[PlannedRun]) -> Option<String>;
    /// Where the sweep stands now, from the run folders alone.
    fn next(&self, runs: &[PlannedRun]) -> Result<Decision>;
    /// Every run decided so far: the grid's planned runs, unless the
    /// method decides its runs as it learns (TPE).
    fn runs(&self, planned: &[PlannedRun]) -> Result<Vec<PlannedRun>> {
        Ok(planned.to_vec())
    }
    /// Once done: the best run's id and the closing words ("halving done;
    /// best val_acc 0.9871"), if the method ranks runs.
    fn best(&self, runs: &[PlannedRun]) -> Result<Option<(String, String)>>;
}

/// The grid file's method: TPE, Hyperband or successive halving when
/// `[search]` asks for it, else every point to its full budget (a grid or a random
/// search). `sets` and `results_root` resolve the runs a method decides.
pub fn for_grid(grid: &Grid, sets: &[String], results_root: &Path) -> Box<dyn Schedule> {
    match (&grid.tpe, &grid.halving) {
        (Some(t), _) => Box::new(tpe::TreeParzen {
            tpe: t.clone(),
            grid: grid.clone(),
            sets: sets.to_vec(),
            results_root: results_root.to_path_buf(),
        }),
        (None, Some(h)) if h.brackets > 1 => Box::new(hyperband::Hyperband(h.clone())),
        (None, Some(h)) => Box::new(halving::SuccessiveHalving(h.clone())),
        (None, None) => Box::new(all::Everything),
    }
}

/// Trained to `budget` epochs, or as far as it will go (stopped early,
/// or failed): nothing more to do at this budget.
pub fn finished_at(run: &PlannedRun, budget: usize) -> bool {
    let Ok(summary) = run.run_dir.read_summary() else {
        return false;
    };
    if summary.config_hash != run.config.result_hash() {
        return false;
    }
    match summary.status {
        Status::Failed => true,
        Status::Completed => {
            summary.epochs_completed >= budget || summary.stopped_early_at.is_some()
        }
        _ => false,
    }
}

/// The run with `budget` epochs (epochs are a budget: same identity).
pub fn with_budget(run: &PlannedRun, budget: usize) -> PlannedRun {
    let mut run = run.clone();
    run.config.train.epochs = budget;
    run
}
