//! What a run is: the spec a user writes in TOML, layered with figment.
//!
//! Layers, lowest first: built-in defaults (the seed notebook's settings) <
//! the spec file < environment (`RUNNER_TRAIN__LR=0.01`) < command line
//! (`--set train.lr=0.01`). Unknown keys and wrong types are errors, and so
//! is every out-of-range value; each error names the key and where the value
//! came from (file and line, environment variable, or `--set`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

mod diagnose;
pub use diagnose::{known_keys, line_of, nearest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    Mnist,
    FashionMnist,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// "mnist" or "fashion-mnist" (both IDX sets of 28x28 grey images, 10 classes).
    pub dataset: Dataset,
    /// Folder holding the four IDX files (gzipped or raw).
    pub dir: PathBuf,
    /// Fetch missing files from the public mirrors (checksums verified).
    pub download: bool,
    /// Mirror to fetch from instead of the built-in list (ends with `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Use only the first N training images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_train: Option<usize>,
    /// Use only the first N test images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_test: Option<usize>,
    /// What picks the best epoch: the test split (the seed's way) or N
    /// training images held out of training.
    pub validation: Validation,
    /// Which training images are held out: the same for every `train.seed`.
    pub split_seed: u64,
}

/// Where the best epoch is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// The test split doubles as validation, as in the seed: the best
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
            Validation::TestSplit => "the test split (the seed's way)".into(),
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Activation after c1 and c3.
    pub activation: Activation,
    /// Pooling in s2 and s4 (2x2, stride 2).
    pub pooling: Pooling,
    /// Also apply the activation after c5 and f6 (the seed has none there).
    pub activate_c5_f6: bool,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Batch size for evaluation (no gradients: larger is faster).
    pub eval_batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// StepLR: multiply the lr by `gamma` every `step_size` epochs.
    pub step_size: usize,
    pub gamma: f64,
    pub seed: u64,
    pub device: DeviceChoice,
    /// Worker threads; 0 means one per core. Results do not depend on it.
    pub threads: usize,
    /// Also write each epoch's scalars as TensorBoard event files into the
    /// run folder's `tensorboard/`.
    pub tensorboard: bool,
    /// Stop a run whose validation metric has not improved for a while.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
}

/// `train.early_stopping = { metric = "val_loss", patience = 3, min_delta = 0.0 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    pub metric: Metric,
    /// Epochs without an improvement of more than `min_delta` before stopping.
    pub patience: usize,
    #[serde(default)]
    pub min_delta: f64,
}

/// A validation metric: higher val_acc, or lower val_loss, is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ValAcc,
    ValLoss,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::ValAcc => "val_acc",
            Metric::ValLoss => "val_loss",
        })
    }
}

impl Metric {
    /// This metric's value in an epoch's row.
    pub fn of(self, row: &crate::results::EpochMetrics) -> f64 {
        match self {
            Metric::ValAcc => row.val_acc,
            Metric::ValLoss => row.val_loss,
        }
    }

    /// Whether `a` beats `b` by more than `margin`.
    pub fn better(self, a: f64, b: f64, margin: f64) -> bool {
        match self {
            Metric::ValAcc => a > b + margin,
            Metric::ValLoss => a < b - margin,
        }
    }
}

impl EarlyStopping {
    /// The epoch at which these rows say to stop, if any: a pure function
    /// of the rows, so a resumed run stops where an uninterrupted one does.
    pub fn stop_epoch(&self, rows: &[crate::results::EpochMetrics]) -> Option<usize> {
        let mut best = self.metric.of(rows.first()?);
        let mut waited = 0;
        for row in &rows[1..] {
            let m = self.metric.of(row);
            if self.metric.better(m, best, self.min_delta) {
                best = m;
                waited = 0;
            } else {
                waited += 1;
                if waited >= self.patience {
                    return Some(row.epoch);
                }
            }
        }
        None
    }
}

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

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: Dataset::Mnist,
            dir: PathBuf::from("data/mnist"),
            download: true,
            base_url: None,
            limit_train: None,
            limit_test: None,
            validation: Validation::TestSplit,
            split_seed: 0,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            activation: Activation::Sigmoid,
            pooling: Pooling::Avg,
            activate_c5_f6: false,
        }
    }
}

