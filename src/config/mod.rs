//! What a run is: the spec a user writes in TOML, layered with figment.
//!
//! - `schema`: every key, once, with its type, default, note and check
//!   (`keys` says how an entry reads);
//! - `layers`: defaults < spec file < a sweep's layers < environment
//!   (`RUNNER_TRAIN__LR=0.01`) < command line (`--set train.lr=0.01`), and
//!   `load`, which resolves them;
//! - `diagnose`: every problem at once, each naming its key and where the
//!   value came from (file and line, environment variable, or `--set`);
//! - `identity`: the run's hash and folder label;
//! - `metric`: validation metrics and which way is better;
//! - `defaults_text`: `runner defaults` and the README's config table.

mod checkpoint_meta;
mod defaults_text;
mod diagnose;
mod identity;
pub mod keys;
mod layers;
mod metric;
mod schema;

pub use defaults_text::{default_toml, markdown_table};
pub use diagnose::{known_keys, line_of, nearest};
pub use identity::short_number;

pub use keys::{env_var_for, Key};
pub use layers::{load, Layer, Sources};
pub use metric::{EarlyStopping, Metric};
pub use schema::{
    Activation, DataConfig, Dataset, DeviceChoice, ModelConfig, Pooling, RunConfig, TrainConfig,
    Validation, MAX_EPOCHS,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The table and the structs agree: every field serialized by the
    /// defaults has an entry, every entry a field, and exactly the
    /// optional entries are absent while unset.
    #[test]
    fn every_field_has_one_entry_and_every_entry_a_field() {
        fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) if !prefix.contains('.') => {
                    for (k, v) in map {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&key, v, out);
                    }
                }
                _ => out.push(prefix.to_string()),
            }
        }
        let mut serialized = Vec::new();
        let defaults = serde_json::to_value(RunConfig::default()).unwrap();
        leaves("", &defaults, &mut serialized);
        serialized.sort();
        let mut set: Vec<String> = RunConfig::keys()
            .filter(|k| k.unset.is_none())
            .map(|k| k.key.to_string())
            .collect();
        set.sort();
        assert_eq!(serialized, set, "fields set by default vs required entries");
        let mut all: Vec<&str> = RunConfig::keys().map(|k| k.key).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a key is listed twice");
        // Each optional entry is a real field: setting it from its example
        // is accepted by the structs.
        for key in RunConfig::keys().filter(|k| k.unset.is_some()) {
            let example = key.unset.unwrap().example;
            let text = format!("[{}]\n{} = {example}\n", key.section(), key.leaf());
            let parsed: Result<RunConfig, _> = toml::from_str(&text);
            assert!(parsed.is_ok(), "{}: {parsed:?}", key.key);
        }
    }

    #[test]
    fn the_defaults_pass_every_check_and_the_checks_name_their_keys() {
        assert_eq!(RunConfig::default().problems(), vec![]);
        let mut bad = RunConfig::default();
        bad.train.lr = -1.0;
        bad.data.limit_test = Some(0);
        bad.name = "a/b".into();
        let keys: Vec<&str> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["name", "data.limit_test", "train.lr"]);
    }

    #[test]
    fn defaults_text_is_a_spec_equal_to_the_defaults() {
        let text = default_toml();
        let parsed: RunConfig = toml::from_str(&text).unwrap();
        assert_eq!(parsed, RunConfig::default());
        for key in RunConfig::keys() {
            assert!(text.contains(key.note), "{} note missing", key.key);
        }
    }
}
