//! A grid file's `[search]` table: random sampling of some keys, and
//! successive halving over the points.
//!
//! ```toml
//! [search]
//! method = "random"            # sample the keys given as distributions
//! samples = 20                 # how many samples (one axis of 20 rows)
//! seed = 0                     # the samples are a pure function of the file
//! halving = { min_epochs = 1, eta = 3, metric = "val_acc" }
//!
//! [sweep]
//! "model.activation" = ["relu", "tanh"]        # a list: an axis, as in a grid
//! "train.lr" = { log_uniform = [1e-3, 1e-1] }
//! "train.momentum" = { uniform = [0.5, 0.99] }
//! "train.batch_size" = { choice = [16, 32, 64] }
//! "train.seed" = { int = [0, 9] }
//! ```
//!
//! Samples come from ChaCha8 seeded by `seed`, drawn key by key in the
//! file's order, and floats are rounded to 4 significant digits: the same
//! list on every machine, shown by `runner sweep --list`.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// `[search]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchTable {
    pub method: Option<String>,
    pub samples: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    pub halving: Option<Halving>,
    /// TPE: trials in all, proposed `batch` at a time, the first
    /// `n_startup` at random; the best `gamma` of them guide the rest.
    pub trials: Option<usize>,
    pub batch: Option<usize>,
    pub n_startup: Option<usize>,
    pub gamma: Option<f64>,
    pub metric: Option<Metric>,
}

/// `method = "tpe"`, checked: see `sweep::tpe` and `schedule::tpe`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tpe {
    /// The keys given as distributions, in the file's order.
    pub keys: Vec<(String, Distribution)>,
    pub trials: usize,
    /// Never derived from the number of workers: batch k is decided from
    /// batches 0..k-1 alone, whoever trains them.
    pub batch: usize,
    pub n_startup: usize,
    pub gamma: f64,
    pub seed: u64,
    pub metric: Metric,
}

impl Tpe {
    /// Optuna's defaults: 10 random trials first; batches of 4 (not in
    /// Optuna: its batches are its workers, which is what breaks its
    /// reproducibility).
    pub fn from_table(
        search: &SearchTable,
        keys: Vec<(String, Distribution)>,
    ) -> std::result::Result<Tpe, (&'static str, String)> {
        let trials = search
            .trials
            .ok_or(("trials", "a TPE search needs trials = N".into()))?;
        let tpe = Tpe {
            keys,
            trials,
            batch: search.batch.unwrap_or(4),
            n_startup: search.n_startup.unwrap_or(10),
            gamma: search.gamma.unwrap_or(0.1),
            seed: search.seed,
            metric: search.metric.unwrap_or(Metric::ValAcc),
        };
        if tpe.keys.is_empty() {
            return Err((
                "method",
                "TPE learns the keys given as distributions in [sweep] (e.g. \
                 \"train.lr\" = { log_uniform = [1e-3, 1e-1] }), and there are none"
                    .into(),
            ));
        }
        if !(1..=100_000).contains(&tpe.trials) {
            return Err((
                "trials",
                format!("must be from 1 to 100000, got {}", tpe.trials),
            ));
        }
        if tpe.batch == 0 {
            return Err(("batch", "must be at least 1".into()));
        }
        if tpe.trials < tpe.n_startup {
            return Err((
                "trials",
                format!(
                    "{} trials is fewer than n_startup = {} random ones: nothing would be learned",
                    tpe.trials, tpe.n_startup
                ),
            ));
        }
        if !(tpe.gamma > 0.0 && tpe.gamma < 1.0) {
            return Err(("gamma", format!("must be in (0, 1), got {}", tpe.gamma)));
        }
        if search.samples.is_some() {
            return Err(("samples", "is random search's; TPE counts trials".into()));
        }
        Ok(tpe)
    }
}

/// Synchronous successive halving (Jamieson & Talwalkar 2016): every point
/// trains `min_epochs`; the best 1/eta by `metric` go on to eta times as
/// many epochs, and so on up to `train.epochs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halving {
    pub min_epochs: usize,
    #[serde(default = "default_eta")]
    pub eta: usize,
    #[serde(default = "default_metric")]
    pub metric: Metric,
    /// Hyperband (Li et al. 2017): this many brackets of successive
    /// halving, bracket b starting at min_epochs x eta^b epochs; the
    /// points are dealt to the brackets in turn (point k to k mod B).
    #[serde(default = "one")]
    pub brackets: usize,
}

fn one() -> usize {
    1
}

fn default_eta() -> usize {
    3
}

fn default_metric() -> Metric {
    Metric::ValAcc
}

pub use crate::config::Metric;

impl Halving {
    /// Epoch budgets of the rungs: min_epochs, x eta, ... ending at `epochs`.
    pub fn rungs(&self, epochs: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut budget = self.min_epochs;
        while budget < epochs {
            out.push(budget);
            budget = budget.saturating_mul(self.eta);
        }
        out.push(epochs);
        out
    }