impl Default for TrainConfig {
    /// The seed notebook's settings, as it actually ran (its StepLR was never
    /// stepped, so the lr stays constant: gamma 1).
    fn default() -> Self {
        TrainConfig {
            epochs: 20,
            batch_size: 16,
            eval_batch_size: 1000,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            step_size: 10,
            gamma: 1.0,
            seed: 0,
            device: DeviceChoice::Auto,
            threads: 0,
            tensorboard: false,
            early_stopping: None,
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
        })
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::Avg => "avg",
            Pooling::Max => "max",
        })
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
        })
    }
}

impl RunConfig {
    /// The learning rate in force during `epoch` (0-based), StepLR style.
    pub fn lr_at_epoch(&self, epoch: usize) -> f64 {
        let steps = epoch / self.train.step_size.max(1);
        self.train.lr * self.train.gamma.powi(steps as i32)
    }

    /// Resolved config as TOML, the form saved beside the results.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunConfig always serializes to TOML")
    }

    /// Hash of everything that decides a run's numbers: the run's
    /// identity. `RESULT_NEUTRAL_KEYS` are left out, so moving the data
    /// folder or asking for more epochs does not make a new run.
    pub fn result_hash(&self) -> String {
        let mut value = serde_json::to_value(self).expect("config serializes");
        for key in RESULT_NEUTRAL_KEYS {
            let (section, leaf) = key.split_once('.').expect("dotted key");
            if let Some(table) = value.get_mut(section).and_then(|t| t.as_object_mut()) {
                table.remove(leaf);
            }
        }
        // serde_json's map is sorted by key, so this text is canonical.
        let canonical = value.to_string();
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The short form of the hash that ends every run folder's name.
    pub fn short_hash(&self) -> String {
        self.result_hash()[..8].to_string()
    }

    /// The readable part of a run folder's name for a config run alone:
    /// the main knobs (a sweep uses the swept values instead).
    pub fn label(&self) -> String {
        let t = &self.train;
        format!(
            "{}-{}-lr{}-bs{}-s{}",
            self.model.activation,
            self.model.pooling,
            short_number(t.lr),
            t.batch_size,
            t.seed
        )
    }

    /// Every rule the types alone do not enforce. Returns (key, problem) pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let t = &self.train;
        let mut check = |ok: bool, key: &'static str, msg: String| {
            if !ok {
                out.push((key, msg));
            }
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 100
            && self.name != "."
            && self.name != ".."
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        check(
            name_ok,
            "name",
            format!(
                "{:?} must be 1 to 100 letters, digits, '-', '_' or '.' (it names a folder)",
                self.name
            ),
        );
        check(
            (1..=MAX_EPOCHS).contains(&t.epochs),
            "train.epochs",
            format!("must be from 1 to {MAX_EPOCHS}, got {}", t.epochs),
        );
        check(
            t.batch_size >= 1,
            "train.batch_size",
            "must be at least 1".into(),
        );
        check(
            t.eval_batch_size >= 1,
            "train.eval_batch_size",
            "must be at least 1".into(),
        );
        check(
            t.lr.is_finite() && t.lr > 0.0,
            "train.lr",
            format!("must be a positive number, got {}", t.lr),
        );
        check(
            t.momentum.is_finite() && (0.0..1.0).contains(&t.momentum),
            "train.momentum",
            format!("must be in [0, 1), got {}", t.momentum),
        );
        check(
            t.weight_decay.is_finite() && t.weight_decay >= 0.0,
            "train.weight_decay",
            format!("must be zero or positive, got {}", t.weight_decay),
        );
        check(
            t.step_size >= 1,
            "train.step_size",
            "must be at least 1".into(),
        );
        check(
            t.gamma.is_finite() && t.gamma > 0.0,
            "train.gamma",
            format!("must be a positive number, got {}", t.gamma),
        );
        check(
            t.threads <= 1024,
            "train.threads",
            format!("{} threads is not a sensible count", t.threads),
        );
        check(
            self.data.limit_train != Some(0),
            "data.limit_train",
            "must be at least 1 when set".into(),
        );
        check(
            self.data.limit_test != Some(0),
            "data.limit_test",
            "must be at least 1 when set".into(),
        );
        check(
            self.data.validation != Validation::HoldOut(0),
            "data.validation",
            "must be \"test\" or at least 1 held-out image".into(),
        );
        if let Some(es) = &self.train.early_stopping {
            check(
                es.patience >= 1,
                "train.early_stopping",
                "patience must be at least 1".into(),
            );
            check(
                es.min_delta.is_finite() && es.min_delta >= 0.0,
                "train.early_stopping",
                format!("min_delta must be zero or positive, got {}", es.min_delta),
            );
        }
        if let Some(url) = &self.data.base_url {
            check(
                url.starts_with("http://") || url.starts_with("https://"),
                "data.base_url",
                format!("{url:?} must start with http:// or https://"),
            );
        }
        out
    }
}

