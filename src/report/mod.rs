//! `runner report`: find every run folder under a root, read what each one
//! holds, and compare them: the parameters that differ, grouped over seeds
//! with mean ± std, in several formats (`format/`) and figures (`figures`).

pub mod figures;
pub mod format;
pub mod html;
pub mod live;
pub mod params;
pub mod scored;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;
use walkdir::WalkDir;

use crate::config::RunConfig;
use crate::metrics::{self, EpochMetrics};
use crate::results::{self, Status, Summary};
pub use params::{flatten, hidden};

/// One run folder, read: its summary (with `status` as it stands now,
/// see `live_status`, and `run_id` the folder's name), its config and
/// rows.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub summary: Summary,
    /// The config, flattened to text (`flatten`): what columns show.
    pub params: BTreeMap<String, String>,
    pub config: RunConfig,
    pub metrics: Vec<EpochMetrics>,
}

/// A folder that looks like a run but cannot be read as one.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    pub dir: PathBuf,
    pub problem: String,
}

/// Mean and sample standard deviation of the values present.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stat {
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub n: usize,
}

impl Stat {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Stat {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Stat::default();
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            Some((v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt())
        } else {
            None
        };
        Stat {
            mean: Some(mean),
            std,
            n,
        }
    }
}

/// One line of the comparison: a run, or a group of runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Values of the shown columns.
    pub values: BTreeMap<String, String>,
    /// Run ids in this row.
    pub run_ids: Vec<String>,
    /// The run's folder, for a row of one run (as `eval` and `predict` take it).
    pub run_dir: Option<PathBuf>,
    /// e.g. "3 completed" or "2 completed, 1 failed".
    pub status: String,
    pub best_val_acc: Stat,
    pub final_val_acc: Stat,
    pub best_epoch: Stat,
    /// Test accuracy of the best epochs; empty when every run chose its
    /// best epoch on the test split (`val_is_test`).
    pub test_acc: Stat,
    /// Runs of the row whose validation split was the test split.
    pub val_is_test: usize,
    /// Epochs done, fewest and most over the row's runs, and the budget.
    pub epochs_done_min: usize,
    pub epochs_done_max: usize,
    pub epochs_planned: usize,
    pub wall_seconds: Stat,
    pub images_per_sec: Stat,
    /// Indices into `Report::runs`.
    #[serde(skip)]
    pub members: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub root: PathBuf,
    /// Parameters with one value across every run shown.
    pub common: BTreeMap<String, String>,
    /// Parameters that differ: the columns.
    pub columns: Vec<String>,
    /// The keys rows are grouped by, when grouped.
    pub group_by: Option<Vec<String>>,
    /// The runs were scored on test splits of different sizes (a column
    /// says which when so).
    pub test_sizes_differ: bool,
    pub rows: Vec<Row>,
    pub broken: Vec<Broken>,
    #[serde(skip)]
    pub runs: Vec<RunRecord>,
}

/// How to shape the report.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// None: every differing key but the seed. Some(empty): no grouping.
    pub group_by: Option<Vec<String>>,
    pub sort: Option<String>,
    pub filters: Vec<(String, String)>,
    pub top: Option<usize>,
}

fn is_run_dir(dir: &Path) -> bool {
    dir.join(results::SUMMARY_FILE).is_file() || dir.join(results::CONFIG_FILE).is_file()
}

/// Walks `root` for run folders (a folder with `summary.json` or
/// `config.toml`; folders inside a run are not searched).
pub fn discover(root: &Path) -> Result<(Vec<RunRecord>, Vec<Broken>)> {
    if !root.is_dir() {
        bail!("{} is not a folder", root.display());
    }
    let mut runs = Vec::new();
    let mut broken = Vec::new();
    let mut walker = WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walker.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let dir = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| root.to_path_buf());
                broken.push(Broken {
                    dir,
                    problem: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        if !entry.file_type().is_dir() || !is_run_dir(entry.path()) {
            continue;
        }
        walker.skip_current_dir();
        match read_run(entry.path()) {
            Ok(run) => runs.push(run),
            Err(e) => broken.push(Broken {
                dir: entry.path().to_path_buf(),
                problem: format!("{e:#}"),
            }),
        }
    }
    Ok((runs, broken))
}

