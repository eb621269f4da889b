//! Every command and flag, defined and documented in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DeviceChoice;
use crate::report::format::Format;

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version,
    about = "Train, sweep and compare LeNet-5 variants on MNIST-style data"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one configuration described by a TOML spec.
    Run(RunArgs),
    /// Run a grid of configurations in sequence, skipping finished runs and
    /// resuming interrupted ones.
    Sweep(SweepArgs),
    /// Compare the runs under a folder: a table (or markdown, CSV, JSON) and figures.
    Report(ReportArgs),
    /// Predict digits with a run's best checkpoint: the first test images, or PNG files.
    Predict(PredictArgs),
    /// Report test loss and accuracy of a run's best checkpoint, or of any
    /// LeNet-5 checkpoint in safetensors with PyTorch's parameter names.
    Eval(EvalArgs),
    /// Measure training and inference throughput, epoch time and peak memory.
    Bench(BenchArgs),
    /// Write finished runs' results in another tool's format.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Print every config key with its default value, as TOML.
    Defaults,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Each run's per-epoch scalars (metrics.csv) as TensorBoard event
    /// files: OUT/<the run's folder under RESULTS>/events.out.tfevents.*,
    /// for `tensorboard --logdir OUT`.
    Tensorboard {
        /// A results folder (or any folder below one).
        results: PathBuf,
        /// Where to write the event files.
        out: PathBuf,
    },
}

/// Layers above the spec file: `--set` (environment variables sit between).
#[derive(Debug, Args, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Override any config key, e.g. `--set train.lr=0.01 --set model.activation=relu`.
    /// Repeatable; wins over the spec file and RUNNER_* environment variables.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The spec file (TOML), e.g. experiments/baseline.toml.
    pub spec: PathBuf,
    #[command(flatten)]
    pub overrides: Overrides,
    /// Root folder for results; runs go to DIR/<name>/<run-id>/.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub results_dir: PathBuf,
    /// Print the resolved config and the run folder, then exit without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Train again even if the run folder holds a completed run (it is replaced).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A run folder (holding config.toml and best.safetensors); with
    /// --checkpoint, an optional spec giving the model and data settings.
    #[arg(value_name = "RUN_DIR | SPEC", required_unless_present = "checkpoint")]
    pub path: Option<PathBuf>,
    /// Evaluate this checkpoint file instead of a run's best one.
    #[arg(long, value_name = "FILE.safetensors")]
    pub checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Folder with the MNIST files (missing files are downloaded there).
    #[arg(long, value_name = "DIR", default_value = "data/mnist")]
    pub data: PathBuf,
    /// Seconds of timed work per table cell, after a short warm-up.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Training batch sizes to measure, or `none`.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256", value_parser = batch_size)]
    pub train_batches: Vec<Option<usize>>,
    /// Inference batch sizes to measure, or `none`.
    #[arg(long, value_delimiter = ',', default_value = "256,1000", value_parser = batch_size)]
    pub infer_batches: Vec<Option<usize>>,
    /// Model variants to measure: sigmoid+avg (the PyTorch tutorial's) and relu+max.
    #[arg(long, value_delimiter = ',', default_value = "sigmoid+avg,relu+max")]
    pub variants: Vec<String>,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// The device to measure.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Skip timing a full epoch of the PyTorch tutorial's setup.
    #[arg(long)]
    pub no_epoch: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone, PartialEq)]
