//! Adversarial inputs, one test per finding of the hardening issue: no
//! write outside the results folder, no panic on any number, resume that
//! never loses or doubles a metrics row, damage detected and repaired.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn no_panic(out: &std::process::Output) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "exit {:?}: {err}",
        out.status.code()
    );
}

fn run(spec: &Path, results: &Path, sets: &[&str]) -> std::process::Output {
    let mut cmd = runner();
    cmd.arg("run").arg(spec).arg("--results-dir").arg(results);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().unwrap();
    no_panic(&out);
    out
}

fn sweep(grid: &Path, results: &Path, extra: &[&str]) -> std::process::Output {
    let out = common::sweep(grid, results, extra);
    no_panic(&out);
    out
}

fn grid(dir: &Path, file: &str, head: &str, body: &str) -> PathBuf {
    let path = dir.join(file);
    let text = format!(
        "{head}\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 300\nlimit_test = 100\n[spec.train]\nepochs = 1\nlr = 0.01\n{body}",
        mnist_dir().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Every file under `root`, relative.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        if entry.file_type().is_file() {
            out.push(entry.path().strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

#[test]
fn a_grid_name_cannot_lead_out_of_the_results_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("a/b");
    std::fs::create_dir_all(&work).unwrap();
    let results = work.join("results");
    for name in ["../../escape_grid", "/tmp/ABS_GRID", "a/b", ".."] {
        let g = grid(
            &work,
            "g.toml",
            &format!("name = {name:?}"),
            "[sweep]\n\"train.seed\" = [0]\n[[exclude]]\n\"train.seed\" = 0\n",
        );
        let out = sweep(&g, &results, &[]);
        assert!(!out.status.success(), "{name}: {}", stdout(&out));
        assert!(stderr(&out).contains("`name`"), "{}", stderr(&out));
    }
    let g = grid(
        &work,
        "ok.toml",
        "name = \"ok\"",
        "[sweep]\n\"train.seed\" = [0]\n",
    );
    let out = sweep(&g, &results, &["--set", "name=../../escape_grid"]);
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

/// A 2-epoch run, then its metrics.csv damaged by `damage`, then asked for 4.
fn resumed_after(damage: impl Fn(&Path)) -> (std::process::Output, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "res", "");
    let results = tmp.path().join("r");
    assert!(run(&spec, &results, &["train.epochs=2"]).status.success());
    let dir = only_run_dir(&results, "res");
    damage(&dir.join("metrics.csv"));
    let out = run(&spec, &results, &["train.epochs=4"]);
    (out, dir, tmp)
}

#[test]
fn a_damaged_metrics_file_is_repaired_or_refused_never_truncated_or_doubled() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "res", "");
    let straight = tmp.path().join("straight");
    assert!(run(&spec, &straight, &["train.epochs=4"]).status.success());
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
        let out = run(&spec, &results, &sets);
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
    let out = run(&spec, &results, &[&format!("name={}", "n".repeat(300))]);
    assert!(!out.status.success() && stderr(&out).contains("`name`"));
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
        let g = grid(tmp.path(), &format!("g{i}.toml"), "", &format!("[sweep]\n{body}\n"));
        let out = sweep(&g, &results, &["--list"]);
        assert!(!out.status.success(), "{body}");
        assert!(stderr(&out).contains(words), "{body}: {}", stderr(&out));
    }
    let g = grid(
        tmp.path(),
        "seeds.toml",
        "",
        "[sweep]\n\"train.seed\" = { start = 9223372036854775000, stop = 9223372036854775807, step = 100 }\n",
    );
    let out = sweep(&g, &results, &["--list"]);
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
    let g = grid(
        tmp.path(),
        "lrs.toml",
        "",
        "[sweep]\n\"train.lr\" = [0.01, 1e6, 1e30, 1e300, 0.02]\n",
    );
    let out = sweep(&g, &results, &[]);
    let text = stdout(&out);
    assert_eq!(text.matches("  completed:").count(), 2, "{text}");
    assert_eq!(text.matches("  FAILED:").count(), 3, "{text}");
    for entry in std::fs::read_dir(results.join("lrs")).unwrap() {
        assert!(entry.unwrap().file_name().len() < 150);
    }
    let spec = quick_spec(tmp.path(), "big", "");
    let out = run(
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
    let g = grid(
        tmp.path(),
        "dirs.toml",
        "",
        "[sweep]\n\"data.validation\" = [1000000, 50]\n",
    );
    let out = sweep(&g, &results, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("FAILED: before training"), "{text}");
    assert!(text.contains("  completed:"), "{text}");
}

#[test]
fn a_damaged_best_checkpoint_is_reported_and_repaired_by_a_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "ck", "");
    let results = tmp.path().join("r");
    assert!(run(&spec, &results, &["train.epochs=1"]).status.success());
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
    let out = run(&spec, &results, &["train.epochs=1"]);
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
fn misleading_messages_now_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    // A .gz that is a folder.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for f in [
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(mnist_dir().join(f), data.join(f)).unwrap();
    }
    std::fs::create_dir(data.join("train-images-idx3-ubyte.gz")).unwrap();
    let spec = quick_spec(tmp.path(), "msg", "");
    let out = run(
        &spec,
        &tmp.path().join("r"),
        &[&format!("data.dir={}", data.display())],
    );
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("loading the dataset: loading the dataset"));
    // A base that is a folder.
    let g = tmp.path().join("g.toml");
    std::fs::write(&g, "base = \".\"\n[sweep]\n\"train.seed\" = [0]\n").unwrap();
    let out = sweep(&g, &tmp.path().join("r"), &["--list"]);
    assert!(stderr(&out).contains("is not a file"), "{}", stderr(&out));
    // predict --out naming a folder, and a FIFO named *.png.
    assert!(run(&spec, &tmp.path().join("r"), &["train.epochs=1"])
        .status
        .success());
    let run_dir = only_run_dir(&tmp.path().join("r"), "msg");
    let out = runner()
        .arg("predict")
        .arg(&run_dir)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    no_panic(&out);
    assert!(stderr(&out).contains("is a folder"), "{}", stderr(&out));
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let fifo = images.join("blocking.png");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let png = image::GrayImage::from_pixel(28, 28, image::Luma([0u8]));
    png.save(images.join("zero.png")).unwrap();
    let out = runner()
        .arg("predict")
        .arg(&run_dir)
        .arg("--images")
        .arg(&images)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("zero.png") && !stdout(&out).contains("blocking"));
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
    let out = run(&spec, &results, &["train.epochs=1"]);
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
    let out = run(&spec, &linked, &["train.epochs=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
