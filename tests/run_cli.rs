//! `runner run` and `runner eval` end to end: the real binary on the real
//! MNIST files, checking the files it leaves behind.

mod common;

use common::*;

const HEADER: &str =
    "epoch,lr,train_loss,train_acc,val_loss,val_acc,epoch_seconds,train_images_per_sec,finished_at";

#[test]
fn run_trains_above_chance_and_writes_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "quick", "");
    let results = tmp.path().join("results");
    let out = runner()
        .arg("run")
        .arg(&spec)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let run = only_run_dir(&results, "quick");
    let name = run.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("relu-max-lr0.01-bs16-s0-"), "{name}");

    // metrics.csv: the documented header and one row per epoch.
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], HEADER);
    assert_eq!(lines.len(), 3, "{csv}");
    let last: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(last[0], "2");
    let val_acc: f64 = last[5].parse().unwrap();
    assert!(
        val_acc > 0.6,
        "val acc {val_acc} is not clearly above chance (0.1)"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(last[8]).is_ok(),
        "finished_at {}",
        last[8]
    );

    // summary.json agrees with the CSV.
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["epochs_completed"], 2);
    let best = summary["best_val_acc"].as_f64().unwrap();
    let accs: Vec<f64> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
        .collect();
    assert_eq!(best, accs.iter().cloned().fold(f64::MIN, f64::max));
    assert_eq!(summary["final_val_acc"].as_f64().unwrap(), accs[1]);
    for key in ["started_at", "finished_at"] {
        assert!(chrono::DateTime::parse_from_rfc3339(summary[key].as_str().unwrap()).is_ok());
    }
    assert_eq!(summary["config_hash"].as_str().unwrap().len(), 64);
    assert!(summary["peak_rss_mb"].as_f64().unwrap() > 1.0);
    if cfg!(target_os = "linux") {
        assert!(!summary["cpu"].as_str().unwrap_or_default().is_empty());
    }

    // config.toml is the resolved config and can be run again as a spec.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("limit_train = 2000"), "{config}");
    assert!(
        config.contains("momentum = 0.9"),
        "defaults are resolved into it: {config}"
    );

    // best.safetensors: PyTorch's names and shapes, f32.
    let bytes = std::fs::read(run.join("best.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "c1.bias",
            "c1.weight",
            "c3.bias",
            "c3.weight",
            "c5.bias",
            "c5.weight",
            "f6.bias",
            "f6.weight",
            "output.bias",
            "output.weight"
        ]
    );
    assert_eq!(st.tensor("c5.weight").unwrap().shape(), [120, 16, 5, 5]);
    assert_eq!(st.tensor("f6.weight").unwrap().shape(), [84, 120]);
    assert_eq!(
        st.tensor("output.bias").unwrap().dtype(),
        safetensors::Dtype::F32
    );

    // eval of the run folder reproduces the best val accuracy.
    let out = runner().arg("eval").arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("test acc {best:.4}")),
        "eval said {text:?}, summary {best}"
    );

    // eval --checkpoint with a spec gives the same.
    let out = runner()
        .args(["eval", "--checkpoint"])
        .arg(run.join("best.safetensors"))
        .arg(&spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("test acc {best:.4}")),
        "{}",
        stdout(&out)
    );

    // A completed run is not trained again unless forced.
    let out = runner()
        .arg("run")
        .arg(&spec)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("already completed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn same_seed_gives_identical_metrics_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "repro", "");
    let mut runs = Vec::new();
    let mut checkpoints = Vec::new();
    for (i, threads) in ["1", "2", "2"].iter().enumerate() {
        let results = tmp.path().join(format!("r{i}"));
        let out = runner()
            .arg("run")
            .arg(&spec)
            .args([
                "--set",
                &format!("train.threads={threads}"),
                "--set",
                "model.activation=sigmoid",
                "--set",
                "model.pooling=avg",
            ])
            .arg("--results-dir")
            .arg(&results)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        runs.push(rows_without_timings(&only_run_dir(&results, "repro")));
        checkpoints
            .push(std::fs::read(only_run_dir(&results, "repro").join("best.safetensors")).unwrap());
    }
    assert_eq!(runs[0], runs[1], "1 thread vs 2 threads");
    assert_eq!(
        checkpoints[0], checkpoints[1],
        "checkpoints byte for byte, 1 vs 2 threads"
    );
    assert_eq!(
        checkpoints[1], checkpoints[2],
        "checkpoints byte for byte, two runs"
    );
    assert_eq!(runs[1], runs[2], "two runs with 2 threads");
    // A different seed really changes them (the comparison above can fail).
    let results = tmp.path().join("other-seed");
    let out = runner()
        .arg("run")
        .arg(&spec)
        .args([
            "--set",
            "train.seed=1",
            "--set",
            "model.activation=sigmoid",
            "--set",
            "model.pooling=avg",
        ])
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        runs[0],
        rows_without_timings(&only_run_dir(&results, "repro"))
    );
}

#[test]
fn avx2_and_the_best_instruction_set_train_the_same_bits() {
    // RUNNER_SIMD=avx2 caps the kernels at AVX2; on a CPU with AVX-512 the
    // default run uses sixteen-lane pairs instead, which must not change
    // a single bit of the results.
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "isa", "");
    for (act, pool) in [("sigmoid", "avg"), ("relu", "max")] {
        let mut runs = Vec::new();
        for isa in ["avx2", "best"] {
            let results = tmp.path().join(format!("{act}-{isa}"));
            let mut cmd = runner();
            if isa == "avx2" {
                cmd.env("RUNNER_SIMD", "avx2");
            }
            let out = cmd
                .arg("run")
                .arg(&spec)
                .args(["--set", &format!("model.activation={act}")])
                .args(["--set", &format!("model.pooling={pool}")])
                .arg("--results-dir")
                .arg(&results)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            let run = only_run_dir(&results, "isa");
            let device = read_json(&run.join("summary.json"))["device"].clone();
            eprintln!("{act}+{pool} with {isa}: {device}");
            runs.push((
                rows_without_timings(&run),
                std::fs::read(run.join("best.safetensors")).unwrap(),
            ));
        }
        assert_eq!(runs[0].0, runs[1].0, "{act}+{pool}: metrics");
        assert!(runs[0].1 == runs[1].1, "{act}+{pool}: checkpoints differ");
    }
}

#[test]
fn eval_reads_a_checkpoint_with_other_settings_and_rejects_a_wrong_one() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"not safetensors at all").unwrap();
    let out = runner()
        .args(["eval", "--checkpoint"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad.safetensors"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    let out = runner().arg("eval").arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a run folder"),
        "{}",
        stderr(&out)
    );
}
