//! Config problems, all at once and in words: every unknown key (with the
//! nearest known one), every value of the wrong type or out of range, each
//! with where it came from, sorted as a user reads them (the spec file by
//! line, then the environment, then `--set`). Also the warning for
//! `RUNNER_*` variables that no key reads.

use std::path::{Path, PathBuf};
use std::sync::Once;

use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::{Figment, Metadata};

use super::keys::{env_name_is_read, env_var_for, ENV_PREFIX};
use super::schema::RunConfig;

/// The name of the `--set` layer, by which its values are recognised.
pub(super) const COMMAND_LINE: &str = "command line";

/// One problem and where it came from.
#[derive(Debug, Clone)]
pub struct Problem {
    pub origin: Origin,
    /// The key, dotted.
    pub key: String,
    pub what: String,
}

/// Where a value came from; the order is the order problems are listed in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Defaults,
    File { path: PathBuf, line: Option<usize> },
    Layer(String),
    Environment(String),
    CommandLine,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origin {
            Origin::Defaults => write!(f, "defaults")?,
            Origin::File {
                path,
                line: Some(l),
            } => write!(f, "{}, line {l}", path.display())?,
            Origin::File { path, line: None } => write!(f, "{}", path.display())?,
            Origin::Layer(name) => write!(f, "{name}")?,
            Origin::Environment(var) => write!(f, "environment variable {var}")?,
            Origin::CommandLine => write!(f, "--set {}", self.key)?,
        }
        write!(f, ": `{}` {}", self.key, self.what)
    }
}

/// Every key a spec can set, dotted, the optional ones included.
pub fn known_keys() -> Vec<String> {
    RunConfig::keys().map(|k| k.key.to_string()).collect()
}

/// The tables of a spec: `[data]`, `[model]`, `[train]`.
fn is_section(name: &str) -> bool {
    RunConfig::keys().any(|k| k.section() == name)
}

/// Every problem of the layered config, in reading order (empty: it is valid).
pub fn problems(figment: &Figment) -> Vec<Problem> {
    let merged: Dict = match figment.extract() {
        Ok(dict) => dict,
        Err(e) => {
            return vec![Problem {
                origin: Origin::Defaults,
                key: e.path.join("."),
                what: e.kind.to_string(),
            }]
        }
    };
    let known = known_keys();
    let mut out = Vec::new();
    let mut leaves = Vec::new();
    collect_leaves("", &merged, &known, &mut leaves);
    for (key, value) in leaves {
        let what = if known.contains(&key) || is_section(&key) {
            check_value(&key, value)
        } else {
            Some(unknown_key(&key, &known))
        };
        if let Some(what) = what {
            out.push(Problem {
                origin: origin(figment, &key),
                key,
                what,
            });
        }
    }
    out.sort_by(|a, b| a.origin.cmp(&b.origin).then(a.key.cmp(&b.key)));
    out
}

/// Dotted keys and values; a known section is walked into, and so is a
/// table under an unknown name (`[trian]` reports `trian.lr`).
fn collect_leaves<'a>(
    prefix: &str,
    dict: &'a Dict,
    known: &[String],
    out: &mut Vec<(String, &'a Value)>,
) {
    for (k, v) in dict {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let section = prefix.is_empty() && is_section(k);
        match v {
            // A key whose value is a table (train.early_stopping) is one leaf.
            Value::Dict(..) if known.contains(&key) => out.push((key, v)),
            Value::Dict(_, inner) if section || !is_section(&key) => {
                if inner.is_empty() && !section {
                    out.push((key, v));
                } else {
                    collect_leaves(&key, inner, known, out);
                }
            }
            _ => out.push((key, v)),
        }
    }
}

/// Resolves the defaults with this one value set, so the type and range
/// checks are exactly those of the real extraction, one key at a time.
fn check_value(key: &str, value: &Value) -> Option<String> {
    let one = Figment::from(Serialized::defaults(RunConfig::default()))
        .merge(Serialized::default(key, value.clone()));
    match one.extract::<RunConfig>() {
        Err(e) => Some(describe_kind(&e.kind)),
        Ok(config) => config
            .problems()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, msg)| msg),
    }
}

fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownVariant(variant, expected) => {
            format!("must be one of: {}; got {variant:?}", expected.join(", "))
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("must be {}, got {actual}", in_words(expected))
        }
        other => other.to_string(),
    }
}

/// serde's names for the expected types, in words.
fn in_words(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)".into(),
        "i64" | "i32" | "isize" => "a whole number".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        e if e.contains("string") => "a string (in quotes in TOML)".into(),
        e if e.starts_with("struct ") || e.contains("map") => "a table of keys".into(),
        e if e.starts_with("option") => "a value".into(),
        other => other.into(),
    }
}

