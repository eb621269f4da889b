//! The run directory: `<results>/<name>/<run-id>/` with `config.toml`,
//! `metrics.csv`, `summary.json` and `best.safetensors`. Every file is
//! written whole to a temporary file in the same folder and then renamed
//! over the old one, so a crash never leaves a half-written file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::config::RunConfig;
use crate::metrics::{metrics_csv, EpochMetrics};

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.csv";
pub const SUMMARY_FILE: &str = "summary.json";
pub const BEST_FILE: &str = "best.safetensors";
/// Weights, momentum and epoch counter after the last finished epoch.
pub const STATE_FILE: &str = "state.safetensors";
/// Locked (flock) by the process training the run.
pub const LOCK_FILE: &str = ".lock";

/// A run's status as its summary records it. Written and read by its
/// `name` (the only place the names are spelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Running,
    Completed,
    Interrupted,
    Failed,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub status: Status,
    /// Why the run failed or stopped, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub name: String,
    pub run_id: String,
    pub best_epoch: Option<usize>,
    pub best_val_acc: Option<f64>,
    pub final_val_acc: Option<f64>,
    /// What chose the best epoch (`data.validation`, in words).
    #[serde(default)]
    pub validation: String,
    /// The best epoch's weights scored once on the test split, after
    /// training; None while running, and when the test split was the
    /// validation split (its score is then `best_val_acc`, no second number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc: Option<f64>,
    /// Images in the test split the run was scored on.
    #[serde(default)]
    pub test_images: usize,
    /// The epoch at which early stopping ended the run, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early_at: Option<usize>,
    /// Successive halving did not promote the run past this rung (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_after_rung: Option<usize>,
    pub epochs_completed: usize,
    pub epochs_planned: usize,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub wall_seconds: f64,
    pub mean_train_images_per_sec: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub config_hash: String,
    pub host: String,
    /// The processor, as `cpu_model` names it (absent in older summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    pub device: String,
    pub threads: usize,
    pub runner_version: String,
    pub dfdx_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
}

impl Summary {
    /// Completed with at least `epochs` epochs: nothing left to train.
    /// A completed run asked for more epochs continues from its state.
    pub fn is_finished(&self, epochs: usize) -> bool {
        self.status == Status::Completed
            && (self.epochs_completed >= epochs || self.stopped_early_at.is_some())
    }
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Running,
        Status::Completed,
        Status::Interrupted,
        Status::Failed,
    ];

    /// The name summary.json, reports and sweeps use.
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Status::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names = Status::ALL.map(Status::name);
                serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(&name),
                    &format!("one of {}", names.join(", ")).as_str(),
                )
            })
    }
}

/// A label cut to at most `MAX_LABEL` bytes (a folder name must stay under
/// the file system's 255): the hash after it keeps the name unique.
fn bounded(label: &str) -> &str {
    const MAX_LABEL: usize = 120;
    let mut end = label.len().min(MAX_LABEL);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    &label[..end]
}

