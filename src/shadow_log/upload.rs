//! Shipping closed files to object storage: the local tree is a bounded spool, and an
//! uploader thread sends each closed file whole, then deletes it.
//!
//! The writer is the same as for a local tree: files are written under
//! `shadow_log.spool_dir` with temporary names, closed, fsynced and renamed. Each closed
//! file is handed to the uploader, which `PUT`s it (multipart when large) to the same
//! relative key under the store's prefix and removes the local copy once the store has
//! answered. So the store only ever holds complete files, with the Hive layout and names
//! of a local tree.
//!
//! When the store is slow or down, closed files wait in the spool and the uploader
//! retries with backoff (100 ms doubling to 5 s). The spool is bounded in bytes
//! (`shadow_log.spool_max_bytes`): once the closed files waiting reach it, the writer
//! drops new rows and counts each in `dropped_total{reason="spool_full"}` — exactly
//! the rows that will never reach the store. Memory does not grow with an outage: the
//! waiting files are on disk, and the uploader keeps one file in memory at a time. The
//! bound is on closed files; the open files (one per partition, each at most
//! `max_rows_per_file` rows) come on top.
//!
//! At shutdown the writer closes every file first, then the uploader sends what waits
//! until the spool is empty or the grace period ends. Rows of files still waiting then
//! are counted in `dropped_total{reason="upload_lost"}` and logged with the spool path;
//! the files stay in the spool, and a later start on the same volume sends them.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::layout::QUARANTINE_DIR;
use super::metrics::ShadowLogMetrics;
use crate::store::{Remote, StoreError};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// While the store keeps failing, one warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// One closed file in the spool, waiting for the store.
#[derive(Debug, Clone)]
struct SpooledFile {
    path: PathBuf,
    /// `/`-separated path under the spool root: the key under the store's prefix.
    rel: String,
    rows: u64,
    bytes: u64,
}

enum Msg {
    File(SpooledFile),
    /// Every file is in; send what waits until the deadline.
    Finish(Instant),
}

/// The spool shared by the writer (which adds closed files) and the uploader (which
/// removes sent ones).
pub struct Spool {
    root: PathBuf,
    max_bytes: u64,
    bytes: AtomicU64,
    files: AtomicU64,
    tx: Sender<Msg>,
    metrics: ShadowLogMetrics,
    /// Held while the writer creates a partition directory and opens a file in it, and
    /// while the uploader removes emptied directories, so neither removes what the other
    /// is about to use.
    dirs: Mutex<()>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("root", &self.root)
            .field("max_bytes", &self.max_bytes)
            .field("bytes", &self.bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl Spool {
    /// Whether the closed files waiting have reached `spool_max_bytes`.
    pub(crate) fn full(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) >= self.max_bytes
    }

    /// Bytes of closed files waiting for the store.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn lock_dirs(&self) -> MutexGuard<'_, ()> {
        self.dirs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A file the writer closed and renamed into place under the spool root.
    pub(crate) fn add(&self, path: &Path, rows: u64, bytes: u64) {
        let Some(rel) = rel_of(&self.root, path) else {
            tracing::error!(file = %path.display(), "shadow log: closed file outside the spool");
            return;
        };
        self.account(bytes as i64, 1);
        let _ = self.tx.send(Msg::File(SpooledFile {
            path: path.to_path_buf(),
            rel,
            rows,
            bytes,
        }));
    }

    fn account(&self, bytes: i64, files: i64) {
        let b = if bytes >= 0 {
            self.bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64
        } else {
            self.bytes
                .fetch_sub(bytes.unsigned_abs(), Ordering::Relaxed)
                - bytes.unsigned_abs()
        };
        let f = if files >= 0 {
            self.files.fetch_add(files as u64, Ordering::Relaxed) + files as u64
        } else {
            self.files
                .fetch_sub(files.unsigned_abs(), Ordering::Relaxed)
                - files.unsigned_abs()
        };
        self.metrics.spool_bytes.set(b as i64);
        self.metrics.spool_files.set(f as i64);
    }
}

/// What the uploader did over its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UploadSummary {
    /// Files in the store.
    pub files: u64,
    /// Rows in those files.
    pub rows: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Failed attempts (each retried).
    pub errors: u64,
    /// Files still in the spool when the grace period ended.
    pub files_left: u64,
    /// Rows of those files (counted in `dropped_total{reason="upload_lost"}`).
    pub rows_left: u64,
}

