//! A run's config as report parameters: every key with its value as
//! text, and which keys a report never shows.

use std::collections::BTreeMap;

use crate::config::RunConfig;

/// Keys never shown as columns or common settings: those that do not
/// decide results, and the name (the folder says it). `train.epochs` is
/// among them: the epochs column shows each run's done/budget.
pub fn hidden(key: &str) -> bool {
    key == "name" || RunConfig::keys().any(|k| k.neutral && k.key == key)
}

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
    for key in RunConfig::keys() {
        if let Some(unset) = key.unset {
            out.entry(key.key.to_string())
                .or_insert_with(|| unset.meaning.to_string());
        }
    }
    out
}
