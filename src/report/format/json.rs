//! The whole report as JSON: common parameters, columns, rows (with run
//! ids and mean/std/n of each metric) and broken folders.

use anyhow::Result;

use super::cells::Exporter;
use crate::report::Report;

pub struct Json;

/// Turns `"0.001"` into 0.001 and `"true"` into true in an object of
/// setting texts; words stay strings.
fn retype(object: &mut serde_json::Value) {
    if let Some(map) = object.as_object_mut() {
        for v in map.values_mut() {
            if let Some(text) = v.as_str() {
                if let Ok(typed @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) =
                    serde_json::from_str::<serde_json::Value>(text)
                {
                    *v = typed;
                }
            }
        }
    }
}

impl Exporter for Json {
    fn serialize(&self, report: &Report) -> Result<Vec<u8>> {
        let mut value = serde_json::to_value(report)?;
        // Settings are compared as text; give them back their types.
        retype(&mut value["common"]);
        if let Some(rows) = value["rows"].as_array_mut() {
            for row in rows {
                retype(&mut row["values"]);
            }
        }
        let mut out = serde_json::to_vec_pretty(&value)?;
        out.push(b'\n');
        Ok(out)
    }
}
