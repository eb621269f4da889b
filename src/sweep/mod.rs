//! `runner sweep`: a grid of runs, run in sequence, that survives crashes,
//! skips finished work and splits across processes and machines.
//!
//! Every point is resolved and validated before anything trains. Each run
//! goes through `training_run::run_one`, which locks its folder, skips it when
//! completed, and resumes it when interrupted; `sweep.json` beside the runs
//! records the grid and each point's status.

pub mod grid;
pub mod schedule;
pub mod search;
pub mod shard;
pub mod tpe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::{self, Layer, RunConfig, Sources};
use crate::results::{self, RunDir, Status};
use grid::{Grid, Point};

/// A point resolved into a full config and its run folder.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// 0-based position among the runs to train: the number `--list`
    /// shows and `--shard I/N` counts (run k belongs to shard k mod N).
    pub index: usize,
    pub point: Point,
    pub config: RunConfig,
    pub run_dir: RunDir,
}

impl PlannedRun {
    pub fn run_id(&self) -> String {
        self.run_dir.id()
    }

    /// Status from the run folder.
    pub fn status(&self) -> PointStatus {
        match self.run_dir.read_summary() {
            Ok(s) if s.config_hash == self.config.result_hash() => {
                if s.status == Status::Completed && !s.is_finished(self.config.train.epochs) {
                    PointStatus::ToExtend
                } else if s.status == Status::Completed && !self.run_dir.best_is_readable() {
                    PointStatus::Damaged
                } else {
                    PointStatus::Run(s.status)
                }
            }
            _ => PointStatus::Pending,
        }
    }
}

/// Where a grid point stands, as its run folder says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointStatus {
    /// No summary yet.
    Pending,
    /// As the run's summary records it.
    Run(Status),
    /// Completed with fewer epochs than its budget now asks for.
    ToExtend,
    /// Completed, but its best checkpoint does not load.
    Damaged,
}

impl PointStatus {
    pub const COMPLETED: PointStatus = PointStatus::Run(Status::Completed);
    pub const FAILED: PointStatus = PointStatus::Run(Status::Failed);

    /// The name `sweep --list`, `sweep.json` and the progress lines use.
    pub fn name(self) -> &'static str {
        match self {
            PointStatus::Pending => "pending",
            PointStatus::Run(status) => status.name(),
            PointStatus::ToExtend => "to extend",
            PointStatus::Damaged => "damaged",
        }
    }
}

impl std::fmt::Display for PointStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Grid points that resolve to a config already planned: trained once.
#[derive(Debug, Clone)]
pub struct Collapsed {
    /// 1-based positions in the grid file's expansion.
    pub point: usize,
    pub same_as: usize,
    pub describe: String,
}

/// The runs a grid expands to, and the points that duplicated others.
#[derive(Debug, Clone)]
pub struct Plan {
    pub runs: Vec<PlannedRun>,
    pub collapsed: Vec<Collapsed>,
}

/// Resolves every point of `grid` (base < point < environment < --set),
/// failing on the first invalid one before any work starts. An override
/// of a swept key is refused: it would train every point at one value
/// while naming each after its own.
pub fn plan(grid: &Grid, sets: &[String], results_root: &Path) -> Result<Plan> {
    refuse_overrides_of_swept_keys(grid, sets, |k| std::env::var_os(k).is_some())?;
    resolve(grid, &grid.points, sets, results_root)
}

