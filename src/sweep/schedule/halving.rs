//! Successive halving over a sweep's runs, with no server and no database:
//! which runs go on from a rung is a pure function of the finished run
//! folders, so any number of processes (`--shard`, Slurm array tasks,
//! `--jobs`) reach the same decisions, and a rerun after `kill -9` picks
//! up where the folders say it stands. A run promoted to the next rung is
//! continued from its saved state (epochs are a budget), never retrained.

use anyhow::Result;

use super::{finished_at, with_budget, Decision, Schedule};
use crate::results::{self, Status};
use crate::sweep::search::{Halving, Metric};
use crate::sweep::PlannedRun;

/// `[search] halving = { ... }` as a schedule: one stage per rung.
pub struct SuccessiveHalving(pub Halving);

/// Every run of a sweep has the same budget, `train.epochs`: the last rung.
fn epochs_of(runs: &[PlannedRun]) -> usize {
    runs.first().map_or(1, |r| r.config.train.epochs)
}

impl Schedule for SuccessiveHalving {
    fn check(&self, runs: &[PlannedRun]) -> Result<()> {
        self.0.check(epochs_of(runs))
    }

    fn outline(&self, runs: &[PlannedRun]) -> Option<String> {
        let h = &self.0;
        let (rungs, spent, full) = budget(runs.len(), epochs_of(runs), h);
        let rungs: Vec<String> = rungs
            .iter()
            .enumerate()
            .map(|(i, (e, n))| format!("rung {}: {n} runs to {e} epochs", i + 1))
            .collect();
        Some(format!(
            "successive halving (eta {}, by {}): {}; {spent} epochs in all, {:.0}% of the full grid's {full}",
            h.eta,
            h.metric,
            rungs.join(", "),
            100.0 * spent as f64 / full.max(1) as f64
        ))
    }

    fn next(&self, runs: &[PlannedRun]) -> Result<Decision> {
        let epochs = epochs_of(runs);
        let rungs = self.0.rungs(epochs).len();
        let pos = position(runs, epochs, &self.0)?;
        Ok(Decision {
            stage: pos.rung,
            noun: "rung",
            header: Some(format!(
                "rung {} of {rungs}: {} runs at {} epochs",
                pos.rung + 1,
                pos.members.len(),
                pos.budget
            )),
            runs: pos
                .members
                .iter()
                .map(|&k| with_budget(&runs[k], pos.budget))
                .collect(),
            barrier: true,
            last: pos.rung + 1 == rungs,
            halted: pos.halted,
        })
    }

    fn best(&self, runs: &[PlannedRun]) -> Result<Option<(String, String)>> {
        let (epochs, metric) = (epochs_of(runs), self.0.metric);
        let last = position(runs, epochs, &self.0)?;
        Ok(last
            .members
            .iter()
            .filter_map(|&k| match standing(&runs[k], epochs, metric) {
                Standing::Finished(v) => Some((k, v)),
                Standing::Unfinished => None,
            })
            .min_by(|a, b| metric.best_first(a.1, b.1))
            .map(|(k, v)| {
                (
                    runs[k].run_id(),
                    format!("halving done; best {metric} {v:.4}"),
                )
            }))
    }
}

/// Where one run stands against a rung's epoch budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Standing {
    /// Not yet trained to the budget (pending, running or interrupted).
    Unfinished,
    /// Trained to the budget (or stopped early, or failed): its score, the
    /// best metric over epochs 1..=budget (failed runs rank last).
    Finished(f64),
}

/// How `run` stands at `budget` epochs, from its folder.
pub fn standing(run: &PlannedRun, budget: usize, metric: Metric) -> Standing {
    if !finished_at(run, budget) {
        return Standing::Unfinished;
    }
    let worst = metric.worst();
    let failed = run
        .run_dir
        .read_summary()
        .is_ok_and(|s| s.status == Status::Failed);
    if failed {
        return Standing::Finished(worst);
    }
    let rows =
        crate::metrics::read_metrics(&run.run_dir.file(results::METRICS_FILE)).unwrap_or_default();
    let score = rows
        .iter()
        .filter(|r| r.epoch <= budget)
        .map(|r| metric.of(r))
        .filter(|v| v.is_finite())
        .fold(
            worst,
            |best, v| {
                if metric.better(v, best, 0.0) {
                    v
                } else {
                    best
                }
            },
        );
    Standing::Finished(score)
}

