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
        // An empty [[exclude]] matched every point: 0 runs, exit 0.
        (
            "[sweep]\n\"train.lr\" = [0.1]\n[[exclude]]\n",
            "[[exclude]] number 1 is empty",
            None,
        ),
        (
            "[search]\nmethod = \"random\"\nsamples = 0\n[sweep]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n",
            "samples must be from 1 to 100000, got 0",
            None,
        ),
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

#[test]
fn an_override_of_a_swept_key_is_refused_and_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let g = named_grid(
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
    let g = named_grid(
        tmp.path(),
        "order",
        "[sweep]\n\"train.seed\" = [1, 0]\n\"model.activation\" = [\"tanh\", \"relu\"]\n[[include]]\n\"train.seed\" = 1\n\"model.activation\" = \"tanh\"\n\"train.lr\" = 1e-2\n",
    );
    let out = succeeded(
        runner()
            .arg("sweep")
            .arg(&g)
            .arg("--list")
            .output()
            .unwrap(),
    );
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
    let g = named_grid(tmp.path(), "ep", "[sweep]\n\"train.epochs\" = [1, 2]\n");
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
    succeeded(run_with(&spec, &results, &[]));
    let path = tmp.path().join("same-grid.toml");
    std::fs::write(
        &path,
        "name = \"same\"\nbase = \"same.toml\"\n[sweep]\n\"train.seed\" = [0, 1]\n",
    )
    .unwrap();
    let out = succeeded(
        runner()
            .arg("sweep")
            .arg(&path)
            .arg("--results-dir")
            .arg(&results)
            .output()
            .unwrap(),
    );
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
fn a_grid_name_cannot_lead_out_of_the_results_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("a/b");
    std::fs::create_dir_all(&work).unwrap();
    let results = work.join("results");
    for name in ["../../escape_grid", "/tmp/ABS_GRID", "a/b", ".."] {
        let g = tiny_grid(
            &work,
            "g.toml",
            &format!("name = {name:?}"),
            "[sweep]\n\"train.seed\" = [0]\n[[exclude]]\n\"train.seed\" = 0\n",
        );
        let out = sweep_checked(&g, &results, &[]);
        assert!(!out.status.success(), "{name}: {}", stdout(&out));
        assert!(stderr(&out).contains("`name`"), "{}", stderr(&out));
    }
    let g = tiny_grid(
        &work,
        "ok.toml",
        "name = \"ok\"",
        "[sweep]\n\"train.seed\" = [0]\n",
    );
    let out = sweep_checked(&g, &results, &["--set", "name=../../escape_grid"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("overrides `name`"),
        "{}",
        stderr(&out)
    );
    assert!(!Path::new("/tmp/ABS_GRID").exists());
    assert_eq!(
        files_under(tmp.path()),
        vec![PathBuf::from("a/b/g.toml"), PathBuf::from("a/b/ok.toml")]
    );
}

#[test]
fn grids_are_capped_and_integer_ranges_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("r");
    for (i, (body, words)) in [
        ("\"train.lr\" = { start = 0.1, stop = 1, num = 10000000000 }", "more than 100000"),
        ("\"train.lr\" = { start = 0.1, stop = 1, num = 9223372036854775807 }", "more than 100000"),
        ("\"train.lr\" = { start = 0.1, stop = 1, step = 1e-300 }", "more than 100000"),
        ("\"train.lr\" = { start = 0.1, stop = inf, step = 0.1 }", "finite"),
        (
            "\"train.seed\" = { start = 0, stop = 99999, step = 1 }\n\"train.batch_size\" = { start = 1, stop = 100000, step = 1 }\n\"train.step_size\" = { start = 1, stop = 100000, step = 1 }",
            "train.seed (100000) x train.batch_size (100000)",
        ),
    ]
    .iter()
    .enumerate()
    {
        let g = tiny_grid(tmp.path(), &format!("g{i}.toml"), "", &format!("[sweep]\n{body}\n"));
        let out = sweep_checked(&g, &results, &["--list"]);
        assert!(!out.status.success(), "{body}");
        assert!(stderr(&out).contains(words), "{body}: {}", stderr(&out));
    }
    let g = tiny_grid(
        tmp.path(),
        "seeds.toml",
        "",
        "[sweep]\n\"train.seed\" = { start = 9223372036854775000, stop = 9223372036854775807, step = 100 }\n",
    );
    let out = sweep_checked(&g, &results, &["--list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let seeds: Vec<u64> = stdout(&out)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.rsplit("train.seed=")
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let want: Vec<u64> = (0..9).map(|i| 9223372036854775000 + i * 100).collect();
    assert_eq!(seeds, want);
}

#[test]
fn huge_values_make_short_folder_names_and_every_point_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("r");
    let g = tiny_grid(
        tmp.path(),
        "lrs.toml",
        "",
        "[sweep]\n\"train.lr\" = [0.01, 1e6, 1e30, 1e300, 0.02]\n",
    );
    let out = sweep_checked(&g, &results, &[]);
    let text = stdout(&out);
    assert_eq!(text.matches("  completed:").count(), 2, "{text}");
    assert_eq!(text.matches("  FAILED:").count(), 3, "{text}");
    for entry in std::fs::read_dir(results.join("lrs")).unwrap() {
        assert!(entry.unwrap().file_name().len() < 150);
    }
    let spec = quick_spec(tmp.path(), "big", "");
    let out = run_checked(
        &spec,
        &results,
        &["train.lr=1e308", "train.epochs=1", "data.limit_train=200"],
    );
    assert!(stderr(&out).contains("loss became"), "{}", stderr(&out));
    assert!(results.join("big").read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("relu-max-lr1e308-")));
}

#[test]
fn an_error_before_training_fails_that_point_and_the_sweep_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("r");
    let g = tiny_grid(
        tmp.path(),
        "dirs.toml",
        "",
        "[sweep]\n\"data.validation\" = [1000000, 50]\n",
    );
    let out = sweep_checked(&g, &results, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("FAILED: before training"), "{text}");
    assert!(text.contains("  completed:"), "{text}");
}
