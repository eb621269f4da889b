//! What a run is: every config key, once, with its type, default, note
//! and check (see `keys` for how an entry reads). The defaults are the
//! PyTorch tutorial's setup as it actually ran.
//!
//! To add a key: one entry in its section below, then its use.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::keys::{
    at_least_one, below_one, note, positive, section, set_at_least_one, zero_or_positive, Key,
};
use super::metric::EarlyStopping;

/// One fully resolved run: every key has a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Experiment name: results go to `<results>/<name>/<run-id>/`.
    pub name: String,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// The one key outside a section.
pub const NAME_KEY: Key = Key {
    key: "name",
    ..note(
        "results go to results/<name>/<run-id>/; default: the spec file's stem \
         (experiments/modern.toml -> \"modern\"), \"run\" without a file",
    )
};

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            name: "run".into(),
            data: DataConfig::default(),
            model: ModelConfig::default(),
            train: TrainConfig::default(),
        }
    }
}

impl RunConfig {
    /// Every key, in the order `runner defaults` and the README list them.
    pub fn keys() -> impl Iterator<Item = &'static Key> {
        std::iter::once(&NAME_KEY)
            .chain(DataConfig::KEYS)
            .chain(ModelConfig::KEYS)
            .chain(TrainConfig::KEYS)
    }

    /// Every rule the types alone do not enforce, as (key, problem) pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(problem) = check_name(&self.name) {
            out.push((NAME_KEY.key, problem));
        }
        self.data.problems(&mut out);
        self.model.problems(&mut out);
        self.train.problems(&mut out);
        out
    }
}

/// The name is a folder under the results folder: one plain component.
fn check_name(name: &String) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1 to 100 letters, digits, '-', '_' or '.' (it names a folder)"
        ))
    }
}

section! {
    /// `[data]`: which images, from where, and what picks the best epoch.
    pub struct DataConfig in "data" {
        dataset: Dataset = Dataset::Mnist,
            note("\"mnist\" or \"fashion-mnist\" (28x28 grey images, 10 classes)");
        dir: PathBuf = PathBuf::from("data/mnist"),
            note("folder with the four IDX files (.gz or raw)").neutral();
        download: bool = true,
            note("fetch missing files from the public mirrors (checksums verified)").neutral();
        #[serde(skip_serializing_if = "Option::is_none")]
        base_url: Option<String> = None,
            note("a mirror of your own to fetch from instead (ends with /)")
                .unset("built-in mirrors", "\"http://127.0.0.1:8000/mnist/\"")
                .neutral(),
            check = http_url;
        #[serde(skip_serializing_if = "Option::is_none")]
        limit_train: Option<usize> = None,
            note("use only the first N training images").unset("all", "2000"),
            check = set_at_least_one;
        #[serde(skip_serializing_if = "Option::is_none")]
        limit_test: Option<usize> = None,
            note("use only the first N test images").unset("all", "500"),
            check = set_at_least_one;
        validation: Validation = Validation::TestSplit,
            note("what picks the best epoch: \"test\" (the tutorial's way: the test split \
                  doubles as validation) or N training images held out"),
            check = |v| match v {
                Validation::HoldOut(0) => Err("must be \"test\" or at least 1 held-out image".into()),
                _ => Ok(()),
            };
        split_seed: u64 = 0,
            note("which training images are held out (the same for every train.seed)");
    }
}

section! {
    /// `[model]`: LeNet-5's variant.
    pub struct ModelConfig in "model" {
        activation: Activation = Activation::Sigmoid,
            note("\"sigmoid\", \"relu\" or \"tanh\", after c1 and c3");
        pooling: Pooling = Pooling::Avg,
            note("\"avg\" or \"max\" (2x2, stride 2)");
        activate_c5_f6: bool = false,
            note("also apply the activation after c5 and f6 (the tutorial has none there)");
    }
}

