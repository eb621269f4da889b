//! `runner sweep GRID`: see `crate::sweep`.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::SweepArgs;
use crate::data::{self, Data};
use crate::engine;
use crate::report::{self, live};
use crate::results::Status;
use crate::sweep::grid::Grid;
use crate::sweep::schedule::{self, finished_at, Decision, Schedule};
use crate::sweep::shard::Shard;
use crate::sweep::{self, Plan, PlannedRun, PointStatus};
use crate::train::INTERRUPTED;
use crate::training_run::{run_one, Policy, RunOutcome};
use crate::{exit, human};
use std::sync::atomic::Ordering;

pub fn execute(args: &SweepArgs) -> Result<i32> {
    let grid = Grid::load(&args.grid)?;
    let plan = sweep::plan(&grid, &args.overrides.sets, &args.results_dir)?;
    let schedule = schedule::for_grid(&grid, &args.overrides.sets, &args.results_dir);
    // What is decided so far (a TPE search decides its trials as it learns).
    let known = Plan {
        runs: schedule.runs(&plan.runs)?,
        collapsed: plan.collapsed.clone(),
    };
    let runs = &known.runs;
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
        schedule.check(&plan.runs)?;
        if let Some(outline) = schedule.outline(&plan.runs) {
            println!("# {outline}");
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
/// or in this process as the grid's schedule says.
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
    let mut trainer = Sequential {
        policy,
        threads,
        datasets: HashMap::new(),
        trained_seconds: Vec::new(),
        failed_early: 0,
    };
    let schedule = schedule::for_grid(grid, &args.overrides.sets, &args.results_dir);
    drive(
        args,
        grid,
        plan,
        shard,
        schedule.as_ref(),
        &mut trainer,
        slice,
    )
}

/// Asks the schedule what to train, trains this process's share (for a
/// stage with a barrier: then what nobody trains, then waits for the
/// rest), and asks again, until the last stage is done.
fn drive(
    args: &SweepArgs,
    grid: &Grid,
    plan: &Plan,
    shard: Shard,
    schedule: &dyn Schedule,
    trainer: &mut Sequential,
    slice: &str,
) -> Result<i32> {
    schedule.check(&plan.runs)?;
    let started = Instant::now();
    let (mut stage, mut waited) = (None, false);
    loop {
        let decision = schedule.next(&plan.runs)?;
        for &(k, at) in &decision.halted {
            mark_halted(&plan.runs[k], at);
        }
        // The runs decided so far, for sweep.json.
        let known = Plan {
            runs: schedule.runs(&plan.runs)?,
            collapsed: plan.collapsed.clone(),
        };
        if stage != Some(decision.stage) {
            if let Some(header) = &decision.header {
                println!("{header}");
            }
            (stage, waited) = (Some(decision.stage), false);
        }
        // After a wait, what this process finished needs no second word.
        let mine: Vec<&PlannedRun> = decision
            .runs
            .iter()
            .enumerate()
            .filter(|(j, r)| shard.owns(*j) && !(waited && finished_at(r, r.config.train.epochs)))
            .map(|(_, r)| r)
            .collect();
        if !decision.barrier {
            announce(grid, &mine, slice, args.retry_failed);
        }
        if let Some(code) = trainer.train_all(&mine, grid, &known, &args.results_dir) {
            return Ok(code);
        }
        if !decision.barrier {
            write_record(grid, &known, &args.results_dir);
            return Ok(finish_without_barrier(grid, &mine, slice, started, trainer));
        }
        match finish_stage(args, &decision, grid, &known, trainer, waited)? {
            StageEnd::Done if decision.last => break,
            StageEnd::Done => {}
            StageEnd::Waited => waited = true,
            StageEnd::Exit(code) => return Ok(code),
        }
    }
    let known = Plan {
        runs: schedule.runs(&plan.runs)?,
        collapsed: plan.collapsed.clone(),
    };
    write_record(grid, &known, &args.results_dir);
    if let Some((id, words)) = schedule.best(&plan.runs)? {
        println!("{}: {words}: {id}", grid.name);
    }
    Ok(if trainer.failed_early > 0 {
        exit::FAILURE
    } else {
        exit::SUCCESS
    })
}

/// How a stage with a barrier stands once this process's share is done.
enum StageEnd {
    /// Every run of it is finished: decide again.
    Done,
    /// Others are still training some: decide again (a second later).
    Waited,
    /// Exit with this code (`--no-wait`, Ctrl-C).
    Exit(i32),
}

/// Trains the stage's unfinished runs that nobody is training (a peer that
/// died or has not started: the lock keeps them from being trained
/// twice), then says what is left and waits a second for it.
fn finish_stage(
    args: &SweepArgs,
    decision: &Decision,
    grid: &Grid,
    plan: &Plan,
    trainer: &mut Sequential,
    waited: bool,
) -> Result<StageEnd> {
    let runs = &decision.runs;
    let unfinished = || -> Vec<&PlannedRun> {
        runs.iter()
            .filter(|r| !finished_at(r, r.config.train.epochs))
            .collect()
    };
    let free: Vec<&PlannedRun> = unfinished().into_iter().filter(|r| !is_locked(r)).collect();
    if !free.is_empty() {
        if let Some(code) = trainer.train_all(&free, grid, plan, &args.results_dir) {
            return Ok(StageEnd::Exit(code));
        }
    }
    let left = unfinished();
    if left.is_empty() {
        return Ok(StageEnd::Done);
    }
    let ids = || {
        left.iter()
            .map(|r| r.run_id())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let stage = format!("{} {}", decision.noun, decision.stage + 1);
    if left.iter().all(|r| !is_locked(r)) {
        anyhow::bail!(
            "{} run(s) of {stage} could not be trained (see above), so the search cannot go on: {}",
            left.len(),
            ids()
        );
    }
    if args.no_wait {
        println!(
            "{stage} waits for {} run(s) that other processes are training; exiting with {} (--no-wait)",
            left.len(),
            exit::WAIT
        );
        return Ok(StageEnd::Exit(exit::WAIT));
    }
    if !waited {
        println!(
            "waiting for {} run(s) of {stage} that other processes are training: {}",
            left.len(),
            ids()
        );
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Ok(StageEnd::Exit(exit::INTERRUPTED));
    }
    Ok(StageEnd::Waited)
}

/// The closing line of a sweep without stages: how its runs stand.
fn finish_without_barrier(
    grid: &Grid,
    mine: &[&PlannedRun],
    slice: &str,
    started: Instant,
    trainer: &Sequential,
) -> i32 {
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
    if trainer.failed_early > 0 {
        println!(
            "{} point(s) failed before training (above)",
            trainer.failed_early
        );
    }
    if failed + trainer.failed_early > 0 {
        exit::FAILURE
    } else {
        exit::SUCCESS
    }
}

/// Trains runs one after another in this process (the `--jobs` workers
/// are processes, each running one of these).
struct Sequential {
    policy: Policy,
    threads: usize,
    /// Loaded once per distinct data config.
    datasets: HashMap<String, Data>,
    trained_seconds: Vec<f64>,
    /// Points that failed before training (no summary says so).
    failed_early: usize,
}

impl Sequential {
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

/// Whether another process holds the run's lock now.
fn is_locked(run: &PlannedRun) -> bool {
    std::fs::File::open(run.run_dir.file(crate::results::LOCK_FILE))
        .is_ok_and(|f| f.try_lock().is_err())
}

/// Records in the run's summary that halving stopped it after `rung`
/// (0-based), so reports say so; every process decides the same.
fn mark_halted(run: &PlannedRun, rung: usize) {
    let Ok(Some(_lock)) = crate::training_run::try_lock(&run.run_dir) else {
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