/// "not a config key; did you mean `train.epochs`?"
fn unknown_key(key: &str, known: &[String]) -> String {
    match nearest(key, known) {
        Some(k) => format!("unknown key; did you mean `{k}`?"),
        None => format!("unknown key; the keys are: {}", known.join(", ")),
    }
}

/// The known key closest to `key`: a few edits away, or the same last part
/// under another section (`data.epochs` -> `train.epochs`).
pub fn nearest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let close = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str());
    close.or_else(|| {
        let leaf = key.rsplit('.').next()?;
        known
            .iter()
            .find(|k| k.rsplit('.').next() == Some(leaf))
            .map(String::as_str)
    })
}

/// Where the value of `key` came from in this figment.
fn origin(figment: &Figment, key: &str) -> Origin {
    let path: Vec<String> = key.split('.').map(String::from).collect();
    match figment.find_metadata(key) {
        Some(m) => origin_of(m, &path),
        None => Origin::Defaults,
    }
}

pub fn origin_of(metadata: &Metadata, path: &[String]) -> Origin {
    if let Some(file) = metadata.source.as_ref().and_then(|s| s.file_path()) {
        return Origin::File {
            path: file.to_path_buf(),
            line: line_of(file, path),
        };
    }
    if metadata.name.contains("environment") {
        return Origin::Environment(env_var_for(&path.join(".")));
    }
    if metadata.name == COMMAND_LINE {
        return Origin::CommandLine;
    }
    if metadata.name.contains("default") {
        return Origin::Defaults;
    }
    Origin::Layer(metadata.name.to_string())
}

/// The 1-based line of a dotted key in a TOML file, if it is written there.
pub fn line_of(file: &Path, path: &[String]) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let doc = toml_edit::ImDocument::parse(text.as_str()).ok()?;
    let mut item = doc.as_item();
    let mut span = None;
    for key in path {
        let table = item.as_table_like()?;
        let (k, value) = table.get_key_value(key)?;
        span = k.span().or_else(|| value.span());
        item = value;
    }
    let start = span?.start;
    Some(text[..start].matches('\n').count() + 1)
}

/// Variables of runner's own that are not config keys.
const OTHER_VARIABLES: [&str; 2] = ["RUNNER_SIMD", "RUNNER_SHARD_COUNT"];

/// Warns once per process about each `RUNNER_*` variable that configures
/// nothing: the config reads `RUNNER_<SECTION>__<KEY>` (two underscores)
/// and `RUNNER_NAME`, and figment skips every other name without a word.
pub fn warn_unread_env_vars() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
        for warning in unread_env_warnings(names) {
            eprintln!("warning: {warning}");
        }
    });
}

fn unread_env_warnings(names: impl Iterator<Item = String>) -> Vec<String> {
    let known = known_keys();
    let mut out = Vec::new();
    for name in names {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if env_name_is_read(rest) || OTHER_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        // RUNNER_TRAIN_LR: try each single underscore as the section break.
        let lower = rest.to_lowercase();
        let guess = lower.match_indices('_').find_map(|(i, _)| {
            let key = format!("{}.{}", &lower[..i], &lower[i + 1..]);
            known.contains(&key).then(|| env_var_for(&key))
        });
        let hint = match guess {
            Some(var) => format!("; did you mean {var}?"),
            None => String::new(),
        };
        out.push(format!(
            "environment variable {name} is not read: config variables are \
             RUNNER_<SECTION>__<KEY>, with two underscores (e.g. RUNNER_TRAIN__LR){hint}"
        ));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_key_by_spelling_or_by_last_part() {
        let known = known_keys();
        assert_eq!(nearest("train.epoch", &known), Some("train.epochs"));
        assert_eq!(nearest("trian.lr", &known), Some("train.lr"));
        assert_eq!(nearest("data.epochs", &known), Some("train.epochs"));
        assert_eq!(nearest("zzz.qqq", &known), None);
    }

    #[test]
    fn single_underscore_variables_get_a_warning_and_a_guess() {
        let names = [
            "RUNNER_TRAIN_LR",
            "RUNNER_TRAIN__LR",
            "RUNNER_SIMD",
            "PATH",
            "RUNNER_FOO",
        ];
        let warnings = unread_env_warnings(names.iter().map(|s| s.to_string()));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[1].contains("RUNNER_TRAIN_LR")
                && warnings[1].ends_with("did you mean RUNNER_TRAIN__LR?")
        );
        assert!(warnings[0].contains("RUNNER_FOO"));
    }

    #[test]
    fn types_in_words() {
        assert_eq!(in_words("usize"), "a whole number (0 or more)");
        assert_eq!(in_words("f64"), "a number");
        assert_eq!(in_words("a boolean"), "true or false");
    }
}
