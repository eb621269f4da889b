//! Report formats: one small `Exporter` trait, one file per format.

mod csv;
mod json;
mod markdown;
mod table;

use anyhow::{bail, Result};

use super::{Report, Row, Stat};

pub trait Exporter {
    fn serialize(&self, report: &Report) -> Result<Vec<u8>>;
}

pub fn exporter(name: &str) -> Result<Box<dyn Exporter>> {
    Ok(match name {
        "table" => Box::new(table::Table),
        "markdown" | "md" => Box::new(markdown::Markdown),
        "csv" => Box::new(csv::Csv),
        "json" => Box::new(json::Json),
        other => bail!("--format {other:?}: expected table, markdown, csv or json"),
    })
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

/// The cells of one row, in display order after the parameter columns.
pub(crate) fn metric_cells(row: &Row) -> Vec<String> {
    vec![
        row.run_ids.len().to_string(),
        row.status.clone(),
        mean_std(&row.best_val_acc, 4),
        mean_std(&row.final_val_acc, 4),
        row.best_epoch
            .mean
            .map(|e| format!("{e:.1}"))
            .unwrap_or_else(|| "-".into()),
        format!("{}/{}", row.epochs_done, row.epochs_planned),
        duration(&row.wall_seconds),
        row.images_per_sec
            .mean
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "-".into()),
    ]
}

pub(crate) const METRIC_TITLES: [&str; 8] = [
    "n",
    "status",
    "best val acc",
    "final val acc",
    "best epoch",
    "epochs",
    "wall",
    "img/s",
];

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
        lines.push(format!("common: {}", common.join(" ")));
    }
    lines
}
