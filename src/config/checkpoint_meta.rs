//! The model settings a checkpoint records in its metadata, so that
//! `eval --checkpoint` scores it as the model it is: a checkpoint's shapes
//! do not say its activation or pooling. Every `[model]` key goes in, as
//! `model.<key>` = its TOML value as text, by serialization: a new model
//! key cannot go missing from checkpoints.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::layers::parse_value;
use super::schema::ModelConfig;

const PREFIX: &str = "model.";

impl ModelConfig {
    /// `model.activation` = `relu`, ... for a checkpoint's metadata.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let table = toml::Table::try_from(self).expect("model settings serialize");
        table
            .into_iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                (format!("{PREFIX}{key}"), text)
            })
            .collect()
    }

    /// The model a checkpoint's metadata records: None when it records
    /// none (not written by runner). A key it lacks (a checkpoint older
    /// than the key) takes its default, which is what it was trained with.
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Option<Result<ModelConfig>> {
        let table: toml::Table = metadata
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?.to_string(), parse_value(v))))
            .collect();
        if table.is_empty() {
            return None;
        }
        Some(
            toml::Value::Table(table)
                .try_into()
                .context("its metadata names a model runner does not know"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, Pooling};

    #[test]
    fn model_settings_round_trip_through_metadata() {
        let model = ModelConfig {
            activation: Activation::Relu,
            pooling: Pooling::Max,
            activate_c5_f6: true,
        };
        let meta = model.to_metadata();
        // The names and texts older checkpoints carry.
        assert_eq!(meta["model.activation"], "relu");
        assert_eq!(meta["model.activate_c5_f6"], "true");
        assert_eq!(meta.len(), ModelConfig::KEYS.len());
        let back = ModelConfig::from_metadata(&meta).unwrap().unwrap();
        assert_eq!(back, model);
        assert!(ModelConfig::from_metadata(&BTreeMap::new()).is_none());
        let mut odd = meta.clone();
        odd.insert("model.activation".into(), "swish".into());
        assert!(ModelConfig::from_metadata(&odd).unwrap().is_err());
    }
}
