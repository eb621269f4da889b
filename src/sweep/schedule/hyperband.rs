//! Hyperband (Li et al. 2017): `brackets` runs of successive halving side
//! by side, bracket b starting its runs at min_epochs x eta^b epochs, so
//! some brackets judge early and others late. The points are dealt to the
//! brackets in turn (point k to bracket k mod B); each bracket is decided
//! from its own run folders exactly as `halving` decides one, so every
//! process, shard and rerun agrees. A stage is every bracket's current
//! rung at once.

use anyhow::Result;

use super::halving::{budget, position, standing, Standing};
use super::{with_budget, Decision, Schedule};
use crate::sweep::search::Halving;
use crate::sweep::PlannedRun;

pub struct Hyperband(pub Halving);

impl Hyperband {
    fn epochs(runs: &[PlannedRun]) -> usize {
        runs.first().map_or(1, |r| r.config.train.epochs)
    }

    /// Bracket b's own halving: one bracket, a later first rung.
    fn bracket(&self, b: usize, epochs: usize) -> Halving {
        let first = (0..b).fold(self.0.min_epochs, |e, _| e.saturating_mul(self.0.eta));
        Halving {
            min_epochs: first.min(epochs),
            brackets: 1,
            ..self.0.clone()
        }
    }

    /// The indices of bracket b's runs, and the runs themselves.
    fn members(&self, b: usize, runs: &[PlannedRun]) -> (Vec<usize>, Vec<PlannedRun>) {
        let ks: Vec<usize> = (b..runs.len()).step_by(self.0.brackets).collect();
        let sub = ks.iter().map(|&k| runs[k].clone()).collect();
        (ks, sub)
    }
}

impl Schedule for Hyperband {
    fn check(&self, runs: &[PlannedRun]) -> Result<()> {
        self.0.check(Self::epochs(runs))
    }

    fn outline(&self, runs: &[PlannedRun]) -> Option<String> {
        let epochs = Self::epochs(runs);
        let (mut spent, mut parts) = (0, Vec::new());
        for b in 0..self.0.brackets {
            let h = self.bracket(b, epochs);
            let (ks, _) = self.members(b, runs);
            let (rungs, s, _) = budget(ks.len(), epochs, &h);
            spent += s;
            let rungs: Vec<String> = rungs.iter().map(|(e, n)| format!("{n}x{e}")).collect();
            parts.push(format!("bracket {}: {}", b + 1, rungs.join(" ")));
        }
        let full = runs.len() * epochs;
        Some(format!(
            "hyperband (eta {}, by {}), runs x epochs per rung: {}; {spent} epochs in all, {:.0}% of the full grid's {full}",
            self.0.eta,
            self.0.metric,
            parts.join("; "),
            100.0 * spent as f64 / full.max(1) as f64
        ))
    }

    fn next(&self, runs: &[PlannedRun]) -> Result<Decision> {
        let epochs = Self::epochs(runs);
        let (mut stage, mut last, mut train, mut halted, mut words) =
            (0, true, Vec::new(), Vec::new(), Vec::new());
        for b in 0..self.0.brackets {
            let h = self.bracket(b, epochs);
            let (ks, sub) = self.members(b, runs);
            let pos = position(&sub, epochs, &h)?;
            let rungs = h.rungs(epochs).len();
            stage += pos.rung;
            last &= pos.rung + 1 == rungs;
            halted.extend(pos.halted.iter().map(|&(j, rung)| (ks[j], rung)));
            train.extend(
                pos.members
                    .iter()
                    .map(|&j| with_budget(&sub[j], pos.budget)),
            );
            words.push(format!(
                "bracket {}: rung {} of {rungs}, {} runs at {} epochs",
                b + 1,
                pos.rung + 1,
                pos.members.len(),
                pos.budget
            ));
        }
        Ok(Decision {
            stage,
            noun: "stage",
            header: Some(words.join("; ")),
            runs: train,
            barrier: true,
            last,
            halted,
        })
    }

    fn best(&self, runs: &[PlannedRun]) -> Result<Option<(String, String)>> {
        let (epochs, metric) = (Self::epochs(runs), self.0.metric);
        let mut best: Option<(usize, f64)> = None;
        for b in 0..self.0.brackets {
            let (ks, sub) = self.members(b, runs);
            let pos = position(&sub, epochs, &self.bracket(b, epochs))?;
            for &j in &pos.members {
                if let Standing::Finished(v) = standing(&sub[j], epochs, metric) {
                    if best.is_none_or(|(_, w)| metric.better(v, w, 0.0)) {
                        best = Some((ks[j], v));
                    }
                }
            }
        }
        Ok(best.map(|(k, v)| {
            let words = format!("hyperband done; best {metric} {v:.4}");
            (runs[k].run_id(), words)
        }))
    }
}
