//! What runner says about a run is true and its choices do not leak the
//! test set: a held-out validation split, reports that state no false
//! common settings, overrides that cannot relabel a grid, one folder per
//! config whichever command made it, and epochs as a budget.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn run(spec: &Path, results: &Path, sets: &[&str]) -> std::process::Output {
    let mut cmd = runner();
    cmd.arg("run").arg(spec).arg("--results-dir").arg(results);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.output().unwrap()
}

fn ok(out: std::process::Output) -> std::process::Output {
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    out
}

/// A copy of the test data whose test labels are all shifted by one.
fn data_with_wrong_test_labels(dir: &Path) -> PathBuf {
    let data = dir.join("wrong-test");
    std::fs::create_dir(&data).unwrap();
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
    ] {
        std::fs::copy(mnist_dir().join(f), data.join(f)).unwrap();
    }
    let gz = std::fs::read(mnist_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    for label in &mut raw[8..] {
        *label = (*label + 1) % 10;
    }
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), raw).unwrap();
    data
}

#[test]
fn a_held_out_split_picks_the_best_epoch_and_the_test_split_scores_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "held", "");
    let sets = ["data.validation=500", "train.epochs=2"];
    let real = tmp.path().join("real");
    ok(run(&spec, &real, &sets));
    // Same run, but every test label is wrong: if the test split played
    // any part before the final scoring, training would differ.
    let wrong_data = data_with_wrong_test_labels(tmp.path());
    let wrong = tmp.path().join("wrong");
    let dir_set = format!("data.dir={}", wrong_data.display());
    ok(run(&spec, &wrong, &[sets[0], sets[1], &dir_set]));
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
    let out = ok(runner().arg("eval").arg(&a).output().unwrap());
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
    let out = ok(run(&spec, tmp.path(), &["train.epochs=1"]));
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
    let out = ok(runner()
        .args(["report", "--group-by", "none"])
        .arg(tmp.path())
        .output()
        .unwrap());
    assert!(stdout(&out).contains("= val"), "{}", stdout(&out));
}