/// The members that go on from a finished rung: the best ceil(n/eta) by
/// score, ties broken by position (earlier first); None while any member
/// is unfinished.
pub fn promote(scores: &[(usize, Standing)], halving: &Halving) -> Option<Vec<usize>> {
    let mut finished: Vec<(usize, f64)> = Vec::with_capacity(scores.len());
    for (k, s) in scores {
        match s {
            Standing::Unfinished => return None,
            Standing::Finished(v) => finished.push((*k, *v)),
        }
    }
    finished.sort_by(|(ka, a), (kb, b)| halving.metric.best_first(*a, *b).then(ka.cmp(kb)));
    let keep = scores.len().div_ceil(halving.eta);
    let mut kept: Vec<usize> = finished.into_iter().take(keep).map(|(k, _)| k).collect();
    kept.sort_unstable();
    Some(kept)
}

/// The rung plan of `n` runs: (epochs, runs) per rung, the epochs the
/// halving spends and those the full grid would (each run trained once to
/// `epochs`).
pub fn budget(n: usize, epochs: usize, halving: &Halving) -> (Vec<(usize, usize)>, usize, usize) {
    let mut plan = Vec::new();
    let (mut alive, mut spent, mut before) = (n, 0, 0);
    for budget in halving.rungs(epochs) {
        plan.push((budget, alive));
        spent += alive * (budget - before);
        before = budget;
        alive = alive.div_ceil(halving.eta);
    }
    (plan, spent, n * epochs)
}

/// Promotions through every finished rung: the members of each rung in
/// turn, until one is unfinished. Returns (rung index, its budget, its
/// members) for the rung to work on, and the runs stopped at earlier rungs
/// with the rung that stopped them.
pub struct Position {
    pub rung: usize,
    pub budget: usize,
    pub members: Vec<usize>,
    pub halted: Vec<(usize, usize)>,
}

/// Walks the rungs from the start: where the sweep stands now.
pub fn position(runs: &[PlannedRun], epochs: usize, halving: &Halving) -> Result<Position> {
    let rungs = halving.rungs(epochs);
    let mut members: Vec<usize> = (0..runs.len()).collect();
    let mut halted = Vec::new();
    for (r, &budget) in rungs.iter().enumerate() {
        if r + 1 == rungs.len() {
            return Ok(Position {
                rung: r,
                budget,
                members,
                halted,
            });
        }
        let scores: Vec<(usize, Standing)> = members
            .iter()
            .map(|&k| (k, standing(&runs[k], budget, halving.metric)))
            .collect();
        match promote(&scores, halving) {
            None => {
                return Ok(Position {
                    rung: r,
                    budget,
                    members,
                    halted,
                })
            }
            Some(kept) => {
                halted.extend(
                    members
                        .iter()
                        .filter(|k| !kept.contains(k))
                        .map(|&k| (k, r)),
                );
                members = kept;
            }
        }
    }
    unreachable!("the last rung returns inside the loop")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halving(eta: usize, metric: Metric) -> Halving {
        Halving {
            min_epochs: 1,
            eta,
            metric,
            brackets: 1,
        }
    }

    #[test]
    fn the_best_third_goes_on_and_ties_break_by_position() {
        let f = Standing::Finished;
        let scores = vec![
            (0, f(0.5)),
            (1, f(0.9)),
            (2, f(0.9)),
            (3, f(0.1)),
            (4, f(0.7)),
        ];
        assert_eq!(
            promote(&scores, &halving(3, Metric::ValAcc)),
            Some(vec![1, 2])
        );
        assert_eq!(
            promote(&scores, &halving(3, Metric::ValLoss)),
            Some(vec![0, 3])
        );
        let mut waiting = scores.clone();
        waiting[2].1 = Standing::Unfinished;
        assert_eq!(promote(&waiting, &halving(3, Metric::ValAcc)), None);
    }

    #[test]
    fn the_budget_counts_only_the_epochs_each_rung_adds() {
        let (plan, spent, full) = budget(27, 9, &halving(3, Metric::ValAcc));
        assert_eq!(plan, vec![(1, 27), (3, 9), (9, 3)]);
        assert_eq!(spent, 27 + 9 * 2 + 3 * 6);
        assert_eq!(full, 243);
    }
}