section! {
    /// `[train]`: how a run trains.
    pub struct TrainConfig in "train" {
        epochs: usize = 20,
            note("the budget: a finished run asked for more continues where it stopped")
                .neutral(),
            check = |v| {
                if (1..=MAX_EPOCHS).contains(v) {
                    Ok(())
                } else {
                    Err(format!("must be from 1 to {MAX_EPOCHS}, got {v}"))
                }
            };
        batch_size: usize = 16,
            note("images per training step (more than the split: the whole split, as in PyTorch)"),
            check = at_least_one;
        eval_batch_size: usize = 1000,
            note("batch size for evaluation: no effect on results"),
            check = at_least_one;
        lr: f64 = 1e-3, note("SGD learning rate"), check = positive;
        momentum: f64 = 0.9, note("SGD momentum (PyTorch's definition)"), check = below_one;
        weight_decay: f64 = 0.0,
            note("L2 penalty added to the gradient (PyTorch's SGD)"),
            check = zero_or_positive;
        step_size: usize = 10,
            note("StepLR per epoch: lr x gamma every step_size epochs"),
            check = at_least_one;
        // The tutorial's StepLR was never stepped: its lr stayed constant.
        gamma: f64 = 1.0, note("StepLR's factor; 1.0: the lr never changes"), check = positive;
        seed: u64 = 0, note("initial weights and every epoch's shuffle");
        device: DeviceChoice = DeviceChoice::Auto, note("\"auto\", \"cpu\" or \"cuda\"");
        threads: usize = 0,
            note("worker threads; 0: one per core; results do not depend on it").neutral(),
            check = |v| {
                if *v <= 1024 {
                    Ok(())
                } else {
                    Err(format!("{v} threads is not a sensible count"))
                }
            };
        tensorboard: bool = false,
            note("also write TensorBoard event files into the run folder's tensorboard/")
                .neutral();
        #[serde(skip_serializing_if = "Option::is_none")]
        early_stopping: Option<EarlyStopping> = None,
            note("stop once metric (\"val_loss\" or \"val_acc\") has not improved by more \
                  than min_delta for patience epochs")
                .unset("off", "{ metric = \"val_loss\", patience = 3, min_delta = 0.0 }"),
            check = |v| v.as_ref().map_or(Ok(()), EarlyStopping::check);
    }
}

/// More epochs than anyone trains LeNet-5 for; a bound the loop can honour.
pub const MAX_EPOCHS: usize = 1_000_000;

fn http_url(url: &Option<String>) -> Result<(), String> {
    match url {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            Err(format!("{url:?} must start with http:// or https://"))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    Mnist,
    FashionMnist,
}

/// Where the best epoch is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// The test split doubles as validation, as in the tutorial: the best
    /// epoch is chosen on the data it is scored on.
    TestSplit,
    /// This many training images, chosen by `data.split_seed`, are held
    /// out of training; the test split is used once, at the end.
    HoldOut(usize),
}

impl Validation {
    /// In words, for summaries and reports.
    pub fn describe(&self) -> String {
        match self {
            Validation::TestSplit => "the test split (the tutorial's way)".into(),
            Validation::HoldOut(n) => format!("{n} held-out training images"),
        }
    }
}

impl Serialize for Validation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Validation::TestSplit => s.serialize_str("test"),
            Validation::HoldOut(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Validation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Validation;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"test\" or a number of training images to hold out")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Validation, E> {
                match v {
                    "test" => Ok(Validation::TestSplit),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Validation, E> {
                usize::try_from(v)
                    .map(Validation::HoldOut)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Validation, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Sigmoid,
    Relu,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Avg,
    Max,
}

/// `train.device` and `bench --device`: the names are the variants'
/// names in lower case, for serde and clap alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

/// Writes a unit-variant enum by its serde name: the names are spelled
/// once, in the `rename_all` above.
macro_rules! display_by_serde_name {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(name)) => f.write_str(&name),
                    _ => Err(fmt::Error),
                }
            }
        }
    )*};
}
display_by_serde_name!(Dataset, Activation, Pooling, DeviceChoice);
