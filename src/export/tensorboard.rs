//! A run's per-epoch scalars as a TensorBoard event file
//! (`events.out.tfevents.*`), which `tensorboard --logdir` and its
//! `EventAccumulator` read.
//!
//! The file is TFRecord framing around `Event` protobufs: per record the
//! payload's length (u64, little-endian), the masked CRC32C of those 8
//! bytes, the payload, and the masked CRC32C of the payload. The first
//! event names the file version; then one event per epoch and scalar
//! (`step` = the epoch). The protobufs are `prost` messages, the checksums
//! the `crc32c` crate's; only the framing is written here.
//!
//! The file is rewritten whole (atomically) after every epoch: its name
//! and every earlier record stay byte for byte the same (wall times come
//! from `metrics.csv`), so a TensorBoard reading it as it grows sees each
//! record once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::atomic::write_atomic;
use crate::metrics::EpochMetrics;

/// The folder of a run that holds its event file when `train.tensorboard`
/// is on.
pub const RUN_SUBDIR: &str = "tensorboard";

/// Reads one value from an epoch's row.
type Pick = fn(&EpochMetrics) -> f64;

/// The scalars written per epoch: (TensorBoard tag, the value of a row).
pub const SCALARS: [(&str, Pick); 7] = [
    ("train/loss", |r| r.train_loss),
    ("train/acc", |r| r.train_acc),
    ("val/loss", |r| r.val_loss),
    ("val/acc", |r| r.val_acc),
    ("lr", |r| r.lr),
    ("epoch_seconds", |r| r.epoch_seconds),
    ("train_images_per_sec", |r| r.train_images_per_sec),
];

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    /// A oneof, so that a value of 0.0 is still written (proto3 leaves
    /// plain fields at their default out, and TensorBoard would then see
    /// no value at all).
    #[prost(oneof = "Kind", tags = "2")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

/// CRC32C as TFRecord stores it: rotated, plus a constant.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its checksum, the payload, its checksum.
fn push_record(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
}

/// Seconds since the Unix epoch of an RFC 3339 time (0 when unreadable).
fn unix_seconds(rfc3339: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_micros() as f64 / 1e6)
        .unwrap_or(0.0)
}

/// The event file for `rows`, byte for byte.
pub fn event_file(rows: &[EpochMetrics]) -> Vec<u8> {
    use prost::Message;
    let started = rows.first().map_or(0.0, |r| unix_seconds(&r.finished_at));
    let mut out = Vec::new();
    let version = Event {
        wall_time: started,
        step: 0,
        what: Some(What::FileVersion("brain.Event:2".into())),
    };
    push_record(&mut out, &version.encode_to_vec());
    for row in rows {
        let value = SCALARS
            .iter()
            .map(|(tag, get)| SummaryValue {
                tag: tag.to_string(),
                kind: Some(Kind::SimpleValue(get(row) as f32)),
            })
            .collect();
        let event = Event {
            wall_time: unix_seconds(&row.finished_at),
            step: row.epoch as i64,
            what: Some(What::Summary(Summary { value })),
        };
        push_record(&mut out, &event.encode_to_vec());
    }
    out
}

/// Writes `rows` as the event file in `dir` (created if missing); the
/// name carries the first epoch's time, as TensorBoard's writers do.
pub fn write(dir: &Path, rows: &[EpochMetrics]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = rows.first().map_or(0.0, |r| unix_seconds(&r.finished_at));
    let path = dir.join(format!("events.out.tfevents.{}.runner", started as i64));
    write_atomic(&path, &event_file(rows))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_framed_with_masked_checksums() {
        // The masked CRC of TFRecord's spec example: an empty payload.
        let mut out = Vec::new();
        push_record(&mut out, b"");
        assert_eq!(out.len(), 8 + 4 + 4);
        assert_eq!(&out[..8], &[0; 8]);
        let crc = u32::from_le_bytes(out[8..12].try_into().unwrap());
        assert_eq!(crc, masked_crc(&[0; 8]));
        assert_ne!(crc, crc32c::crc32c(&[0; 8]), "the checksum is masked");
    }
}