/// Values set by key, as a figment provider of their own so that errors can
/// say where a value came from: `--set` on the command line, or a sweep.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Names the source in errors, e.g. "command line".
    pub label: String,
    pub values: Vec<(String, toml::Value)>,
}

impl Layer {
    /// Parses `--set key=value` arguments.
    fn from_sets(sets: &[String]) -> Result<Self> {
        let mut values = Vec::new();
        for set in sets {
            let (key, raw) = set.split_once('=').with_context(|| {
                format!("--set {set:?}: expected KEY=VALUE, e.g. train.lr=0.01")
            })?;
            let key = key.trim();
            if key.is_empty() || key.split('.').any(|part| part.is_empty()) {
                bail!("--set {set:?}: {key:?} is not a key; keys look like train.lr");
            }
            values.push((key.to_string(), parse_value(raw.trim())));
        }
        Ok(Layer {
            label: COMMAND_LINE.into(),
            values,
        })
    }

    /// A TOML table of settings as dotted keys (`{train = {lr = 1}}` -> `train.lr`).
    pub fn from_table(label: impl Into<String>, table: &toml::Table) -> Self {
        fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(t) => walk(&key, t, out),
                    other => out.push((key, other.clone())),
                }
            }
        }
        let mut values = Vec::new();
        walk("", table, &mut values);
        Layer {
            label: label.into(),
            values,
        }
    }
}

const COMMAND_LINE: &str = "command line";

/// A command-line value is read as TOML (numbers, booleans, quoted strings);
/// anything that is not valid TOML is taken as a bare string (`relu`).
fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.label.clone())
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut root = Dict::new();
        for (key, value) in &self.values {
            let value = Value::serialize(value)?;
            insert_dotted(&mut root, key, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert_dotted(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_dotted(inner, rest, value);
            }
        }
    }
}

/// Where the layers of one config come from.
pub struct Sources<'a> {
    /// The spec file, if any (`runner eval --checkpoint` may go without).
    pub spec: Option<&'a Path>,
    /// Layers between the spec file and the environment (a sweep's values).
    pub layers: &'a [Layer],
    /// `--set key=value` overrides.
    pub sets: &'a [String],
}

impl<'a> Sources<'a> {
    /// A spec file and `--set` overrides, nothing in between.
    pub fn new(spec: Option<&'a Path>, sets: &'a [String]) -> Self {
        Sources {
            spec,
            layers: &[],
            sets,
        }
    }
}

/// Environment variables read as config: `RUNNER_<SECTION>__<KEY>`, plus `RUNNER_NAME`.
fn env_provider() -> Env {
    Env::prefixed("RUNNER_")
        .filter(|key| key.as_str().contains("__") || key.as_str().eq_ignore_ascii_case("name"))
        .split("__")
}

/// Keys that do not change what a run computes, left out of its identity
/// (`RunConfig::result_hash`) and out of report columns: where the data
/// comes from, how many threads train (results are bit-identical), and
/// the epoch budget (a run asked for more epochs continues from where it
/// stopped: the first N epochs are the same whatever the budget).
pub const RESULT_NEUTRAL_KEYS: [&str; 6] = [
    "data.dir",
    "data.download",
    "data.base_url",
    "train.threads",
    "train.epochs",
    "train.tensorboard",
];

/// More epochs than anyone trains LeNet-5 for; a bound the loop can honour.
pub const MAX_EPOCHS: usize = 1_000_000;

