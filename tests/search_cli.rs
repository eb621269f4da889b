//! Search beyond grids: random samples, early stopping and successive
//! halving, through the real binary on real MNIST subsets.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn spec_head(name: &str) -> String {
    format!(
        "name = \"{name}\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 1000\nlimit_test = 300\n[spec.model]\nactivation = \"relu\"\npooling = \"max\"\n",
        mnist_dir().display()
    )
}

/// A 9-point grid halved by 3: rung 1 at 1 epoch, rung 2 (3 runs) at 3.
fn halving_grid(dir: &Path) -> PathBuf {
    write(
        dir,
        "halve.toml",
        &format!(
            "{}[spec.train]\nepochs = 3\nthreads = 1\n[search]\nhalving = {{ min_epochs = 1, eta = 3 }}\n[sweep]\n\"train.lr\" = [0.003, 0.01, 0.05]\n\"train.momentum\" = [0.0, 0.5, 0.9]\n",
            spec_head("halve")
        ),
    )
}

/// Each run folder: (rows without timings, best.safetensors bytes, status).
fn snapshot(results: &Path, name: &str) -> BTreeMap<String, (Vec<String>, Vec<u8>, String)> {
    std::fs::read_dir(results.join(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| {
            let summary = read_json(&p.join("summary.json"));
            let status = format!(
                "{} {} {}",
                summary["status"], summary["epochs_completed"], summary["halted_after_rung"]
            );
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                (
                    rows_without_timings(&p),
                    std::fs::read(p.join("best.safetensors")).unwrap_or_default(),
                    status,
                ),
            )
        })
        .collect()
}

