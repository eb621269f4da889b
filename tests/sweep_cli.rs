//! `runner sweep` end to end on real MNIST subsets: full runs, skipping,
//! resuming after SIGKILL, two processes sharing a grid, shards, failures
//! and malformed grids.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn grid(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 1000\nlimit_test = 300\n{body}\n",
        mnist_dir().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// 4 points: relu/tanh x 2 seeds, 1 epoch each.
const SMALL: &str = "[spec.train]\nepochs = 1\nlr = 0.01\n[sweep]\n\"model.activation\" = [\"relu\", \"tanh\"]\n\"train.seed\" = [0, 1]\n";

fn listed_ids(out: &std::process::Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
        .collect()
}

fn statuses(results: &Path, name: &str) -> Vec<String> {
    let record = read_json(&results.join(name).join("sweep.json"));
    record["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn runs_the_grid_then_skips_everything_on_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let g = grid(tmp.path(), "small", SMALL);
    let results = tmp.path().join("results");
    let out = sweep(&g, &results, &["--count"]);
    assert_eq!(stdout(&out).trim(), "4");
    let out = sweep(&g, &results, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("  completed: best val acc").count(),
        4,
        "{}",
        stdout(&out)
    );
    assert_eq!(statuses(&results, "small"), vec!["completed"; 4]);
    for id in listed_ids(&sweep(&g, &results, &["--list"])) {
        let run = results.join("small").join(&id);
        assert!(
            run.join("metrics.csv").is_file() && run.join("best.safetensors").is_file(),
            "{id}"
        );
        assert!(
            id.starts_with("activation=relu,seed=") || id.starts_with("activation=tanh,seed="),
            "{id}"
        );
    }
    let out = sweep(&g, &results, &[]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(
        text.matches("skipped: already completed").count(),
        4,
        "{text}"
    );
    assert!(!text.contains("epoch "), "nothing trained again: {text}");
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("long.toml");
    // One point; the grid's [spec] sets everything.
    let text = format!(
        "name = \"long\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 8000\nlimit_test = 300\n[spec.train]\nepochs = 3\nlr = 0.01\n[spec.model]\nactivation = \"relu\"\n[sweep]\n\"train.seed\" = [5]\n",
        mnist_dir().display()
    );
    std::fs::write(&path, text).unwrap();

    // Uninterrupted reference.
    let reference = tmp.path().join("reference");
    let out = sweep(&path, &reference, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = listed_ids(&sweep(&path, &reference, &["--list"])).remove(0);

    // Start, wait for the first epoch's row, kill -9 inside the second epoch.
    let results = tmp.path().join("killed");
    let mut child = spawn_sweep(&path, &results, &[]);
    let run = results.join("long").join(&id);
    wait_for_first_epoch(&run);
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(
        summary["status"], "running",
        "the kill must land mid-run for this test to mean anything"
    );
    let rows_at_kill = rows_len(&run) - 1;
    assert!(rows_at_kill < 3, "killed after the last epoch");

    let out = sweep(&path, &results, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    assert_eq!(
        rows_without_timings(&run),
        rows_without_timings(&reference.join("long").join(&id))
    );
    let epochs: Vec<String> = rows_without_timings(&run)
        .iter()
        .skip(1)
        .map(|r| r.split(',').next().unwrap().to_string())
        .collect();
    assert_eq!(epochs, vec!["1", "2", "3"]);
    assert_eq!(
        tensors(&run.join("best.safetensors")),
        tensors(&reference.join("long").join(&id).join("best.safetensors"))
    );
    assert_eq!(read_json(&run.join("summary.json"))["status"], "completed");
}

/// Waits until the run's first epoch has its metrics row.
fn wait_for_first_epoch(run: &Path) {
    let started = Instant::now();
    while rows_len(run) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "first epoch never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rows_len(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.csv"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn two_processes_share_a_grid_without_training_a_run_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let g = grid(tmp.path(), "shared", SMALL);
    let results = tmp.path().join("results");
    let spawn = || spawn_sweep(&g, &results, &[]);
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    let mut trained = Vec::new();
    for out in [&a, &b] {
        let text = stdout(out);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("  completed") {
                // The run's header is the last "[k/n] id" line before it.
                let header = lines[..i]
                    .iter()
                    .rev()
                    .find(|l| l.starts_with('['))
                    .unwrap();
                let id = header
                    .split("] ")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap();
                trained.push(id.to_string());
            }
        }
    }
    trained.sort();
    let unique: BTreeSet<_> = trained.iter().cloned().collect();
    assert_eq!(
        trained.len(),
        4,
        "each run trained exactly once between the two: {trained:?}"
    );
    assert_eq!(unique.len(), 4, "{trained:?}");
    assert_eq!(statuses(&results, "shared"), vec!["completed"; 4]);
}

#[test]
fn shards_cover_the_grid_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let g = grid(
        tmp.path(),
        "sharded",
        "[sweep]\n\"model.activation\" = [\"relu\", \"tanh\", \"sigmoid\"]\n\"train.lr\" = { start = 0.001, stop = 0.1, num = 3, log = true }\n",
    );
    let results = tmp.path().join("results");
    let all = listed_ids(&sweep(&g, &results, &["--list"]));
    assert_eq!(all.len(), 9);
    let mut seen = Vec::new();
    for i in 0..3 {
        let out = sweep(&g, &results, &["--list", "--shard", &format!("{i}/3")]);
        assert!(out.status.success(), "{}", stderr(&out));
        seen.extend(listed_ids(&out));
    }
    seen.sort();
    let mut all_sorted = all.clone();
    all_sorted.sort();
    assert_eq!(seen, all_sorted);
    // The scheduler's variables pick the same slices.
    let slurm = runner()
        .arg("sweep")
        .arg(&g)
        .args(["--list", "--results-dir"])
        .arg(&results)
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .output()
        .unwrap();
    assert_eq!(
        listed_ids(&slurm),
        listed_ids(&sweep(&g, &results, &["--list", "--shard", "1/3"]))
    );
}

#[test]
fn a_diverging_point_fails_while_the_others_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let g = grid(
        tmp.path(),
        "nan",
        "[spec.train]\nepochs = 1\n[spec.model]\nactivation = \"relu\"\n[sweep]\n\"train.lr\" = [0.01, 1e9]\n",
    );
    let results = tmp.path().join("results");
    let out = sweep(&g, &results, &[]);
    assert!(!out.status.success(), "a failed run must fail the sweep");
    assert_eq!(statuses(&results, "nan"), vec!["completed", "failed"]);
    let failed = listed_ids(&sweep(&g, &results, &["--list"])).pop().unwrap();
    let summary = read_json(&results.join("nan").join(failed).join("summary.json"));
    assert!(
        summary["reason"].as_str().unwrap().contains("loss became"),
        "{summary}"
    );
    // Rerun: the failure is reported, not retried, and still fails the sweep.
    let out = sweep(&g, &results, &[]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("failed earlier"), "{}", stdout(&out));
    let out = sweep(&g, &results, &["--retry-failed"]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("FAILED"), "{}", stdout(&out));
}

#[test]
fn malformed_grids_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[sweep]\n\"model.activaton\" = [\"relu\"]\n",
            "`model.activaton` is not a config key",
            Some(2),
        ),
        (
            "[sweep]\n\"train.lr\" = []\n",
            "the list of values is empty",
            Some(2),
        ),
        (
            "[sweep]\n\"train.lr\" = { start = 1, stop = 0, step = 1 }\n",
            "never gets from",
            Some(2),
        ),
        (
            "[sweep]\n\"train.lr\" = { start = 1, stop = 2 }\n",
            "needs num",
            Some(2),
        ),
        (
            "[[zip]]\n\"train.lr\" = [0.1, 0.2]\n\"train.batch_size\" = [16]\n",
            "equal lengths",
            None,
        ),
        (
            "[sweep]\n\"train.lr\" = [0.1, -1.0]\n",
            "point 2 of 2",
            None,
        ),
        (
            "[sweep]\n\"model.activation\" = [\"relu\", \"swish\"]\n",
            "swish",
            None,
        ),
        ("[bogus]\nx = 1\n", "unknown field `bogus`", None),
    ];
    for (i, (body, words, line)) in cases.iter().enumerate() {
        let g = grid(tmp.path(), &format!("bad{i}"), body);
        let out = sweep(&g, &tmp.path().join("r"), &["--list"]);
        assert!(!out.status.success(), "case {i} accepted");
        let err = stderr(&out);
        assert!(
            err.contains(&g.display().to_string()),
            "case {i}: no file in {err}"
        );
        assert!(err.contains(words), "case {i}: {err}");
        if let Some(line) = line {
            // The grid helper puts 6 lines of [spec] first.
            assert!(
                err.contains(&format!("line {}", line + 6)),
                "case {i}: no line in {err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn ctrl_c_stops_cleanly_with_130_and_the_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("intr.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"intr\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 8000\nlimit_test = 300\n[spec.train]\nepochs = 3\nlr = 0.01\n[sweep]\n\"train.seed\" = [3]\n",
            mnist_dir().display()
        ),
    )
    .unwrap();
    let results = tmp.path().join("results");
    let id = listed_ids(&sweep(&path, &results, &["--list"])).remove(0);
    let run = results.join("intr").join(&id);
    let child = spawn_sweep(&path, &results, &[]);
    wait_for_first_epoch(&run);
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["status"], "interrupted");
    assert!(run.join("state.safetensors").is_file());
    let out = sweep(&path, &results, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let epochs: Vec<String> = rows_without_timings(&run)
        .iter()
        .skip(1)
        .map(|r| r.split(',').next().unwrap().to_string())
        .collect();
    assert_eq!(epochs, vec!["1", "2", "3"]);
}
