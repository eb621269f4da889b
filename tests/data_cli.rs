//! Data loading through the CLI: missing files, malformed IDX files, and the
//! download from a mirror (a local HTTP server on 127.0.0.1 serving the real
//! files), including a corrupted file that must be rejected.

mod common;

use common::*;
use std::path::Path;
use std::thread;

const FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// `runner run SPEC --results-dir RESULTS`.
fn run_spec(spec: &Path, results: &Path) -> std::process::Output {
    runner()
        .arg("run")
        .arg(spec)
        .arg("--results-dir")
        .arg(results)
        .output()
        .unwrap()
}

fn spec_with_data(dir: &Path, data_dir: &Path, extra: &str) -> std::path::PathBuf {
    let spec = dir.join("data.toml");
    std::fs::write(
        &spec,
        format!(
            "[data]\ndir = \"{}\"\nlimit_train = 500\nlimit_test = 200\n{extra}\n[train]\nepochs = 1\nlr = 0.01\n[model]\nactivation = \"relu\"\n",
            data_dir.display()
        ),
    )
    .unwrap();
    spec
}

#[test]
fn missing_files_without_download_say_which_where_and_how() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let spec = spec_with_data(tmp.path(), &empty, "download = false");
    let out = run_spec(&spec, &tmp.path().join("r"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&empty.display().to_string()), "{err}");
    assert!(
        err.contains("t10k-labels-idx1-ubyte.gz") && err.contains("data.download = true"),
        "{err}"
    );
}