/// Owns the uploader thread.
pub struct Uploader {
    spool: Arc<Spool>,
    thread: Option<JoinHandle<UploadSummary>>,
}

impl Uploader {
    /// Checks the store (a probe object under `_shadowgate/`), queues the complete
    /// files an earlier run left in the spool, and starts the thread.
    pub(crate) fn start(
        remote: Remote,
        root: PathBuf,
        max_bytes: u64,
        pod: &str,
        metrics: ShadowLogMetrics,
    ) -> Result<Uploader, StoreError> {
        let probe = remote.clone();
        let pod = pod.to_string();
        crate::store::block_on(async move { probe.probe(&pod).await }).map_err(|e| {
            StoreError::Local {
                path: root.display().to_string(),
                source: e,
            }
        })??;
        let (tx, rx) = crossbeam_channel::unbounded();
        let spool = Arc::new(Spool {
            root: root.clone(),
            max_bytes,
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            tx,
            metrics: metrics.clone(),
            dirs: Mutex::new(()),
        });
        let mut left = Vec::new();
        find_complete(&root, true, &mut left);
        left.sort();
        for path in left {
            let rows = footer_rows(&path).unwrap_or(0);
            let bytes = fs::metadata(&path).map_or(0, |m| m.len());
            tracing::info!(file = %path.display(), rows,
                "shadow log: a file an earlier run left in the spool will be uploaded");
            spool.add(&path, rows, bytes);
        }
        let worker = Worker {
            remote,
            spool: Arc::clone(&spool),
            metrics,
        };
        let thread = std::thread::Builder::new()
            .name("shadow-log-upload".into())
            .spawn(move || worker.run(&rx))
            .map_err(|source| StoreError::Local {
                path: root.display().to_string(),
                source,
            })?;
        Ok(Uploader {
            spool,
            thread: Some(thread),
        })
    }

    /// The spool the writer adds closed files to.
    pub(crate) fn spool(&self) -> Arc<Spool> {
        Arc::clone(&self.spool)
    }

    /// Call once the writer has closed every file: sends what waits until `deadline`,
    /// then joins the thread.
    pub fn finish(mut self, deadline: Instant) -> UploadSummary {
        self.stop(deadline)
    }

    fn stop(&mut self, deadline: Instant) -> UploadSummary {
        let _ = self.spool.tx.send(Msg::Finish(deadline));
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                tracing::error!("shadow log: the upload thread panicked");
                UploadSummary::default()
            }),
            None => UploadSummary::default(),
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop(Instant::now());
        }
    }
}

struct Worker {
    remote: Remote,
    spool: Arc<Spool>,
    metrics: ShadowLogMetrics,
}

