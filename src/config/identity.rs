//! A run's identity: the hash of everything that decides its numbers,
//! and the readable label its folder begins with.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::schema::RunConfig;

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
    /// identity. Result-neutral keys (see `keys::Key::neutral`) are left
    /// out, so moving the data folder or asking for more epochs does not
    /// make a new run; so are keys marked `hashed_when_set` while at their
    /// default, so adding a key keeps every existing run's hash.
    pub fn result_hash(&self) -> String {
        // Every run folder's status check hashes its config: the defaults
        // are serialized once per process, not once per hash.
        static DEFAULTS: OnceLock<serde_json::Value> = OnceLock::new();
        let defaults = DEFAULTS
            .get_or_init(|| serde_json::to_value(RunConfig::default()).expect("config serializes"));
        let mut value = serde_json::to_value(self).expect("config serializes");
        for key in RunConfig::keys() {
            let at_default = || defaults.get(key.section()).and_then(|t| t.get(key.leaf()));
            let Some(table) = value.get_mut(key.section()).and_then(|t| t.as_object_mut()) else {
                continue;
            };
            if key.neutral || (key.hashed_when_set && table.get(key.leaf()) == at_default()) {
                table.remove(key.leaf());
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
}

/// A number as a run folder shows it: short, and read back exactly
/// (`0.01`, `1e-5`, `1e308`, never 309 digits).
pub fn short_number(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-4) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
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

    /// Run folders are found by this hash: a change here orphans every
    /// results folder. `baseline.toml` is the defaults named "baseline".
    #[test]
    fn the_default_config_keeps_its_hash() {
        let mut config = RunConfig::default();
        assert_eq!(
            config.result_hash(),
            "0be846d8e43283c5f3fb4997fa88b1b8f332f2b586e5533da6b04c13c03777a9",
            "the run hash changed: a new key needs .hashed_when_set() (config/schema.rs)"
        );
        config.name = "baseline".into();
        assert_eq!(config.short_hash(), "185a06b8");
    }
}
