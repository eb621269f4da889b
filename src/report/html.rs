//! `report.html`: one self-contained page (no network: the data is JSON in
//! the page, images are data URIs, script and style are inline) built
//! from `html/template.html`. The page draws the table, curves and run
//! sections itself, so it stays small at 1,000 runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Result;
use base64::Engine as _;
use serde::Serialize;

use super::scored::{self, TestScore, TestSets};
use super::{Broken, Report, Row, RunRecord};
use crate::results::{self, Status};

const TEMPLATE: &str = include_str!("html/template.html");

/// How often a page with live runs reloads itself.
pub const REFRESH_SECONDS: u32 = 5;

/// Runs whose best checkpoint the page scores on the test split
/// (confusion matrix and predictions): the best by the report's order.
pub const SCORED_RUNS: usize = 10;

#[derive(Serialize)]
struct Page<'a> {
    root: String,
    generated_at: String,
    live: bool,
    refresh_seconds: u32,
    scored_runs: usize,
    common: &'a BTreeMap<String, String>,
    columns: &'a [String],
    rows: Vec<PageRow<'a>>,
    runs: Vec<PageRun<'a>>,
    broken: &'a [Broken],
}

#[derive(Serialize)]
struct PageRow<'a> {
    #[serde(flatten)]
    row: &'a Row,
    epochs: String,
}

impl<'a> PageRow<'a> {
    fn of(row: &'a Row) -> Self {
        let epochs = if row.epochs_done_min == row.epochs_done_max {
            format!("{}/{}", row.epochs_done_max, row.epochs_planned)
        } else {
            format!(
                "{}-{}/{}",
                row.epochs_done_min, row.epochs_done_max, row.epochs_planned
            )
        };
        PageRow { row, epochs }
    }
}

#[derive(Serialize)]
struct PageRun<'a> {
    run_id: &'a str,
    dir: String,
    status: Status,
    reason: Option<&'a str>,
    /// The resolved config, flattened, without the keys that do not
    /// decide results (as the table hides them).
    params: BTreeMap<&'a str, &'a str>,
    best_val_acc: Option<f64>,
    best_epoch: Option<usize>,
    validation: &'a str,
    metrics: BTreeMap<&'static str, Vec<f64>>,
    /// The run on its own, as a table row.
    row: PageRow<'a>,
    confusion: Option<[[u32; 10]; 10]>,
    predictions: Option<Vec<Prediction>>,
}

#[derive(Serialize)]
struct Prediction {
    png: String,
    label: usize,
    predicted: usize,
}

/// Test scores of best checkpoints, kept between pages (`--watch`
/// rewrites the page every few seconds): keyed by the checkpoint's path
/// and modification time.
#[derive(Default)]
pub struct ScoreCache {
    tests: TestSets,
    scores: HashMap<PathBuf, (SystemTime, TestScore)>,
}

impl ScoreCache {
    /// `run`'s best checkpoint on its test split, scored once per version
    /// of the checkpoint; None (with a warning) when it cannot be.
    pub fn score(&mut self, run: &RunRecord) -> Option<&TestScore> {
        let best = run.dir.join(results::BEST_FILE);
        let modified = std::fs::metadata(&best).and_then(|m| m.modified()).ok()?;
        let fresh = self.scores.get(&best).is_some_and(|(t, _)| *t == modified);
        if !fresh {
            match scored::score(run, &mut self.tests) {
                Ok(score) => {
                    self.scores.insert(best.clone(), (modified, score));
                }
                Err(e) => {
                    eprintln!(
                        "warning: report.html: not scoring {}: {e:#}",
                        run.summary.run_id
                    );
                    return None;
                }
            }
        }
        self.scores.get(&best).map(|(_, s)| s)
    }
}