#[test]
fn a_malformed_idx_file_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for f in FILES {
        std::fs::copy(mnist_dir().join(f), data.join(f)).unwrap();
    }
    // Test labels replaced by a raw file whose header claims more labels than it holds.
    std::fs::remove_file(data.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(
        data.join("t10k-labels-idx1-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 9, 1, 2, 3],
    )
    .unwrap();
    let spec = spec_with_data(tmp.path(), &data, "download = false");
    let out = run_spec(&spec, &tmp.path().join("r"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("t10k-labels-idx1-ubyte") && err.contains("header says 9 data bytes"),
        "{err}"
    );
}

/// Serves `files` (name -> bytes) on 127.0.0.1 until `requests` requests were answered.
fn serve(files: Vec<(String, Vec<u8>)>, requests: usize) -> (String, thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mnist/", server.server_addr().to_ip().unwrap());
    let handle = thread::spawn(move || {
        for _ in 0..requests {
            let Ok(Some(request)) = server.recv_timeout(std::time::Duration::from_secs(60)) else {
                return;
            };
            let name = request.url().rsplit('/').next().unwrap_or("").to_string();
            match files.iter().find(|(n, _)| *n == name) {
                Some((_, bytes)) => request
                    .respond(tiny_http::Response::from_data(bytes.clone()))
                    .unwrap(),
                None => request.respond(tiny_http::Response::empty(404)).unwrap(),
            }
        }
    });
    (url, handle)
}

fn real_files() -> Vec<(String, Vec<u8>)> {
    FILES
        .iter()
        .map(|f| (f.to_string(), std::fs::read(mnist_dir().join(f)).unwrap()))
        .collect()
}

/// The files as a mirror serves them; on the fixture these are not the
/// published MNIST files, so a download of them must be refused.
fn assert_fixture_download_refused(out: &std::process::Output, data: &Path) {
    assert!(!out.status.success(), "the fixture passed verification");
    let err = stderr(out);
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(
        !data.exists(),
        "a folder was left behind: {}",
        data.display()
    );
}

#[test]
fn downloads_missing_files_from_a_mirror_and_verifies_them() {
    note_fixture("checks that the fixture, not being the published files, is refused");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fresh");
    let requests = if mnist_is_full() { 4 } else { 1 };
    let (url, server) = serve(real_files(), requests);
    let spec = spec_with_data(
        tmp.path(),
        &data,
        &format!("download = true\nbase_url = \"{url}\""),
    );
    let out = run_spec(&spec, &tmp.path().join("r"));
    server.join().unwrap();
    if !mnist_is_full() {
        return assert_fixture_download_refused(&out, &data);
    }
    assert!(out.status.success(), "{}", stderr(&out));
    for f in FILES {
        let got = std::fs::read(data.join(f)).unwrap();
        assert_eq!(got, std::fs::read(mnist_dir().join(f)).unwrap(), "{f}");
    }
    // Nothing but the four files: no temporary leftovers.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 4);
}

#[test]
fn the_readme_run_command_downloads_from_a_local_mirror_and_trains() {
    note_fixture("checks that the fixture, not being the published files, is refused");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data/mnist");
    let requests = if mnist_is_full() { 4 } else { 1 };
    let (url, server) = serve(real_files(), requests);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The README's command, with the mirror and a short budget.
    let out = runner()
        .current_dir(tmp.path())
        .arg("run")
        .arg(root.join("experiments/baseline.toml"))
        .args(["--set", &format!("data.base_url={url}")])
        .args([
            "--set",
            "data.limit_train=2000",
            "--set",
            "data.limit_test=500",
        ])
        .args(["--set", "train.epochs=1"])
        .output()
        .unwrap();
    server.join().unwrap();
    if !mnist_is_full() {
        return assert_fixture_download_refused(&out, &data);
    }
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("downloading").count(), 4, "{err}");
    assert!(
        stdout(&out).contains("done: best val acc"),
        "{}",
        stdout(&out)
    );
    for f in FILES {
        assert!(data.join(f).is_file(), "{f} not downloaded into data/mnist");
    }
    assert!(only_run_dir(&tmp.path().join("results"), "baseline")
        .join("best.safetensors")
        .is_file());
}

#[test]
fn an_unreachable_mirror_says_what_to_do_and_leaves_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    // A port on 127.0.0.1 that nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tmp.path().join("data/mnist");
    let spec = spec_with_data(
        tmp.path(),
        &data,
        &format!("download = true\nbase_url = \"http://127.0.0.1:{port}/mnist/\""),
    );
    let out = run_spec(&spec, &tmp.path().join("r"));
    assert!(!out.status.success());
    let err = stderr(&out);
    let url = format!("http://127.0.0.1:{port}/mnist/");
    assert_eq!(
        err.matches(&url).count(),
        2,
        "the mirror once as it is tried, once with its reason: {err}"
    );
    for words in [
        "could not download mnist into",
        "train-images-idx3-ubyte.gz from http://127.0.0.1",
        "Connection Failed",
        "put the files in",
        "t10k-labels-idx1-ubyte.gz",
        "--set data.dir=PATH",
        "--set data.base_url=",
    ] {
        assert!(err.contains(words), "{words:?} missing from\n{err}");
    }
    assert!(!data.exists(), "an empty data folder was left behind");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn eval_fetches_only_the_test_split() {
    let tmp = tempfile::tempdir().unwrap();
    // A finished run to evaluate.
    let spec = quick_spec(tmp.path(), "ev", "");
    let results = tmp.path().join("results");
    let out = runner()
        .arg("run")
        .arg(&spec)
        .args(["--set", "train.epochs=1"])
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let run = only_run_dir(&results, "ev");
    // A mirror holding only the two test files, into an empty data folder.
    let data = tmp.path().join("testonly");
    let files: Vec<_> = real_files().into_iter().skip(2).collect();
    let (url, server) = serve(files, if mnist_is_full() { 2 } else { 1 });
    let out = runner()
        .arg("eval")
        .arg(&run)
        .args(["--set", &format!("data.dir={}", data.display())])
        .args(["--set", "data.download=true"])
        .args(["--set", &format!("data.base_url={url}")])
        .output()
        .unwrap();
    server.join().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("train-"), "asked for training files: {err}");
    if mnist_is_full() {
        assert!(out.status.success(), "{err}");
        assert!(stdout(&out).contains("test acc"), "{}", stdout(&out));
    } else {
        note_fixture("eval's download is refused by the checksum; no training file asked for");
        assert!(
            err.contains("t10k-images-idx3-ubyte.gz") && err.contains("checksum mismatch"),
            "{err}"
        );
    }
}

#[test]
fn a_corrupted_download_is_rejected_and_not_kept() {
    note_fixture("every served file is refused, the first one named");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fresh");
    let mut files = real_files();
    // Flip bytes in the middle of the (compressed) test images.
    let bytes = &mut files[2].1;
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let (url, server) = serve(files, if mnist_is_full() { 3 } else { 1 });
    let spec = spec_with_data(
        tmp.path(),
        &data,
        &format!("download = true\nbase_url = \"{url}\""),
    );
    let out = run_spec(&spec, &tmp.path().join("r"));
    assert!(!out.status.success());
    let err = stderr(&out);
    let refused = if mnist_is_full() {
        "t10k-images-idx3-ubyte.gz"
    } else {
        "train-images-idx3-ubyte.gz"
    };
    assert!(
        err.contains(refused) && err.contains("checksum mismatch"),
        "{err}"
    );
    server.join().unwrap();
    assert!(
        !data.join("t10k-images-idx3-ubyte.gz").exists(),
        "corrupted file was kept"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".tmp")),
        "{leftovers:?}"
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
    let out = run_checked(
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
    let out = sweep_checked(&g, &tmp.path().join("r"), &["--list"]);
    assert!(stderr(&out).contains("is not a file"), "{}", stderr(&out));
    // predict --out naming a folder, and a FIFO named *.png.
    assert!(
        run_checked(&spec, &tmp.path().join("r"), &["train.epochs=1"])
            .status
            .success()
    );
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
