//! Helpers shared by the end-to-end tests: the real binary, the real MNIST
//! files from `../shared/data/mnist` (or `$MNIST_DIR`), and spec files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub fn mnist_dir() -> PathBuf {
    let dir = std::env::var_os("MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist"));
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "the real MNIST files are needed at {} (or set MNIST_DIR)",
        dir.display()
    );
    dir
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
