//! `runner report PATH`: see `crate::report`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::atomic::write_atomic;
use crate::cli::ReportArgs;
use crate::report::figures::{self, Labelled};
use crate::report::format::{exporter, Format};
use crate::report::html::{self, ScoreCache};
use crate::report::live;
use crate::report::{Options, Report, RunRecord};
use crate::train::INTERRUPTED;

pub fn execute(args: &ReportArgs) -> Result<i32> {
    let options = Options {
        group_by: args.group_by.as_deref().map(|g| {
            if g == "none" {
                Vec::new()
            } else {
                g.split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect()
            }
        }),
        sort: args.sort.clone(),
        filters: args
            .filter
            .iter()
            .map(|f| {
                f.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .with_context(|| format!("--filter {f:?}: expected KEY=VALUE"))
            })
            .collect::<Result<_>>()?,
        top: args.top,
    };
    if args.watch {
        return watch(args, options);
    }
    let report = Report::build(&args.path, &options)?;
    std::io::stdout().write_all(&exporter(args.format).serialize(&report)?)?;
    if let Some(note) = nothing_found(&report, &options) {
        eprintln!("{note}");
    }
    if let Some(out) = &args.out {
        let written = write_out_dir(&report, out, args.full_range, &mut ScoreCache::default())?;
        eprintln!("wrote {} files to {}", written, out.display());
    }
    Ok(crate::exit::SUCCESS)
}

/// `--watch`: follows the runs until Ctrl-C, then writes the whole
/// output folder (with `--out`) a last time.
fn watch(args: &ReportArgs, options: Options) -> Result<i32> {
    if let Some(out) = &args.out {
        let mut page = live::Page::new(args.path.clone(), out.clone(), options.clone());
        eprintln!(
            "keeping {} up to date; Ctrl-C to stop",
            out.join("report.html").display()
        );
        while !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            page.refresh(false)?;
            std::thread::sleep(live::POLL);
        }
        let report = Report::build(&args.path, &options)?;
        let written = write_out_dir(&report, out, args.full_range, &mut ScoreCache::default())?;
        eprintln!("wrote {} files to {}", written, out.display());
        return Ok(crate::exit::SUCCESS);
    }
    let mut stdout = std::io::stdout();
    while !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        // Home and clear, then the table: redrawn in place.
        let mut frame = b"\x1b[H\x1b[2J".to_vec();
        if args.path.is_dir() {
            let report = Report::build(&args.path, &options)?;
            frame.extend(exporter(args.format).serialize(&report)?);
            frame.extend(format!("\n{}\n", live::progress_line(&report)).into_bytes());
        } else {
            frame.extend(format!("waiting for {}\n", args.path.display()).into_bytes());
        }
        stdout.write_all(&frame)?;
        stdout.flush()?;
        std::thread::sleep(2 * live::POLL);
    }
    Ok(crate::exit::SUCCESS)
}

/// Why the table has no runs, for stderr: the table alone does not say
/// whether the folder holds none, holds only broken ones, or the filters
/// matched none. None when runs are shown (or only cut by `--top`).
fn nothing_found(report: &Report, options: &Options) -> Option<String> {
    let root = report.root.display();
    if !report.runs.is_empty() {
        None
    } else if !options.filters.is_empty() {
        Some(format!("note: no run under {root} matches the filters"))
    } else if !report.broken.is_empty() {
        Some(format!(
            "note: no readable run under {root}; the report lists the broken run folders"
        ))
    } else {
        Some(format!(
            "note: no runs under {root} (a run is a folder with summary.json or config.toml, \
             as `runner run` and `runner sweep` write them)"
        ))
    }
}

/// report.html, report.md and the figures.
pub fn write_out_dir(
    report: &Report,
    out: &Path,
    full_range: bool,
    cache: &mut ScoreCache,
) -> Result<usize> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Written once, the page has nothing to reload for.
    html::write(report, out, cache, false)?;
    let mut md = String::from(
        "# Report\n\nAll runs, sortable, with each run's details: [report.html](report.html).\n\n",
    );
    md.push_str(&String::from_utf8(
        exporter(Format::Markdown).serialize(report)?,
    )?);
    let mut files = 2;
    if !report.rows.is_empty() {
        files += figures::learning_curves(report, &out.join("curves"), full_range)?.len();
        files += figures::best_accuracy(report, &out.join("best_accuracy"))?.len();
        md.push_str(
            "\n## Learning curves\n\n![validation accuracy and loss per epoch](curves.png)\n",
        );
        md.push_str(
            "\n## Best accuracy\n\n![best validation accuracy per row, mean and spread](best_accuracy.png)\n",
        );
    }
    if let Some(best) = report.best_run() {
        match best_run_figures(best, out, cache) {
            Ok(n) => {
                files += n;
                md.push_str(&format!(
                    "\n## Best run: `{}`\n\n![confusion matrix on the test set](confusion.png)\n\n\
                     ![the first 20 test images: label and prediction, mistakes in red](predictions.png)\n",
                    best.summary.run_id
                ));
            }
            Err(e) => eprintln!(
                "warning: no confusion matrix or predictions for {}: {e:#}",
                best.dir.display()
            ),
        }
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    Ok(files)
}

/// The confusion matrix of the best run on its test split, and the seed's
/// picture of the first 20 test images.
fn best_run_figures(best: &RunRecord, out: &Path, cache: &mut ScoreCache) -> Result<usize> {
    // report.html scored it already: the best run is among its best.
    let score = cache
        .score(best)
        .ok_or_else(|| anyhow::anyhow!("its best checkpoint could not be scored"))?;
    let title = format!("{} (test acc {:.4})", best.summary.run_id, score.accuracy());
    let mut n = figures::confusion_matrix(&score.counts, &title, &out.join("confusion"))?.len();
    let items: Vec<Labelled> = score
        .first
        .iter()
        .map(|(pixels, label, predicted)| Labelled {
            pixels,
            label: Some(*label),
            predicted: *predicted,
        })
        .collect();
    n += figures::prediction_grid(&items, 10, &out.join("predictions"))?.len();
    Ok(n)
}
