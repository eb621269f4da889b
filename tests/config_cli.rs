//! Config layering (defaults < file < environment < --set) and every kind of
//! rejection, through `runner run --dry-run`.

mod common;

use common::*;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn dry_run(spec: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = runner();
    cmd.arg("run").arg(spec).arg("--dry-run").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn layers_apply_in_order_defaults_file_env_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(
        tmp.path(),
        "layers.toml",
        "[train]\nlr = 0.5\nbatch_size = 32\nepochs = 3\n",
    );
    // File over defaults; name from the file stem.
    let out = dry_run(&spec, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let config: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(config["name"].as_str(), Some("layers"));
    assert_eq!(config["train"]["lr"].as_float(), Some(0.5));
    assert_eq!(
        config["train"]["momentum"].as_float(),
        Some(0.9),
        "default kept"
    );
    assert!(
        text.contains("# run folder: results/layers/sigmoid-avg-lr0.5-bs32-s0-"),
        "{text}"
    );

    // Environment over file; --set over environment.
    let out = dry_run(
        &spec,
        &[],
        &[("RUNNER_TRAIN__LR", "0.25"), ("RUNNER_TRAIN__EPOCHS", "4")],
    );
    let config: toml::Table = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(config["train"]["lr"].as_float(), Some(0.25));
    assert_eq!(config["train"]["epochs"].as_integer(), Some(4));
    let out = dry_run(
        &spec,
        &[
            "--set",
            "train.lr=0.125",
            "--set",
            "model.activation=relu",
            "--set",
            "name=other",
        ],
        &[("RUNNER_TRAIN__LR", "0.25")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let config: toml::Table = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(config["train"]["lr"].as_float(), Some(0.125));
    assert_eq!(config["model"]["activation"].as_str(), Some("relu"));
    assert_eq!(config["name"].as_str(), Some("other"));
    // Unrelated RUNNER_ variables without "__" are not config.
    let out = dry_run(&spec, &[], &[("RUNNER_SOMETHING", "x")]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs a dry run that must fail, returning its error output.
fn rejected(spec: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = dry_run(spec, args, env);
    assert!(!out.status.success(), "accepted: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

#[test]
fn bad_values_in_the_file_name_the_key_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[train]\nepochs = 2\nlr = -0.1\n",
            "train.lr",
            3,
            "positive",
        ),
        (
            "[train]\nbatch_size = 0\n",
            "train.batch_size",
            2,
            "at least 1",
        ),
        (
            "[model]\n\nactivation = \"relus\"\n",
            "model.activation",
            3,
            "relus",
        ),
        ("[train]\nepochs = \"ten\"\n", "train.epochs", 2, "string"),
        ("[train]\nlrr = 0.1\n", "train.lrr", 2, "unknown key"),
        (
            "[data]\nlimit_train = 0\n",
            "data.limit_train",
            2,
            "at least 1",
        ),
        ("[train]\nmomentum = 1.5\n", "train.momentum", 2, "[0, 1)"),
        (
            "[model]\npooling = \"median\"\n",
            "model.pooling",
            2,
            "median",
        ),
        ("colour = \"red\"\n", "colour", 1, "unknown key"),
    ];
    for (i, (text, key, line, words)) in cases.iter().enumerate() {
        let spec = write(tmp.path(), &format!("bad{i}.toml"), text);
        let err = rejected(&spec, &[], &[]);
        let file = spec.display().to_string();
        assert!(
            err.contains(&format!("{file}, line {line}")),
            "case {i}: no file and line in {err}"
        );
        assert!(
            err.contains(&format!("`{key}`")),
            "case {i}: no key in {err}"
        );
        assert!(err.contains(words), "case {i}: {err}");
    }
}

#[test]
fn bad_values_from_environment_and_command_line_name_their_source() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(tmp.path(), "ok.toml", "");
    let err = rejected(&spec, &[], &[("RUNNER_TRAIN__LR", "-1")]);
    assert!(
        err.contains("environment variable RUNNER_TRAIN__LR") && err.contains("`train.lr`"),
        "{err}"
    );
    let err = rejected(&spec, &["--set", "train.batch_size=0"], &[]);
    assert!(
        err.contains("--set train.batch_size") && err.contains("at least 1"),
        "{err}"
    );
    let err = rejected(&spec, &["--set", "model.activation=swish"], &[]);
    assert!(
        err.contains("--set model.activation") && err.contains("swish"),
        "{err}"
    );
    let err = rejected(&spec, &["--set", "train.nope=1"], &[]);
    assert!(
        err.contains("`train.nope`") && err.contains("unknown key"),
        "{err}"
    );
    let err = rejected(&spec, &["--set", "lr"], &[]);
    assert!(err.contains("KEY=VALUE"), "{err}");
}

#[test]
fn broken_or_missing_spec_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(tmp.path(), "syntax.toml", "[train]\nlr = = 1\n");
    let err = rejected(&spec, &[], &[]);
    assert!(
        err.contains("syntax.toml") && err.contains("not valid TOML") && err.contains("line 2"),
        "{err}"
    );
    let err = rejected(&tmp.path().join("absent.toml"), &[], &[]);
    assert!(
        err.contains("absent.toml") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn cuda_without_cuda_support_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "gpu", "device = \"cuda\"");
    let out = runner()
        .arg("run")
        .arg(&spec)
        .arg("--results-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("built without CUDA support") && err.contains("--features cuda"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once_in_line_order_and_in_words() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(
        tmp.path(),
        "many.toml",
        "[model]\nactivation = \"swish\"\n[train]\nlr = -1\nepoch = 3\nbatch_size = \"big\"\nmomentum = 0.5\n",
    );
    let err = rejected(
        &spec,
        &["--set", "train.gamma=0"],
        &[("RUNNER_TRAIN__SEED", "x")],
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    let file = spec.display().to_string();
    let expected = [
        (
            format!("{file}, line 2: `model.activation`"),
            "one of: sigmoid, relu, tanh",
        ),
        (format!("{file}, line 4: `train.lr`"), "positive"),
        (
            format!("{file}, line 5: `train.epoch`"),
            "did you mean `train.epochs`?",
        ),
        (
            format!("{file}, line 6: `train.batch_size`"),
            "must be a whole number (0 or more)",
        ),
        (
            "environment variable RUNNER_TRAIN__SEED: `train.seed`".into(),
            "a whole number",
        ),
        ("--set train.gamma: `train.gamma`".into(), "positive"),
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, (start, words)) in lines.iter().zip(&expected) {
        assert!(
            line.trim_start().starts_with(start.as_str()),
            "{line:?} in\n{err}"
        );
        assert!(line.contains(words), "{line:?} lacks {words:?}");
    }
    assert!(!err.contains("usize") && !err.contains("f64"), "{err}");
}

#[test]
fn misspelled_keys_and_sections_get_the_nearest_key() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(
        tmp.path(),
        "typo.toml",
        "[trian]\nlr = 0.1\n[data]\nepochs = 3\n",
    );
    let err = rejected(&spec, &[], &[]);
    assert!(
        err.contains("`trian.lr` unknown key; did you mean `train.lr`?"),
        "{err}"
    );
    assert!(
        err.contains("`data.epochs` unknown key; did you mean `train.epochs`?"),
        "{err}"
    );
    let err = rejected(&spec, &["--set", "train.learning_rate=0.1"], &[]);
    assert!(err.contains("--set train.learning_rate"), "{err}");
}

#[test]
fn an_environment_variable_that_sets_nothing_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(tmp.path(), "env.toml", "");
    let out = dry_run(&spec, &[], &[("RUNNER_TRAIN_LR", "0.5")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: environment variable RUNNER_TRAIN_LR is not read")
            && err.contains("did you mean RUNNER_TRAIN__LR?"),
        "{err}"
    );
    let config: toml::Table = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(config["train"]["lr"].as_float(), Some(0.001), "not applied");
    // A correctly spelled variable draws no warning.
    let out = dry_run(&spec, &[], &[("RUNNER_TRAIN__LR", "0.5")]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    // Nor did an empty section or key, or an unknown instruction set.
    let out = dry_run(&spec, &[], &[("RUNNER___", "x")]);
    assert!(
        stderr(&out).contains("RUNNER___ is not read"),
        "{}",
        stderr(&out)
    );
    let out = runner()
        .args([
            "bench",
            "--seconds",
            "0.01",
            "--train-batches",
            "16",
            "--infer-batches",
            "none",
        ])
        .args(["--variants", "relu+max", "--no-epoch", "--data"])
        .arg(mnist_dir())
        .env("RUNNER_SIMD", "bogus")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("RUNNER_SIMD=\"bogus\" is not one of portable, avx2, avx512"),
        "{}",
        stderr(&out)
    );
}

/// A value with a second line was read as TOML, whose second line set a
/// second key that was then dropped without a word.
#[test]
fn a_set_value_spanning_lines_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(tmp.path(), "lines.toml", "");
    let out = dry_run(&spec, &["--set", "train.lr=1\ntrain.seed=2"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("one KEY=VALUE per --set, on one line"),
        "{}",
        stderr(&out)
    );
}

/// `cargo run` hands the program the variables build.rs sets for the
/// compiler: none may look like config (the README's first command
/// printed two warnings about them).
#[test]
fn the_variables_build_rs_sets_draw_no_warning() {
    let build_rs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/build.rs")).unwrap();
    let names: Vec<&str> = build_rs
        .split("cargo:rustc-env=")
        .skip(1)
        .map(|rest| rest.split('=').next().unwrap())
        .collect();
    assert!(names.len() >= 2, "build.rs sets {names:?}");
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(tmp.path(), "env.toml", "");
    let env: Vec<(&str, &str)> = names.iter().map(|n| (*n, "1")).collect();
    let out = dry_run(&spec, &[], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn a_grid_given_to_run_and_a_spec_given_to_sweep_name_the_right_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let grid = root.join("experiments/quick-grid.toml");
    let err = rejected(&grid, &[], &[]);
    assert!(
        err.contains("is a grid file") && err.contains("runner sweep"),
        "{err}"
    );
    let out = runner()
        .arg("sweep")
        .arg(root.join("experiments/baseline.toml"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("is a run spec, not a grid") && err.contains("runner run"),
        "{err}"
    );
}

#[test]
fn defaults_lists_every_key_and_is_itself_a_valid_spec() {
    let out = runner().arg("defaults").output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    for key in [
        "# base_url =",
        "# limit_train =",
        "# limit_test =",
        "epochs = 20",
        "threads = 0",
    ] {
        assert!(text.contains(key), "{key} missing from\n{text}");
    }
    assert!(
        text.contains("the spec file's"),
        "says what name defaults to"
    );
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(tmp.path(), "defaults.toml", &text);
    let out = dry_run(&spec, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn numbers_that_pass_validation_never_panic_or_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "num", "");
    let results = tmp.path().join("r");
    let base = [
        "train.epochs=1",
        "data.limit_train=300",
        "data.limit_test=100",
    ];
    for set in [
        "train.batch_size=99999999999999",
        "train.batch_size=9223372036854775807",
        "data.limit_train=1152921504606846976",
        "data.limit_test=1152921504606846976",
        "train.eval_batch_size=1152921504606846976",
        "train.lr=1e308",
        "train.lr=5e-324",
        "train.weight_decay=1e308",
        "train.step_size=18446744073709551615",
    ] {
        let mut sets = base.to_vec();
        sets.push(set);
        let out = run_checked(&spec, &results, &sets);
        let summary = std::fs::read_dir(results.join("num"))
            .unwrap()
            .map(|e| e.unwrap().path().join("summary.json"))
            .filter(|p| p.is_file())
            .map(|p| read_json(&p)["status"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        assert!(
            !summary.contains(&"running".to_string()),
            "{set}: a summary left running"
        );
        if set.contains("weight_decay") {
            assert!(stderr(&out).contains("weight_decay"), "{}", stderr(&out));
        }
    }
    // predict and report --out after a huge eval batch size.
    let run_dir = std::fs::read_dir(results.join("num"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.join("summary.json").is_file()
                && read_json(&p.join("summary.json"))["status"] == "completed"
        })
        .unwrap();
    let out = runner()
        .arg("predict")
        .arg(&run_dir)
        .args(["--set", "train.eval_batch_size=1152921504606846976"])
        .output()
        .unwrap();
    no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = runner()
        .arg("report")
        .arg(&results)
        .arg("--out")
        .arg(tmp.path().join("rep"))
        .output()
        .unwrap();
    no_panic(&out);
    assert!(tmp.path().join("rep/report.md").is_file());
    // A name longer than a folder name may be is refused up front.
    let out = run_checked(&spec, &results, &[&format!("name={}", "n".repeat(300))]);
    assert!(!out.status.success() && stderr(&out).contains("`name`"));
}
