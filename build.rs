// Records what the binary was built from: the git commit, when there is
// one, and the dfdx version Cargo.lock resolved (both go into every run
// summary). Not named RUNNER_*: `cargo run` passes these to the program,
// and the config reads (and warns about) every RUNNER_* variable.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(commit) = commit.filter(|c| !c.is_empty()) {
        println!("cargo:rustc-env=BUILT_FROM_GIT_COMMIT={commit}");
    }
    println!(
        "cargo:rustc-env=BUILT_WITH_DFDX_VERSION={}",
        locked_version("dfdx")
    );
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    println!("cargo:rerun-if-changed=Cargo.lock");
}

/// The version of `package` in Cargo.lock: the line after its `name`.
fn locked_version(package: &str) -> String {
    let lock = std::fs::read_to_string("Cargo.lock").expect("Cargo.lock is read at build time");
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == name {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = ")) {
                return version.trim_matches('"').to_string();
            }
        }
    }
    panic!("Cargo.lock has no {package} package");
}
