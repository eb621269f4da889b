//! The Tree-structured Parzen Estimator (Bergstra et al. 2011), as plain
//! functions of the finished trials: no state, no clock, no thread, so a
//! proposal is the same in every process that reads the same folders.
//!
//! Univariate, with Optuna's `TPESampler` defaults as the reference: the
//! best `gamma` of the trials (at most 25) make the "good" density l(x),
//! the rest g(x); each density is a Parzen mixture with a prior component;
//! 24 candidates are drawn from l and the one with the largest l(x)/g(x)
//! is proposed, key by key. Continuous keys use truncated Gaussians (in
//! log space for `log_uniform`; an `int` is continuous over [a-0.5,
//! b+0.5], then rounded), with Optuna's "magic clip" bandwidths; `choice`
//! keys use smoothed frequencies.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::search::Distribution;

/// Candidates drawn from l(x) per key (Optuna's `n_ei_candidates`).
pub const CANDIDATES: usize = 24;
/// The most trials in the good group, whatever `gamma` says (Optuna's 25).
const MAX_GOOD: usize = 25;

/// A finished trial: its value for each key (in the keys' order) and its
/// loss (lower is better).
#[derive(Debug, Clone)]
pub struct Observed {
    pub values: Vec<toml::Value>,
    pub loss: f64,
}

/// The random stream of trial `trial`: its own, so a trial's draws do not
/// depend on how many trials came before it in its batch.
pub fn rng_for(seed: u64, trial: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(trial as u64);
    rng
}

