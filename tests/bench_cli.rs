//! `runner bench` on the real MNIST files: the cells asked for, and nothing else.

mod common;

use common::{mnist_dir, runner, stdout};

#[test]
fn bench_measures_only_the_cells_asked_for() {
    let out = runner()
        .args(["bench", "--json", "--no-epoch", "--seconds", "0.2"])
        .args(["--train-batches", "16", "--infer-batches", "none"])
        .args(["--variants", "relu+max", "--data"])
        .arg(mnist_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let cells = report["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "{report}");
    assert_eq!(cells[0]["variant"], "relu+max");
    assert_eq!(cells[0]["mode"], "train");
    assert_eq!(cells[0]["batch_size"], 16);
    assert!(cells[0]["images"].as_u64().unwrap() >= 16);
    assert!(cells[0]["images_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["epoch_seconds"].is_null());
    // The processor is named, so that a table says where it was measured.
    if cfg!(target_os = "linux") {
        let cpu = report["cpu"].as_str().unwrap_or_default();
        assert!(!cpu.is_empty(), "{report}");
    }
}

#[test]
fn bench_names_an_unknown_variant_or_batch_size() {
    let out = runner()
        .args(["bench", "--variants", "tanh+avg", "--data", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown variant \"tanh+avg\""), "{err}");

    let out = runner()
        .args(["bench", "--train-batches", "16,big"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"big\" is not a batch size"), "{err}");
}