/// A run whose summary says "running" but whose lock nobody holds was
/// killed: it is interrupted, and `runner run`/`sweep` will resume it.
fn live_status(dir: &Path, status: Status) -> Status {
    if status == Status::Running {
        let free = File::open(dir.join(results::LOCK_FILE))
            .map(|f| f.try_lock().is_ok())
            .unwrap_or(true);
        if free {
            return Status::Interrupted;
        }
    }
    status
}

fn file_name(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

pub fn read_run(dir: &Path) -> Result<RunRecord> {
    let config = results::read_config(&dir.join(results::CONFIG_FILE))?;
    let summary = results::read_summary(&dir.join(results::SUMMARY_FILE))?;
    let metrics_path = dir.join(results::METRICS_FILE);
    let metrics = if metrics_path.is_file() {
        metrics::read_metrics(&metrics_path)?
    } else if summary.epochs_completed > 0 {
        bail!("{} is missing", file_name(dir, results::METRICS_FILE));
    } else {
        Vec::new()
    };
    if let Some((i, row)) = metrics.iter().enumerate().find(|(i, r)| r.epoch != i + 1) {
        bail!(
            "{}: row {} is epoch {} (rows must be epochs 1, 2, 3, ... once each): rerun to repair",
            file_name(dir, results::METRICS_FILE),
            i + 2,
            row.epoch
        );
    }
    if summary.status == Status::Completed {
        if metrics.len() != summary.epochs_completed {
            bail!(
                "{} has {} rows but summary.json says {} epochs completed",
                file_name(dir, results::METRICS_FILE),
                metrics.len(),
                summary.epochs_completed
            );
        }
        let best = dir.join(results::BEST_FILE);
        if let Err(e) = crate::checkpoint::Weights::verify(&best) {
            bail!("{e:#}: rerun it to repair (training is deterministic)");
        }
    }
    if metrics.len() < summary.epochs_completed {
        bail!(
            "{} has {} rows but summary.json says {} epochs completed",
            file_name(dir, results::METRICS_FILE),
            metrics.len(),
            summary.epochs_completed
        );
    }
    let mut summary = summary;
    summary.status = live_status(dir, summary.status);
    summary.run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(RunRecord {
        dir: dir.to_path_buf(),
        summary,
        params: flatten(&config),
        config,
        metrics,
    })
}

/// Numbers compare as numbers (`1e-2` matches `0.01`), the rest as text.
fn matches(value: &str, wanted: &str) -> bool {
    match (value.parse::<f64>(), wanted.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => value == wanted,
    }
}

fn value_of(run: &RunRecord, key: &str) -> Option<String> {
    match key {
        "status" => Some(run.summary.status.name().to_string()),
        "run_id" => Some(run.summary.run_id.clone()),
        _ => run.params.get(key).cloned(),
    }
}

/// The metrics a row can be sorted by, largest first, each with its value
/// in a row. Anything else is a shown column, sorted ascending.
type SortValue = fn(&Row) -> Option<f64>;
const SORT_METRICS: [(&str, SortValue); 7] = [
    ("best_val_acc", |r| r.best_val_acc.mean),
    ("final_val_acc", |r| r.final_val_acc.mean),
    ("test_acc", |r| r.test_acc.mean),
    ("best_epoch", |r| r.best_epoch.mean),
    ("epochs", |r| Some(r.epochs_done_max as f64)),
    ("wall_seconds", |r| r.wall_seconds.mean),
    ("images_per_sec", |r| r.images_per_sec.mean),
];

/// `report --sort`'s help, from the table above.
pub fn sort_help() -> String {
    let names: Vec<&str> = SORT_METRICS.iter().map(|(name, _)| *name).collect();
    format!(
        "Sort by {} (largest first; default best_val_acc), or a shown column such as \
         train.lr (ascending)",
        names.join(", ")
    )
}

impl Report {
    pub fn build(root: &Path, options: &Options) -> Result<Report> {
        let (mut runs, broken) = discover(root)?;
        let known: BTreeSet<String> = runs.iter().flat_map(|r| r.params.keys().cloned()).collect();
        for (key, _) in &options.filters {
            if key != "status" && key != "run_id" && !known.contains(key) && !runs.is_empty() {
                bail!("--filter {key}: no run has this key; keys look like model.activation (or status)");
            }
        }
        runs.retain(|r| {
            options
                .filters
                .iter()
                .all(|(k, v)| value_of(r, k).is_some_and(|x| matches(&x, v)))
        });
        let (columns, common) = columns_and_common(&runs);
        let group_by = match &options.group_by {
            Some(keys) if keys.is_empty() => None,
            Some(keys) => {
                for key in keys {
                    if !known.contains(key) && !runs.is_empty() {
                        bail!("--group-by {key}: no run has this key");
                    }
                }
                Some(keys.clone())
            }
            None => Some(
                columns
                    .iter()
                    .filter(|k| *k != "train.seed")
                    .cloned()
                    .collect(),
            ),
        };
        let mut rows = rows_of(&runs, group_by.as_deref(), &columns);
        sort_rows(&mut rows, options.sort.as_deref())?;
        if let Some(top) = options.top {
            rows.truncate(top);
        }
        let columns = group_by.clone().unwrap_or(columns);
        let sizes: BTreeSet<usize> = runs
            .iter()
            .filter(|r| r.summary.test_images > 0)
            .map(|r| r.summary.test_images)
            .collect();
        Ok(Report {
            root: root.to_path_buf(),
            common,
            columns,
            group_by,
            test_sizes_differ: sizes.len() > 1,
            rows,
            broken,
            runs,
        })
    }

    /// Runs of the best row, best run first.
    pub fn best_run(&self) -> Option<&RunRecord> {
        let row = self.rows.first()?;
        row.members
            .iter()
            .map(|&i| &self.runs[i])
            .filter(|r| r.dir.join(results::BEST_FILE).is_file())
            .max_by(|a, b| {
                a.summary
                    .best_val_acc
                    .unwrap_or(f64::MIN)
                    .total_cmp(&b.summary.best_val_acc.unwrap_or(f64::MIN))
            })
    }
}

/// The keys whose values differ among `runs` (the columns), and those
/// with one value (the common settings), leaving out the hidden ones.
fn columns_and_common(runs: &[RunRecord]) -> (Vec<String>, BTreeMap<String, String>) {
    let mut distinct: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for run in runs {
        for (k, v) in &run.params {
            distinct.entry(k.clone()).or_default().insert(v.clone());
        }
    }
    let columns = distinct
        .iter()
        .filter(|(k, values)| values.len() > 1 && !hidden(k))
        .map(|(k, _)| k.clone())
        .collect();
    let common = distinct
        .iter()
        .filter(|(k, values)| values.len() == 1 && !hidden(k))
        .map(|(k, v)| (k.clone(), v.iter().next().cloned().unwrap_or_default()))
        .collect();
    (columns, common)
}

/// One row per run, or per group of runs sharing the `group_by` values.
fn rows_of(runs: &[RunRecord], group_by: Option<&[String]>, columns: &[String]) -> Vec<Row> {
    let Some(keys) = group_by else {
        return (0..runs.len())
            .map(|i| row(runs, vec![i], columns))
            .collect();
    };
    let mut groups: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        let key: Vec<String> = keys
            .iter()
            .map(|k| run.params.get(k).cloned().unwrap_or_default())
            .collect();
        groups.entry(key).or_default().push(i);
    }
    groups
        .into_values()
        .map(|members| row(runs, members, keys))
        .collect()
}