/// A proposal for each key from the observations, drawn with `rng`.
pub fn propose(
    keys: &[(String, Distribution)],
    observed: &[Observed],
    gamma: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<toml::Value> {
    let mut order: Vec<usize> = (0..observed.len()).collect();
    // Stable: equal losses keep trial order, so ties split the same way.
    order.sort_by(|&a, &b| observed[a].loss.total_cmp(&observed[b].loss));
    let n_good = ((gamma * observed.len() as f64).ceil() as usize).clamp(1, MAX_GOOD);
    let (good, bad) = order.split_at(n_good.min(order.len()));
    keys.iter()
        .enumerate()
        .map(|(k, (_, dist))| {
            let column = |trials: &[usize]| -> Vec<&toml::Value> {
                trials.iter().map(|&t| &observed[t].values[k]).collect()
            };
            propose_one(dist, &column(good), &column(bad), rng)
        })
        .collect()
}

fn propose_one(
    dist: &Distribution,
    good: &[&toml::Value],
    bad: &[&toml::Value],
    rng: &mut ChaCha8Rng,
) -> toml::Value {
    match dist {
        Distribution::Choice(list) => {
            let index = |v: &toml::Value| list.iter().position(|c| c == v);
            let l = Categorical::fit(list.len(), good.iter().filter_map(|v| index(v)));
            let g = Categorical::fit(list.len(), bad.iter().filter_map(|v| index(v)));
            let best = (0..CANDIDATES)
                .map(|_| l.sample(rng))
                .max_by(|&a, &b| (l.p[a] / g.p[a]).total_cmp(&(l.p[b] / g.p[b])))
                .unwrap_or(0);
            list[best].clone()
        }
        _ => {
            let space = Space::of(dist);
            let to = |vs: &[&toml::Value]| -> Vec<f64> {
                vs.iter().filter_map(|v| space.inside(v)).collect()
            };
            let (l, g) = (space.parzen(&to(good)), space.parzen(&to(bad)));
            let mut best = (f64::NEG_INFINITY, space.lo);
            for _ in 0..CANDIDATES {
                let x = l.sample(rng, &space);
                let score = l.log_density(x, &space) - g.log_density(x, &space);
                if score > best.0 {
                    best = (score, x);
                }
            }
            space.outside(best.1)
        }
    }
}

/// A continuous key's internal space: [lo, hi], log for `log_uniform`.
struct Space {
    lo: f64,
    hi: f64,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Linear,
    Log,
    Int,
}

impl Space {
    fn of(dist: &Distribution) -> Space {
        match *dist {
            Distribution::Uniform(a, b) => Space {
                lo: a,
                hi: b,
                kind: Kind::Linear,
            },
            Distribution::LogUniform(a, b) => Space {
                lo: a.ln(),
                hi: b.ln(),
                kind: Kind::Log,
            },
            Distribution::Int(a, b) => Space {
                lo: a as f64 - 0.5,
                hi: b as f64 + 0.5,
                kind: Kind::Int,
            },
            Distribution::Choice(_) => unreachable!("choices are categorical"),
        }
    }

    /// A value as a point of the space (None: not a number).
    fn inside(&self, v: &toml::Value) -> Option<f64> {
        let x = v.as_float().or(v.as_integer().map(|i| i as f64))?;
        Some(match self.kind {
            Kind::Log => x.ln(),
            _ => x,
        })
    }

    /// A point as the value a config gets: floats to 4 significant digits,
    /// as random search writes them.
    fn outside(&self, x: f64) -> toml::Value {
        match self.kind {
            Kind::Int => {
                let (a, b) = ((self.lo + 0.5) as i64, (self.hi - 0.5) as i64);
                toml::Value::Integer((x.round() as i64).clamp(a, b))
            }
            Kind::Linear => four_digits(x.clamp(self.lo, self.hi)),
            Kind::Log => four_digits(x.clamp(self.lo, self.hi).exp()),
        }
    }

    /// The Parzen mixture of `points` plus a prior over the whole space.
    fn parzen(&self, points: &[f64]) -> Parzen {
        let width = (self.hi - self.lo).max(f64::MIN_POSITIVE);
        let prior = (0.5 * (self.lo + self.hi), width);
        let mut mus: Vec<f64> = points.to_vec();
        mus.push(prior.0);
        mus.sort_by(f64::total_cmp);
        // Optuna's magic clip: each point's bandwidth is its larger gap to
        // a neighbour, between width/min(100, n+1) and the width.
        let floor = width / (100f64).min(points.len() as f64 + 1.0);
        let mut components: Vec<(f64, f64)> = (0..mus.len())
            .map(|i| {
                let left = if i == 0 {
                    mus[i] - self.lo
                } else {
                    mus[i] - mus[i - 1]
                };
                let right = if i + 1 == mus.len() {
                    self.hi - mus[i]
                } else {
                    mus[i + 1] - mus[i]
                };
                (mus[i], left.max(right).clamp(floor, width))
            })
            .collect();
        // The prior keeps its full width.
        if let Some(c) = components.iter_mut().find(|c| c.0 == prior.0) {
            c.1 = prior.1;
        }
        Parzen { components }
    }
}

fn four_digits(x: f64) -> toml::Value {
    toml::Value::Float(format!("{x:.3e}").parse().expect("formatted float parses"))
}

/// An equal-weight mixture of Gaussians truncated to the space.
struct Parzen {
    components: Vec<(f64, f64)>,
}

impl Parzen {
    fn sample(&self, rng: &mut ChaCha8Rng, space: &Space) -> f64 {
        let (mu, sigma) = self.components[rng.gen_range(0..self.components.len())];
        // Rejection from the Gaussian: the mean is inside the space, so
        // at least about a third of the draws land inside.
        for _ in 0..64 {
            let x = mu + sigma * standard_normal(rng);
            if (space.lo..=space.hi).contains(&x) {
                return x;
            }
        }
        mu
    }

    fn log_density(&self, x: f64, space: &Space) -> f64 {
        let total: f64 = self
            .components
            .iter()
            .map(|&(mu, sigma)| {
                let mass = phi((space.hi - mu) / sigma) - phi((space.lo - mu) / sigma);
                let z = (x - mu) / sigma;
                (-0.5 * z * z).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt() * mass)
            })
            .sum();
        (total / self.components.len() as f64)
            .max(f64::MIN_POSITIVE)
            .ln()
    }
}

