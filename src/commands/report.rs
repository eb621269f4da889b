//! `runner report PATH`: see `crate::report`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::checkpoint::Weights;
use crate::cli::ReportArgs;
use crate::data;
use crate::inference;
use crate::report::figures::{self, Labelled};
use crate::report::format::{exporter, Format};
use crate::report::{Options, Report, RunRecord};
use crate::results::{self, write_atomic};

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
    let report = Report::build(&args.path, &options)?;
    std::io::stdout().write_all(&exporter(args.format).serialize(&report)?)?;
    if let Some(note) = nothing_found(&report, &options) {
        eprintln!("{note}");
    }
    if let Some(out) = &args.out {
        let written = write_out_dir(&report, out)?;
        eprintln!("wrote {} files to {}", written, out.display());
    }
    Ok(0)
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

/// report.md and the figures.
fn write_out_dir(report: &Report, out: &Path) -> Result<usize> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut md = String::from("# Report\n\n");
    md.push_str(&String::from_utf8(
        exporter(Format::Markdown).serialize(report)?,
    )?);
    let mut files = 1;
    if !report.rows.is_empty() {
        files += figures::learning_curves(report, &out.join("curves"))?.len();
        files += figures::best_accuracy_bars(report, &out.join("best_accuracy"))?.len();
        md.push_str(
            "\n## Learning curves\n\n![validation accuracy and loss per epoch](curves.png)\n",
        );
        md.push_str(
            "\n## Best accuracy\n\n![best validation accuracy per row](best_accuracy.png)\n",
        );
    }
    if let Some(best) = report.best_run() {
        match best_run_figures(best, out) {
            Ok(n) => {
                files += n;
                md.push_str(&format!(
                    "\n## Best run: `{}`\n\n![confusion matrix on the test set](confusion.png)\n\n\
                     ![the first 20 test images: label and prediction, mistakes in red](predictions.png)\n",
                    best.run_id
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
fn best_run_figures(best: &RunRecord, out: &Path) -> Result<usize> {
    let weights = Weights::load(&best.dir.join(results::BEST_FILE))?;
    let mut data_config = best.config.data.clone();
    data_config.download = false;
    let test = data::load_test(&data_config)?;
    let probs = inference::probabilities(
        &best.config,
        &weights,
        &test
            .pixels
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect::<Vec<_>>(),
    )?;
    let mut counts = [[0u32; 10]; 10];
    for (p, &label) in probs.iter().zip(&test.labels) {
        counts[label as usize][inference::top_class(p)] += 1;
    }
    let correct: u32 = (0..10).map(|i| counts[i][i]).sum();
    let title = format!(
        "{} (test acc {:.4})",
        best.run_id,
        correct as f64 / test.len().max(1) as f64
    );
    let mut n = figures::confusion_matrix(&counts, &title, &out.join("confusion"))?.len();
    let shown = test.len().min(20);
    let images: Vec<Vec<f32>> = (0..shown).map(|i| test.image(i)).collect();
    let items: Vec<Labelled> = (0..shown)
        .map(|i| Labelled {
            pixels: &images[i],
            label: Some(test.labels[i] as usize),
            predicted: inference::top_class(&probs[i]),
        })
        .collect();
    n += figures::prediction_grid(&items, 10, &out.join("predictions"))?.len();
    Ok(n)
}