/// The metrics columns the page plots, per epoch.
fn metric_series(run: &RunRecord) -> BTreeMap<&'static str, Vec<f64>> {
    let m = &run.metrics;
    BTreeMap::from([
        ("epoch", m.iter().map(|r| r.epoch as f64).collect()),
        ("val_acc", m.iter().map(|r| r.val_acc).collect()),
        ("val_loss", m.iter().map(|r| r.val_loss).collect()),
        ("train_loss", m.iter().map(|r| r.train_loss).collect()),
        ("train_acc", m.iter().map(|r| r.train_acc).collect()),
        ("lr", m.iter().map(|r| r.lr).collect()),
    ])
}

/// A 28x28 image in [0, 1] as a PNG data URI.
fn png_data_uri(pixels: &[f32]) -> Result<String> {
    let bytes: Vec<u8> = pixels
        .iter()
        .map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let image = image::GrayImage::from_raw(28, 28, bytes)
        .ok_or_else(|| anyhow::anyhow!("an image is 28x28 pixels"))?;
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

/// Whether any run is training now (its summary says running and its
/// lock is held; `Report` already turned killed ones into interrupted).
pub fn any_live(report: &Report) -> bool {
    report
        .runs
        .iter()
        .any(|r| r.summary.status == Status::Running)
}

/// The page for `report`, scoring the best `SCORED_RUNS` runs; with
/// `live`, it reloads itself every `REFRESH_SECONDS`.
pub fn page(report: &Report, cache: &mut ScoreCache, live: bool) -> Result<String> {
    let shown: Vec<usize> = report
        .rows
        .iter()
        .flat_map(|r| r.members.iter().copied())
        .collect();
    let mut runs = Vec::with_capacity(shown.len());
    // Rows are in the report's order, best first: score the first runs.
    let mut scored = 0;
    let own_rows: Vec<Row> = shown
        .iter()
        .map(|&i| super::row(&report.runs, vec![i], &report.columns))
        .collect();
    for (&i, own) in shown.iter().zip(&own_rows) {
        let run = &report.runs[i];
        let score = if scored < SCORED_RUNS && run.summary.status == Status::Completed {
            cache.score(run)
        } else {
            None
        };
        scored += usize::from(score.is_some());
        let predictions = match score {
            Some(s) => Some(
                s.first
                    .iter()
                    .map(|(pixels, label, predicted)| {
                        Ok(Prediction {
                            png: png_data_uri(pixels)?,
                            label: *label,
                            predicted: *predicted,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        runs.push(PageRun {
            run_id: &run.summary.run_id,
            dir: run.dir.display().to_string(),
            status: run.summary.status,
            reason: run.summary.reason.as_deref(),
            params: run
                .params
                .iter()
                .filter(|(k, _)| !super::params::hidden(k))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            best_val_acc: run.summary.best_val_acc,
            best_epoch: run.summary.best_epoch,
            validation: &run.summary.validation,
            metrics: metric_series(run),
            row: PageRow::of(own),
            confusion: score.map(|s| s.counts),
            predictions,
        });
    }
    let page = Page {
        root: report.root.display().to_string(),
        generated_at: results::now_rfc3339(),
        live,
        refresh_seconds: REFRESH_SECONDS,
        scored_runs: SCORED_RUNS,
        common: &report.common,
        columns: &report.columns,
        rows: report.rows.iter().map(PageRow::of).collect(),
        runs,
        broken: &report.broken,
    };
    // A "<" in the JSON ("</script>", "<!--") could end the script
    // element early; it only occurs inside strings, where \u003c is the same.
    let data = serde_json::to_string(&page)?.replace('<', "\\u003c");
    let refresh = if live {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">")
    } else {
        String::new()
    };
    Ok(TEMPLATE
        .replacen("<!--REFRESH-->", &refresh, 1)
        .replacen("/*DATA*/", &data, 1))
}

/// Writes `report.html` into `out`, atomically.
pub fn write(report: &Report, out: &Path, cache: &mut ScoreCache, live: bool) -> Result<PathBuf> {
    let path = out.join("report.html");
    crate::atomic::write_atomic(&path, page(report, cache, live)?.as_bytes())?;
    Ok(path)
}