/// A number as a run folder shows it: short, and read back exactly
/// (`0.01`, `1e-5`, `1e308`, never 309 digits).
pub fn short_number(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-4) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Top-level keys only a grid file has (see `sweep::grid`).
pub const GRID_KEYS: [&str; 6] = ["sweep", "zip", "include", "exclude", "base", "spec"];

/// Builds the layered figment for a spec, without extracting it.
fn figment_for(sources: &Sources) -> Result<Figment> {
    let mut figment = Figment::from(Serialized::defaults(RunConfig::default()));
    if let Some(spec) = sources.spec {
        if !spec.is_file() {
            bail!(
                "spec file {} does not exist or is not a file",
                spec.display()
            );
        }
        // Parse once up front: figment reports TOML syntax errors without a line.
        let text = std::fs::read_to_string(spec)
            .with_context(|| format!("reading spec file {}", spec.display()))?;
        let table = match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(e) => bail!(
                "{}: not valid TOML: {}",
                spec.display(),
                e.to_string().trim_end()
            ),
        };
        if let Some(key) = GRID_KEYS.iter().find(|k| table.contains_key(**k)) {
            bail!(
                "{} is a grid file (it has `{key}`), not a run spec: run it with `runner sweep {}`",
                spec.display(),
                spec.display()
            );
        }
        // The name defaults to the file's stem: `experiments/modern.toml` -> "modern".
        if let Some(stem) = spec.file_stem().and_then(|s| s.to_str()) {
            figment = figment.merge(Serialized::default("name", stem));
        }
        figment = figment.merge(Toml::file_exact(spec));
    }
    for layer in sources.layers {
        figment = figment.merge(layer.clone());
    }
    Ok(figment
        .merge(env_provider())
        .merge(Layer::from_sets(sources.sets)?))
}

/// Resolves and validates a config. On failure the error lists every
/// problem at once, in reading order, each naming its key and its source.
pub fn load(sources: &Sources) -> Result<RunConfig> {
    let figment = figment_for(sources)?;
    diagnose::warn_unread_env_vars();
    if let Ok(config) = figment.extract::<RunConfig>() {
        if config.problems().is_empty() {
            return Ok(config);
        }
    }
    let problems = diagnose::problems(&figment);
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    if lines.is_empty() {
        // Not expected: the extraction failed but no key shows why.
        let error = figment.extract::<RunConfig>().err();
        bail!(
            "invalid config: {}",
            error.map(|e| e.to_string()).unwrap_or_default()
        );
    }
    bail!("invalid config:\n  {}", lines.join("\n  "));
}

/// What each key means, in a few words, for `runner defaults`.
const KEY_NOTES: [(&str, &str); 23] = [
    ("dataset", "\"mnist\" or \"fashion-mnist\""),
    ("dir", "folder with the four IDX files (.gz or raw)"),
    ("download", "fetch missing files from the public mirrors"),
    (
        "base_url",
        "unset: the built-in mirrors; or a mirror of your own",
    ),
    (
        "limit_train",
        "unset: every training image; or only the first N",
    ),
    ("limit_test", "unset: every test image; or only the first N"),
    (
        "activation",
        "\"sigmoid\", \"relu\" or \"tanh\", after c1 and c3",
    ),
    ("pooling", "\"avg\" or \"max\" (2x2, stride 2)"),
    (
        "activate_c5_f6",
        "also apply the activation after c5 and f6",
    ),
    ("eval_batch_size", "no effect on results"),
    ("lr", "SGD learning rate"),
    ("momentum", "SGD momentum (PyTorch's definition)"),
    ("weight_decay", "L2 penalty added to the gradient"),
    ("step_size", "StepLR: lr x gamma every step_size epochs"),
    ("gamma", "1.0: the lr never changes"),
    ("seed", "initial weights and every epoch's shuffle"),
    ("device", "\"auto\", \"cpu\" or \"cuda\""),
    ("threads", "0: one per core; results do not depend on it"),
    (
        "tensorboard",
        "also write TensorBoard event files into the run folder's tensorboard/",
    ),
    (
        "epochs",
        "the budget: a finished run asked for more continues",
    ),
    (
        "validation",
        "\"test\" (the seed's way) or N training images held out",
    ),
    ("split_seed", "which training images are held out"),
    ("early_stopping", "unset: train every epoch of the budget"),
];

