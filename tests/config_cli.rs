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
