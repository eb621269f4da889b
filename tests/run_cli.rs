//! `runner run` and `runner eval` end to end: the real binary on the real
//! MNIST files, checking the files it leaves behind.

mod common;

use common::*;
use std::path::Path;

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

#[test]
fn a_held_out_split_picks_the_best_epoch_and_the_test_split_scores_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "held", "");
    let sets = ["data.validation=500", "train.epochs=2"];
    let real = tmp.path().join("real");
    succeeded(run_with(&spec, &real, &sets));
    // Same run, but every test label is wrong: if the test split played
    // any part before the final scoring, training would differ.
    let wrong_data = data_with_wrong_test_labels(tmp.path());
    let wrong = tmp.path().join("wrong");
    let dir_set = format!("data.dir={}", wrong_data.display());
    succeeded(run_with(&spec, &wrong, &[sets[0], sets[1], &dir_set]));
    let (a, b) = (only_run_dir(&real, "held"), only_run_dir(&wrong, "held"));
    assert_eq!(
        rows_without_timings(&a),
        rows_without_timings(&b),
        "validation never reads the test split"
    );
    assert_eq!(
        tensors(&a.join("best.safetensors")),
        tensors(&b.join("best.safetensors"))
    );
    let (sa, sb) = (
        read_json(&a.join("summary.json")),
        read_json(&b.join("summary.json")),
    );
    assert_eq!(sa["validation"], "500 held-out training images");
    let (ta, tb) = (
        sa["test_acc"].as_f64().unwrap(),
        sb["test_acc"].as_f64().unwrap(),
    );
    assert!(
        ta > 0.5 && tb < 0.3,
        "test acc {ta} real, {tb} wrong labels"
    );
    assert_eq!(sa["test_images"], 500);
    // eval scores the same checkpoint on the same split: the same number.
    let out = succeeded(runner().arg("eval").arg(&a).output().unwrap());
    assert!(
        stdout(&out).contains(&format!("test acc {ta:.4}")),
        "{}",
        stdout(&out)
    );
    // The best val acc is the best of the val_acc rows (the held-out split).
    let best = sa["best_val_acc"].as_f64().unwrap();
    let vals: Vec<f64> = rows_without_timings(&a)[1..]
        .iter()
        .map(|r| r.split(',').nth(5).unwrap().parse().unwrap())
        .collect();
    assert_eq!(vals.iter().cloned().fold(f64::MIN, f64::max), best);
}

#[test]
fn the_seeds_setup_says_its_validation_is_the_test_split() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "seedway", "");
    let out = succeeded(run_with(&spec, tmp.path(), &["train.epochs=1"]));
    assert!(
        stdout(&out).contains("chosen on the test split"),
        "{}",
        stdout(&out)
    );
    let summary = read_json(&only_run_dir(tmp.path(), "seedway").join("summary.json"));
    assert_eq!(summary["validation"], "the test split (the tutorial's way)");
    assert!(
        summary.get("test_acc").is_none(),
        "no second number: {summary}"
    );
    let out = succeeded(
        runner()
            .args(["report", "--group-by", "none"])
            .arg(tmp.path())
            .output()
            .unwrap(),
    );
    assert!(stdout(&out).contains("= val"), "{}", stdout(&out));
}

