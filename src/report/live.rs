//! Reports that follow the results folder while runs train: the page
//! (`sweep --report DIR`, `report PATH --out DIR --watch`) and the
//! terminal view (`report PATH --watch`). Both read only the run folders,
//! so they show every process writing there (shards, `--jobs`, Slurm
//! tasks on other machines sharing the folder).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use walkdir::WalkDir;

use super::html::{self, ScoreCache};
use super::{Options, Report};
use crate::results;

/// How often the folder is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// What the run folders' files looked like: each summary's and metrics
/// file's path, size and modification time.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(root: &Path) -> Fingerprint {
    let mut files: Fingerprint = WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            name == results::SUMMARY_FILE || name == results::METRICS_FILE
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path().to_path_buf(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// How long after the last change a watched folder still counts as live:
/// between two runs of a sweep no run is training for a moment, and a
/// page that stopped reloading then would never start again.
pub const QUIET: Duration = Duration::from_secs(30);

/// How often a quiet but live folder is read again to see whether its
/// runs still train: the page's own reload period.
const RECHECK: Duration = Duration::from_secs(html::REFRESH_SECONDS as u64);

/// Keeps `out/report.html` up to date with the runs under `root`.
pub struct Page {
    root: PathBuf,
    out: PathBuf,
    options: Options,
    cache: ScoreCache,
    seen: Option<Fingerprint>,
    /// When a run folder last changed, once one did after the first look.
    last_change: Option<Instant>,
    /// Whether the page last written reloads itself.
    written_live: bool,
    /// When the runs were last read.
    looked: Instant,
    /// Set while a sweep this process runs is going: the page is live
    /// until it ends, whatever its runs say between two of them.
    sweeping: bool,
    /// Set when the sweep ended: the last page does not reload.
    ended: bool,
}

impl Page {
    pub fn new(root: PathBuf, out: PathBuf, options: Options) -> Self {
        Page {
            root,
            out,
            options,
            cache: ScoreCache::default(),
            seen: None,
            last_change: None,
            written_live: false,
            looked: Instant::now(),
            sweeping: false,
            ended: false,
        }
    }

    /// Rewrites the page when a run folder changed since the last time,
    /// when it stops being live, or when `force`; returns the report it
    /// was built from.
    pub fn refresh(&mut self, force: bool) -> Result<Option<Report>> {
        if !self.root.is_dir() {
            return Ok(None);
        }
        let now = fingerprint(&self.root);
        let unchanged = self.seen.as_ref() == Some(&now);
        // A change after the first look (the first look finds the folder
        // as it is, which is no sign of life).
        if !unchanged && self.seen.is_some() {
            self.last_change = Some(Instant::now());
        }
        let recent = self.last_change.is_some_and(|t| t.elapsed() < QUIET);
        // A live page whose folder has been quiet may have to stop
        // reloading: look again once per reload period, not every poll (a
        // long epoch changes no file, and each look reads every run).
        let may_go_quiet =
            self.written_live && !self.sweeping && !recent && self.looked.elapsed() >= RECHECK;
        if !force && unchanged && !may_go_quiet {
            return Ok(None);
        }
        let report = Report::build(&self.root, &self.options)?;
        self.looked = Instant::now();
        let live = !self.ended && (self.sweeping || recent || html::any_live(&report));
        if !force && unchanged && live == self.written_live {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.out)?;
        html::write(&report, &self.out, &mut self.cache, live)?;
        self.seen = Some(now);
        self.written_live = live;
        Ok(Some(report))
    }
}

/// A page kept up to date by a background thread, until `finish`.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Page>,
}

impl Background {
    pub fn start(mut page: Page) -> Self {
        page.sweeping = true;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                if let Err(e) = page.refresh(false) {
                    eprintln!("warning: the live report: {e:#}");
                }
                std::thread::sleep(POLL);
            }
            page
        });
        Background { stop, thread }
    }

    /// Stops the thread and writes the page a last time.
    pub fn finish(self) -> Result<Page> {
        self.stop.store(true, Ordering::SeqCst);
        let mut page = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the live report's thread panicked"))?;
        page.sweeping = false;
        page.ended = true;
        page.refresh(true)?;
        Ok(page)
    }
}

/// The terminal view's status line: runs done, running and failed, the
/// best so far, and when the running runs should end.
pub fn progress_line(report: &Report) -> String {
    use crate::results::Status;
    let count = |s: Status| report.runs.iter().filter(|r| r.summary.status == s).count();
    let best = report
        .runs
        .iter()
        .filter_map(|r| r.summary.best_val_acc.map(|a| (a, &r.summary.run_id)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    // Epochs left of the running runs at their own mean epoch time.
    let eta: f64 = report
        .runs
        .iter()
        .filter(|r| r.summary.status == Status::Running && !r.metrics.is_empty())
        .map(|r| {
            let mean =
                r.metrics.iter().map(|m| m.epoch_seconds).sum::<f64>() / r.metrics.len() as f64;
            mean * r
                .summary
                .epochs_planned
                .saturating_sub(r.summary.epochs_completed) as f64
        })
        .fold(0.0, f64::max);
    let mut line = format!(
        "{} runs: {} completed, {} running, {} failed, {} interrupted",
        report.runs.len(),
        count(Status::Completed),
        count(Status::Running),
        count(Status::Failed),
        count(Status::Interrupted)
    );
    if let Some((acc, id)) = best {
        line.push_str(&format!("; best val acc so far {acc:.4} ({id})"));
    }
    if count(Status::Running) > 0 && eta > 0.0 {
        line.push_str(&format!(
            "; running runs done in ~{}",
            crate::human::duration(eta)
        ));
    }
    line
}