pub(crate) fn row(runs: &[RunRecord], members: Vec<usize>, columns: &[String]) -> Row {
    let rs: Vec<&RunRecord> = members.iter().map(|&i| &runs[i]).collect();
    let first = rs[0];
    let values = columns
        .iter()
        .map(|c| (c.clone(), first.params.get(c).cloned().unwrap_or_default()))
        .collect();
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rs {
        *statuses.entry(r.summary.status.name()).or_default() += 1;
    }
    let status = if rs.len() == 1 {
        match (
            &first.summary.reason,
            first.summary.status,
            first.summary.stopped_early_at,
        ) {
            (Some(reason), Status::Failed, _) => format!("failed: {reason}"),
            (_, Status::Completed, Some(epoch)) => format!("completed, stopped early at {epoch}"),
            (_, Status::Completed, None) if first.summary.halted_after_rung.is_some() => format!(
                "completed, halving stopped it after rung {}",
                first.summary.halted_after_rung.unwrap_or(0)
            ),
            _ => first.summary.status.name().to_string(),
        }
    } else {
        statuses
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Row {
        values,
        run_ids: rs.iter().map(|r| r.summary.run_id.clone()).collect(),
        run_dir: (rs.len() == 1).then(|| first.dir.clone()),
        status,
        best_val_acc: Stat::of(rs.iter().filter_map(|r| r.summary.best_val_acc)),
        final_val_acc: Stat::of(rs.iter().filter_map(|r| r.summary.final_val_acc)),
        best_epoch: Stat::of(
            rs.iter()
                .filter_map(|r| r.summary.best_epoch.map(|e| e as f64)),
        ),
        test_acc: Stat::of(rs.iter().filter_map(|r| r.summary.test_acc)),
        val_is_test: rs.iter().filter(|r| r.summary.test_acc.is_none()).count(),
        epochs_done_min: rs
            .iter()
            .map(|r| r.summary.epochs_completed)
            .min()
            .unwrap_or(0),
        epochs_done_max: rs
            .iter()
            .map(|r| r.summary.epochs_completed)
            .max()
            .unwrap_or(0),
        epochs_planned: rs
            .iter()
            .map(|r| r.summary.epochs_planned)
            .max()
            .unwrap_or(0),
        wall_seconds: Stat::of(rs.iter().map(|r| r.summary.wall_seconds)),
        images_per_sec: Stat::of(
            rs.iter()
                .filter_map(|r| r.summary.mean_train_images_per_sec),
        ),
        members,
    }
}

fn sort_rows(rows: &mut [Row], key: Option<&str>) -> Result<()> {
    let key = key.unwrap_or(SORT_METRICS[0].0);
    if let Some((_, value)) = SORT_METRICS.iter().find(|(name, _)| *name == key) {
        let metric = |r: &Row| value(r).unwrap_or(f64::NEG_INFINITY);
        rows.sort_by(|a, b| metric(b).total_cmp(&metric(a)));
        return Ok(());
    }
    if rows.iter().any(|r| !r.values.contains_key(key)) {
        let names: Vec<&str> = SORT_METRICS.iter().map(|(name, _)| *name).collect();
        bail!(
            "--sort {key}: not a column; sort by one of {} or a column shown",
            names.join(", ")
        );
    }
    rows.sort_by(|a, b| {
        let (x, y) = (&a.values[key], &b.values[key]);
        match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) => p.total_cmp(&q),
            _ => x.cmp(y),
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_mean_and_sample_std() {
        let s = Stat::of([1.0, 2.0, 3.0]);
        assert_eq!(s.mean, Some(2.0));
        assert_eq!(s.std, Some(1.0));
        assert_eq!(Stat::of([5.0]).std, None);
        assert_eq!(Stat::of([]).mean, None);
    }

    #[test]
    fn filters_compare_numbers_as_numbers() {
        assert!(matches("0.01", "1e-2"));
        assert!(matches("relu", "relu"));
        assert!(!matches("relu", "tanh"));
    }
}
