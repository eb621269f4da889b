//! The layers of one config, lowest first: built-in defaults < the spec
//! file < a sweep's layers < environment (`RUNNER_TRAIN__LR=0.01`) <
//! command line (`--set train.lr=0.01`), merged with figment; and `load`,
//! which resolves and validates them, reporting every problem at once.

use std::path::Path;

use anyhow::{bail, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::diagnose::{self, COMMAND_LINE};
use super::keys::{ENV_PREFIX, ENV_SECTION_BREAK};
use super::schema::RunConfig;

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
            // TOML would read a second line as a second key, silently.
            if raw.contains(['\n', '\r']) {
                bail!("--set {set:?}: one KEY=VALUE per --set, on one line");
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

/// A command-line value is read as TOML (numbers, booleans, quoted strings);
/// anything that is not valid TOML is taken as a bare string (`relu`).
pub(super) fn parse_value(raw: &str) -> toml::Value {
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

fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| super::keys::env_name_is_read(key.as_str()))
        .split(ENV_SECTION_BREAK)
}

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
        if let Err(e) = text.parse::<toml::Table>() {
            bail!(
                "{}: not valid TOML: {}",
                spec.display(),
                e.to_string().trim_end()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_parse_as_toml_or_bare_strings() {
        assert_eq!(parse_value("0.5"), toml::Value::Float(0.5));
        assert_eq!(parse_value("3"), toml::Value::Integer(3));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(parse_value("relu"), toml::Value::String("relu".into()));
        assert_eq!(parse_value("\"relu\""), toml::Value::String("relu".into()));
    }
}
