//! `runner eval`: test loss and accuracy of a checkpoint.
//!
//! A checkpoint does not say its activation or pooling in its shapes, so
//! scoring it as the wrong model gives a number that looks real and is
//! not. runner writes the model settings into its checkpoints' metadata;
//! eval takes them from there, refuses a spec that contradicts them, and
//! says which model it assumes for a checkpoint without them.

use anyhow::{bail, Context, Result};

use crate::checkpoint::Weights;
use crate::cli::EvalArgs;
use crate::config::{self, ModelConfig, RunConfig, Sources};
use crate::data;
use crate::inference;
use crate::results::{self, RunDir};

pub fn execute(args: &EvalArgs) -> Result<i32> {
    let (config, checkpoint, note) = match &args.checkpoint {
        Some(file) => {
            let (config, note) = config_for_checkpoint(file, args)?;
            (config, file.clone(), note)
        }
        None => {
            let path = args
                .path
                .as_ref()
                .context("give a run folder, or --checkpoint FILE")?;
            let run_dir = RunDir::open(path)?;
            let spec = run_dir.file(results::CONFIG_FILE);
            let config = config::load(&Sources::new(Some(&spec), &args.overrides.sets))?;
            let note = match config.data.validation {
                config::Validation::TestSplit => {
                    Some("this run chose its best epoch on this same test split".to_string())
                }
                config::Validation::HoldOut(_) => None,
            };
            (config, run_dir.file(results::BEST_FILE), note)
        }
    };
    let weights = Weights::load(&checkpoint)?;
    super::init_threads(config.train.threads);
    let test = data::load_test(&config.data).context("loading the test split")?;
    let (loss, acc) = inference::evaluate(&config, &weights, &test)
        .with_context(|| format!("evaluating {}", checkpoint.display()))?;
    println!(
        "{}: test loss {loss:.4}, test acc {acc:.4} ({} images, {})",
        checkpoint.display(),
        test.len(),
        describe_model(&config.model)
    );
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(crate::exit::SUCCESS)
}

fn describe_model(m: &ModelConfig) -> String {
    format!(
        "{} {} {}",
        m.activation,
        m.pooling,
        if m.activate_c5_f6 {
            "activated c5/f6"
        } else {
            "linear c5/f6"
        }
    )
}

/// The config for `eval --checkpoint FILE [SPEC]`: the model settings from
/// the checkpoint's metadata when runner wrote them, else from the spec
/// and `--set`, else the tutorial's model, said out loud.
fn config_for_checkpoint(
    file: &std::path::Path,
    args: &EvalArgs,
) -> Result<(RunConfig, Option<String>)> {
    if let Some(spec) = &args.path {
        crate::sweep::grid::refuse_grid_as_spec(spec)?;
    }
    let metadata = Weights::load_metadata(file)?;
    let sources = Sources::new(args.path.as_deref(), &args.overrides.sets);
    let asked = config::load(&sources)?;
    let recorded = match ModelConfig::from_metadata(&metadata) {
        Some(model) => model.with_context(|| file.display().to_string())?,
        None => {
            let explicit = args.path.is_some()
                || args
                    .overrides
                    .sets
                    .iter()
                    .any(|s| s.trim_start().starts_with("model."));
            let note = (!explicit).then(|| {
                format!(
                    "{} has no runner metadata naming its model: scored as the tutorial's model \
                     ({}); give a spec or --set model.activation=... model.pooling=... if it is \
                     another",
                    file.display(),
                    describe_model(&asked.model)
                )
            });
            return Ok((asked, note));
        }
    };
    // A spec or --set that names another model than the default is a claim
    // about this checkpoint: refuse it when the checkpoint says otherwise.
    if asked.model != recorded && asked.model != ModelConfig::default() {
        bail!(
            "{} was trained as {}, but the spec and --set say {}: scoring it as another model \
             gives a meaningless number; drop the model settings to use the checkpoint's",
            file.display(),
            describe_model(&recorded),
            describe_model(&asked.model)
        );
    }
    let mut config = asked;
    config.model = recorded;
    Ok((config, None))
}
