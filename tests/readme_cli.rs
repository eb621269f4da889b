//! The README's "A first sweep and report" commands, run verbatim (the
//! code block is read from README.md, so the manual cannot drift from what
//! works), in a fresh folder where `data/mnist` is the test data.

mod common;

use common::*;
use std::path::Path;

/// The lines of the first code block after `heading`, comments stripped.
fn commands_under(readme: &str, heading: &str) -> Vec<String> {
    let section = readme.split(heading).nth(1).expect("heading in README");
    let block = section.split("```").nth(1).expect("a code block");
    block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim().to_string())
        .filter(|l| l.starts_with("runner "))
        .collect()
}

#[test]
fn the_first_sweep_and_report_commands_work_as_written() {
    note_fixture("the quick grid's 2,000 + 500 images are within the fixture");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = commands_under(&readme, "## A first sweep and report");
    assert_eq!(commands.len(), 4, "{commands:?}");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    std::os::unix::fs::symlink(mnist_dir(), tmp.path().join("data/mnist")).unwrap();
    std::os::unix::fs::symlink(root.join("experiments"), tmp.path().join("experiments")).unwrap();
    for command in &commands {
        let mut words: Vec<String> = command.split_whitespace().map(String::from).collect();
        if let Some(w) = words.iter_mut().find(|w| w.contains("<run-id>")) {
            let run = std::fs::read_dir(tmp.path().join("results/quick-grid"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.is_dir())
                .expect("a run folder");
            *w = run.display().to_string();
        }
        let out = runner()
            .current_dir(tmp.path())
            .args(&words[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {}", stderr(&out));
        let text = stdout(&out);
        match words[1].as_str() {
            "sweep" => assert!(text.contains("4 completed"), "{text}"),
            "report" if words.contains(&"--out".to_string()) => {
                assert!(tmp.path().join("report/report.md").is_file());
                assert!(tmp.path().join("report/curves.png").is_file());
            }
            "report" => assert!(text.contains("4 runs"), "{text}"),
            "predict" => assert!(text.lines().count() >= 20, "{text}"),
            other => panic!("unexpected command {other}"),
        }
    }
}

#[test]
fn the_readme_shows_the_sbatch_script_that_ci_submits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let script = std::fs::read_to_string(root.join("scripts/sweep.sbatch")).unwrap();
    assert!(
        readme.contains(&format!("```bash\n{script}```")),
        "README's sbatch block is not scripts/sweep.sbatch verbatim"
    );
    let check = std::fs::read_to_string(root.join("scripts/slurm-check.sh")).unwrap();
    assert!(check.contains("scripts/sweep.sbatch"));
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(ci.contains("scripts/slurm-check.sh"));
}

/// The README's config table is the key table's (`config::markdown_table`),
/// and every key `runner defaults` prints is in it with the same default.
#[test]
fn the_readme_config_table_agrees_with_runner_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let (start, end) = ("<!-- config keys: begin -->\n", "<!-- config keys: end -->");
    let table = readme
        .split(start)
        .nth(1)
        .and_then(|rest| rest.split(end).next())
        .expect("the README marks its config table");
    let expected = runner::config::markdown_table();
    assert!(
        table == expected,
        "README.md's config table is stale; replace it with:\n{expected}"
    );
    let out = runner().arg("defaults").output().unwrap();
    let mut section = String::new();
    let mut checked = 0;
    for line in stdout(&out).lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{s}.");
            continue;
        }
        let commented = line.starts_with("# ");
        let Some((key, rest)) = line.trim_start_matches("# ").split_once(" = ") else {
            continue;
        };
        let key = format!("{section}{key}");
        let value = rest.split(" # ").next().unwrap().trim();
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("`runner defaults` has {key}, the README's table not"));
        if !commented {
            assert!(row.contains(&format!("| `{value}` |")), "{key}: {row}");
        }
        checked += 1;
    }
    assert_eq!(checked, table.lines().count() - 2, "one row per key");
}