#[test]
fn a_report_never_calls_a_setting_common_that_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("mix");
    let spec = quick_spec(tmp.path(), "mix", "");
    // One run on every image of the data, one on 3,000 + 400.
    ok(run(
        &spec,
        &results,
        &[
            "train.epochs=1",
            "data.limit_train=60000",
            "data.limit_test=10000",
        ],
    ));
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("limit_train = 2000\nlimit_test = 500\n", "");
    std::fs::write(&spec, text).unwrap();
    ok(run(&spec, &results, &["train.epochs=1"]));
    ok(run(
        &spec,
        &results,
        &[
            "train.epochs=1",
            "data.limit_train=3000",
            "data.limit_test=400",
        ],
    ));
    let out = ok(runner()
        .args(["report", "--group-by", "none"])
        .arg(&results)
        .output()
        .unwrap());
    let text = stdout(&out);
    let common: String = text
        .lines()
        .skip_while(|l| !l.starts_with("common:"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(!common.contains("limit"), "{text}");
    let header = text.lines().find(|l| l.contains("status")).unwrap();
    for title in ["limit_train", "limit_test", "test images", "run"] {
        assert!(header.contains(title), "{title} missing: {text}");
    }
    assert!(text.contains("all"), "an unset limit shows as all: {text}");
    assert!(text.contains("400"), "{text}");
    // JSON keeps numbers and booleans typed.
    let out = ok(runner()
        .args(["report", "--group-by", "none", "--format", "json"])
        .arg(&results)
        .output()
        .unwrap());
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(json["common"]["train.lr"].is_f64(), "{}", json["common"]);
    assert!(json["common"]["model.activate_c5_f6"].is_boolean());
    assert_eq!(json["common"]["model.activation"], "relu");
}

fn grid(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 1000\nlimit_test = 300\n[spec.train]\nepochs = 1\nlr = 0.01\n{body}",
        mnist_dir().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_override_of_a_swept_key_is_refused_and_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let g = grid(
        tmp.path(),
        "swept",
        "[sweep]\n\"train.lr\" = [0.01, 0.003]\n\"train.seed\" = [0, 1]\n",
    );
    let results = tmp.path().join("r");
    let out = runner()
        .arg("sweep")
        .arg(&g)
        .args(["--set", "train.lr=0.5", "--results-dir"])
        .arg(&results)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--set train.lr=0.5 overrides `train.lr`")
            && err.contains("swept.toml sweeps")
            && err.contains("Drop the --set"),
        "{err}"
    );
    let out = runner()
        .arg("sweep")
        .arg(&g)
        .arg("--list")
        .env("RUNNER_TRAIN__SEED", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("environment variable RUNNER_TRAIN__SEED overrides `train.seed`"),
        "{}",
        stderr(&out)
    );
    assert!(!results.exists(), "nothing trained or written");
    // An override of a key the grid does not sweep is fine.
    let out = runner()
        .arg("sweep")
        .arg(&g)
        .args(["--set", "train.momentum=0.5", "--list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn axes_expand_in_file_order_and_duplicate_points_are_named_and_run_once() {
    let tmp = tempfile::tempdir().unwrap();
    let g = grid(
        tmp.path(),
        "order",
        "[sweep]\n\"train.seed\" = [1, 0]\n\"model.activation\" = [\"tanh\", \"relu\"]\n[[include]]\n\"train.seed\" = 1\n\"model.activation\" = \"tanh\"\n\"train.lr\" = 1e-2\n",
    );
    let out = ok(runner()
        .arg("sweep")
        .arg(&g)
        .arg("--list")
        .output()
        .unwrap());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let described: Vec<&str> = lines
        .iter()
        .map(|l| l.split("  ").last().unwrap().trim())
        .collect();
    assert_eq!(
        described,
        vec![
            "train.seed=1 model.activation=tanh",
            "train.seed=1 model.activation=relu",
            "train.seed=0 model.activation=tanh",
            "train.seed=0 model.activation=relu",
        ],
        "{text}"
    );
    assert!(
        lines[0].trim_start().starts_with("0 "),
        "numbered from 0: {text}"
    );
    assert!(
        text.contains("point 5 (train.seed=1 model.activation=tanh train.lr=0.01) resolves to the same config as point 1"),
        "{text}"
    );
    assert!(text.contains("--shard"), "{text}");
    // Sweeping the epoch budget is refused.
    let g = grid(tmp.path(), "ep", "[sweep]\n\"train.epochs\" = [1, 2]\n");
    let out = runner()
        .arg("sweep")
        .arg(&g)
        .arg("--list")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot be swept"), "{}", stderr(&out));
}

#[test]
fn run_then_sweep_of_the_same_config_trains_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "same", "");
    let results = tmp.path().join("r");
    ok(run(&spec, &results, &[]));
    let path = tmp.path().join("same-grid.toml");
    std::fs::write(
        &path,
        "name = \"same\"\nbase = \"same.toml\"\n[sweep]\n\"train.seed\" = [0, 1]\n",
    )
    .unwrap();
    let out = ok(runner()
        .arg("sweep")
        .arg(&path)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap());
    let text = stdout(&out);
    assert!(text.contains("1 completed (skipped)"), "{text}");
    assert_eq!(text.matches("  completed: best").count(), 1, "{text}");
    let folders: Vec<String> = std::fs::read_dir(results.join("same"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".json"))
        .collect();
    assert_eq!(folders.len(), 2, "{folders:?}");
    // Each config.toml names its own folder.
    for f in &folders {
        let config =
            std::fs::read_to_string(results.join("same").join(f).join("config.toml")).unwrap();
        assert!(
            config.lines().next().unwrap().contains(f.as_str()),
            "{config}"
        );
    }
}

#[test]
fn more_epochs_continue_a_finished_run_to_the_same_bits_as_a_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "budget", "");
    let extended = tmp.path().join("extended");
    ok(run(&spec, &extended, &["train.epochs=3"]));
    let out = ok(run(&spec, &extended, &["train.epochs=5"]));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("epoch   1/5"), "{}", stdout(&out));
    assert!(stdout(&out).contains("epoch   4/5"), "{}", stdout(&out));
    let straight = tmp.path().join("straight");
    ok(run(&spec, &straight, &["train.epochs=5"]));
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
    let out = ok(run(&spec, &extended, &["train.epochs=2"]));
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
    ok(run(&spec, tmp.path(), &["train.epochs=1"]));
    let run_dir = only_run_dir(tmp.path(), "arch");
    let best = run_dir.join("best.safetensors");
    let data = format!("data.dir={}", mnist_dir().display());
    let by_run = ok(runner().arg("eval").arg(&run_dir).output().unwrap());
    let by_file = ok(runner()
        .args(["eval", "--checkpoint"])
        .arg(&best)
        .args(["--set", &data, "--set", "data.limit_test=500"])
        .output()
        .unwrap());
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
    let out = ok(runner()
        .args(["eval", "--checkpoint"])
        .arg(&bare)
        .args(["--set", &data, "--set", "data.limit_test=500"])
        .output()
        .unwrap());
    assert!(
        stderr(&out).contains("has no runner metadata naming its model")
            && stderr(&out).contains("sigmoid avg"),
        "{}",
        stderr(&out)
    );
}
