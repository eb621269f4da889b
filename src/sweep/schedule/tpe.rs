//! `[search] method = "tpe"` as a schedule: trials in batches of `batch`.
//!
//! Batch k is a pure function of the grid file and the finished run
//! folders of batches 0..k-1, read in trial order: trial t is drawn at
//! random (its own stream of `seed`) while t < n_startup, else proposed by
//! `sweep::tpe` from every trial of the earlier batches. So one process,
//! `--jobs N`, `--shard I/N`, a Slurm array and a rerun after `kill -9`
//! reach the same trials. Each trial is every point of the grid (its list
//! axes, e.g. seeds) with the trial's values; its score is the mean over
//! those runs of each run's best metric.

use std::path::PathBuf;

use anyhow::Result;

use super::halving::{standing, Standing};
use super::{finished_at, Decision, Schedule};
use crate::sweep::grid::{Grid, Point};
use crate::sweep::search::Tpe;
use crate::sweep::tpe::{self, Observed};
use crate::sweep::{self as sweep_plan, PlannedRun};

pub struct TreeParzen {
    pub tpe: Tpe,
    pub grid: Grid,
    pub sets: Vec<String>,
    pub results_root: PathBuf,
}

/// One decided trial.
struct Trial {
    values: Vec<toml::Value>,
    runs: Vec<PlannedRun>,
}

/// What the run folders say: the trials decided so far and the batch to
/// work on (the first with an unfinished run, or the last).
struct Walk {
    trials: Vec<Trial>,
    batch: usize,
}

impl TreeParzen {
    fn batches(&self) -> usize {
        self.tpe.trials.div_ceil(self.tpe.batch)
    }

    fn epochs(&self, trial: &Trial) -> usize {
        trial.runs.first().map_or(1, |r| r.config.train.epochs)
    }

    /// The runs of trial `t`: every grid point with the trial's values,
    /// numbered after the runs of the trials before it.
    fn trial(&self, t: usize, values: Vec<toml::Value>) -> Result<Trial> {
        let learned = self.tpe.keys.iter().map(|(k, _)| k.clone());
        let points: Vec<Point> = self
            .grid
            .points
            .iter()
            .map(|p| {
                let mut values_of_point = p.values.clone();
                values_of_point.extend(learned.clone().zip(values.iter().cloned()));
                Point {
                    values: values_of_point,
                }
            })
            .collect();
        let plan = sweep_plan::resolve(&self.grid, &points, &self.sets, &self.results_root)?;
        let per_trial = self.grid.points.len();
        let runs = plan
            .runs
            .into_iter()
            .map(|mut r| {
                r.index += t * per_trial;
                r
            })
            .collect();
        Ok(Trial { values, runs })
    }

    /// Trial t's values, from the observations of the earlier batches.
    fn values(&self, t: usize, observed: &[Observed]) -> Vec<toml::Value> {
        let mut rng = tpe::rng_for(self.tpe.seed, t);
        if t < self.tpe.n_startup || observed.is_empty() {
            return self
                .tpe
                .keys
                .iter()
                .map(|(_, d)| d.sample(&mut rng))
                .collect();
        }
        tpe::propose(&self.tpe.keys, observed, self.tpe.gamma, &mut rng)
    }

    /// A finished trial's loss (lower is better): the mean of its runs'
    /// best metric, negated when higher is better. A failed run scores
    /// the worst, so a trial with one ranks last.
    fn loss(&self, trial: &Trial) -> f64 {
        let metric = self.tpe.metric;
        let epochs = self.epochs(trial);
        let scores: Vec<f64> = trial
            .runs
            .iter()
            .map(|r| match standing(r, epochs, metric) {
                Standing::Finished(v) => v,
                Standing::Unfinished => metric.worst(),
            })
            .collect();
        let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        if metric.higher_is_better() {
            -mean
        } else {
            mean
        }
    }

    fn walk(&self) -> Result<Walk> {
        let (mut trials, mut observed) = (Vec::new(), Vec::new());
        let size = self.tpe.batch;
        for batch in 0..self.batches() {
            let first = batch * size;
            for t in first..(first + size).min(self.tpe.trials) {
                let values = self.values(t, &observed);
                trials.push(self.trial(t, values)?);
            }
            let this: &[Trial] = &trials[first..];
            let done = this
                .iter()
                .all(|tr| tr.runs.iter().all(|r| finished_at(r, self.epochs(tr))));
            if !done || batch + 1 == self.batches() {
                return Ok(Walk { trials, batch });
            }
            for tr in this {
                observed.push(Observed {
                    values: tr.values.clone(),
                    loss: self.loss(tr),
                });
            }
        }
        Ok(Walk { trials, batch: 0 })
    }
}

impl Schedule for TreeParzen {
    fn check(&self, _runs: &[PlannedRun]) -> Result<()> {
        Ok(()) // checked when the grid was read
    }

    fn outline(&self, _runs: &[PlannedRun]) -> Option<String> {
        let t = &self.tpe;
        let walk = self.walk().ok()?;
        let decided = walk.trials.len();
        let state = if walk.batch + 1 == self.batches() {
            format!("all {decided} trials decided")
        } else {
            let first = walk.batch * t.batch;
            let waiting: usize = walk.trials[first..]
                .iter()
                .flat_map(|tr| tr.runs.iter().map(move |r| (tr, r)))
                .filter(|(tr, r)| !finished_at(r, self.epochs(tr)))
                .count();
            format!(
                "{decided} trials decided; batch {} waits on {waiting} unfinished run(s)",
                walk.batch + 2
            )
        };
        let per_batch = t.batch * self.grid.points.len();
        Some(format!(
            "tpe (seed {}, by {}): {} trials in batches of {}, the first {} at random, {} run(s) \
             each (batch k is runs {per_batch}(k-1) to {per_batch}k-1); {state}",
            t.seed,
            t.metric,
            t.trials,
            t.batch,
            t.n_startup.min(t.trials),
            self.grid.points.len()
        ))
    }

    fn next(&self, _runs: &[PlannedRun]) -> Result<Decision> {
        let walk = self.walk()?;
        let first = walk.batch * self.tpe.batch;
        let last_trial = walk.trials.len();
        Ok(Decision {
            stage: walk.batch,
            noun: "batch",
            header: Some(format!(
                "batch {} of {}: trials {}-{}",
                walk.batch + 1,
                self.batches(),
                first + 1,
                last_trial
            )),
            runs: walk.trials[first..]
                .iter()
                .flat_map(|tr| tr.runs.iter().cloned())
                .collect(),
            barrier: true,
            last: walk.batch + 1 == self.batches(),
            halted: Vec::new(),
        })
    }

    fn runs(&self, _planned: &[PlannedRun]) -> Result<Vec<PlannedRun>> {
        let walk = self.walk()?;
        Ok(walk.trials.into_iter().flat_map(|t| t.runs).collect())
    }

    fn best(&self, _runs: &[PlannedRun]) -> Result<Option<(String, String)>> {
        let walk = self.walk()?;
        let best = walk
            .trials
            .iter()
            .filter(|tr| tr.runs.iter().all(|r| finished_at(r, self.epochs(tr))))
            .map(|tr| (tr, self.loss(tr)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        Ok(best.map(|(tr, loss)| {
            let score = if self.tpe.metric.higher_is_better() {
                -loss
            } else {
                loss
            };
            let id = tr.runs.first().map(|r| r.run_id()).unwrap_or_default();
            (
                id,
                format!("tpe done; best mean {} {score:.4}", self.tpe.metric),
            )
        }))
    }
}
