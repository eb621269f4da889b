//! Every command and flag, defined and documented in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "runner", version, about = "Train, sweep and compare LeNet-5 variants on MNIST-style data")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one configuration described by a TOML spec.
    Run(RunArgs),
    /// Report test loss and accuracy of a run's best checkpoint, or of any
    /// LeNet-5 checkpoint in safetensors with PyTorch's parameter names.
    Eval(EvalArgs),
    /// Print every config key with its default value, as TOML.
    Defaults,
}

/// Layers above the spec file: `--set` (environment variables sit between).
#[derive(Debug, Args, Clone, Default)]
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
