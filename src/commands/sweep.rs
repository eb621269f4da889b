//! `runner sweep GRID`: see `crate::sweep`.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::SweepArgs;
use crate::data::{self, Data};
use crate::engine;
use crate::execute::{run_one, Policy, RunOutcome};
use crate::report::{self, live};
use crate::results::Status;
use crate::sweep::grid::Grid;
use crate::sweep::halving;
use crate::sweep::search::Halving;
use crate::sweep::shard::Shard;
use crate::sweep::{self, Plan, PlannedRun, PointStatus};
use crate::train::INTERRUPTED;
use crate::{exit, human};
use std::sync::atomic::Ordering;

pub fn execute(args: &SweepArgs) -> Result<i32> {
    let grid = Grid::load(&args.grid)?;
    let plan = sweep::plan(&grid, &args.overrides.sets, &args.results_dir)?;
    let runs = &plan.runs;
    let shard = match &args.shard {
        Some(text) => Shard::parse(text)?,
        None => Shard::from_env(|k| std::env::var(k).ok())?.unwrap_or(Shard::ALL),
    };
    let mine: Vec<&PlannedRun> = runs
        .iter()
        .enumerate()
        .filter(|(k, _)| shard.owns(*k))
        .map(|(_, r)| r)
        .collect();
    let slice = if shard == Shard::ALL {
        String::new()
    } else {
        format!(" (shard {}/{})", shard.index, shard.count)
    };
    if args.count {
        println!("{}", mine.len());
        return Ok(exit::SUCCESS);
    }
    if args.list {
        println!(
            "# {}: {} runs{slice} -> {}",
            grid.name,
            mine.len(),
            args.results_dir.join(&grid.name).display()
        );
        println!("# numbered as --shard I/N counts: run k belongs to shard k mod N");
        print_collapsed(&plan);
        if let (Some(h), Some(first)) = (&grid.halving, runs.first()) {
            let epochs = first.config.train.epochs;
            h.check(epochs)?;
            let (rungs, spent, full) = halving::budget(runs.len(), epochs, h);
            let rungs: Vec<String> = rungs
                .iter()
                .enumerate()
                .map(|(i, (e, n))| format!("rung {}: {n} runs to {e} epochs", i + 1))
                .collect();
            println!(
                "# successive halving (eta {}, by {}): {}; {spent} epochs in all, {:.0}% of the full grid's {full}",
                h.eta,
                h.metric,
                rungs.join(", "),
                100.0 * spent as f64 / full.max(1) as f64
            );
        }
        let width = mine.iter().map(|r| r.run_id().len()).max().unwrap_or(0);
        for r in &mine {
            println!(
                "{:>4}  {:<11}  {:<width$}  {}",
                r.index,
                r.status(),
                r.run_id(),
                r.point.describe()
            );
        }
        return Ok(exit::SUCCESS);
    }
    print_collapsed(&plan);
    let live = args.report.as_ref().map(|out| {
        let root = args.results_dir.join(&grid.name);
        let options = report::Options {
            group_by: Some(Vec::new()),
            ..Default::default()
        };
        eprintln!("keeping {} up to date", out.join("report.html").display());
        live::Background::start(live::Page::new(root, out.clone(), options))
    });
    let code = train(args, &grid, &plan, shard, &mine, &slice);
    if let Some(live) = live {
        live.finish()?;
    }
    code
}