/// Keys that are unset by default, shown commented out with an example.
const OPTIONAL_KEYS: [(&str, &str, &str); 4] = [
    ("data", "base_url", "\"http://127.0.0.1:8000/mnist/\""),
    ("data", "limit_train", "2000"),
    ("data", "limit_test", "500"),
    (
        "train",
        "early_stopping",
        "{ metric = \"val_loss\", patience = 3, min_delta = 0.0 }",
    ),
];

/// Every key a spec can set, with its default and what it means: the text
/// of `runner defaults`, itself a valid spec.
pub fn default_toml() -> String {
    let note = |key: &str| KEY_NOTES.iter().find(|(k, _)| *k == key).map(|(_, n)| *n);
    let mut out = String::from(
        "# Every config key with its default. A spec file sets any of them;\n\
         # RUNNER_<SECTION>__<KEY> variables and --set KEY=VALUE override it.\n\
         # name: where results go (results/<name>/); defaults to the spec file's\n\
         # stem (experiments/modern.toml -> \"modern\"), and to \"run\" without a file.\n",
    );
    let mut section = String::new();
    let optional = |section: &str, out: &mut String| {
        for (_, key, example) in OPTIONAL_KEYS.iter().filter(|(s, _, _)| *s == section) {
            let text = format!("# {key} = {example}");
            out.push_str(&format!("{text:<28} # {}\n", note(key).unwrap_or("")));
        }
    };
    for line in RunConfig::default().to_toml().lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        }
        let key = line.split(" = ").next().unwrap_or("");
        match note(key).filter(|_| line.contains(" = ")) {
            Some(n) => out.push_str(&format!("{line:<28} # {n}\n")),
            None if line.is_empty() => {
                optional(&section, &mut out);
                out.push('\n');
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    optional(&section, &mut out);
    out
}

/// The value of a dotted key in a resolved config, as text ("" if absent).
pub fn value_at(config: &RunConfig, key: &str) -> Option<String> {
    let mut value = serde_json::to_value(config).ok()?;
    for part in key.split('.') {
        value = value.get(part)?.clone();
    }
    Some(match value {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// What an unset optional key means: a report shows this, so that a key
/// unset in one run and set in another is never taken as common.
const UNSET_MEANINGS: [(&str, &str); 4] = [
    ("data.base_url", "built-in mirrors"),
    ("data.limit_train", "all"),
    ("data.limit_test", "all"),
    ("train.early_stopping", "off"),
];

/// Every key with its value as text, sorted; unset optional keys carry
/// their meaning (`data.limit_test = all`).
pub fn flatten(config: &RunConfig) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match value {
            // A table inside a section is one setting: shown as its text.
            serde_json::Value::Object(map) if prefix.contains('.') => {
                let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.insert(prefix.to_string(), parts.join(" ").replace('"', ""));
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        &serde_json::to_value(config).expect("config serializes"),
        &mut out,
    );
    for (key, meaning) in UNSET_MEANINGS {
        out.entry(key.to_string())
            .or_insert_with(|| meaning.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_steps_every_step_size_epochs() {
        let mut c = RunConfig::default();
        c.train.lr = 0.1;
        c.train.step_size = 2;
        c.train.gamma = 0.5;
        let lrs: Vec<f64> = (0..5).map(|e| c.lr_at_epoch(e)).collect();
        assert_eq!(lrs, vec![0.1, 0.1, 0.05, 0.05, 0.025]);
    }

    #[test]
    fn hash_ignores_where_data_lives_threads_and_epochs_but_not_lr() {
        let a = RunConfig::default();
        let mut b = a.clone();
        b.data.dir = "/elsewhere".into();
        b.train.threads = 7;
        b.train.epochs = 99;
        assert_eq!(a.result_hash(), b.result_hash());
        b.train.lr = 0.5;
        assert_ne!(a.result_hash(), b.result_hash());
    }

    #[test]
    fn set_values_parse_as_toml_or_bare_strings() {
        assert_eq!(parse_value("0.5"), toml::Value::Float(0.5));
        assert_eq!(parse_value("3"), toml::Value::Integer(3));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(parse_value("relu"), toml::Value::String("relu".into()));
        assert_eq!(parse_value("\"relu\""), toml::Value::String("relu".into()));
    }
}
