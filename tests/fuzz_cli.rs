//! Generated specs, grids, IDX files and random bytes fed to the real
//! binary. Whatever the input, runner exits 0, 1 or 2 with a message, never
//! panics or aborts, and writes nothing outside the results folder.
//!
//! `FUZZ_CASES=5000 cargo test --release --test fuzz_cli -- --nocapture`
//! runs more cases than CI's default; `FUZZ_SEED` picks another sequence.

mod common;

use common::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

const INTS: [&str; 12] = [
    "0",
    "1",
    "-1",
    "2",
    "7",
    "255",
    "65536",
    "9999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "1152921504606846976",
    "4294967296",
];
const FLOATS: [&str; 13] = [
    "0.0",
    "-0.0",
    "1e-300",
    "5e-324",
    "1e308",
    "-1.0",
    "0.5",
    "0.9999999",
    "1.0",
    "nan",
    "inf",
    "-inf",
    "0.01",
];
const WORDS: [&str; 10] = [
    "\"\"",
    "\"relu\"",
    "\"max\"",
    "\"test\"",
    "\"../..\"",
    "\"/abs/path\"",
    "\"a b\"",
    "\"cuda\"",
    "true",
    "[1, 2]",
];

fn any_value(rng: &mut ChaCha8Rng) -> String {
    match rng.gen_range(0..4) {
        0 => INTS.choose(rng).unwrap().to_string(),
        1 => FLOATS.choose(rng).unwrap().to_string(),
        2 => WORDS.choose(rng).unwrap().to_string(),
        _ => format!("\"{}\"", "n".repeat(rng.gen_range(1..400))),
    }
}

fn keys() -> Vec<String> {
    let out = runner().arg("defaults").output().unwrap();
    let mut keys = Vec::new();
    let mut section = String::new();
    for line in stdout(&out).lines() {
        let line = line.trim_start_matches("# ");
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, _)) = line.split_once(" = ") {
            if !k.contains(' ') {
                keys.push(if section.is_empty() {
                    k.to_string()
                } else {
                    format!("{section}.{k}")
                });
            }
        }
    }
    keys.push("train.bogus".into());
    keys
}

/// A spec setting a few keys to generated values, as TOML.
fn spec_text(rng: &mut ChaCha8Rng, keys: &[String]) -> String {
    let mut by_section: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let n = rng.gen_range(1..5);
    let chosen: Vec<String> = keys.choose_multiple(rng, n).cloned().collect();
    for key in &chosen {
        let (section, leaf) = key.split_once('.').unwrap_or(("", key));
        by_section
            .entry(section.to_string())
            .or_default()
            .push(format!("{leaf} = {}", any_value(rng)));
    }
    let mut text = by_section.remove("").unwrap_or_default().join("\n") + "\n";
    for (section, lines) in by_section {
        text.push_str(&format!("[{section}]\n{}\n", lines.join("\n")));
    }
    text
}

fn grid_text(rng: &mut ChaCha8Rng, keys: &[String]) -> String {
    let mut text = format!("name = {}\n[sweep]\n", any_value(rng));
    let n = rng.gen_range(1..4);
    let chosen: Vec<String> = keys.choose_multiple(rng, n).cloned().collect();
    for key in &chosen {
        let value = match rng.gen_range(0..3) {
            0 => format!(
                "[{}]",
                (0..rng.gen_range(0..4))
                    .map(|_| any_value(rng))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            1 => format!(
                "{{ start = {}, stop = {}, step = {} }}",
                any_value(rng),
                any_value(rng),
                any_value(rng)
            ),
            _ => format!(
                "{{ start = {}, stop = {}, num = {}, log = {} }}",
                any_value(rng),
                any_value(rng),
                any_value(rng),
                rng.gen_bool(0.5)
            ),
        };
        text.push_str(&format!("\"{key}\" = {value}\n"));
    }
    text
}

/// An IDX file with a generated header (and sometimes gzipped), or noise.
fn idx_bytes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = match rng.gen_range(0..3) {
        0 => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
        _ => {
            let dims = *[0u8, 1, 3, 9].choose(rng).unwrap();
            let mut b = vec![0, 0, *[8u8, 9].choose(rng).unwrap(), dims];
            for _ in 0..dims {
                let d: u32 = *[0u32, 1, 28, 60000, u32::MAX, rng.gen()]
                    .choose(rng)
                    .unwrap();
                b.extend_from_slice(&d.to_be_bytes());
            }
            b.extend((0..rng.gen_range(0..2000)).map(|_| rng.gen::<u8>() % 12));
            b
        }
    };
    if rng.gen_bool(0.5) {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        bytes = enc.finish().unwrap();
    }
    bytes
}

