//! `runner sweep GRID`: see `crate::sweep`.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::SweepArgs;
use crate::data::{self, Data};
use crate::device;
use crate::execute::{run_one, Policy, RunOutcome};
use crate::sweep::grid::Grid;
use crate::sweep::shard::Shard;
use crate::sweep::{self, Plan, PlannedRun};

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
        return Ok(0);
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
        return Ok(0);
    }
    print_collapsed(&plan);
    announce(&grid, &mine, &slice, args.retry_failed);
    let policy = Policy {
        force: false,
        retry_failed: args.retry_failed,
    };
    let threads = super::init_threads(mine.first().map_or(0, |r| r.config.train.threads));
    let mut datasets: HashMap<String, Data> = HashMap::new();
    let started = Instant::now();
    let mut trained_seconds = Vec::new();
    let mut failed = 0;
    let mut failed_early = 0;
    for (k, run) in mine.iter().enumerate() {
        let remaining = mine.len() - k;
        let eta = if trained_seconds.is_empty() {
            String::new()
        } else {
            let mean = trained_seconds.iter().sum::<f64>() / trained_seconds.len() as f64;
            format!(", ETA {}", human(mean * remaining as f64))
        };
        println!(
            "[{}/{}{eta}] {} ({})",
            k + 1,
            mine.len(),
            run.run_id(),
            run.point.describe()
        );
        // Finished runs need no data: say so without loading it. (run_one
        // checks again under the run's lock before it trains anything.)
        match run.status().as_str() {
            "completed" => {
                println!("  skipped: already completed");
                continue;
            }
            "failed" if !args.retry_failed => {
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
        let outcome = match train_point(run, &mut datasets, threads, policy) {
            Ok(outcome) => outcome,
            Err(e) => {
                failed_early += 1;
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
                    human(*seconds)
                );
                trained_seconds.push(*seconds);
            }
            RunOutcome::AlreadyCompleted => println!("  skipped: already completed"),
            RunOutcome::Busy => println!("  skipped: another runner process is training it"),
            RunOutcome::PreviouslyFailed(reason) => {
                println!("  skipped: failed earlier ({reason}); --retry-failed reruns it");
            }
            RunOutcome::Failed(reason) => println!("  FAILED: {reason}"),
            RunOutcome::Interrupted => {}
        }
        write_record(&grid, &plan, &args.results_dir);
        if outcome == RunOutcome::Interrupted {
            eprintln!("interrupted; run the sweep again to resume where it stopped");
            return Ok(super::run::EXIT_INTERRUPTED);
        }
    }
    write_record(&grid, &plan, &args.results_dir);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &mine {
        let status = r.status();
        if status == "failed" {
            failed += 1;
        }
        *counts.entry(status).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    parts.sort();
    println!(
        "{}: {} runs{slice}: {} ({} this time)",
        grid.name,
        mine.len(),
        parts.join(", "),
        human(started.elapsed().as_secs_f64())
    );
    if failed_early > 0 {
        println!("{failed_early} point(s) failed before training (above)");
    }
    Ok(if failed + failed_early > 0 { 1 } else { 0 })
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
    let backend = device::resolve(run.config.train.device)?;
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
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for r in runs {
        *by_status.entry(r.status()).or_default() += 1;
    }
    let n = |s: &str| by_status.get(s).copied().unwrap_or(0);
    let failed = if retry_failed { "retried" } else { "skipped" };
    println!(
        "{}: {} runs{slice}: {} completed (skipped), {} interrupted, running, short of epochs or damaged (resumed), {} failed ({failed}), {} to train",
        grid.name,
        runs.len(),
        n("completed"),
        n("interrupted") + n("running") + n(sweep::EXTEND) + n(sweep::DAMAGED),
        n("failed"),
        n("pending")
    );
}

fn human(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.1}s")
    } else if seconds < 5400.0 {
        format!("{:.1}min", seconds / 60.0)
    } else {
        format!("{:.1}h", seconds / 3600.0)
    }
}
