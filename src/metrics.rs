//! `metrics.csv`: one row per finished epoch, its header the fields of
//! `EpochMetrics` (spelled once, there).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub epoch_seconds: f64,
    pub train_images_per_sec: f64,
    pub finished_at: String,
}

pub fn metrics_csv(rows: &[EpochMetrics]) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if rows.is_empty() {
        // The header a first row would write: the struct's field names.
        writer.write_record(serde_aux::serde_introspection::serde_introspect::<
            EpochMetrics,
        >())?;
    }
    for row in rows {
        writer.serialize(row)?;
    }
    writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{}: row {}", path.display(), i + 2)))
        .collect()
}

/// The rows for epochs 1..=`k` of a metrics.csv, as a resume needs them,
/// and how many lines were dropped. Tolerates what a kill or a hand can
/// leave (rows past `k`, an unparseable line, an exact duplicate) and
/// refuses what cannot be recovered truthfully (a missing epoch, two
/// different rows for one epoch).
pub fn recover_metrics(path: &Path, k: usize) -> Result<(Vec<EpochMetrics>, usize)> {
    if k == 0 {
        return Ok((Vec::new(), 0));
    }
    let refuse = |what: String| {
        anyhow::anyhow!(
            "{}: {what}, but the saved state covers {k} epochs: the run cannot be resumed \
             truthfully; pass --force (run) or delete the run folder (sweep) to train it again",
            path.display()
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| refuse(format!("unreadable ({e})")))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .cloned()
        .map_err(|e| refuse(e.to_string()))?;
    let mut by_epoch: BTreeMap<usize, EpochMetrics> = BTreeMap::new();
    let mut dropped = 0;
    for record in reader.records() {
        let row: Option<EpochMetrics> =
            record.ok().and_then(|r| r.deserialize(Some(&headers)).ok());
        match row {
            None => dropped += 1,
            Some(row) if row.epoch == 0 => dropped += 1,
            Some(row) if row.epoch > k => {}
            Some(row) => match by_epoch.get(&row.epoch) {
                None => {
                    by_epoch.insert(row.epoch, row);
                }
                Some(first) if *first == row => dropped += 1,
                Some(_) => {
                    return Err(refuse(format!(
                        "two different rows for epoch {}",
                        row.epoch
                    )))
                }
            },
        }
    }
    let missing: Vec<usize> = (1..=k).filter(|e| !by_epoch.contains_key(e)).collect();
    if !missing.is_empty() {
        return Err(refuse(format!("no readable row for epoch(s) {missing:?}")));
    }
    Ok((by_epoch.into_values().collect(), dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::write_atomic;

    #[test]
    fn metrics_round_trip_with_the_documented_header() {
        let row = EpochMetrics {
            epoch: 1,
            lr: 0.001,
            train_loss: 2.0,
            train_acc: 0.5,
            val_loss: 1.5,
            val_acc: 0.6,
            epoch_seconds: 3.0,
            train_images_per_sec: 100.0,
            finished_at: "2026-01-01T00:00:00+00:00".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        write_atomic(&path, &metrics_csv(std::slice::from_ref(&row)).unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(
            "epoch,lr,train_loss,train_acc,val_loss,val_acc,epoch_seconds,train_images_per_sec,finished_at\n"
        ));
        assert_eq!(read_metrics(&path).unwrap(), vec![row]);
    }
}