fn check(out: &std::process::Output, what: &str, input: &str) {
    let err = stderr(out);
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "{what}: exit {:?}\n--- input\n{input}\n--- stderr\n{err}",
        out.status.code()
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: panic\n--- input\n{input}\n--- stderr\n{err}"
    );
    if !out.status.success() {
        assert!(
            err.contains("error"),
            "{what}: failed without a message\n{input}"
        );
    }
}

/// Every path under `root`, except those under `allowed`.
fn strays(root: &Path, allowed: &[PathBuf]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .map(|e| e.path().to_path_buf())
        .filter(|p| p != root && !allowed.iter().any(|a| p.starts_with(a) || a.starts_with(p)))
        .collect()
}

#[test]
fn generated_inputs_never_panic_nor_write_outside_the_results_folder() {
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2026);
    note_fixture("the real runs train on it");
    let keys = keys();
    let tmp = tempfile::tempdir().unwrap();
    // runner runs in work/, as a user would; inputs live beside it.
    let (work, inputs) = (tmp.path().join("a/work"), tmp.path().join("a/inputs"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&inputs).unwrap();
    let results = work.join("results");
    let data = inputs.join("data");
    std::fs::create_dir(&data).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = [0usize; 4];
    for case in 0..cases {
        let kind = rng.gen_range(0..10);
        let file = inputs.join(format!("case{case}.toml"));
        let mut cmd = runner();
        cmd.current_dir(&work).env("RUST_BACKTRACE", "0");
        let input = match kind {
            // A spec, checked only.
            0..=4 => {
                let text = spec_text(&mut rng, &keys);
                std::fs::write(&file, &text).unwrap();
                cmd.arg("run").arg(&file).arg("--dry-run");
                counts[0] += 1;
                text
            }
            // A spec, trained for real on a small slice of the fixture.
            5 | 6 => {
                let text = spec_text(&mut rng, &keys);
                std::fs::write(&file, &text).unwrap();
                cmd.arg("run").arg(&file).args([
                    "--set",
                    &format!("data.dir={}", mnist_dir().display()),
                    "--set",
                    "data.download=false",
                    "--set",
                    "train.epochs=1",
                    "--set",
                    "data.limit_train=96",
                    "--set",
                    "data.limit_test=32",
                ]);
                counts[1] += 1;
                text
            }
            // A grid, expanded and listed.
            7 | 8 => {
                let text = grid_text(&mut rng, &keys);
                std::fs::write(&file, &text).unwrap();
                cmd.arg("sweep").arg(&file).arg("--list");
                counts[2] += 1;
                text
            }
            // One dataset file replaced by a generated IDX file or noise.
            _ => {
                let names = [
                    "train-images-idx3-ubyte.gz",
                    "train-labels-idx1-ubyte.gz",
                    "t10k-images-idx3-ubyte.gz",
                    "t10k-labels-idx1-ubyte.gz",
                ];
                let broken = names.choose(&mut rng).unwrap();
                for name in names {
                    let bytes = if name == *broken {
                        idx_bytes(&mut rng)
                    } else {
                        std::fs::read(mnist_dir().join(name)).unwrap()
                    };
                    std::fs::write(data.join(name), bytes).unwrap();
                }
                let text = format!(
                    "[data]\ndir = \"{}\"\ndownload = false\nlimit_train = 64\nlimit_test = 32\n[train]\nepochs = 1\n",
                    data.display()
                );
                std::fs::write(&file, &text).unwrap();
                cmd.arg("run").arg(&file);
                counts[3] += 1;
                format!("{text}(broken: {broken})")
            }
        };
        if kind != 7 && kind != 8 && rng.gen_bool(0.05) {
            // Now and then, the spec is random bytes instead.
            let noise: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
            std::fs::write(&file, noise).unwrap();
        }
        let out = cmd.arg("--results-dir").arg(&results).output().unwrap();
        check(&out, &format!("case {case}"), &input);
    }
    let stray = strays(tmp.path(), &[results.clone(), inputs.clone()]);
    assert!(
        stray.is_empty(),
        "written outside the results folder: {stray:?}"
    );
    eprintln!(
        "fuzz: {cases} cases (seed {seed}): {} specs checked, {} trained, {} grids, {} dataset files; no panic",
        counts[0], counts[1], counts[2], counts[3]
    );
}
