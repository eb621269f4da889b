//! Which slice of a grid this process runs: `--shard I/N`, or the array
//! index of a Slurm job array or a Kubernetes Indexed Job. Slices are
//! deterministic (point k goes to shard k mod N), so N processes with
//! I = 0..N-1 cover the grid exactly once, on one machine or many.

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` with 0 <= I < N.
    pub fn parse(text: &str) -> Result<Self> {
        let (i, n) = text
            .split_once('/')
            .with_context(|| format!("--shard {text:?}: expected I/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .with_context(|| format!("--shard {text:?}: {i:?} is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .with_context(|| format!("--shard {text:?}: {n:?} is not a number"))?;
        if count == 0 || index >= count {
            bail!("--shard {text:?}: need 0 <= I < N");
        }
        Ok(Shard { index, count })
    }

    /// The shard from a scheduler's environment, if there is one:
    /// Slurm job arrays (`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`,
    /// `SLURM_ARRAY_TASK_MIN`) or Kubernetes Indexed Jobs
    /// (`JOB_COMPLETION_INDEX`, with the count in `RUNNER_SHARD_COUNT`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let num = |key: &str| -> Result<Option<usize>> {
            match get(key) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .with_context(|| format!("{key}={v:?} is not a number")),
            }
        };
        if let (Some(id), Some(count)) =
            (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?)
        {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).filter(|i| *i < count);
            let Some(index) = index else {
                bail!("SLURM_ARRAY_TASK_ID={id} is outside the array (min {min}, count {count}); use --array=0-{}", count.max(1) - 1);
            };
            return Ok(Some(Shard { index, count }));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let Some(count) = num("RUNNER_SHARD_COUNT")? else {
                bail!("JOB_COMPLETION_INDEX is set but RUNNER_SHARD_COUNT is not: set it to the Job's completions");
            };
            if index >= count {
                bail!("JOB_COMPLETION_INDEX={index} is not below RUNNER_SHARD_COUNT={count}");
            }
            return Ok(Some(Shard { index, count }));
        }
        Ok(None)
    }

    /// Whether the k-th point (0-based) belongs to this shard.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_and_scheduler_variables() {
        assert_eq!(Shard::parse("1/3").unwrap(), Shard { index: 1, count: 3 });
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("x").is_err());
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let slurm = Shard::from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ]));
        assert_eq!(slurm.unwrap(), Some(Shard { index: 2, count: 4 }));
        let k8s = Shard::from_env(env(&[
            ("JOB_COMPLETION_INDEX", "0"),
            ("RUNNER_SHARD_COUNT", "2"),
        ]));
        assert_eq!(k8s.unwrap(), Some(Shard { index: 0, count: 2 }));
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")])).is_err());
        assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
    }

    #[test]
    fn shards_partition_the_points() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for k in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(k)).count(), 1);
        }
    }
}