impl Worker {
    fn run(self, rx: &Receiver<Msg>) -> UploadSummary {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "shadow log: cannot start the upload runtime");
                return UploadSummary::default();
            }
        };
        let mut summary = UploadSummary::default();
        let mut pending: VecDeque<SpooledFile> = VecDeque::new();
        let mut finish: Option<Instant> = None;
        let mut backoff = Duration::ZERO;
        let mut retry_at = Instant::now();
        let mut failing_since: Option<Instant> = None;
        let mut last_warn: Option<Instant> = None;
        loop {
            // Take what has arrived; block only when there is nothing to do, or until the
            // next attempt is due (or the grace period ends) while backing off.
            let first = if pending.is_empty() && finish.is_none() {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                let until = finish.map_or(retry_at, |d| retry_at.min(d));
                if until > Instant::now() {
                    rx.recv_deadline(until)
                } else {
                    rx.try_recv().map_err(|e| match e {
                        crossbeam_channel::TryRecvError::Empty => RecvTimeoutError::Timeout,
                        crossbeam_channel::TryRecvError::Disconnected => {
                            RecvTimeoutError::Disconnected
                        }
                    })
                }
            };
            let mut take = |m: Msg| match m {
                Msg::File(f) => pending.push_back(f),
                Msg::Finish(d) => finish = Some(d),
            };
            match first {
                Ok(m) => {
                    take(m);
                    while let Ok(m) = rx.try_recv() {
                        take(m);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Only if the Spool is gone, which the Uploader prevents; end as a finish.
                Err(RecvTimeoutError::Disconnected) => {
                    finish.get_or_insert_with(Instant::now);
                }
            }
            if let Some(d) = finish {
                if pending.is_empty() || Instant::now() >= d {
                    break;
                }
            }
            if Instant::now() < retry_at {
                continue;
            }
            let Some(file) = pending.front() else {
                continue;
            };
            let attempt = self.remote.upload(&file.path, &file.rel);
            let result = match finish {
                Some(d) => rt.block_on(async {
                    tokio::time::timeout(d.saturating_duration_since(Instant::now()), attempt)
                        .await
                        .unwrap_or_else(|_| {
                            Err(StoreError::Timeout {
                                url: self.remote.url().to_string(),
                                op: "put (shutdown grace over)",
                                after: Duration::ZERO,
                            })
                        })
                }),
                None => rt.block_on(attempt),
            };
            match result {
                Ok(bytes) => {
                    let file = pending.pop_front().expect("front exists");
                    self.sent(&file, bytes, &mut summary);
                    backoff = Duration::ZERO;
                    retry_at = Instant::now();
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            after_s = since.elapsed().as_secs(),
                            waiting = pending.len(),
                            "shadow log: the store answers again"
                        );
                    }
                }
                Err(StoreError::Local { path, source }) => {
                    // The file is gone or unreadable: nothing to retry.
                    let file = pending.pop_front().expect("front exists");
                    tracing::error!(file = path, error = %source, rows = file.rows,
                        "shadow log: a spooled file cannot be read; its rows are lost");
                    self.metrics.write_errors.inc();
                    self.metrics.dropped_write_error.inc_by(file.rows);
                    self.spool.account(-(file.bytes as i64), -1);
                }
                Err(e) => {
                    summary.errors += 1;
                    self.metrics.upload_errors.inc();
                    let now = Instant::now();
                    failing_since.get_or_insert(now);
                    if last_warn.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
                        last_warn = Some(now);
                        tracing::warn!(error = %e, waiting = pending.len(),
                            spool_bytes = self.spool.bytes(),
                            "shadow log: upload failed; files wait in the spool and are retried");
                    }
                    backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                    retry_at = Instant::now() + backoff;
                }
            }
        }
        for file in &pending {
            summary.files_left += 1;
            summary.rows_left += file.rows;
        }
        if summary.files_left > 0 {
            self.metrics.dropped_upload_lost.inc_by(summary.rows_left);
            tracing::error!(
                files = summary.files_left,
                rows = summary.rows_left,
                spool = %self.spool.root.display(),
                store = self.remote.url(),
                "shadow log: grace period over before these files reached the store; they \
                 stay in the spool and are sent by a later start on the same volume"
            );
        }
        summary
    }

    fn sent(&self, file: &SpooledFile, bytes: u64, summary: &mut UploadSummary) {
        summary.files += 1;
        summary.rows += file.rows;
        summary.bytes += bytes;
        self.metrics.uploaded_files.inc();
        self.metrics.uploaded_rows.inc_by(file.rows);
        self.metrics.uploaded_bytes.inc_by(bytes);
        if let Err(e) = fs::remove_file(&file.path) {
            tracing::warn!(file = %file.path.display(), error = %e,
                "shadow log: uploaded, but the spooled copy cannot be removed");
        }
        self.spool.account(-(file.bytes as i64), -1);
        // Emptied partition directories go too, up to the root.
        let _g = self.spool.lock_dirs();
        let mut dir = file.path.parent();
        while let Some(d) = dir {
            if d == self.spool.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

/// `/`-separated path of `path` under `root`.
fn rel_of(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// Complete files (`*.parquet`, not hidden, not quarantined) under `dir`.
fn find_complete(dir: &Path, top: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || (top && name == QUARANTINE_DIR) {
            continue;
        }
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => find_complete(&path, false, out),
            Ok(t) if t.is_file() && name.ends_with(".parquet") => out.push(path),
            _ => {}
        }
    }
}

fn footer_rows(path: &Path) -> Option<u64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let f = fs::File::open(path).ok()?;
    let r = SerializedFileReader::new(f).ok()?;
    u64::try_from(r.metadata().file_metadata().num_rows()).ok()
}
