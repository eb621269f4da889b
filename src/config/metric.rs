//! The validation metrics that early stopping and halving rank runs by,
//! and which way is better: stated once, in `Metric::higher_is_better`.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::metrics::EpochMetrics;

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
    /// The direction table: every comparison below follows from it.
    pub fn higher_is_better(self) -> bool {
        match self {
            Metric::ValAcc => true,
            Metric::ValLoss => false,
        }
    }

    /// This metric's value in an epoch's row.
    pub fn of(self, row: &EpochMetrics) -> f64 {
        match self {
            Metric::ValAcc => row.val_acc,
            Metric::ValLoss => row.val_loss,
        }
    }

    /// Whether `a` beats `b` by more than `margin`.
    pub fn better(self, a: f64, b: f64, margin: f64) -> bool {
        if self.higher_is_better() {
            a > b + margin
        } else {
            a < b - margin
        }
    }

    /// A score below every real one: what a run that has none gets.
    pub fn worst(self) -> f64 {
        if self.higher_is_better() {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }
    }

    /// Orders scores best first (for `sort_by`; `max_by` of the reverse).
    pub fn best_first(self, a: f64, b: f64) -> Ordering {
        if self.higher_is_better() {
            b.total_cmp(&a)
        } else {
            a.total_cmp(&b)
        }
    }
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

impl EarlyStopping {
    /// The key's check (see `schema`).
    pub fn check(&self) -> Result<(), String> {
        if self.patience < 1 {
            return Err("patience must be at least 1".into());
        }
        if !(self.min_delta.is_finite() && self.min_delta >= 0.0) {
            return Err(format!(
                "min_delta must be zero or positive, got {}",
                self.min_delta
            ));
        }
        Ok(())
    }

    /// The epoch at which these rows say to stop, if any: a pure function
    /// of the rows, so a resumed run stops where an uninterrupted one does.
    pub fn stop_epoch(&self, rows: &[EpochMetrics]) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_metric_ranks_its_own_way() {
        assert!(Metric::ValAcc.better(0.9, 0.8, 0.0));
        assert!(Metric::ValLoss.better(0.1, 0.2, 0.0));
        assert!(!Metric::ValLoss.better(0.2, 0.1, 0.0));
        for m in [Metric::ValAcc, Metric::ValLoss] {
            assert!(m.better(0.5, m.worst(), 0.0), "{m}");
            let mut scores = vec![0.2, 0.9, 0.5];
            scores.sort_by(|a, b| m.best_first(*a, *b));
            assert!(m.better(scores[0], scores[2], 0.0), "{m}: {scores:?}");
        }
    }
}
