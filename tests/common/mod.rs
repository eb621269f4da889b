//! Helpers shared by the end-to-end tests: the real binary, real MNIST
//! files (a full copy when one is found, else the committed fixture), and
//! spec files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// Where the tests find MNIST, first match wins: `$MNIST_DIR`,
/// `../shared/data/mnist`, `data/mnist` (where `runner run` downloads it),
/// then the small fixture committed in `tests/fixtures/mnist` (5,000 training
/// and 1,000 test images), so the suite runs on a fresh clone offline.
pub fn mnist_dir() -> PathBuf {
    let (dir, full) = mnist();
    if !full {
        // Counted by .ci/run (`cargo test -- --nocapture`): the test threads
        // are named after their tests.
        let test = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("note: {test} runs on the MNIST fixture");
    }
    dir
}

/// True when the tests run on a full copy (60k + 10k images), not the fixture.
pub fn mnist_is_full() -> bool {
    mnist().1
}

fn mnist() -> (PathBuf, bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let has_files = |dir: &Path| dir.join("train-images-idx3-ubyte.gz").is_file();
    let candidates = std::env::var_os("MNIST_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join("../shared/data/mnist"), root.join("data/mnist")]);
    for dir in candidates {
        if has_files(&dir) {
            return (dir, true);
        }
    }
    let fixture = root.join("tests/fixtures/mnist");
    assert!(
        has_files(&fixture),
        "the MNIST fixture is missing at {}",
        fixture.display()
    );
    (fixture, false)
}

/// Says in the test's output (`cargo test -- --nocapture`) that it runs on
/// the fixture, and what that changes.
pub fn note_fixture(what: &str) {
    if !mnist_is_full() {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("note: {test} runs on the MNIST fixture: {what}");
    }
}

/// The binary, with no RUNNER_* variables leaking in from the environment.
pub fn runner() -> Command {
    let mut cmd = Command::cargo_bin("runner").expect("binary built");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUNNER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A quick spec on real MNIST: 2,000 training and 500 test images.
pub fn quick_spec(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let spec = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"name = "{name}"
[data]
dir = "{}"
download = false
limit_train = 2000
limit_test = 500
[model]
activation = "relu"
pooling = "max"
[train]
epochs = 2
batch_size = 16
lr = 0.01
{extra}
"#,
        mnist_dir().display()
    );
    std::fs::write(&spec, text).unwrap();
    spec
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The single run folder under `results/<name>/`.
pub fn only_run_dir(results: &Path, name: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(results.join(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "expected one run folder, found {dirs:?}");
    dirs.into_iter().next().unwrap()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// metrics.csv's lines without the timing columns (epoch to val_acc).
pub fn rows_without_timings(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(6).collect::<Vec<_>>().join(","))
        .collect()
}

/// Every tensor of a safetensors file, by name, as raw bytes.
pub fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    out.sort();
    out
}

/// `runner run SPEC --results-dir RESULTS`, which must succeed.
pub fn run_spec(spec: &Path, results: &Path) {
    let out = runner()
        .arg("run")
        .arg(spec)
        .arg("--results-dir")
        .arg(results)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `runner report --group-by none --out OUT RESULTS`, which must succeed.
pub fn report_every_run(results: &Path, out_dir: &Path) {
    let out = runner()
        .args(["report", "--group-by", "none", "--out"])
        .arg(out_dir)
        .arg(results)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `runner sweep GRID --results-dir RESULTS EXTRA...`.
pub fn sweep(grid: &Path, results: &Path, extra: &[&str]) -> Output {
    runner()
        .arg("sweep")
        .arg(grid)
        .arg("--results-dir")
        .arg(results)
        .args(extra)
        .output()
        .unwrap()
}

/// `runner sweep GRID --results-dir RESULTS EXTRA...` in the background,
/// its output captured.
pub fn spawn_sweep(grid: &Path, results: &Path, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .arg("sweep")
        .arg(grid)
        .arg("--results-dir")
        .arg(results)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until some run folder under `sweep_dir` has `lines` lines of
/// metrics.csv (the header and lines - 1 epochs).
pub fn wait_for_rows(sweep_dir: &Path, lines: usize) {
    let started = std::time::Instant::now();
    let reached = || {
        std::fs::read_dir(sweep_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("metrics.csv"))
                    .is_ok_and(|t| t.lines().count() >= lines)
            })
    };
    while !reached() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no run under {} reached {lines} metrics lines",
            sweep_dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `runner run SPEC --results-dir RESULTS --set ...`.
pub fn run_with(spec: &Path, results: &Path, sets: &[&str]) -> Output {
    let mut cmd = runner();
    cmd.arg("run").arg(spec).arg("--results-dir").arg(results);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.output().unwrap()
}

/// The output, after checking that the command succeeded.
pub fn succeeded(out: Output) -> Output {
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    out
}

/// A copy of the test data whose test labels are all shifted by one.
pub fn data_with_wrong_test_labels(dir: &Path) -> PathBuf {
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

/// A grid file `<name>.toml` over 1,000 + 300 images, 1 epoch at lr 0.01.
pub fn named_grid(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 1000\nlimit_test = 300\n[spec.train]\nepochs = 1\nlr = 0.01\n{body}",
        mnist_dir().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// No panic, no abort: a clean exit 0, 1 or 2.
pub fn no_panic(out: &Output) {
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

/// `run_with`, checked not to panic.
pub fn run_checked(spec: &Path, results: &Path, sets: &[&str]) -> Output {
    let out = run_with(spec, results, sets);
    no_panic(&out);
    out
}

/// `sweep`, checked not to panic.
pub fn sweep_checked(grid: &Path, results: &Path, extra: &[&str]) -> Output {
    let out = sweep(grid, results, extra);
    no_panic(&out);
    out
}

/// A grid file over 300 + 100 images, 1 epoch at lr 0.01: `head` above
/// the spec, `body` below it.
pub fn tiny_grid(dir: &Path, file: &str, head: &str, body: &str) -> PathBuf {
    let path = dir.join(file);
    let text = format!(
        "{head}\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 300\nlimit_test = 100\n[spec.train]\nepochs = 1\nlr = 0.01\n{body}",
        mnist_dir().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Every file under `root`, relative.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        if entry.file_type().is_file() {
            out.push(entry.path().strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// A 2-epoch run, then its metrics.csv damaged by `damage`, then asked for 4.
pub fn resumed_after(damage: impl Fn(&Path)) -> (Output, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), "res", "");
    let results = tmp.path().join("r");
    assert!(run_checked(&spec, &results, &["train.epochs=2"])
        .status
        .success());
    let dir = only_run_dir(&results, "res");
    damage(&dir.join("metrics.csv"));
    let out = run_checked(&spec, &results, &["train.epochs=4"]);
    (out, dir, tmp)
}