/// The standard normal's cumulative distribution.
fn phi(z: f64) -> f64 {
    0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
}

/// Box-Muller, from two uniform draws.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Frequencies of the choices among the observations, with a prior of
/// one observation spread evenly over the choices.
struct Categorical {
    p: Vec<f64>,
}

impl Categorical {
    fn fit(choices: usize, seen: impl Iterator<Item = usize>) -> Categorical {
        let mut counts = vec![1.0 / choices as f64; choices];
        for c in seen {
            counts[c] += 1.0;
        }
        let total: f64 = counts.iter().sum();
        Categorical {
            p: counts.iter().map(|c| c / total).collect(),
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let mut u: f64 = rng.gen();
        for (i, p) in self.p.iter().enumerate() {
            if u < *p {
                return i;
            }
            u -= p;
        }
        self.p.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(v: &toml::Value) -> f64 {
        v.as_float().unwrap()
    }

    /// 30 random trials of a loss that is lowest at lr = 0.01 for relu
    /// (lr and activation each matter alone), and 20 proposals from them.
    fn proposals() -> (Vec<Observed>, Vec<Vec<toml::Value>>) {
        let keys = vec![
            ("lr".to_string(), Distribution::LogUniform(1e-4, 1.0)),
            (
                "act".to_string(),
                Distribution::Choice(vec!["relu".into(), "tanh".into()]),
            ),
        ];
        let mut observed = Vec::new();
        for t in 0..30 {
            let values: Vec<toml::Value> = keys
                .iter()
                .map(|(_, d)| d.sample(&mut rng_for(1, t)))
                .collect();
            let lr = float(&values[0]);
            let penalty = if values[1].as_str() == Some("relu") {
                0.0
            } else {
                0.5
            };
            observed.push(Observed {
                loss: (lr.log10() + 2.0).abs() + penalty,
                values,
            });
        }
        let proposals = (30..50)
            .map(|t| propose(&keys, &observed, 0.25, &mut rng_for(1, t)))
            .collect();
        (observed, proposals)
    }

    #[test]
    fn proposals_move_towards_the_good_trials_and_repeat_exactly() {
        let (observed, proposals) = proposals();
        assert_eq!(
            proposals,
            self::proposals().1,
            "a pure function of its inputs"
        );
        let mean_distance = |lrs: &[f64]| {
            lrs.iter().map(|lr| (lr.log10() + 2.0).abs()).sum::<f64>() / lrs.len() as f64
        };
        let proposed: Vec<f64> = proposals.iter().map(|p| float(&p[0])).collect();
        let random: Vec<f64> = observed.iter().map(|o| float(&o.values[0])).collect();
        assert!(
            mean_distance(&proposed) < 0.6 * mean_distance(&random),
            "{} vs {}: {proposed:?}",
            mean_distance(&proposed),
            mean_distance(&random)
        );
        let relu = proposals
            .iter()
            .filter(|p| p[1].as_str() == Some("relu"))
            .count();
        assert!(relu >= 14, "{relu} of 20 relu");
        for p in &proposals {
            assert!((1e-4..=1.0).contains(&float(&p[0])));
        }
    }

    #[test]
    fn integers_stay_whole_and_in_range() {
        let keys = vec![("n".to_string(), Distribution::Int(1, 3))];
        let observed: Vec<Observed> = (0..10)
            .map(|i| Observed {
                values: vec![toml::Value::Integer(1 + i % 3)],
                loss: (i % 3) as f64,
            })
            .collect();
        for t in 0..20 {
            let p = propose(&keys, &observed, 0.25, &mut rng_for(0, t));
            let n = p[0].as_integer().unwrap();
            assert!((1..=3).contains(&n), "{n}");
        }
    }
}
