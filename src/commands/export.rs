//! `runner export tensorboard RESULTS OUT`: see `crate::export`.

use anyhow::{bail, Result};

use crate::cli::ExportCommand;
use crate::export::tensorboard;
use crate::report;

pub fn execute(what: &ExportCommand) -> Result<i32> {
    let ExportCommand::Tensorboard { results, out } = what;
    let (runs, broken) = report::discover(results)?;
    for b in &broken {
        eprintln!("skipped {}: {}", b.dir.display(), b.problem);
    }
    let mut written = 0;
    for run in runs.iter().filter(|r| !r.metrics.is_empty()) {
        // The run's place under RESULTS, so TensorBoard names it the same.
        let relative = run.dir.strip_prefix(results).unwrap_or(&run.dir);
        let path = tensorboard::write(&out.join(relative), &run.metrics)?;
        println!("{}", path.display());
        written += 1;
    }
    if written == 0 {
        bail!(
            "no run under {} has finished an epoch: nothing to export",
            results.display()
        );
    }
    eprintln!(
        "wrote {written} event files under {}; view them with `tensorboard --logdir {}`",
        out.display(),
        out.display()
    );
    Ok(crate::exit::SUCCESS)
}