#[test]
fn more_epochs_continue_a_finished_run_to_the_same_bits_as_a_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "budget", "");
    let extended = tmp.path().join("extended");
    succeeded(run_with(&spec, &extended, &["train.epochs=3"]));
    let out = succeeded(run_with(&spec, &extended, &["train.epochs=5"]));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("epoch   1/5"), "{}", stdout(&out));
    assert!(stdout(&out).contains("epoch   4/5"), "{}", stdout(&out));
    let straight = tmp.path().join("straight");
    succeeded(run_with(&spec, &straight, &["train.epochs=5"]));
    let (a, b) = (
        only_run_dir(&extended, "budget"),
        only_run_dir(&straight, "budget"),
    );
    assert_eq!(rows_without_timings(&a), rows_without_timings(&b));
    assert_eq!(rows_without_timings(&a).len(), 6);
    assert_eq!(
        std::fs::read(a.join("best.safetensors")).unwrap(),
        std::fs::read(b.join("best.safetensors")).unwrap()
    );
    let summary = read_json(&a.join("summary.json"));
    assert_eq!(summary["epochs_completed"], 5);
    assert_eq!(summary["status"], "completed");
    // Fewer epochs than done: completed with what it has.
    let out = succeeded(run_with(&spec, &extended, &["train.epochs=2"]));
    assert!(
        stdout(&out).contains("already completed (5 epochs"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn eval_of_a_checkpoint_alone_scores_it_as_the_model_it_was_trained_as() {
    let tmp = tempfile::tempdir().unwrap();
    // quick_spec trains ReLU + max pooling; the default model is sigmoid + avg.
    let spec = quick_spec(tmp.path(), "arch", "");
    succeeded(run_with(&spec, tmp.path(), &["train.epochs=1"]));
    let run_dir = only_run_dir(tmp.path(), "arch");
    let best = run_dir.join("best.safetensors");
    let data = format!("data.dir={}", mnist_dir().display());
    let by_run = succeeded(runner().arg("eval").arg(&run_dir).output().unwrap());
    let by_file = succeeded(
        runner()
            .args(["eval", "--checkpoint"])
            .arg(&best)
            .args(["--set", &data, "--set", "data.limit_test=500"])
            .output()
            .unwrap(),
    );
    let acc = |o: &std::process::Output| {
        let text = stdout(o);
        text.split("test acc ").nth(1).unwrap()[..6].to_string()
    };
    assert_eq!(acc(&by_run), acc(&by_file), "{}", stdout(&by_file));
    assert!(
        stdout(&by_file).contains("relu max"),
        "{}",
        stdout(&by_file)
    );
    // A spec that names another model is refused.
    let out = runner()
        .args(["eval", "--checkpoint"])
        .arg(&best)
        .args(["--set", &data, "--set", "model.activation=tanh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("was trained as relu max"),
        "{}",
        stderr(&out)
    );
    // A checkpoint without runner's metadata (as PyTorch writes them):
    // scored as the seed's model, and said so.
    let bytes = std::fs::read(&best).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    let bare = tmp.path().join("bare.safetensors");
    std::fs::write(&bare, safetensors::serialize(views, &None).unwrap()).unwrap();
    let out = succeeded(
        runner()
            .args(["eval", "--checkpoint"])
            .arg(&bare)
            .args(["--set", &data, "--set", "data.limit_test=500"])
            .output()
            .unwrap(),
    );
    assert!(
        stderr(&out).contains("has no runner metadata naming its model")
            && stderr(&out).contains("sigmoid avg"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_damaged_metrics_file_is_repaired_or_refused_never_truncated_or_doubled() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "res", "");
    let straight = tmp.path().join("straight");
    assert!(run_checked(&spec, &straight, &["train.epochs=4"])
        .status
        .success());
    let want = rows_without_timings(&only_run_dir(&straight, "res"));

    let append = |line: &'static str| {
        move |m: &Path| {
            let mut text = std::fs::read_to_string(m).unwrap();
            text.push_str(line);
            std::fs::write(m, text).unwrap();
        }
    };
    // A bad trailing row: dropped, the run goes on to 4 rows.
    let (out, dir, _t) = resumed_after(append("3,0.01,garbage\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dropped 1 damaged"),
        "{}",
        stderr(&out)
    );
    assert_eq!(rows_without_timings(&dir), want);
    // A duplicated row: dropped.
    let (out, dir, _t) = resumed_after(|m: &Path| {
        let text = std::fs::read_to_string(m).unwrap();
        let second = text.lines().nth(1).unwrap().to_string();
        std::fs::write(m, format!("{text}{second}\n")).unwrap();
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows_without_timings(&dir), want);
    // Deleted: the rows of epochs 1-2 cannot be recovered: refused.
    let (out, dir, _t) = resumed_after(|m: &Path| std::fs::remove_file(m).unwrap());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be resumed truthfully") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("metrics.csv").exists() || rows_without_timings(&dir).len() <= 1);
    // The report lists a folder whose rows are doubled as broken.
    let (_, dir, t) = resumed_after(|_| {});
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let second = text.lines().nth(1).unwrap().to_string();
    std::fs::write(dir.join("metrics.csv"), format!("{text}{second}\n")).unwrap();
    let out = runner()
        .arg("report")
        .arg(t.path().join("r"))
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("1 broken run folder") && stdout(&out).contains("once each"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_damaged_best_checkpoint_is_reported_and_repaired_by_a_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "ck", "");
    let results = tmp.path().join("r");
    assert!(run_checked(&spec, &results, &["train.epochs=1"])
        .status
        .success());
    let dir = only_run_dir(&results, "ck");
    let best = dir.join("best.safetensors");
    let good = std::fs::read(&best).unwrap();
    std::fs::write(&best, &good[..good.len() / 2]).unwrap();
    std::fs::write(dir.join(".tmp-leftover"), b"half a write").unwrap();
    let out = runner().arg("report").arg(&results).output().unwrap();
    assert!(
        stdout(&out).contains("1 broken run folder") && stdout(&out).contains("best.safetensors"),
        "{}",
        stdout(&out)
    );
    let out = run_checked(&spec, &results, &["train.epochs=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is damaged: training the run again"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&best).unwrap(), good, "the same bits again");
    assert!(
        !dir.join(".tmp-leftover").exists(),
        "stale temporary removed"
    );
}

#[test]
fn a_symbolic_link_inside_the_results_folder_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let results = tmp.path().join("r");
    std::fs::create_dir(&results).unwrap();
    std::os::unix::fs::symlink(&elsewhere, results.join("sym")).unwrap();
    let spec = quick_spec(tmp.path(), "sym", "");
    let out = run_checked(&spec, &results, &["train.epochs=1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // A results folder that is itself a link is followed.
    let linked = tmp.path().join("linked");
    std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
    let out = run_checked(&spec, &linked, &["train.epochs=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
