//! `runner report` and `runner predict` end to end: a results tree from real
//! quick runs plus hand-broken run folders, every format, figures, predictions.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// 4 real runs (relu/tanh x seeds 0/1, 1 epoch) plus 3 broken folders.
fn results_tree(tmp: &Path) -> PathBuf {
    let grid = tmp.join("rep.toml");
    std::fs::write(
        &grid,
        format!(
            "name = \"rep\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 1000\nlimit_test = 300\n[spec.train]\nepochs = 2\nlr = 0.01\n[sweep]\n\"model.activation\" = [\"relu\", \"tanh\"]\n\"train.seed\" = [0, 1]\n",
            mnist_dir().display()
        ),
    )
    .unwrap();
    let results = tmp.join("results");
    let out = runner()
        .arg("sweep")
        .arg(&grid)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: Vec<PathBuf> = std::fs::read_dir(results.join("rep"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(runs.len(), 4);
    // Broken copies of a good run.
    let good = &runs[0];
    let copy = |name: &str| {
        let dir = results.join("broken").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["config.toml", "summary.json", "metrics.csv"] {
            std::fs::copy(good.join(f), dir.join(f)).unwrap();
        }
        dir
    };
    std::fs::write(copy("corrupt-summary").join("summary.json"), "{ not json").unwrap();
    std::fs::write(
        copy("bad-csv").join("metrics.csv"),
        "epoch,lr\nnot,a,row,at,all\n",
    )
    .unwrap();
    std::fs::remove_file(copy("no-config").join("config.toml")).unwrap();
    results
}

/// Best val accuracies per activation, read straight from the summaries.
fn best_by_activation(results: &Path) -> std::collections::BTreeMap<String, Vec<f64>> {
    let mut out = std::collections::BTreeMap::<String, Vec<f64>>::new();
    for run in std::fs::read_dir(results.join("rep"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
    {
        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
        let act = config["model"]["activation"].as_str().unwrap().to_string();
        out.entry(act).or_default().push(
            read_json(&run.join("summary.json"))["best_val_acc"]
                .as_f64()
                .unwrap(),
        );
    }
    out
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
    (m, s)
}

fn report(results: &Path, args: &[&str]) -> std::process::Output {
    let out = runner()
        .arg("report")
        .arg(results)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[test]
fn report_groups_seeds_in_every_format_and_lists_broken_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let results = results_tree(tmp.path());
    let expected = best_by_activation(&results);

    // JSON: groups by the only swept key but the seed; mean ± std recomputed here.
    let json: serde_json::Value =
        serde_json::from_slice(&report(&results, &["--format", "json"]).stdout).unwrap();
    assert_eq!(json["group_by"], serde_json::json!(["model.activation"]));
    assert_eq!(json["columns"], serde_json::json!(["model.activation"]));
    assert_eq!(json["common"]["model.pooling"], "avg");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let act = row["values"]["model.activation"].as_str().unwrap();
        let (m, s) = mean_std(&expected[act]);
        assert!(
            (row["best_val_acc"]["mean"].as_f64().unwrap() - m).abs() < 1e-12,
            "{row}"
        );
        assert!(
            (row["best_val_acc"]["std"].as_f64().unwrap() - s).abs() < 1e-12,
            "{row}"
        );
        assert_eq!(row["best_val_acc"]["n"], 2);
        assert_eq!(row["status"], "2 completed");
    }
    // Sorted by best accuracy, best first.
    assert!(rows[0]["best_val_acc"]["mean"].as_f64() >= rows[1]["best_val_acc"]["mean"].as_f64());
    let broken: Vec<String> = json["broken"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["dir"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(broken.len(), 3, "{broken:?}");

    // Table: one line per group, the broken folders with their problem.
    let table = stdout(&report(&results, &[]));
    assert!(table.contains("grouped by model.activation"), "{table}");
    let (m, s) = mean_std(&expected["relu"]);
    assert!(table.contains(&format!("{m:.4} ± {s:.4}")), "{table}");
    assert!(table.contains("3 broken run folders"), "{table}");
    assert!(
        table.contains("corrupt-summary") && table.contains("not a run summary"),
        "{table}"
    );
    assert!(
        table.contains("bad-csv") && table.contains("metrics.csv"),
        "{table}"
    );
    assert!(
        table.contains("no-config") && table.contains("config.toml"),
        "{table}"
    );

    // CSV: parseable, the same numbers unrounded.
    let csv_text = stdout(&report(&results, &["--format", "csv"]));
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 2);
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    for rec in &records {
        let (m, s) = mean_std(&expected[&rec[col("model.activation")]]);
        assert!((rec[col("best_val_acc_mean")].parse::<f64>().unwrap() - m).abs() < 1e-12);
        assert!((rec[col("best_val_acc_std")].parse::<f64>().unwrap() - s).abs() < 1e-12);
    }

    // Markdown: a table with a header, a rule and two rows.
    let md = stdout(&report(&results, &["--format", "markdown"]));
    assert_eq!(md.lines().filter(|l| l.starts_with('|')).count(), 4, "{md}");

    // No grouping: every run; filters; top; sort by a column.
    let json: serde_json::Value = serde_json::from_slice(
        &report(&results, &["--group-by", "none", "--format", "json"]).stdout,
    )
    .unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 4);
    assert_eq!(
        json["columns"],
        serde_json::json!(["model.activation", "train.seed"])
    );
    let json: serde_json::Value = serde_json::from_slice(
        &report(
            &results,
            &[
                "--group-by",
                "none",
                "--filter",
                "model.activation=tanh",
                "--format",
                "json",
            ],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 2);
    let json: serde_json::Value = serde_json::from_slice(
        &report(
            &results,
            &["--group-by", "none", "--top", "1", "--format", "json"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 1);
    let json: serde_json::Value = serde_json::from_slice(
        &report(
            &results,
            &[
                "--group-by",
                "none",
                "--sort",
                "train.seed",
                "--format",
                "json",
            ],
        )
        .stdout,
    )
    .unwrap();
    // Typed in JSON: seeds are numbers.
    let seeds: Vec<i64> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["values"]["train.seed"].as_i64().unwrap())
        .collect();
    assert_eq!(seeds, vec![0, 0, 1, 1]);

    // Bad options are clear errors.
    let out = runner()
        .arg("report")
        .arg(&results)
        .args(["--sort", "colour"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("--sort colour"),
        "{}",
        stderr(&out)
    );
    let out = runner()
        .arg("report")
        .arg(&results)
        .args(["--filter", "model.colour=red"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("model.colour"),
        "{}",
        stderr(&out)
    );

    // An empty table says why on stderr: no run matched, or none is there.
    let out = report(&results, &["--filter", "model.activation=sigmoid"]);
    assert!(
        stderr(&out).contains("matches the filters"),
        "{}",
        stderr(&out)
    );
    let empty = tmp.path().join("nothing-here");
    std::fs::create_dir(&empty).unwrap();
    let out = report(&empty, &[]);
    assert!(
        stderr(&out).contains("no runs under") && stderr(&out).contains("nothing-here"),
        "{}",
        stderr(&out)
    );
    let only_broken = tmp.path().join("only-broken");
    std::fs::create_dir_all(only_broken.join("run")).unwrap();
    std::fs::write(only_broken.join("run").join("summary.json"), "{ not json").unwrap();
    let out = report(&only_broken, &[]);
    assert!(
        stderr(&out).contains("no readable run") && stdout(&out).contains("1 broken run folder"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    for args in [&[][..], &["--top", "0"][..]] {
        let out = report(&results, args);
        assert!(!stderr(&out).contains("no run"), "{}", stderr(&out));
    }
}

#[test]
fn report_out_writes_markdown_and_decodable_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let results = results_tree(tmp.path());
    let out_dir = tmp.path().join("report");
    let out = runner()
        .arg("report")
        .arg(&results)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("(report.html)"), "report.md points to the page");
    assert!(out_dir.join("report.html").is_file());
    for fig in [
        "curves.png",
        "best_accuracy.png",
        "confusion.png",
        "predictions.png",
    ] {
        assert!(
            md.contains(&format!("({fig})")),
            "report.md does not embed {fig}"
        );
    }
    for (name, size) in [
        ("curves", (1400, 520)),
        // 2 rows (relu, tanh): 110 pixels and 22 per row.
        ("best_accuracy", (1100, 154)),
        ("confusion", (620, 620)),
        ("predictions", (1120, 296)),
    ] {
        let img = image::open(out_dir.join(format!("{name}.png")))
            .unwrap_or_else(|e| panic!("{name}.png: {e}"));
        assert_eq!((img.width(), img.height()), size, "{name}.png");
        let svg = std::fs::read_to_string(out_dir.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
    }
    // The confusion matrix of the best run counts every test image once.
    let svg = std::fs::read_to_string(out_dir.join("confusion.svg")).unwrap();
    assert!(svg.contains("test acc"), "title with the accuracy");
}

#[test]
fn predict_labels_test_images_and_png_files() {
    let tmp = tempfile::tempdir().unwrap();
    let results = results_tree(tmp.path());
    let run = std::fs::read_dir(results.join("rep"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let grid_png = tmp.path().join("grid.png");
    let out = runner()
        .arg("predict")
        .arg(&run)
        .args(["--count", "5", "--out"])
        .arg(&grid_png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("test image"))
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with("test image 0: label 7  predicted "),
        "{text}"
    );
    assert!(text.contains("/5 correct"));
    let img = image::open(&grid_png).unwrap();
    assert_eq!((img.width(), img.height()), (5 * 112, 112 + 36));

    // The same first test images as PNG files: as stored, scaled up, and inverted.
    let data = runner::data::load(&runner::config::DataConfig {
        dir: mnist_dir(),
        download: false,
        limit_train: Some(1),
        limit_test: Some(3),
        ..Default::default()
    })
    .unwrap();
    let pngs = tmp.path().join("pngs");
    std::fs::create_dir(&pngs).unwrap();
    let img = |i: usize| {
        image::GrayImage::from_raw(28, 28, data.test.pixels[i * 784..(i + 1) * 784].to_vec())
            .unwrap()
    };
    img(0).save(pngs.join("a.png")).unwrap();
    image::imageops::resize(&img(1), 56, 56, image::imageops::FilterType::Nearest)
        .save(pngs.join("b.png"))
        .unwrap();
    let mut inverted = img(2);
    image::imageops::invert(&mut inverted);
    inverted.save(pngs.join("c.png")).unwrap();
    let out = runner()
        .arg("predict")
        .arg(&run)
        .arg("--images")
        .arg(&pngs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let from_files: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split("predicted ").nth(1).unwrap()[..1].to_string())
        .collect();
    let from_test: Vec<String> = lines[..3]
        .iter()
        .map(|l| l.split("predicted ").nth(1).unwrap()[..1].to_string())
        .collect();
    assert_eq!(from_files, from_test, "{}", stdout(&out));
    assert!(
        stdout(&out).lines().all(|l| l.matches(' ').count() > 10),
        "ten probabilities per file"
    );
}

/// 100 runs made from one real run: each with its own lr, seed, batch
/// size and activation in config.toml, a long folder name, and shifted
/// accuracies in summary.json and metrics.csv.
fn hundred_runs(tmp: &Path) -> PathBuf {
    let spec = quick_spec(tmp, "one", "");
    let real = tmp.join("real");
    run_spec(&spec, &real);
    let src = only_run_dir(&real, "one");
    let config = std::fs::read_to_string(src.join("config.toml")).unwrap();
    let summary = read_json(&src.join("summary.json"));
    let metrics = std::fs::read_to_string(src.join("metrics.csv")).unwrap();
    let results = tmp.join("hundred");
    for i in 0..100 {
        let (lr, seed, batch) = (0.001 * (1 + i % 10) as f64, i / 10, 16 << (i % 3));
        let activation = ["relu", "tanh"][i % 2];
        let id = format!(
            "an-experiment-with-a-long-descriptive-name-lr{lr}-seed{seed}-batch{batch}-{activation}-{i:03}"
        );
        let dir = results.join("many").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let text = config
            .replace("lr = 0.01\n", &format!("lr = {lr}\n"))
            .replace("\nseed = 0\n", &format!("\nseed = {seed}\n"))
            .replace("batch_size = 16\n", &format!("batch_size = {batch}\n"))
            .replace(
                "activation = \"relu\"",
                &format!("activation = \"{activation}\""),
            );
        std::fs::write(dir.join("config.toml"), text).unwrap();
        std::fs::copy(src.join("best.safetensors"), dir.join("best.safetensors")).unwrap();
        let shift = i as f64 * 0.001;
        let mut s = summary.clone();
        s["run_id"] = id.clone().into();
        s["best_val_acc"] = (s["best_val_acc"].as_f64().unwrap() - shift).into();
        std::fs::write(dir.join("summary.json"), s.to_string()).unwrap();
        let mut lines = metrics.lines();
        let mut csv = format!("{}\n", lines.next().unwrap());
        for line in lines {
            let mut cells: Vec<String> = line.split(',').map(String::from).collect();
            cells[5] = (cells[5].parse::<f64>().unwrap() - shift).to_string();
            csv.push_str(&cells.join(","));
            csv.push('\n');
        }
        std::fs::write(dir.join("metrics.csv"), csv).unwrap();
    }
    results
}

/// Every `<text>` of an SVG starts inside the image.
fn texts_inside(svg: &str, (width, height): (f64, f64)) {
    let attr = |tag: &str, name: &str| -> Option<f64> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        tag[at..].split('"').next()?.parse().ok()
    };
    let mut n = 0;
    for tag in svg.split("<text").skip(1) {
        let tag = &tag[..tag.find('>').unwrap()];
        let (x, y) = (attr(tag, "x").unwrap(), attr(tag, "y").unwrap());
        assert!(
            (0.0..width).contains(&x) && (0.0..height).contains(&y),
            "<text{tag}>"
        );
        n += 1;
    }
    assert!(n > 10, "{n} texts");
}

#[test]
fn figures_stay_readable_at_100_runs_with_long_ids() {
    note_fixture("one quick run copied 100 times");
    let tmp = tempfile::tempdir().unwrap();
    let results = hundred_runs(tmp.path());
    let out_dir = tmp.path().join("report");
    report_every_run(&results, &out_dir);
    for (name, size) in [("curves", (1400, 520)), ("best_accuracy", (1100, 2310))] {
        let img = image::open(out_dir.join(format!("{name}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), size, "{name}.png");
        let svg = std::fs::read_to_string(out_dir.join(format!("{name}.svg"))).unwrap();
        texts_inside(&svg, (size.0 as f64, size.1 as f64));
    }
    let curves = std::fs::read_to_string(out_dir.join("curves.svg")).unwrap();
    assert!(
        curves.contains("90 more rows (grey)"),
        "the legend counts the grey lines"
    );
    let page = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert_eq!(page.matches("\"run_id\":\"an-experiment").count(), 100);
    if let Some(dir) = std::env::var_os("RUNNER_KEEP_FIGURES") {
        for f in ["curves.png", "best_accuracy.png", "report.html"] {
            std::fs::copy(out_dir.join(f), Path::new(&dir).join(f)).unwrap();
        }
    }
}

#[test]
fn a_report_never_calls_a_setting_common_that_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("mix");
    let spec = quick_spec(tmp.path(), "mix", "");
    // One run on every image of the data, one on 3,000 + 400.
    succeeded(run_with(
        &spec,
        &results,
        &[
            "train.epochs=1",
            "data.limit_train=60000",
            "data.limit_test=10000",
        ],
    ));
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("limit_train = 2000\nlimit_test = 500\n", "");
    std::fs::write(&spec, text).unwrap();
    succeeded(run_with(&spec, &results, &["train.epochs=1"]));
    succeeded(run_with(
        &spec,
        &results,
        &[
            "train.epochs=1",
            "data.limit_train=3000",
            "data.limit_test=400",
        ],
    ));
    let out = succeeded(
        runner()
            .args(["report", "--group-by", "none"])
            .arg(&results)
            .output()
            .unwrap(),
    );
    let text = stdout(&out);
    let common: String = text
        .lines()
        .skip_while(|l| !l.starts_with("common:"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(!common.contains("limit"), "{text}");
    let header = text.lines().find(|l| l.contains("status")).unwrap();
    for title in ["limit_train", "limit_test", "test images", "run"] {
        assert!(header.contains(title), "{title} missing: {text}");
    }
    assert!(text.contains("all"), "an unset limit shows as all: {text}");
    assert!(text.contains("400"), "{text}");
    // JSON keeps numbers and booleans typed.
    let out = succeeded(
        runner()
            .args(["report", "--group-by", "none", "--format", "json"])
            .arg(&results)
            .output()
            .unwrap(),
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(json["common"]["train.lr"].is_f64(), "{}", json["common"]);
    assert!(json["common"]["model.activate_c5_f6"].is_boolean());
    assert_eq!(json["common"]["model.activation"], "relu");
}
