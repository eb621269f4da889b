//! Live reports: `sweep --report DIR` keeps report.html up to date while
//! the runs train (reloading itself), and `report --watch` redraws the
//! table in the terminal.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn grid(tmp: &Path) -> std::path::PathBuf {
    let grid = tmp.join("live.toml");
    std::fs::write(
        &grid,
        format!(
            "name = \"live\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 4000\nlimit_test = 500\n[spec.train]\nepochs = 4\nlr = 0.01\n[sweep]\n\"train.seed\" = [0, 1]\n",
            mnist_dir().display()
        ),
    )
    .unwrap();
    grid
}

/// The page's embedded data and whether it reloads itself.
fn read_page(path: &Path) -> Option<(serde_json::Value, bool)> {
    let html = std::fs::read_to_string(path).ok()?;
    let start = html.find("id=\"report-data\">")? + "id=\"report-data\">".len();
    let end = start + html[start..].find("</script>")?;
    let data = serde_json::from_str(&html[start..end]).ok()?;
    Some((data, html.contains("http-equiv=\"refresh\"")))
}

/// Epochs done over all runs the page shows.
fn epochs_shown(data: &serde_json::Value) -> usize {
    data["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metrics"]["epoch"].as_array().unwrap().len())
        .sum()
}

#[test]
fn sweep_report_follows_every_epoch_and_stops_reloading_at_the_end() {
    note_fixture("two runs of 4 epochs on 4,000 images");
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let page_dir = tmp.path().join("page");
    let page = page_dir.join("report.html");
    let mut child = spawn_sweep(
        &grid(tmp.path()),
        &results,
        &["--report", page_dir.to_str().unwrap()],
    );
    let started = Instant::now();
    // Epoch counts seen on the page while it said it was live.
    let mut live_epochs = std::collections::BTreeSet::new();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the sweep took too long"
        );
        if let Some((data, reloads)) = read_page(&page) {
            assert_eq!(data["live"].as_bool(), Some(reloads));
            if reloads {
                live_epochs.insert(epochs_shown(&data));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        live_epochs.len() >= 2,
        "the live page changed between epochs: saw {live_epochs:?}"
    );
    let (data, reloads) = read_page(&page).expect("the final page");
    assert!(!reloads, "the page still reloads after the sweep");
    assert_eq!(epochs_shown(&data), 8, "both runs, all epochs");
    let statuses: Vec<&str> = data["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "completed"]);
}

#[test]
fn report_watch_redraws_the_table_in_the_terminal() {
    note_fixture("two runs of 4 epochs on 4,000 images");
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let out = sweep(&grid(tmp.path()), &results, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let watch = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .args(["report", "--group-by", "none", "--watch"])
        .arg(&results)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // SIGINT, as Ctrl-C: the view ends cleanly.
    // SAFETY: kill(2) on the child's pid, which has not been reaped yet.
    let sent = unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    assert_eq!(sent, 0);
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let frames = text.matches("\x1b[H\x1b[2J").count();
    assert!(frames >= 2, "redrawn in place: {frames} frames");
    let last = text.rsplit("\x1b[H\x1b[2J").next().unwrap();
    assert!(last.contains("best val acc"), "{last}");
    assert!(
        last.contains("2 runs: 2 completed, 0 running, 0 failed"),
        "{last}"
    );
}
