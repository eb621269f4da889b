//! report.html in a real browser: headless Chromium driven through
//! chromedriver's WebDriver HTTP API (Debian's `chromium` and
//! `chromium-driver`). It is ignored unless asked for (`cargo test --release
//! -- --include-ignored`, as CI does), and then fails without them: a green
//! run never hides a browser test that did not run.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` on a free port, killed when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session, deleted when dropped.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.driver.base, self.id)).call();
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and chromium: the test fails without them.
fn browser() -> (PathBuf, PathBuf) {
    tool("chromedriver")
        .zip(tool("chromium").or_else(|| tool("chromium-browser")))
        .expect("chromium or chromedriver is missing (apt-get install chromium chromium-driver)")
}

fn start_driver(chromedriver: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while ureq::get(&format!("{base}/status")).call().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, base }
}

impl Driver {
    fn session(&self, chromium: &Path) -> Session<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let answer = post(&format!("{}/session", self.base), caps);
        let id = answer["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Session { driver: self, id }
    }
}

fn post(url: &str, body: Value) -> Value {
    let response = match ureq::post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(response) => response,
        Err(ureq::Error::Status(code, response)) => panic!(
            "POST {url} {body}: {code} {}",
            response.into_string().unwrap_or_default()
        ),
        Err(e) => panic!("POST {url}: {e}"),
    };
    let answer: Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
    answer["value"].clone()
}

impl Session<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/session/{}/{path}", self.driver.base, self.id)
    }
    fn open(&self, file: &Path) {
        post(
            &self.url("url"),
            json!({"url": format!("file://{}", file.display())}),
        );
    }
    fn script(&self, body: &str) -> Value {
        post(
            &self.url("execute/sync"),
            json!({"script": body, "args": []}),
        )
    }
    fn click(&self, css: &str) {
        let found = post(
            &self.url("element"),
            json!({"using": "css selector", "value": css}),
        );
        let id = found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"));
        post(&self.url(&format!("element/{id}/click")), json!({}));
    }
    /// The console messages at SEVERE level (errors).
    fn console_errors(&self) -> Vec<String> {
        let logs = post(&self.url("se/log"), json!({"type": "browser"}));
        logs.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].to_string())
            .collect()
    }
    fn run_order(&self) -> Vec<String> {
        let ids = self.script(
            "return [...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => r.dataset.run)",
        );
        serde_json::from_value(ids).unwrap()
    }
}

/// Three quick runs that differ in lr.
fn results(tmp: &Path) -> PathBuf {
    let grid = tmp.join("page.toml");
    std::fs::write(
        &grid,
        format!(
            "name = \"page\"\n[spec.data]\ndir = \"{}\"\ndownload = false\nlimit_train = 1000\nlimit_test = 300\n[spec.train]\nepochs = 2\n[sweep]\n\"train.lr\" = [0.003, 0.03, 0.01]\n",
            mnist_dir().display()
        ),
    )
    .unwrap();
    let results = tmp.join("results");
    let out = sweep(&grid, &results, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    results
}

#[test]
#[ignore = "drives Chromium: needs chromium and chromium-driver; run with --include-ignored"]
fn report_html_works_offline_in_a_real_browser() {
    let (chromedriver, chromium) = browser();
    note_fixture("three quick runs");
    let tmp = tempfile::tempdir().unwrap();
    let results = results(tmp.path());
    let out_dir = tmp.path().join("report");
    report_every_run(&results, &out_dir);
    let page = out_dir.join("report.html");

    let driver = start_driver(&chromedriver);
    let session = driver.session(&chromium);
    session.open(&page);

    assert_eq!(
        session.console_errors(),
        Vec::<String>::new(),
        "console errors"
    );
    let fetched =
        session.script("return performance.getEntriesByType('resource').map(e => e.name)");
    assert_eq!(fetched, json!([]), "the page fetched something");
    let shown_error = session.script("return document.body.innerText.includes('error:')");
    assert_eq!(shown_error, json!(false), "the page shows a script error");

    // One row per run.
    let before = session.run_order();
    assert_eq!(before.len(), 3, "{before:?}");

    // Sorting by the lr column orders the rows by lr, both ways.
    let lr_of = |id: &str| -> f64 {
        let params = session.script(&format!(
            "return JSON.parse(document.getElementById('report-data').textContent)\
             .runs.find(r => r.run_id === '{id}').params['train.lr']"
        ));
        params.as_str().unwrap().parse().unwrap()
    };
    session.click("th[title='sort by train.lr']");
    let descending = session.run_order();
    let lrs: Vec<f64> = descending.iter().map(|id| lr_of(id)).collect();
    assert_eq!(lrs, vec![0.03, 0.01, 0.003], "{descending:?}");
    session.click("th[title='sort by train.lr']");
    let ascending = session.run_order();
    let reversed: Vec<String> = descending.iter().rev().cloned().collect();
    assert_eq!(ascending, reversed);

    // The filter keeps the matching row only.
    let visible = session.script(&format!(
        "const f = document.getElementById('filter'); f.value = '{}'; \
         f.dispatchEvent(new Event('input')); \
         return [...document.querySelectorAll('#runs tbody tr[data-run]')].filter(r => !r.hidden).length",
        ascending[0]
    ));
    assert_eq!(visible, json!(1));

    // A run's section opens from its link and shows its config against
    // the common settings: lr differs, the rest is common.
    let id = &ascending[0];
    session.click(&format!("a[href='#run-{id}']"));
    let diff = session.script(&format!(
        "const d = document.getElementById('run-{id}'); \
         return d.open ? [...d.querySelectorAll('table.config-diff tr')].map(r => r.innerText) : null"
    ));
    let rows: Vec<String> = serde_json::from_value(diff).expect("the section is open");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("train.lr") && r.contains("0.003")),
        "{rows:?}"
    );
    assert!(
        !rows.iter().any(|r| r.starts_with("model.activation")),
        "{rows:?}"
    );
    let confusion = session.script(&format!(
        "return document.getElementById('run-{id}').querySelectorAll('table.confusion td').length"
    ));
    assert_eq!(
        confusion,
        json!(100),
        "the confusion matrix of a scored run"
    );
    assert_eq!(
        session.console_errors(),
        Vec::<String>::new(),
        "console errors"
    );

    if let Some(path) = std::env::var_os("RUNNER_SCREENSHOT") {
        let shot = ureq::get(&session.url("screenshot")).call().unwrap();
        let answer: Value = serde_json::from_str(&shot.into_string().unwrap()).unwrap();
        let b64 = answer["value"].as_str().unwrap().to_string();
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}
