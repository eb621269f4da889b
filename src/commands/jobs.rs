//! `runner sweep --jobs N`: N worker processes of this same binary, each a
//! plain `runner sweep` of the same grid. They share the work through the
//! run folders' locks (no run is trained twice, as with processes started
//! by hand), so this module only starts them, shows one progress line
//! from the folders, passes Ctrl-C on, and combines their exit codes.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::SweepArgs;
use crate::results::Status;
use crate::sweep::{PlannedRun, PointStatus};
use crate::train::INTERRUPTED;
use crate::{exit, human};

/// Starts the workers and waits for them; returns the exit code.
pub fn run_workers(args: &SweepArgs, name: &str, mine: &[&PlannedRun]) -> Result<i32> {
    let jobs = args.jobs as usize;
    let logs = args.results_dir.join(name);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let threads = match mine.first().map(|r| r.config.train.threads) {
        Some(0) | None => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Some((cores / jobs).max(1))
        }
        Some(_) => None, // set by the user: kept
    };
    let mut children: Vec<Child> = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let log_path = logs.join(format!("worker-{i}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("sweep").args(worker_args(args, threads));
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        children.push(cmd.spawn().context("starting a worker process")?);
    }
    println!(
        "{name}: {} runs, {jobs} worker processes{} (their output: {}/worker-*.log)",
        mine.len(),
        threads.map_or(String::new(), |t| format!(" of {t} thread(s) each")),
        logs.display()
    );
    let started = Instant::now();
    let mut last = String::new();
    let mut codes = vec![None; jobs];
    let mut forwarded = false;
    while codes.iter().any(Option::is_none) {
        std::thread::sleep(Duration::from_millis(500));
        if INTERRUPTED.load(Ordering::SeqCst) && !forwarded {
            for child in &children {
                // SAFETY: signalling our own child process by its pid.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            }
            forwarded = true;
        }
        for (code, child) in codes.iter_mut().zip(children.iter_mut()) {
            if code.is_none() {
                if let Some(status) = child.try_wait()? {
                    *code = Some(status.code().unwrap_or(1));
                }
            }
        }
        let line = progress(mine, started.elapsed().as_secs_f64());
        if line != last {
            println!("{line}");
            last = line;
        }
    }
    let codes: Vec<i32> = codes.into_iter().flatten().collect();
    Ok(if codes.contains(&exit::INTERRUPTED) {
        exit::INTERRUPTED
    } else if let Some(&bad) = codes.iter().find(|&&c| c != 0) {
        bad
    } else {
        exit::SUCCESS
    })
}

/// What each worker runs: this sweep, as one process (no --jobs, no
/// --report: the parent keeps the page), with its share of the threads.
fn worker_args(args: &SweepArgs, threads: Option<usize>) -> Vec<std::ffi::OsString> {
    let mut worker = SweepArgs {
        jobs: 1,
        report: None,
        ..args.clone()
    };
    if let Some(t) = threads {
        worker.overrides.sets.push(format!("train.threads={t}"));
    }
    worker.to_args()
}

/// "3/8 completed, 2 running, 0 failed, ETA 1.2min", from the run folders.
fn progress(runs: &[&PlannedRun], elapsed: f64) -> String {
    let (mut done, mut running, mut failed) = (0, 0, 0);
    for r in runs {
        match r.status() {
            PointStatus::COMPLETED => done += 1,
            PointStatus::Run(Status::Running) => running += 1,
            PointStatus::FAILED => failed += 1,
            _ => {}
        }
    }
    let left = runs.len() - done - failed;
    let eta = if done > 0 && left > 0 {
        format!(
            ", ETA {}",
            human::duration(elapsed / done as f64 * left as f64)
        )
    } else {
        String::new()
    };
    format!(
        "{done}/{} completed, {running} running, {failed} failed{eta}",
        runs.len()
    )
}
