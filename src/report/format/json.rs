//! The whole report as JSON: common parameters, columns, rows (with run
//! ids and mean/std/n of each metric) and broken folders.

use anyhow::Result;

use super::Exporter;
use crate::report::Report;

pub struct Json;

impl Exporter for Json {
    fn serialize(&self, report: &Report) -> Result<Vec<u8>> {
        let mut out = serde_json::to_vec_pretty(report)?;
        out.push(b'\n');
        Ok(out)
    }
}