/// Trains this process's share of the sweep: through worker processes,
/// rung by rung (halving), or point after point.
fn train(
    args: &SweepArgs,
    grid: &Grid,
    plan: &Plan,
    shard: Shard,
    mine: &[&PlannedRun],
    slice: &str,
) -> Result<i32> {
    if args.jobs > 1 {
        return super::jobs::run_workers(args, &grid.name, mine);
    }
    let policy = Policy {
        force: false,
        retry_failed: args.retry_failed,
    };
    let threads = super::init_threads(mine.first().map_or(0, |r| r.config.train.threads));
    let mut worker = Worker {
        policy,
        threads,
        datasets: HashMap::new(),
        trained_seconds: Vec::new(),
        failed_early: 0,
    };
    let started = Instant::now();
    if let Some(halving) = &grid.halving {
        return run_halving(args, grid, plan, shard, halving, &mut worker);
    }
    announce(grid, mine, slice, args.retry_failed);
    if let Some(code) = worker.train_all(mine, grid, plan, &args.results_dir) {
        return Ok(code);
    }
    write_record(grid, plan, &args.results_dir);
    let mut counts: HashMap<PointStatus, usize> = HashMap::new();
    for r in mine {
        *counts.entry(r.status()).or_default() += 1;
    }
    let failed = counts.get(&PointStatus::FAILED).copied().unwrap_or(0);
    let mut parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    parts.sort();
    println!(
        "{}: {} runs{slice}: {} ({} this time)",
        grid.name,
        mine.len(),
        parts.join(", "),
        human::duration(started.elapsed().as_secs_f64())
    );
    if worker.failed_early > 0 {
        println!(
            "{} point(s) failed before training (above)",
            worker.failed_early
        );
    }
    Ok(if failed + worker.failed_early > 0 {
        exit::FAILURE
    } else {
        exit::SUCCESS
    })
}

/// Trains runs one after another in this process.
struct Worker {
    policy: Policy,
    threads: usize,
    /// Loaded once per distinct data config.
    datasets: HashMap<String, Data>,
    trained_seconds: Vec<f64>,
    /// Points that failed before training (no summary says so).
    failed_early: usize,
}

impl Worker {
    /// Trains each run in turn, saying what it does; Some(exit code) when
    /// the user interrupted.
    fn train_all(
        &mut self,
        runs: &[&PlannedRun],
        grid: &Grid,
        plan: &Plan,
        results_dir: &std::path::Path,
    ) -> Option<i32> {
        for (k, run) in runs.iter().enumerate() {
            let eta = if self.trained_seconds.is_empty() {
                String::new()
            } else {
                let mean =
                    self.trained_seconds.iter().sum::<f64>() / self.trained_seconds.len() as f64;
                format!(", ETA {}", human::duration(mean * (runs.len() - k) as f64))
            };
            println!(
                "[{}/{}{eta}] {} ({})",
                k + 1,
                runs.len(),
                run.run_id(),
                run.point.describe()
            );
            // Finished runs need no data: say so without loading it. (run_one
            // checks again under the run's lock before it trains anything.)
            match run.status() {
                PointStatus::COMPLETED => {
                    println!("  skipped: already completed");
                    continue;
                }
                PointStatus::FAILED if !self.policy.retry_failed => {
                    let reason = run
                        .run_dir
                        .read_summary()
                        .ok()
                        .and_then(|s| s.reason)
                        .unwrap_or_default();
                    println!("  skipped: failed earlier ({reason}); --retry-failed reruns it");
                    continue;
                }
                _ => {}
            }
            // An error before training (data, device, the run folder) fails
            // this point; the sweep goes on and exits 1 at the end.
            let outcome = match train_point(run, &mut self.datasets, self.threads, self.policy) {
                Ok(outcome) => outcome,
                Err(e) => {
                    self.failed_early += 1;
                    RunOutcome::Failed(format!("before training: {e:#}"))
                }
            };
            match &outcome {
                RunOutcome::Completed {
                    best_val_acc,
                    seconds,
                } => {
                    println!(
                        "  completed: best val acc {best_val_acc:.4} in {}",
                        human::duration(*seconds)
                    );
                    self.trained_seconds.push(*seconds);
                }
                RunOutcome::AlreadyCompleted => println!("  skipped: already completed"),
                RunOutcome::Busy => println!("  skipped: another runner process is training it"),
                RunOutcome::PreviouslyFailed(reason) => {
                    println!("  skipped: failed earlier ({reason}); --retry-failed reruns it");
                }
                RunOutcome::Failed(reason) => println!("  FAILED: {reason}"),
                RunOutcome::Interrupted => {}
            }
            write_record(grid, plan, results_dir);
            if outcome == RunOutcome::Interrupted {
                eprintln!("interrupted; run the sweep again to resume where it stopped");
                return Some(exit::INTERRUPTED);
            }
        }
        None
    }
}