    pub fn check(&self, epochs: usize) -> Result<()> {
        if self.eta < 2 {
            bail!("[search] halving: eta must be 2 or more, got {}", self.eta);
        }
        if self.min_epochs < 1 || self.min_epochs > epochs {
            bail!(
                "[search] halving: min_epochs must be from 1 to train.epochs ({epochs}), got {}",
                self.min_epochs
            );
        }
        let rungs = self.rungs(epochs).len();
        if self.brackets < 1 || self.brackets > rungs {
            bail!(
                "[search] halving: brackets must be from 1 to {rungs} (the rungs from min_epochs \
                 {} to train.epochs {epochs} by eta {}), got {}",
                self.min_epochs,
                self.eta,
                self.brackets
            );
        }
        Ok(())
    }
}

/// One key's distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Int(i64, i64),
    Choice(Vec<toml::Value>),
}

const KINDS: &str =
    "{ uniform = [a, b] }, { log_uniform = [a, b] }, { int = [a, b] } or { choice = [...] }";

impl Distribution {
    /// The distribution a `[sweep]` table describes, or None for a table
    /// that is not one (a range).
    pub fn parse(table: &toml::Table) -> Option<Result<Distribution>> {
        let kind = ["uniform", "log_uniform", "int", "choice"]
            .into_iter()
            .find(|k| table.contains_key(*k))?;
        Some(Self::parse_kind(kind, table))
    }

    fn parse_kind(kind: &str, table: &toml::Table) -> Result<Distribution> {
        if table.len() != 1 {
            bail!("a distribution is one of {KINDS}, alone in its table");
        }
        let Some(list) = table[kind].as_array() else {
            bail!("`{kind}` takes a list");
        };
        if kind == "choice" {
            if list.is_empty() {
                bail!("`choice` needs at least one value");
            }
            return Ok(Distribution::Choice(list.clone()));
        }
        if list.len() != 2 {
            bail!("`{kind}` takes [low, high]");
        }
        if kind == "int" {
            let (Some(a), Some(b)) = (list[0].as_integer(), list[1].as_integer()) else {
                bail!("`int` takes two whole numbers [low, high]");
            };
            if a > b {
                bail!("`int` = [{a}, {b}]: low is above high");
            }
            return Ok(Distribution::Int(a, b));
        }
        let num = |v: &toml::Value| v.as_float().or(v.as_integer().map(|i| i as f64));
        let (Some(a), Some(b)) = (num(&list[0]), num(&list[1])) else {
            bail!("`{kind}` takes two numbers [low, high]");
        };
        if !(a.is_finite() && b.is_finite() && a <= b) {
            bail!("`{kind}` = [{a}, {b}]: needs finite low <= high");
        }
        if kind == "log_uniform" {
            if a <= 0.0 {
                bail!("`log_uniform` needs low > 0, got {a}");
            }
            return Ok(Distribution::LogUniform(a, b));
        }
        Ok(Distribution::Uniform(a, b))
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> toml::Value {
        let round = |x: f64| -> toml::Value {
            toml::Value::Float(format!("{x:.3e}").parse().expect("formatted float parses"))
        };
        match self {
            Distribution::Uniform(a, b) => round(a + (b - a) * rng.gen::<f64>()),
            Distribution::LogUniform(a, b) => {
                round((a.ln() + (b.ln() - a.ln()) * rng.gen::<f64>()).exp())
            }
            Distribution::Int(a, b) => toml::Value::Integer(rng.gen_range(*a..=*b)),
            Distribution::Choice(list) => list[rng.gen_range(0..list.len())].clone(),
        }
    }
}

/// `samples` rows, each a value per sampled key, in the keys' order.
pub fn sample_rows(
    keys: &[(String, Distribution)],
    samples: usize,
    seed: u64,
) -> Vec<Vec<toml::Value>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..samples)
        .map(|_| keys.iter().map(|(_, d)| d.sample(&mut rng)).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_a_pure_function_of_the_seed_and_stay_in_range() {
        let keys = vec![
            ("a".to_string(), Distribution::LogUniform(1e-3, 1e-1)),
            ("b".to_string(), Distribution::Int(0, 3)),
            ("c".to_string(), Distribution::Uniform(0.5, 0.99)),
        ];
        let rows = sample_rows(&keys, 50, 7);
        assert_eq!(rows, sample_rows(&keys, 50, 7));
        assert_ne!(rows, sample_rows(&keys, 50, 8));
        for row in &rows {
            let a = row[0].as_float().unwrap();
            assert!((1e-3..=1e-1).contains(&a), "{a}");
            assert!((0..=3).contains(&row[1].as_integer().unwrap()));
            let c = row[2].as_float().unwrap();
            assert!((0.5..=0.99).contains(&c), "{c}");
        }
    }

    #[test]
    fn rungs_grow_by_eta_up_to_the_epochs() {
        let h = Halving {
            min_epochs: 1,
            eta: 3,
            metric: Metric::ValAcc,
            brackets: 1,
        };
        assert_eq!(h.rungs(9), vec![1, 3, 9]);
        assert_eq!(h.rungs(10), vec![1, 3, 9, 10]);
        assert_eq!(h.rungs(1), vec![1]);
        assert!(h.check(9).is_ok());
        assert!(Halving {
            eta: 1,
            ..h.clone()
        }
        .check(9)
        .is_err());
        assert!(Halving {
            min_epochs: 10,
            ..h
        }
        .check(9)
        .is_err());
    }
}
