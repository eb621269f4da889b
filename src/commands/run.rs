//! `runner run SPEC`: train one configuration and leave a run folder behind.

use anyhow::{bail, Context, Result};

use crate::cli::RunArgs;
use crate::config::{self, Sources};
use crate::data;
use crate::engine;
use crate::exit;
use crate::results::{self, RunDir};
use crate::training_run::{run_one, Policy, RunOutcome};

pub fn execute(args: &RunArgs) -> Result<i32> {
    crate::sweep::grid::refuse_grid_as_spec(&args.spec)?;
    let config = config::load(&Sources::new(Some(&args.spec), &args.overrides.sets))?;
    let run_dir = RunDir::locate(&args.results_dir, &config, &config.label());
    if args.dry_run {
        println!("# run folder: {}", run_dir.path.display());
        print!("{}", config.to_toml());
        return Ok(exit::SUCCESS);
    }
    // A finished run needs no data; run_one checks again under the lock.
    if !args.force && is_completed(&run_dir, &config) {
        return report_completed(&run_dir);
    }
    let backend = engine::resolve(config.train.device)?;
    let threads = super::init_threads(config.train.threads);
    let data = data::load(&config.data).context("loading the dataset")?;
    let held_out = data
        .held_out
        .as_ref()
        .map(|v| format!(" / {} held out for validation", v.len()))
        .unwrap_or_default();
    eprintln!(
        "{}: {} train{held_out} / {} test images, device {}, {} threads -> {}",
        config.name,
        data.train.len(),
        data.test.len(),
        backend.describe(),
        threads,
        run_dir.path.display()
    );
    let policy = Policy {
        force: args.force,
        retry_failed: true,
    };
    match run_one(&config, &data, &run_dir, backend, threads, policy)? {
        RunOutcome::Completed {
            best_val_acc,
            seconds,
        } => {
            let summary = run_dir.read_summary()?;
            println!(
                "done: best val acc {best_val_acc:.4} at epoch {}{}, {seconds:.1}s -> {}",
                summary.best_epoch.unwrap_or(0),
                test_words(&summary),
                run_dir.path.display()
            );
            Ok(exit::SUCCESS)
        }
        RunOutcome::AlreadyCompleted => report_completed(&run_dir),
        RunOutcome::Busy => bail!(
            "{} is being trained by another runner process",
            run_dir.path.display()
        ),
        RunOutcome::Interrupted => {
            eprintln!(
                "interrupted; run it again to resume from the last finished epoch ({})",
                run_dir.path.display()
            );
            Ok(exit::INTERRUPTED)
        }
        RunOutcome::Failed(reason) | RunOutcome::PreviouslyFailed(reason) => {
            bail!(
                "run failed: {reason}\n  (recorded in {})",
                run_dir.file(results::SUMMARY_FILE).display()
            )
        }
    }
}

fn is_completed(run_dir: &RunDir, config: &config::RunConfig) -> bool {
    run_dir
        .read_summary()
        .is_ok_and(|s| s.is_finished(config.train.epochs) && s.config_hash == config.result_hash())
        && run_dir.best_is_readable()
}

fn report_completed(run_dir: &RunDir) -> Result<i32> {
    let summary = run_dir.read_summary()?;
    println!(
        "{} already completed ({} epochs, best val acc {:.4}{}); pass --force to train it again, \
         or a larger train.epochs to continue it",
        run_dir.path.display(),
        summary.epochs_completed,
        summary.best_val_acc.unwrap_or(f64::NAN),
        test_words(&summary)
    );
    Ok(exit::SUCCESS)
}

/// ", test acc 0.9871" when the run was scored on a test split it did not
/// choose its best epoch on.
pub fn test_words(summary: &results::Summary) -> String {
    match summary.test_acc {
        Some(acc) => format!(", test acc {acc:.4} on {} images", summary.test_images),
        None => ", chosen on the test split".into(),
    }
}