/// Successive halving: train this process's share of the current rung,
/// then whatever of it nobody else is training, then wait for the rest;
/// promotions follow from the finished runs alone (see `sweep::halving`).
fn run_halving(
    args: &SweepArgs,
    grid: &Grid,
    plan: &Plan,
    shard: Shard,
    halving: &Halving,
    worker: &mut Worker,
) -> Result<i32> {
    let epochs = plan.runs.first().map_or(1, |r| r.config.train.epochs);
    halving.check(epochs)?;
    let mut waiting_said = false;
    let mut last_rung = None;
    loop {
        let pos = halving::position(&plan.runs, epochs, halving)?;
        for &(k, rung) in &pos.halted {
            mark_halted(&plan.runs[k], rung);
        }
        let rung_runs: Vec<PlannedRun> = pos
            .members
            .iter()
            .map(|&k| with_budget(&plan.runs[k], pos.budget))
            .collect();
        if last_rung != Some(pos.rung) {
            println!(
                "rung {} of {}: {} runs at {} epochs",
                pos.rung + 1,
                halving.rungs(epochs).len(),
                rung_runs.len(),
                pos.budget
            );
            last_rung = Some(pos.rung);
        }
        let mine: Vec<&PlannedRun> = rung_runs
            .iter()
            .enumerate()
            .filter(|(j, _)| shard.owns(*j))
            .map(|(_, r)| r)
            .collect();
        let unfinished = |runs: &[PlannedRun]| -> Vec<usize> {
            (0..runs.len())
                .filter(|&j| {
                    halving::standing(&runs[j], pos.budget, halving.metric)
                        == halving::Standing::Unfinished
                })
                .collect()
        };
        if let Some(code) = worker.train_all(&mine, grid, plan, &args.results_dir) {
            return Ok(code);
        }
        // Then any run of the rung that nobody is training (a peer that died
        // or has not started): the lock keeps it from being trained twice.
        let free: Vec<&PlannedRun> = unfinished(&rung_runs)
            .into_iter()
            .map(|j| &rung_runs[j])
            .filter(|r| !is_locked(r))
            .collect();
        if !free.is_empty() {
            if let Some(code) = worker.train_all(&free, grid, plan, &args.results_dir) {
                return Ok(code);
            }
        }
        let left = unfinished(&rung_runs);
        if left.is_empty() {
            if pos.rung + 1 == halving.rungs(epochs).len() {
                break;
            }
            waiting_said = false;
            continue;
        }
        if left.iter().all(|&j| !is_locked(&rung_runs[j])) {
            anyhow::bail!(
                "{} run(s) of rung {} could not be trained (see above), so halving cannot go on: {}",
                left.len(),
                pos.rung + 1,
                left.iter().map(|&j| rung_runs[j].run_id()).collect::<Vec<_>>().join(", ")
            );
        }
        if args.no_wait {
            println!(
                "rung {} waits for {} run(s) that other processes are training; exiting with {} (--no-wait)",
                pos.rung + 1,
                left.len(),
                exit::WAIT
            );
            return Ok(exit::WAIT);
        }
        if !waiting_said {
            println!(
                "waiting for {} run(s) of rung {} that other processes are training: {}",
                left.len(),
                pos.rung + 1,
                left.iter()
                    .map(|&j| rung_runs[j].run_id())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            waiting_said = true;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Ok(exit::INTERRUPTED);
        }
    }
    write_record(grid, plan, &args.results_dir);
    let final_pos = halving::position(&plan.runs, epochs, halving)?;
    let best = final_pos
        .members
        .iter()
        .map(|&k| (k, halving::standing(&plan.runs[k], epochs, halving.metric)))
        .filter_map(|(k, s)| match s {
            halving::Standing::Finished(v) => Some((k, v)),
            halving::Standing::Unfinished => None,
        })
        .min_by(|a, b| halving.metric.best_first(a.1, b.1));
    if let Some((k, v)) = best {
        println!(
            "{}: halving done; best {} {v:.4}: {}",
            grid.name,
            halving.metric,
            plan.runs[k].run_id()
        );
    }
    Ok(if worker.failed_early > 0 {
        exit::FAILURE
    } else {
        exit::SUCCESS
    })
}

/// The run with `budget` epochs (epochs are a budget: same identity).
fn with_budget(run: &PlannedRun, budget: usize) -> PlannedRun {
    let mut run = run.clone();
    run.config.train.epochs = budget;
    run
}

/// Whether another process holds the run's lock now.
fn is_locked(run: &PlannedRun) -> bool {
    std::fs::File::open(run.run_dir.file(crate::results::LOCK_FILE))
        .is_ok_and(|f| f.try_lock().is_err())
}

/// Records in the run's summary that halving stopped it after `rung`
/// (0-based), so reports say so; every process decides the same.
fn mark_halted(run: &PlannedRun, rung: usize) {
    let Ok(Some(_lock)) = crate::execute::try_lock(&run.run_dir) else {
        return;
    };
    if let Ok(mut summary) = run.run_dir.read_summary() {
        if summary.halted_after_rung != Some(rung + 1) {
            summary.halted_after_rung = Some(rung + 1);
            let _ = run.run_dir.write_summary(&summary);
        }
    }
}

/// Loads the point's data (once per distinct data config) and trains it.
fn train_point(
    run: &PlannedRun,
    datasets: &mut HashMap<String, Data>,
    threads: usize,
    policy: Policy,
) -> Result<RunOutcome> {
    let key = serde_json::to_string(&run.config.data)?;
    if !datasets.contains_key(&key) {
        let data = data::load(&run.config.data).context("loading the dataset")?;
        datasets.insert(key.clone(), data);
    }
    let backend = engine::resolve(run.config.train.device)?;
    run_one(
        &run.config,
        &datasets[&key],
        &run.run_dir,
        backend,
        threads,
        policy,
    )
}

/// sweep.json is a convenience copy of what the run folders say: failing
/// to write it (a read-only folder after every run was done) is a warning.
fn write_record(grid: &Grid, plan: &Plan, results_dir: &std::path::Path) {
    if let Err(e) = sweep::write_record(grid, plan, results_dir) {
        eprintln!("warning: sweep.json not updated: {e:#}");
    }
}

/// Says which grid points resolve to the same config as an earlier one.
fn print_collapsed(plan: &Plan) {
    for c in &plan.collapsed {
        println!(
            "# point {} ({}) resolves to the same config as point {}: trained once",
            c.point, c.describe, c.same_as
        );
    }
}

/// Says up front what will be skipped, resumed, retried and trained.
fn announce(grid: &Grid, runs: &[&PlannedRun], slice: &str, retry_failed: bool) {
    let mut by_status: HashMap<PointStatus, usize> = HashMap::new();
    for r in runs {
        *by_status.entry(r.status()).or_default() += 1;
    }
    let n = |s: PointStatus| by_status.get(&s).copied().unwrap_or(0);
    let failed = if retry_failed { "retried" } else { "skipped" };
    println!(
        "{}: {} runs{slice}: {} completed (skipped), {} interrupted, running, short of epochs or damaged (resumed), {} failed ({failed}), {} to train",
        grid.name,
        runs.len(),
        n(PointStatus::COMPLETED),
        n(PointStatus::Run(Status::Interrupted))
            + n(PointStatus::Run(Status::Running))
            + n(PointStatus::ToExtend)
            + n(PointStatus::Damaged),
        n(PointStatus::FAILED),
        n(PointStatus::Pending)
    );
}
