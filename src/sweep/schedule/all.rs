//! A grid or a random search: every point trains to its full budget, in
//! one stage. Each process trains its shard and is done; nobody waits.

use anyhow::Result;

use super::{Decision, Schedule};
use crate::sweep::PlannedRun;

pub struct Everything;

impl Schedule for Everything {
    fn check(&self, _runs: &[PlannedRun]) -> Result<()> {
        Ok(())
    }

    fn outline(&self, _runs: &[PlannedRun]) -> Option<String> {
        None
    }

    fn next(&self, runs: &[PlannedRun]) -> Result<Decision> {
        Ok(Decision {
            stage: 0,
            noun: "stage",
            header: None,
            runs: runs.to_vec(),
            barrier: false,
            last: true,
            halted: Vec::new(),
        })
    }

    fn best(&self, _runs: &[PlannedRun]) -> Result<Option<(String, String)>> {
        Ok(None)
    }
}
