//! TensorBoard event files, read back with the real `tensorboard` Python
//! package's `EventAccumulator`: every scalar matches metrics.csv. The
//! Python comes from `TENSORBOARD_PYTHON` (CI sets it to a venv) or is
//! `python3`. It is ignored unless asked for (`-- --include-ignored`, as CI
//! does), and then fails without tensorboard.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// Prints {tag: [[step, value], ...]} for the event files in argv[1].
const READ_EVENTS: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;

/// A Python that imports tensorboard: the test fails without one.
fn python() -> String {
    let python = std::env::var("TENSORBOARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = std::process::Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has,
        "{python} cannot import tensorboard (pip install tensorboard, or set TENSORBOARD_PYTHON)"
    );
    python
}

fn read_events(python: &str, dir: &Path) -> serde_json::Value {
    let out = std::process::Command::new(python)
        .args(["-c", READ_EVENTS])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// metrics.csv as (column name, values per epoch).
fn metrics(run: &Path) -> Vec<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    header
        .iter()
        .enumerate()
        .filter(|(_, name)| **name != "finished_at")
        .map(|(i, name)| {
            let values = rows.iter().map(|r| r[i].parse().unwrap()).collect();
            (name.to_string(), values)
        })
        .collect()
}

/// Which metrics.csv column each TensorBoard tag holds.
const TAGS: [(&str, &str); 7] = [
    ("train/loss", "train_loss"),
    ("train/acc", "train_acc"),
    ("val/loss", "val_loss"),
    ("val/acc", "val_acc"),
    ("lr", "lr"),
    ("epoch_seconds", "epoch_seconds"),
    ("train_images_per_sec", "train_images_per_sec"),
];

fn assert_matches_metrics(events: &serde_json::Value, run: &Path) {
    let columns = metrics(run);
    let tags = events.as_object().unwrap();
    assert_eq!(tags.len(), TAGS.len(), "{:?}", tags.keys());
    for (tag, column) in TAGS {
        let want = &columns.iter().find(|(c, _)| c == column).unwrap().1;
        let got = events[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no tag {tag}"));
        assert_eq!(got.len(), want.len(), "{tag}: one value per epoch");
        for (i, (point, value)) in got.iter().zip(want).enumerate() {
            assert_eq!(point[0].as_u64(), Some(i as u64 + 1), "{tag}: step = epoch");
            // TensorBoard keeps scalars as 32-bit floats: the same one.
            let got = point[1].as_f64().map(|v| v as f32);
            assert_eq!(got, Some(*value as f32), "{tag} epoch {}", i + 1);
        }
    }
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("tfevents")
        })
        .collect()
}

#[test]
#[ignore = "drives TensorBoard: needs Python's tensorboard; run with --include-ignored"]
fn tensorboard_reads_back_every_scalar_of_metrics_csv() {
    let python = python();
    note_fixture("one quick run");
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "tb", "tensorboard = true");
    let results = tmp.path().join("results");
    run_spec(&spec, &results);
    let run = only_run_dir(&results, "tb");
    // Written during training, into the run folder.
    let live = event_files(&run.join("tensorboard"));
    assert_eq!(live.len(), 1, "{live:?}");
    assert_matches_metrics(&read_events(&python, &run.join("tensorboard")), &run);

    // Exported afterwards: the same bytes, under the run's own path.
    let exported = tmp.path().join("tb-out");
    let out = runner()
        .args(["export", "tensorboard"])
        .arg(&results)
        .arg(&exported)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let files = event_files(&exported);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(exported.join("tb")), "{files:?}");
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        std::fs::read(&live[0]).unwrap()
    );
    assert_matches_metrics(&read_events(&python, files[0].parent().unwrap()), &run);

    // Nothing to export is an error, not an empty folder.
    let out = runner()
        .args(["export", "tensorboard"])
        .arg(tmp.path().join("tb-out"))
        .arg(tmp.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing to export"),
        "{}",
        stderr(&out)
    );
}
