//! What the formats share: the `Exporter` trait, and the cells and titles
//! of the table and markdown formats.

use anyhow::Result;

use std::collections::BTreeSet;

use crate::report::{Report, Row, Stat};

/// `prefix` then the words, wrapped at `width`, continued under the first word.
fn wrap(prefix: &str, words: &[String], width: usize) -> Vec<String> {
    let indent = " ".repeat(prefix.len());
    let mut lines = vec![prefix.to_string()];
    for word in words {
        let last = lines.last_mut().expect("one line at least");
        if last.len() > prefix.len() && last.len() + 1 + word.len() > width {
            lines.push(format!("{indent}{word}"));
        } else {
            if last.len() > prefix.len() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

pub trait Exporter {
    fn serialize(&self, report: &Report) -> Result<Vec<u8>>;
}

/// Column titles: the last part of a key unless two columns share it.
pub(crate) fn titles(columns: &[String]) -> Vec<String> {
    columns
        .iter()
        .map(|c| {
            let short = c.rsplit('.').next().unwrap_or(c);
            let clashes = columns
                .iter()
                .filter(|o| o.rsplit('.').next() == Some(short))
                .count()
                > 1;
            if clashes {
                c.clone()
            } else {
                short.to_string()
            }
        })
        .collect()
}

/// `0.9876 ± 0.0012`, or the mean alone for a single value.
pub(crate) fn mean_std(s: &Stat, decimals: usize) -> String {
    match (s.mean, s.std) {
        (None, _) => "-".into(),
        (Some(m), None) => format!("{m:.decimals$}"),
        (Some(m), Some(sd)) => format!("{m:.decimals$} ± {sd:.decimals$}"),
    }
}

pub(crate) fn duration(s: &Stat) -> String {
    match s.mean {
        None => "-".into(),
        Some(x) if x < 90.0 => format!("{x:.1}s"),
        Some(x) if x < 5400.0 => format!("{:.1}min", x / 60.0),
        Some(x) => format!("{:.1}h", x / 3600.0),
    }
}

/// Titles of the columns after the parameter ones: the run folder when
/// rows are single runs, then the metrics (a test-size column only when
/// the runs were scored on test splits of different sizes).
pub(crate) fn metric_titles(report: &Report) -> Vec<&'static str> {
    let mut titles = Vec::new();
    if report.group_by.is_none() {
        titles.push("run");
    }
    titles.extend(["n", "status", "best val acc", "final val acc", "test acc"]);
    if report.test_sizes_differ {
        titles.push("test images");
    }
    titles.extend(["best epoch", "epochs", "wall", "img/s"]);
    titles
}

/// The cells of one row, in `metric_titles` order.
pub(crate) fn metric_cells(report: &Report, row: &Row) -> Vec<String> {
    let mut cells = Vec::new();
    if report.group_by.is_none() {
        cells.push(
            row.run_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        );
    }
    cells.extend([
        row.run_ids.len().to_string(),
        row.status.clone(),
        mean_std(&row.best_val_acc, 4),
        mean_std(&row.final_val_acc, 4),
        test_cell(row),
    ]);
    if report.test_sizes_differ {
        let sizes: BTreeSet<usize> = row
            .members
            .iter()
            .map(|&i| report.runs[i].summary.test_images)
            .collect();
        let sizes: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
        cells.push(sizes.join(", "));
    }
    cells.extend([
        match (row.best_epoch.mean, row.best_epoch.n) {
            (None, _) => "-".into(),
            (Some(e), 1) => format!("{e:.0}"),
            (Some(e), _) => format!("{e:.1}"),
        },
        epochs_cell(row),
        duration(&row.wall_seconds),
        row.images_per_sec
            .mean
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "-".into()),
    ]);
    cells
}

/// The test accuracy, or "= val" when the best epoch was chosen on the
/// test split itself (there is then no second number to show).
fn test_cell(row: &Row) -> String {
    match (row.test_acc.n, row.val_is_test) {
        (0, 0) => "-".into(),
        (0, _) => "= val".into(),
        (_, 0) => mean_std(&row.test_acc, 4),
        (_, k) => format!("{} ({k} = val)", mean_std(&row.test_acc, 4)),
    }
}

/// Epochs done over the budget: `3/3`, or `2-3/3` when the runs differ.
fn epochs_cell(row: &Row) -> String {
    if row.epochs_done_min == row.epochs_done_max {
        format!("{}/{}", row.epochs_done_max, row.epochs_planned)
    } else {
        format!(
            "{}-{}/{}",
            row.epochs_done_min, row.epochs_done_max, row.epochs_planned
        )
    }
}

/// "12 runs under results/grid, grouped by ...", and the common parameters.
pub(crate) fn preamble(report: &Report) -> Vec<String> {
    let mut lines = vec![format!(
        "{} runs under {}{}",
        report.runs.len(),
        report.root.display(),
        match &report.group_by {
            Some(keys) if !keys.is_empty() => format!(
                ", grouped by {} (mean ± std over the runs of a row)",
                keys.join(", ")
            ),
            Some(_) => ", all in one group (mean ± std)".into(),
            None => String::new(),
        }
    )];
    if !report.common.is_empty() {
        let common: Vec<String> = report
            .common
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.extend(wrap("common: ", &common, 100));
    }
    lines
}