/// Resolves `points` of `grid` into runs (numbered from 0), merging the
/// points that resolve to one config.
pub fn resolve(
    grid: &Grid,
    points: &[Point],
    sets: &[String],
    results_root: &Path,
) -> Result<Plan> {
    let mut runs: Vec<PlannedRun> = Vec::new();
    let mut grid_positions: Vec<usize> = Vec::new();
    let mut collapsed = Vec::new();
    let total = points.len();
    for (i, point) in points.iter().enumerate() {
        let mut layers = Vec::new();
        if let Some(spec) = &grid.spec {
            layers.push(Layer::from_table(
                format!("{} [spec]", grid.file.display()),
                spec,
            ));
        }
        let mut values = point.values.clone();
        values.push(("name".into(), toml::Value::String(grid.name.clone())));
        layers.push(Layer {
            label: format!("{} [sweep]", grid.file.display()),
            values,
        });
        let sources = Sources {
            spec: grid.base.as_deref(),
            layers: &layers,
            sets,
        };
        let config = config::load(&sources).with_context(|| {
            format!(
                "{}: point {} of {total} ({})",
                grid.file.display(),
                i + 1,
                point.describe()
            )
        })?;
        let hash = config.result_hash();
        if let Some(k) = runs.iter().position(|r| r.config.result_hash() == hash) {
            collapsed.push(Collapsed {
                point: i + 1,
                same_as: grid_positions[k],
                describe: point.describe(),
            });
            continue;
        }
        let run_dir = RunDir::locate(results_root, &config, &point.slug());
        grid_positions.push(i + 1);
        runs.push(PlannedRun {
            index: runs.len(),
            point: point.clone(),
            config,
            run_dir,
        });
    }
    Ok(Plan { runs, collapsed })
}

/// Fails when `--set` or a `RUNNER_*` variable sets a key the grid sweeps.
fn refuse_overrides_of_swept_keys(
    grid: &Grid,
    sets: &[String],
    env_has: impl Fn(&str) -> bool,
) -> Result<()> {
    let name = "name".to_string();
    let mut swept: Vec<&String> = grid.swept_keys();
    swept.push(&name);
    for set in sets {
        let key = set.split_once('=').map_or(set.as_str(), |(k, _)| k.trim());
        if swept.iter().any(|s| s.as_str() == key) {
            bail!(
                "--set {set} overrides `{key}`, which {} sweeps: every point would train with \
                 that one value while named after its own. Drop the --set, or change the \
                 values of `{key}` in the grid file",
                grid.file.display()
            );
        }
    }
    for key in swept {
        let var = config::env_var_for(key);
        if env_has(&var) {
            bail!(
                "environment variable {var} overrides `{key}`, which {} sweeps: every point \
                 would train with that one value while named after its own. Unset it \
                 (`unset {var}`), or change the values of `{key}` in the grid file",
                grid.file.display()
            );
        }
    }
    Ok(())
}

/// `sweep.json`: the grid and where each point stands.
#[derive(Debug, Serialize)]
struct SweepRecord<'a> {
    name: &'a str,
    grid_file: String,
    updated_at: String,
    points: Vec<PointRecord>,
    /// Points of the grid that resolved to the config of an earlier one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    collapsed: Vec<CollapsedRecord>,
}

#[derive(Debug, Serialize)]
struct CollapsedRecord {
    point: usize,
    same_as: usize,
}

#[derive(Debug, Serialize)]
struct PointRecord {
    index: usize,
    run_id: String,
    values: BTreeMap<String, String>,
    status: &'static str,
}

/// Rewrites `sweep.json` from the run folders (the truth), atomically.
pub fn write_record(grid: &Grid, plan: &Plan, results_root: &Path) -> Result<PathBuf> {
    let points = plan
        .runs
        .iter()
        .map(|r| PointRecord {
            index: r.index,
            run_id: r.run_id(),
            values: r
                .point
                .values
                .iter()
                .map(|(k, v)| (k.clone(), grid::plain(v)))
                .collect(),
            status: r.status().name(),
        })
        .collect();
    let record = SweepRecord {
        name: &grid.name,
        grid_file: grid.file.display().to_string(),
        updated_at: results::now_rfc3339(),
        points,
        collapsed: plan
            .collapsed
            .iter()
            .map(|c| CollapsedRecord {
                point: c.point,
                same_as: c.same_as,
            })
            .collect(),
    };
    let dir = results_root.join(&grid.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("sweep.json");
    let mut text = serde_json::to_vec_pretty(&record)?;
    text.push(b'\n');
    crate::atomic::write_atomic(&path, &text)?;
    Ok(path)
}
