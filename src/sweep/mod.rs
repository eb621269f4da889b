//! `runner sweep`: a grid of runs, run in sequence, that survives crashes,
//! skips finished work and splits across processes and machines.
//!
//! Every point is resolved and validated before anything trains. Each run
//! goes through `execute::run_one`, which locks its folder, skips it when
//! completed, and resumes it when interrupted; `sweep.json` beside the runs
//! records the grid and each point's status.

pub mod grid;
pub mod shard;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::{self, Layer, RunConfig, Sources};
use crate::results::{self, RunDir, Status};
use grid::{Grid, Point};

/// A point resolved into a full config and its run folder.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// 1-based position in the whole grid.
    pub index: usize,
    pub point: Point,
    pub config: RunConfig,
    pub run_dir: RunDir,
}

impl PlannedRun {
    pub fn run_id(&self) -> String {
        self.run_dir.id()
    }

    /// Status from the run folder: pending when it has no summary yet.
    pub fn status(&self) -> String {
        match self.run_dir.read_summary() {
            Ok(s) if s.config_hash == self.config.result_hash() => status_name(s.status).into(),
            _ => "pending".into(),
        }
    }
}

pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Running => "running",
        Status::Completed => "completed",
        Status::Interrupted => "interrupted",
        Status::Failed => "failed",
    }
}

/// Resolves every point of `grid` (base < point < environment < --set),
/// failing on the first invalid one before any work starts.
pub fn plan(grid: &Grid, sets: &[String], results_root: &Path) -> Result<Vec<PlannedRun>> {
    let mut runs: Vec<PlannedRun> = Vec::new();
    let total = grid.points.len();
    for (i, point) in grid.points.iter().enumerate() {
        let mut layers = Vec::new();
        if let Some(spec) = &grid.spec {
            layers.push(Layer::from_table(
                format!("{} [spec]", grid.file.display()),
                spec,
            ));
        }
        let mut values: Vec<(String, toml::Value)> = point.values.clone().into_iter().collect();
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
        let id = format!("{}-{}", point.slug(), &config.result_hash()[..8]);
        let run_dir = RunDir {
            path: results_root.join(&config.name).join(id),
        };
        // --set can collapse an axis: keep one run per distinct config.
        if runs.iter().any(|r| r.run_dir.path == run_dir.path) {
            continue;
        }
        runs.push(PlannedRun {
            index: i + 1,
            point: point.clone(),
            config,
            run_dir,
        });
    }
    Ok(runs)
}

/// `sweep.json`: the grid and where each point stands.
#[derive(Debug, Serialize)]
struct SweepRecord<'a> {
    name: &'a str,
    grid_file: String,
    updated_at: String,
    points: Vec<PointRecord>,
}

#[derive(Debug, Serialize)]
struct PointRecord {
    index: usize,
    run_id: String,
    values: BTreeMap<String, String>,
    status: String,
}

/// Rewrites `sweep.json` from the run folders (the truth), atomically.
pub fn write_record(grid: &Grid, runs: &[PlannedRun], results_root: &Path) -> Result<PathBuf> {
    let points = runs
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
            status: r.status(),
        })
        .collect();
    let record = SweepRecord {
        name: &grid.name,
        grid_file: grid.file.display().to_string(),
        updated_at: results::now_rfc3339(),
        points,
    };
    let dir = results_root.join(&grid.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("sweep.json");
    let mut text = serde_json::to_vec_pretty(&record)?;
    text.push(b'\n');
    results::write_atomic(&path, &text)?;
    Ok(path)
}