#[test]
fn random_samples_are_reproducible_listed_and_in_range() {
    let tmp = tempfile::tempdir().unwrap();
    let g = write(
        tmp.path(),
        "rand.toml",
        &format!(
            "{}[search]\nmethod = \"random\"\nsamples = 5\nseed = 3\n[sweep]\n\"model.activation\" = [\"relu\", \"tanh\"]\n\"train.lr\" = {{ log_uniform = [1e-3, 1e-1] }}\n\"train.momentum\" = {{ uniform = [0.5, 0.9] }}\n\"train.seed\" = {{ int = [0, 3] }}\n\"train.batch_size\" = {{ choice = [16, 32] }}\n",
            spec_head("rand")
        ),
    );
    let list = |g: &Path| stdout(&sweep(g, &tmp.path().join("r"), &["--list"]));
    let first = list(&g);
    assert_eq!(first, list(&g), "the same samples every time");
    let rows: Vec<&str> = first.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(rows.len(), 10, "2 activations x 5 samples: {first}");
    for row in &rows {
        let value = |key: &str| -> f64 {
            row.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!((1e-3..=1e-1).contains(&value("train.lr")), "{row}");
        assert!((0.5..=0.9).contains(&value("train.momentum")), "{row}");
        assert!((0.0..=3.0).contains(&value("train.seed")), "{row}");
        assert!([16.0, 32.0].contains(&value("train.batch_size")), "{row}");
    }
    // The same samples for both activations (the list axis x the samples).
    let lrs: Vec<&str> = rows
        .iter()
        .map(|r| {
            r.split("train.lr=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(lrs[..5], lrs[5..]);
    // Another seed, other samples.
    let text = std::fs::read_to_string(&g)
        .unwrap()
        .replace("seed = 3", "seed = 4");
    let other = write(
        tmp.path(),
        "rand2.toml",
        &text.replace("\"rand\"", "\"rand2\""),
    );
    assert_ne!(
        list(&other)
            .lines()
            .nth(3)
            .unwrap()
            .split_once("  ")
            .unwrap()
            .1,
        first.lines().nth(3).unwrap().split_once("  ").unwrap().1
    );
}

#[test]
fn malformed_search_tables_are_clear_errors_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("r");
    for (i, (body, words)) in [
        ("[search]\nmethod = \"bayes\"\nsamples = 3\n[sweep]\n\"train.lr\" = [0.1]\n", "method \"bayes\" is not known"),
        ("[search]\nmethod = \"random\"\nsamples = 3\n[sweep]\n\"train.lr\" = { normal = [0, 1] }\n", "range"),
        ("[search]\nmethod = \"random\"\nsamples = 3\n[sweep]\n\"train.lr\" = { log_uniform = [0, 1] }\n", "needs low > 0"),
        ("[search]\nmethod = \"random\"\nsamples = 3\n[sweep]\n\"train.lr\" = { uniform = [1] }\n", "[low, high]"),
        ("[sweep]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "add [search] with method = \"random\""),
        ("[search]\nmethod = \"random\"\n[sweep]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "samples must be"),
        ("[spec.train]\nepochs = 3\n[search]\nhalving = { min_epochs = 1, eta = 1 }\n[sweep]\n\"train.lr\" = [0.1, 0.2]\n", "eta must be 2 or more"),
        ("[spec.train]\nepochs = 3\n[search]\nhalving = { min_epochs = 5 }\n[sweep]\n\"train.lr\" = [0.1, 0.2]\n", "min_epochs must be from 1 to train.epochs (3)"),
        ("[search]\nhalving = { min_epochs = 1, metric = \"accuracy\" }\n[sweep]\n\"train.lr\" = [0.1]\n", "accuracy"),
    ]
    .iter()
    .enumerate()
    {
        let g = write(
            tmp.path(),
            &format!("bad{i}.toml"),
            &format!("{}{body}", spec_head(&format!("bad{i}"))),
        );
        for extra in [&["--list"][..], &[][..]] {
            let out = sweep(&g, &results, extra);
            assert!(!out.status.success(), "{body}");
            let err = stderr(&out);
            assert!(err.contains(words), "{body}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
        assert!(!results.exists(), "{body}: something trained");
    }
}

#[test]
fn an_early_stopped_run_resumed_stops_where_an_uninterrupted_one_does() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(
        tmp.path(),
        "es",
        "early_stopping = { metric = \"val_acc\", patience = 2 }",
    );
    let run = |results: &Path, epochs: &str| {
        let out = runner()
            .arg("run")
            .arg(&spec)
            .arg("--results-dir")
            .arg(results)
            .args(["--set", epochs, "--set", "train.lr=0.05"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let straight = tmp.path().join("straight");
    run(&straight, "train.epochs=30");
    let s = read_json(&only_run_dir(&straight, "es").join("summary.json"));
    let stopped = s["stopped_early_at"].as_u64().expect("it stops early") as usize;
    assert!(stopped < 30);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["epochs_completed"], stopped);
    // Interrupted after epoch 1 (a budget of 1), then resumed to 30.
    let resumed = tmp.path().join("resumed");
    run(&resumed, "train.epochs=1");
    let out = run(&resumed, "train.epochs=30");
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let r = read_json(&only_run_dir(&resumed, "es").join("summary.json"));
    assert_eq!(r["stopped_early_at"], s["stopped_early_at"]);
    assert_eq!(
        rows_without_timings(&only_run_dir(&resumed, "es")),
        rows_without_timings(&only_run_dir(&straight, "es"))
    );
    let report = runner().arg("report").arg(&straight).output().unwrap();
    assert!(
        stdout(&report).contains(&format!("stopped early at {stopped}")),
        "{}",
        stdout(&report)
    );
}

#[test]
fn halving_killed_in_rung_two_and_rerun_ends_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let g = halving_grid(tmp.path());
    let reference = tmp.path().join("reference");
    let out = sweep(&g, &reference, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("halving done"), "{}", stdout(&out));
    let want = snapshot(&reference, "halve");
    assert_eq!(want.len(), 9);
    let promoted = want.values().filter(|v| v.0.len() == 4).count();
    assert_eq!(promoted, 3, "3 of 9 go on to 3 epochs");
    let report = stdout(
        &runner()
            .arg("report")
            .arg(&reference)
            .args(["--group-by", "none"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        report.matches("halving stopped it after rung 1").count(),
        6,
        "{report}"
    );

    // Kill -9 once a rung-2 run has its second epoch's row.
    let results = tmp.path().join("killed");
    let mut child = spawn_sweep(&g, &results, &[]);
    wait_for_rows(&results.join("halve"), 3);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = sweep(&g, &results, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&results, "halve"), want);
}

#[test]
fn two_processes_share_a_halving_sweep_and_train_no_run_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let g = halving_grid(tmp.path());
    let reference = tmp.path().join("reference");
    assert!(sweep(&g, &reference, &[]).status.success());
    let results = tmp.path().join("shared");
    let spawn = || spawn_sweep(&g, &results, &[]);
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}{}",
        stderr(&a),
        stderr(&b)
    );
    // Each (run, rung) trained once: 9 trainings in rung 1, 3 in rung 2.
    let trained =
        stdout(&a).matches("  completed:").count() + stdout(&b).matches("  completed:").count();
    assert_eq!(trained, 12, "{}\n{}", stdout(&a), stdout(&b));
    let resumed = stderr(&a).matches("resuming").count() + stderr(&b).matches("resuming").count();
    assert_eq!(resumed, 3, "rung 2 continues the 3 promoted runs");
    assert_eq!(snapshot(&results, "halve"), snapshot(&reference, "halve"));
    // A process that finds the rung in another's hands can exit instead.
    let out = sweep(&g, &results, &["--no-wait"]);
    assert!(out.status.success(), "all done: nothing to wait for");
}

#[test]
fn jobs_share_a_grid_without_training_a_run_twice_and_ctrl_c_leaves_it_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let g = write(
        tmp.path(),
        "jobs.toml",
        &format!(
            "{}[spec.train]\nepochs = 2\n[sweep]\n\"train.seed\" = [0, 1, 2, 3, 4]\n",
            spec_head("jobs")
        ),
    );
    let results = tmp.path().join("r");
    let out = sweep(&g, &results, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 worker processes of 1 thread(s) each"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("5/5 completed"), "{}", stdout(&out));
    let logs: String = (0..2)
        .map(|i| std::fs::read_to_string(results.join(format!("jobs/worker-{i}.log"))).unwrap())
        .collect();
    assert_eq!(logs.matches("  completed:").count(), 5, "{logs}");
    // Ctrl-C (SIGINT to the parent): every worker stops, exit 130, resumable.
    let g = write(
        tmp.path(),
        "long.toml",
        &format!(
            "{}[spec.train]\nepochs = 6\n[sweep]\n\"train.seed\" = [0, 1, 2, 3]\n",
            spec_head("long").replace("limit_train = 1000", "limit_train = 4000")
        ),
    );
    let child = spawn_sweep(&g, &results, &["--jobs", "2"]);
    wait_for_rows(&results.join("long"), 2);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stdout(&out));
    let out = sweep(&g, &results, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for e in std::fs::read_dir(results.join("long")).unwrap().flatten() {
        if e.path().is_dir() {
            let epochs: Vec<String> = rows_without_timings(&e.path())[1..]
                .iter()
                .map(|r| r.split(',').next().unwrap().to_string())
                .collect();
            assert_eq!(epochs, ["1", "2", "3", "4", "5", "6"]);
        }
    }
}

/// A TPE search of 16 trials in 4 batches, the first 4 trials at random.
fn tpe_grid(dir: &Path, file: &str, limit_train: usize) -> PathBuf {
    write(
        dir,
        file,
        &format!(
            "{}[spec.train]\nepochs = 1\nthreads = 1\n[search]\nmethod = \"tpe\"\ntrials = 16\nbatch = 4\nn_startup = 4\nseed = 3\n[sweep]\n\"train.lr\" = {{ log_uniform = [0.003, 0.3] }}\n\"train.momentum\" = {{ uniform = [0.0, 0.95] }}\n",
            spec_head("tpe").replace("limit_train = 1000", &format!("limit_train = {limit_train}"))
        ),
    )
}

/// `sweep --list` without its first line (which names the results folder).
fn listing(grid: &Path, results: &Path) -> String {
    let out = sweep(grid, results, &["--list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().skip(1).collect::<Vec<_>>().join("\n")
}

/// The trials' values, in trial order, from `sweep --list`.
fn trial_values(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Sweeps `g` (named `name`) in one process, with --jobs 2, as 3 shards
/// started together, and killed with SIGKILL five times then rerun: the
/// same --list and the same bytes every way. Returns the first listing.
fn same_every_way(g: &Path, name: &str, runs: usize, tmp: &Path) -> String {
    let reference = tmp.join("one");
    let out = sweep(g, &reference, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want_list = listing(g, &reference);
    let want = snapshot(&reference, name);
    assert_eq!(want.len(), runs, "{want_list}");

    let jobs = tmp.join("jobs");
    let out = sweep(g, &jobs, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listing(g, &jobs), want_list, "--jobs 2");
    assert_eq!(snapshot(&jobs, name), want, "--jobs 2");

    let shards = tmp.join("shards");
    let children: Vec<_> = (0..3)
        .map(|i| spawn_sweep(g, &shards, &["--shard", &format!("{i}/3")]))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(listing(g, &shards), want_list, "3 shards");
    assert_eq!(snapshot(&shards, name), want, "3 shards");

    // Killed five times at moments spread over the search.
    let killed = tmp.join("killed");
    for wait_ms in [150u64, 400, 700, 1000, 1300] {
        let mut child = spawn_sweep(g, &killed, &[]);
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let out = sweep(g, &killed, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listing(g, &killed), want_list, "after kill -9");
    assert_eq!(snapshot(&killed, name), want, "after kill -9");
    want_list
}

#[test]
fn tpe_gives_the_same_trials_and_bytes_in_one_process_jobs_shards_and_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let g = tpe_grid(tmp.path(), "tpe.toml", 1000);
    let list = same_every_way(&g, "tpe", 16, tmp.path());
    assert!(list.contains("all 16 trials decided"), "{list}");
    assert_eq!(trial_values(&list).len(), 16, "{list}");
    let out = sweep(&g, &tmp.path().join("one"), &[]);
    assert!(
        stdout(&out).contains("batch 4 of 4: trials 13-16"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("tpe done; best mean val_acc"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn hyperband_gives_the_same_runs_and_bytes_in_one_process_jobs_shards_and_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let g = write(
        tmp.path(),
        "hb.toml",
        &format!(
            "{}[spec.train]\nepochs = 4\nthreads = 1\n[search]\nhalving = {{ min_epochs = 1, eta = 2, brackets = 2 }}\n[sweep]\n\"train.lr\" = [0.003, 0.01, 0.03, 0.1]\n\"train.momentum\" = [0.0, 0.9]\n",
            spec_head("hb")
        ),
    );
    let list = same_every_way(&g, "hb", 8, tmp.path());
    assert!(
        list.contains("bracket 1: 4x1 2x2 1x4; bracket 2: 4x2 2x4; 20 epochs in all"),
        "{list}"
    );
    // Each bracket halves on its own: 3 + 2 runs stopped early.
    let one = snapshot(&tmp.path().join("one"), "hb");
    let epochs: Vec<usize> = one.values().map(|v| v.0.len()).collect();
    assert_eq!(
        epochs.iter().filter(|&&e| e == 5).count(),
        3,
        "header + 4 rows: {epochs:?}"
    );
    let out = sweep(&g, &tmp.path().join("hb-bad"), &["--set", "train.epochs=1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("brackets must be from 1 to 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tpe_learns_from_results_while_its_random_start_stays_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        tpe_grid(tmp.path(), "a.toml", 1000),
        tpe_grid(tmp.path(), "b.toml", 500),
    );
    let (ra, rb) = (tmp.path().join("a"), tmp.path().join("b"));
    assert!(sweep(&a, &ra, &[]).status.success());
    assert!(sweep(&b, &rb, &[]).status.success());
    let (va, vb) = (
        trial_values(&listing(&a, &ra)),
        trial_values(&listing(&b, &rb)),
    );
    assert_eq!(
        va[..4],
        vb[..4],
        "the 4 random trials do not depend on results"
    );
    // TPE reads only the ranking of the trials: proposals change where
    // the other data ranks the earlier trials otherwise.
    let differ = (4..16).filter(|&t| va[t] != vb[t]).count();
    assert!(differ > 0, "other data, other proposals: {va:#?}\n{vb:#?}");
}

#[test]
fn bad_tpe_settings_name_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tpe_grid(tmp.path(), "ok.toml", 1000);
    let text = std::fs::read_to_string(&base).unwrap();
    for (from, to, wanted) in [
        (
            "batch = 4",
            "batch = 0",
            "[search] batch: must be at least 1",
        ),
        (
            "trials = 16",
            "trials = 3",
            "[search] trials: 3 trials is fewer than n_startup = 4",
        ),
        (
            "seed = 3",
            "seed = 3\ngamma = 1.5",
            "[search] gamma: must be in (0, 1), got 1.5",
        ),
        ("{ uniform = [0.0, 0.95] }", "[0.0, 0.9]", ""),
        (
            "trials = 16\n",
            "",
            "[search] trials: a TPE search needs trials = N",
        ),
    ] {
        let mut bad = text.replace(from, to);
        let mut wanted = wanted.to_string();
        if wanted.is_empty() {
            // No distribution left to learn.
            bad = bad.replace("{ log_uniform = [0.003, 0.3] }", "[0.01, 0.1]");
            wanted = "[search] method: TPE learns the keys given as distributions".into();
        }
        let g = write(tmp.path(), "bad.toml", &bad);
        let out = sweep(&g, &tmp.path().join("r"), &[]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(stderr(&out).contains(&wanted), "{wanted}: {}", stderr(&out));
        assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
    }
    assert!(!tmp.path().join("r").exists(), "nothing trained");
}