/// A run's folder and the files in it.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// The one way a run folder is named, for `run` and `sweep` alike:
    /// `<results>/<name>/<label>-<short hash>`. The folder is found by the
    /// hash: if one of that config already exists (whichever command made
    /// it, whatever its readable label), that is the run's folder.
    pub fn locate(results_root: &Path, config: &RunConfig, label: &str) -> Self {
        let parent = results_root.join(&config.name);
        let suffix = format!("-{}", config.short_hash());
        let hash = config.result_hash();
        let existing = std::fs::read_dir(&parent).ok().and_then(|entries| {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().ends_with(&suffix))
                })
                // A short-hash collision with another config is not ours.
                .filter(|p| {
                    read_summary(&p.join(SUMMARY_FILE)).map_or(true, |s| s.config_hash == hash)
                })
                .collect();
            found.sort();
            found.into_iter().next()
        });
        RunDir {
            path: existing.unwrap_or_else(|| parent.join(format!("{}{suffix}", bounded(label)))),
        }
    }

    /// A folder given as a run folder (to `eval`, `predict`): it must hold
    /// the run's config.toml.
    pub fn open(path: &Path) -> Result<Self> {
        let run_dir = RunDir {
            path: path.to_path_buf(),
        };
        if !run_dir.file(CONFIG_FILE).is_file() {
            anyhow::bail!(
                "{} is not a run folder: it has no {CONFIG_FILE}",
                path.display()
            );
        }
        Ok(run_dir)
    }

    /// The run id: the folder's name.
    pub fn id(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Creates the folder. The results root may be a symbolic link (a
    /// results folder on another disk); `<name>/` and the run folder below
    /// it may not: a link there would put a run outside the results folder.
    pub fn create(&self) -> Result<()> {
        for dir in [self.path.parent(), Some(self.path.as_path())]
            .into_iter()
            .flatten()
        {
            if dir
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                anyhow::bail!(
                    "{} is a symbolic link: runner writes runs only inside the results folder \
                     (a link at the results folder itself is followed); remove the link",
                    dir.display()
                );
            }
        }
        std::fs::create_dir_all(&self.path)
            .with_context(|| format!("creating run folder {}", self.path.display()))
    }

    /// Removes the temporary files a write killed midway left behind
    /// (`.tmp-*`): call it holding the folder's lock, when no write is live.
    pub fn remove_stale_temporaries(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(crate::atomic::TEMP_PREFIX)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        let text = format!(
            "# Resolved config of run {} (defaults < spec < environment < --set).\n{}",
            self.id(),
            config.to_toml()
        );
        write_atomic(&self.file(CONFIG_FILE), text.as_bytes())
    }

    /// Rewrites `metrics.csv` with all rows so far.
    pub fn write_metrics(&self, rows: &[EpochMetrics]) -> Result<()> {
        write_atomic(&self.file(METRICS_FILE), &metrics_csv(rows)?)
    }

    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(summary)?;
        text.push(b'\n');
        write_atomic(&self.file(SUMMARY_FILE), &text)
    }

    pub fn read_summary(&self) -> Result<Summary> {
        read_summary(&self.file(SUMMARY_FILE))
    }

    /// The best checkpoint loads: a completed run without one is not done.
    pub fn best_is_readable(&self) -> bool {
        crate::checkpoint::Weights::verify(&self.file(BEST_FILE)).is_ok()
    }
}

pub fn read_summary(path: &Path) -> Result<Summary> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a run summary", path.display()))
}

/// Reads a run's resolved config back.
pub fn read_config(path: &Path) -> Result<RunConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: not a run config", path.display()))
}

/// Peak resident memory of this process so far, in MB (Linux; None elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The processor this runs on, from /proc/cpuinfo (Linux; None elsewhere):
/// its model name with the family and model numbers, which tell apart
/// processors that share a name (a VM's "Intel(R) Xeon(R) Processor",
/// or AMD's "EPYC" across generations), so that speed figures say where
/// they were measured.
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpu_model_from(&info)
}

fn cpu_model_from(cpuinfo: &str) -> Option<String> {
    // Fields of the first processor only: every core reports the same.
    let first = cpuinfo.split("\n\n").next()?;
    let field = |key: &str| {
        first.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == key).then(|| value.trim().to_string())
        })
    };
    let name = field("model name")?;
    Some(match (field("cpu family"), field("model")) {
        (Some(family), Some(model)) => format!("{name} (family {family}, model {model})"),
        _ => name,
    })
}

pub fn now_rfc3339() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_names_the_first_processor_with_family_and_model() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n\
                    model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx512f\n\n\
                    processor\t: 1\nmodel name\t: Other\n";
        assert_eq!(
            cpu_model_from(info).as_deref(),
            Some("Intel(R) Xeon(R) Processor (family 6, model 207)")
        );
        // Some architectures give a name and no family or model.
        assert_eq!(
            cpu_model_from("model name\t: Some CPU\n").as_deref(),
            Some("Some CPU")
        );
        assert_eq!(cpu_model_from("processor\t: 0\n"), None);
    }
}