pub struct SweepArgs {
    /// The grid file (TOML), e.g. experiments/grid.toml.
    pub grid: PathBuf,
    #[command(flatten)]
    pub overrides: Overrides,
    /// Root folder for results; runs go to DIR/<sweep name>/<run-id>/.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub results_dir: PathBuf,
    /// List the points (index, status, run id, values) and exit.
    #[arg(long, visible_alias = "dry-run")]
    pub list: bool,
    /// Print how many points there are (in this shard) and exit.
    #[arg(long)]
    pub count: bool,
    /// Run only slice I of N (0-based), e.g. 0/4. Without it, Slurm array and
    /// Kubernetes Indexed Job variables pick the slice when present.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Train again the runs whose last attempt failed.
    #[arg(long)]
    pub retry_failed: bool,
    /// With successive halving: when a rung waits for runs other processes
    /// are training, exit with code 75 instead of waiting (for schedulers
    /// that requeue).
    #[arg(long)]
    pub no_wait: bool,
    /// Run N worker processes on this machine that share the sweep through
    /// the run folders' locks (train.threads is divided between them unless
    /// set); one combined progress line; Ctrl-C stops them all.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Keep DIR/report.html up to date while the sweep runs (after every
    /// epoch of every run, from any process writing into the results
    /// folder); the page reloads itself until no run is live.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

impl SweepArgs {
    /// The command-line arguments after `runner sweep` that parse back to
    /// these (a test checks the round trip): how `--jobs` starts workers.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = vec![self.grid.clone().into()];
        let mut flag = |name: &str, value: Option<std::ffi::OsString>| {
            out.push(name.into());
            out.extend(value);
        };
        for set in &self.overrides.sets {
            flag("--set", Some(set.into()));
        }
        flag("--results-dir", Some(self.results_dir.clone().into()));
        let switches = [
            ("--list", self.list),
            ("--count", self.count),
            ("--retry-failed", self.retry_failed),
            ("--no-wait", self.no_wait),
        ];
        for (name, on) in switches {
            if on {
                flag(name, None);
            }
        }
        if let Some(shard) = &self.shard {
            flag("--shard", Some(shard.into()));
        }
        flag("--jobs", Some(self.jobs.to_string().into()));
        if let Some(dir) = &self.report {
            flag("--report", Some(dir.clone().into()));
        }
        out
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results folder (or any folder below one); every run folder under it is read.
    #[arg(default_value = "results")]
    pub path: PathBuf,
    /// Group runs into rows by these keys (comma-separated), with mean ± std over each
    /// group; `none` shows every run on its own row. Default: every key that differs
    /// between the runs except train.seed.
    #[arg(long, value_name = "KEYS|none")]
    pub group_by: Option<String>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[arg(long, value_name = "KEY", help = crate::report::sort_help())]
    pub sort: Option<String>,
    /// Keep only runs with KEY=VALUE (a config key, or status); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Show only the first N rows.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Also write report.html (one self-contained page), report.md and the
    /// figures (PNG and SVG) into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Follow the runs as they train until Ctrl-C: with --out, rewrite
    /// report.html whenever a run folder changes (the page reloads itself
    /// while runs are live); without, redraw the table in the terminal.
    #[arg(long)]
    pub watch: bool,
    /// Figures: the y axis from 0 (to 1 for accuracy) instead of zoomed to
    /// the data.
    #[arg(long)]
    pub full_range: bool,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A run folder (its config.toml and best.safetensors are used).
    pub run_dir: PathBuf,
    /// How many test images, from the first.
    #[arg(long, default_value_t = 20)]
    pub count: usize,
    /// Predict these PNG files instead (a folder of them, sorted by name): grey
    /// or colour, any size (scaled to 28x28); dark digits on light paper are inverted.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Draw the images with labels and predictions into this PNG (an SVG goes beside it).
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// A batch size for `runner bench`, or `none` (parsed as `None`) to skip a mode.
fn batch_size(text: &str) -> Result<Option<usize>, String> {
    match text {
        "none" => Ok(None),
        _ => text
            .parse()
            .map(Some)
            .map_err(|_| format!("{text:?} is not a batch size (a whole number, or none)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field is named here (no `..`): a new flag does not compile
    /// until it is added, and then this fails until `to_args` passes it on.
    #[test]
    fn sweep_args_survive_a_round_trip_through_the_command_line() {
        let all_set = SweepArgs {
            grid: "g.toml".into(),
            overrides: Overrides {
                sets: vec!["train.lr=0.1".into(), "data.dir=a b".into()],
            },
            results_dir: "out dir".into(),
            list: true,
            count: true,
            shard: Some("1/3".into()),
            retry_failed: true,
            no_wait: true,
            jobs: 4,
            report: Some("rep".into()),
        };
        let none_set = SweepArgs {
            overrides: Overrides::default(),
            list: false,
            count: false,
            shard: None,
            retry_failed: false,
            no_wait: false,
            jobs: 1,
            report: None,
            ..all_set.clone()
        };
        for args in [all_set, none_set] {
            let mut line: Vec<std::ffi::OsString> = vec!["runner".into(), "sweep".into()];
            line.extend(args.to_args());
            match Cli::try_parse_from(line).unwrap().command {
                Command::Sweep(parsed) => assert_eq!(parsed, args),
                other => panic!("parsed as {other:?}"),
            }
        }
    }
}
