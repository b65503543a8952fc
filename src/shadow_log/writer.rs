//! The writer: a bounded queue the mirror path feeds without blocking, a named thread
//! that turns batches of records into Parquet files, rotates them, and closes them all
//! when the guard is closed or dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::layout::{compact_utc, file_name, temp_name, Partition};
use super::metrics::ShadowLogMetrics;
use super::record::ShadowRecord;
use super::recovery::{recover, sync_dir, RecoveryReport};
use super::schema::{arrow_schema, records_to_batch, writer_properties};
use super::upload::{Spool, UploadSummary, Uploader};

/// DESIGN.md `[shadow_log].max_rows_per_file` default.
pub const DEFAULT_MAX_ROWS_PER_FILE: usize = 100_000;
/// DESIGN.md `[shadow_log].max_file_age` default: the batch job sees rows within a minute.
pub const DEFAULT_MAX_FILE_AGE: Duration = Duration::from_secs(60);
/// DESIGN.md `[shadow_log].queue_capacity` default.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Rows per row group: large enough for scans to be column reads of a few MB, small
/// enough to bound the writer's memory (see also `ROW_GROUP_MAX_BYTES`).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 65_536;

/// Most rows the writer takes off the queue before writing them: bounds the Arrow
/// arrays it builds at once while still amortising per-batch work.
const MAX_BATCH_ROWS: usize = 8_192;

/// After the first record of a batch, how long the writer waits for more before writing.
/// At a few hundred rows per second, writing each row as it comes cost ~10 µs a row
/// (one Arrow batch and one wake-up per row) against ~1 µs batched; 100 ms of delay on
/// the way to disk is invisible next to a file's minutes-long lifetime.
const GATHER: Duration = Duration::from_millis(100);
/// While it gathers, the writer looks at the queue this often, asleep in between: a
/// receiver parked on the queue costs every `try_log` a futex wake (a syscall on a proxy
/// thread) and the writer a context switch per row.
const GATHER_POLL: Duration = Duration::from_millis(20);

/// Settings of one shadow-log writer (DESIGN.md `[shadow_log]`).
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Root of the Hive-partitioned tree; created if missing.
    pub dir: PathBuf,
    /// This pod's name: the first part of every file name, so pods never collide.
    pub pod: String,
    /// A file is closed when it holds this many rows...
    pub max_rows_per_file: usize,
    /// ... or when it has been open this long, even if no row arrives meanwhile.
    pub max_file_age: Duration,
    /// Rows the queue holds; beyond it `try_log` drops and counts.
    pub queue_capacity: usize,
    /// Write the request body to `input`; otherwise the column is all null.
    pub store_inputs: bool,
    /// Write `baseline_embedding` / `canary_embedding`; otherwise they are all null.
    pub store_embeddings: bool,
    /// Rows per Parquet row group (capped in bytes by `ROW_GROUP_MAX_BYTES`).
    pub row_group_rows: usize,
    /// Set when `dir` is the spool of an object store: closed files are handed to its
    /// uploader, and rows are dropped while it is full.
    pub spool: Option<Arc<Spool>>,
}

impl WriterOptions {
    /// Options with DESIGN.md's defaults for `dir` and `pod`.
    pub fn new(dir: impl Into<PathBuf>, pod: impl Into<String>) -> Self {
        WriterOptions {
            dir: dir.into(),
            pod: pod.into(),
            max_rows_per_file: DEFAULT_MAX_ROWS_PER_FILE,
            max_file_age: DEFAULT_MAX_FILE_AGE,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            store_inputs: false,
            store_embeddings: false,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            spool: None,
        }
    }

    fn validate(&self) -> Result<(), ShadowLogError> {
        let mut errors = Vec::new();
        if self.pod.is_empty() {
            errors.push("pod must not be empty");
        }
        if self.max_rows_per_file == 0 {
            errors.push("max_rows_per_file must be at least 1");
        }
        if self.max_file_age.is_zero() {
            errors.push("max_file_age must be positive");
        }
        if self.queue_capacity == 0 {
            errors.push("queue_capacity must be at least 1");
        }
        if self.row_group_rows == 0 {
            errors.push("row_group_rows must be at least 1");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ShadowLogError::InvalidOptions(errors.join("; ")))
        }
    }
}

/// Why the shadow log could not start or close cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShadowLogError {
    /// The options contradict themselves.
    #[error("invalid shadow log options: {0}")]
    InvalidOptions(String),
    /// `dir` cannot be created or written (checked by creating and removing a file).
    #[error("shadow log dir {}: not writable: {source}", .dir.display())]
    Unwritable {
        /// The directory.
        dir: PathBuf,
        /// What the probe ran into.
        source: io::Error,
    },
    /// Listing `dir` for leftover temporary files failed.
    #[error("shadow log dir {}: cannot scan for leftover temporary files: {source}", .dir.display())]
    Recovery {
        /// The directory.
        dir: PathBuf,
        /// The listing error.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the shadow log writer thread: {0}")]
    Spawn(io::Error),
    /// The writer thread panicked; rows it held are lost.
    #[error("the shadow log writer thread panicked; its open files were not closed")]
    WriterPanicked,
    /// The object store of an `s3://`-style `dir` is unusable.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What a writer did over its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterSummary {
    /// Rows in files closed and renamed into place.
    pub rows: u64,
    /// Files closed and renamed into place.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Files that failed (open, write, or close).
    pub write_errors: u64,
    /// Rows lost with those files.
    pub rows_dropped_write_error: u64,
    /// Rows dropped because the object-store spool was full.
    pub rows_dropped_spool_full: u64,
    /// With an object store: what the uploader sent, and what it had left at the end.
    pub upload: Option<UploadSummary>,
}

/// The producer side. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct ShadowLogSender {
    shared: Arc<Shared>,
}

struct Shared {
    /// `None` once the guard closed the log. The lock is what makes "nothing accepted
    /// is lost" exact: `close` takes it for writing only between two `try_send`s, so no
    /// row can enter the queue after the writer's final drain. Readers never wait except
    /// for that instant.
    /// Records travel boxed: a bounded crossbeam queue allocates every slot up front and
    /// a ring touches them all, so 65 536 slots of a ~280-byte record were ~18 MiB of
    /// resident memory; boxed they are 512 KiB plus the records actually queued.
    tx: RwLock<Option<Sender<Box<ShadowRecord>>>>,
    metrics: ShadowLogMetrics,
}

impl ShadowLogSender {
    /// Hands a record to the writer without blocking. Returns `false` when it was
    /// dropped (queue full, or log closed), which the `dropped_total` counter records.
    pub fn try_log(&self, rec: ShadowRecord) -> bool {
        let tx = self
            .shared
            .tx
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let m = &self.shared.metrics;
        let Some(tx) = tx.as_ref() else {
            m.dropped_closed.inc();
            return false;
        };
        match tx.try_send(Box::new(rec)) {
            Ok(()) => {
                m.queue_depth.set(gauge_value(tx.len()));
                true
            }
            Err(TrySendError::Full(_)) => {
                m.dropped_queue_full.inc();
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                // Only if the writer thread died.
                m.dropped_closed.inc();
                false
            }
        }
    }

    /// Rows waiting in the queue now (0 once closed).
    pub fn queue_len(&self) -> usize {
        let tx = self
            .shared
            .tx
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        tx.as_ref().map_or(0, Sender::len)
    }
}

/// Owns the writer thread. `close` (or drop) stops intake, writes every queued row,
/// closes and renames every open file, and joins the thread.
pub struct ShadowLogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<WriterSummary>>,
    recovery: RecoveryReport,
    /// With an object store: sends closed files; finished after the writer.
    uploader: Option<Uploader>,
}

/// How long [`ShadowLogGuard::close`] lets the uploader send what waits.
const CLOSE_UPLOAD_GRACE: Duration = Duration::from_secs(30);

impl ShadowLogGuard {
    /// Stops intake (later `try_log` calls return `false`, counted as `closed`), drains
    /// the queue into files, closes them all and joins the writer.
    pub fn close(self) -> Result<WriterSummary, ShadowLogError> {
        self.close_by(Instant::now() + CLOSE_UPLOAD_GRACE)
    }

    /// [`close`](Self::close); with an object store, files not sent by `deadline` stay
    /// in the spool and their rows are counted as `upload_lost`.
    pub fn close_by(mut self, deadline: Instant) -> Result<WriterSummary, ShadowLogError> {
        let mut summary = self.shutdown()?;
        if let Some(up) = self.uploader.take() {
            summary.upload = Some(up.finish(deadline));
        }
        Ok(summary)
    }

    pub(crate) fn attach(&mut self, uploader: Uploader, recovery: RecoveryReport) {
        self.uploader = Some(uploader);
        self.recovery = recovery;
    }

    /// What start-up recovery found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn shutdown(&mut self) -> Result<WriterSummary, ShadowLogError> {
        // Dropping the only Sender disconnects the channel once the writer has drained it.
        drop(
            self.shared
                .tx
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| ShadowLogError::WriterPanicked),
            None => Ok(WriterSummary::default()),
        }
    }
}

impl Drop for ShadowLogGuard {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(e) = self.shutdown() {
                tracing::error!(error = %e, "shadow log: close on drop failed");
            }
        }
    }
}

/// Checks that `opts.dir` is writable, recovers leftover temporary files, and starts the
/// writer thread.
pub fn start(
    opts: WriterOptions,
    metrics: ShadowLogMetrics,
) -> Result<(ShadowLogSender, ShadowLogGuard), ShadowLogError> {
    start_inner(opts, metrics, None)
}

/// [`start`], but the writer thread takes nothing off the queue until `gate` yields a
/// message or disconnects. For tests that need a full queue deterministically.
#[doc(hidden)]
pub fn start_gated(
    opts: WriterOptions,
    metrics: ShadowLogMetrics,
    gate: Receiver<()>,
) -> Result<(ShadowLogSender, ShadowLogGuard), ShadowLogError> {
    start_inner(opts, metrics, Some(gate))
}

fn start_inner(
    opts: WriterOptions,
    metrics: ShadowLogMetrics,
    gate: Option<Receiver<()>>,
) -> Result<(ShadowLogSender, ShadowLogGuard), ShadowLogError> {
    opts.validate()?;
    probe_writable(&opts.dir).map_err(|source| ShadowLogError::Unwritable {
        dir: opts.dir.clone(),
        source,
    })?;
    let recovery = recover(&opts.dir, &metrics).map_err(|source| ShadowLogError::Recovery {
        dir: opts.dir.clone(),
        source,
    })?;

    let (tx, rx) = crossbeam_channel::bounded(opts.queue_capacity);
    let shared = Arc::new(Shared {
        tx: RwLock::new(Some(tx)),
        metrics: metrics.clone(),
    });
    let writer = Writer::new(opts, metrics);
    let thread = std::thread::Builder::new()
        .name("shadow-log-writer".into())
        .spawn(move || {
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            writer.run(&rx)
        })
        .map_err(ShadowLogError::Spawn)?;
    let guard = ShadowLogGuard {
        shared: Arc::clone(&shared),
        thread: Some(thread),
        recovery,
        uploader: None,
    };
    Ok((ShadowLogSender { shared }, guard))
}

/// Creates `dir` and a file in it, then removes the file: permissions, read-only mounts
/// and missing parents all show up here rather than on the first row.
fn probe_writable(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let probe = dir.join(format!(".shadowgate-probe-{}-{nanos}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let written = f.write_all(b"probe").and_then(|()| f.sync_all());
    drop(f);
    let removed = fs::remove_file(&probe);
    written.and(removed)
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One file being written, under its temporary name.
struct OpenFile {
    partition: Partition,
    temp_path: PathBuf,
    final_path: PathBuf,
    writer: ArrowWriter<File>,
    rows: usize,
    opened_at: Instant,
}

/// Adds to `batch` what else is queued or arrives before `until`, up to
/// [`MAX_BATCH_ROWS`], looking every [`GATHER_POLL`]. A disconnect (shutdown) ends the
/// gathering, and the writer's next `recv` ends its loop.
fn gather(rx: &Receiver<Box<ShadowRecord>>, batch: &mut Vec<ShadowRecord>, until: Instant) {
    loop {
        while batch.len() < MAX_BATCH_ROWS {
            match rx.try_recv() {
                Ok(rec) => batch.push(*rec),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        if batch.len() >= MAX_BATCH_ROWS || now >= until {
            return;
        }
        std::thread::sleep((until - now).min(GATHER_POLL));
    }
}

/// State of the writer thread.
struct Writer {
    opts: WriterOptions,
    props: WriterProperties,
    metrics: ShadowLogMetrics,
    /// Identifies this run in file names: `<pod>-<start>-<seq>`.
    start: String,
    seq: u64,
    /// One entry per partition with an open file (usually one; two across an hour).
    open: Vec<OpenFile>,
    summary: WriterSummary,
}

impl Writer {
    fn new(opts: WriterOptions, metrics: ShadowLogMetrics) -> Self {
        Writer {
            props: writer_properties(opts.row_group_rows),
            opts,
            metrics,
            start: compact_utc(now_micros()),
            seq: 0,
            open: Vec::new(),
            summary: WriterSummary::default(),
        }
    }

    /// Blocks for the first record (or the next file deadline), drains what else is
    /// queued, writes it, closes files that are due; on disconnect closes everything.
    fn run(mut self, rx: &Receiver<Box<ShadowRecord>>) -> WriterSummary {
        let mut batch = Vec::with_capacity(MAX_BATCH_ROWS);
        loop {
            let first = match self.next_deadline() {
                Some(deadline) => rx.recv_deadline(deadline),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(rec) => {
                    batch.push(*rec);
                    gather(rx, &mut batch, Instant::now() + GATHER);
                    self.metrics.queue_depth.set(gauge_value(rx.len()));
                    self.write_batch(&mut batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.close_expired(Instant::now());
        }
        self.metrics.queue_depth.set(0);
        while let Some(file) = self.open.pop() {
            self.close_file(file);
        }
        self.summary
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .map(|f| f.opened_at + self.opts.max_file_age)
            .min()
    }

    fn close_expired(&mut self, now: Instant) {
        let age = self.opts.max_file_age;
        let mut i = 0;
        while i < self.open.len() {
            if now >= self.open[i].opened_at + age {
                let file = self.open.swap_remove(i);
                self.close_file(file);
            } else {
                i += 1;
            }
        }
    }

    /// Writes and empties `batch`, one run of rows per partition.
    fn write_batch(&mut self, batch: &mut Vec<ShadowRecord>) {
        if self.opts.spool.as_ref().is_some_and(|s| s.full()) {
            // The store is behind and the spool is at its bound: these rows never reach
            // it. Counted, and the open files are left as they are.
            let n = batch.len() as u64;
            self.metrics.dropped_spool_full.inc_by(n);
            self.summary.rows_dropped_spool_full += n;
            batch.clear();
            return;
        }
        let first = match batch.first() {
            Some(r) => Partition::of(&r.model, r.ts_micros),
            None => return,
        };
        if batch
            .iter()
            .all(|r| first == Partition::of(&r.model, r.ts_micros))
        {
            self.write_partition(&first, batch);
        } else {
            // Rare (an hour boundary, or several models): split, keeping row order.
            let mut groups: Vec<(Partition, Vec<ShadowRecord>)> = Vec::new();
            for rec in batch.drain(..) {
                let p = Partition::of(&rec.model, rec.ts_micros);
                match groups.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, rows)) => rows.push(rec),
                    None => groups.push((p, vec![rec])),
                }
            }
            for (p, rows) in &groups {
                self.write_partition(p, rows);
            }
        }
        batch.clear();
    }

    /// Writes rows of one partition, closing and opening files at `max_rows_per_file`.
    fn write_partition(&mut self, partition: &Partition, mut rows: &[ShadowRecord]) {
        while !rows.is_empty() {
            let idx = match self.open.iter().position(|f| f.partition == *partition) {
                Some(i) => i,
                None => match self.open_file(partition) {
                    Ok(file) => {
                        self.open.push(file);
                        self.open.len() - 1
                    }
                    Err(e) => {
                        let dir = partition.dir(&self.opts.dir);
                        self.count_failure(rows.len(), &dir, &e.to_string());
                        return;
                    }
                },
            };
            let room = self.opts.max_rows_per_file - self.open[idx].rows;
            let (now, rest) = rows.split_at(room.min(rows.len()));
            rows = rest;
            let written = records_to_batch(now, self.opts.store_inputs, self.opts.store_embeddings)
                .map_err(|e| e.to_string())
                .and_then(|b| self.open[idx].writer.write(&b).map_err(|e| e.to_string()));
            match written {
                Ok(()) => {
                    self.open[idx].rows += now.len();
                    if self.open[idx].rows >= self.opts.max_rows_per_file {
                        let file = self.open.swap_remove(idx);
                        self.close_file(file);
                    }
                }
                Err(e) => {
                    let file = self.open.swap_remove(idx);
                    self.abandon(file, now.len(), &e);
                }
            }
        }
    }

    fn open_file(&mut self, partition: &Partition) -> io::Result<OpenFile> {
        let dir = partition.dir(&self.opts.dir);
        // The uploader removes emptied partition directories; not this one, now.
        let _dirs = self.opts.spool.as_ref().map(|s| s.lock_dirs());
        fs::create_dir_all(&dir)?;
        self.seq += 1;
        let name = file_name(&self.opts.pod, &self.start, self.seq);
        let temp_path = dir.join(temp_name(&name));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        let writer = ArrowWriter::try_new(file, arrow_schema(), Some(self.props.clone()))
            .map_err(io::Error::other)?;
        Ok(OpenFile {
            partition: partition.clone(),
            final_path: dir.join(name),
            temp_path,
            writer,
            rows: 0,
            opened_at: Instant::now(),
        })
    }

    /// Footer, fsync, rename, fsync of the directory: only then are the rows counted.
    fn close_file(&mut self, mut file: OpenFile) {
        if file.rows == 0 {
            // Only a failed first write leaves a file empty; nothing to keep.
            drop(file.writer);
            let _ = fs::remove_file(&file.temp_path);
            return;
        }
        let closed = file
            .writer
            .finish()
            .map_err(|e| e.to_string())
            .and_then(|_| {
                let f = file.writer.inner();
                f.sync_all()
                    .and_then(|()| f.metadata())
                    .map(|m| m.len())
                    .map_err(|e| format!("fsync: {e}"))
            })
            .and_then(|bytes| {
                fs::rename(&file.temp_path, &file.final_path)
                    .map(|()| bytes)
                    .map_err(|e| format!("rename: {e}"))
            });
        match closed {
            Ok(bytes) => {
                if let Some(dir) = file.final_path.parent() {
                    sync_dir(dir);
                }
                let rows = file.rows as u64;
                self.metrics.rows.inc_by(rows);
                self.metrics.files.inc();
                self.metrics.bytes.inc_by(bytes);
                self.summary.rows += rows;
                self.summary.files += 1;
                self.summary.bytes += bytes;
                if let Some(spool) = &self.opts.spool {
                    spool.add(&file.final_path, rows, bytes);
                }
            }
            Err(e) => self.abandon(file, 0, &e),
        }
    }

    /// Gives up a file after an error: its rows (plus `pending` rows that were being
    /// added) are dropped and counted, and the partial temp file is removed to free
    /// space (it has no footer, so nothing in it is readable).
    fn abandon(&mut self, file: OpenFile, pending: usize, error: &str) {
        let lost = file.rows + pending;
        drop(file.writer);
        if let Err(e) = fs::remove_file(&file.temp_path) {
            // Left for the next start's recovery to quarantine.
            tracing::warn!(file = %file.temp_path.display(), error = %e,
                "shadow log: cannot remove failed temporary file");
        }
        self.count_failure(lost, &file.temp_path, error);
    }

    fn count_failure(&mut self, rows: usize, path: &Path, error: &str) {
        tracing::error!(path = %path.display(), rows, error,
            "shadow log: write failed; rows dropped");
        self.metrics.write_errors.inc();
        self.metrics.dropped_write_error.inc_by(rows as u64);
        self.summary.write_errors += 1;
        self.summary.rows_dropped_write_error += rows as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow_log::record::TargetOutcome;

    fn row(item: u32) -> Box<ShadowRecord> {
        let shared: Arc<str> = Arc::from("x");
        Box::new(ShadowRecord {
            request_id: format!("req-{item}"),
            item,
            ts_micros: 0,
            model: Arc::clone(&shared),
            pod: Arc::clone(&shared),
            baseline_version: Arc::clone(&shared),
            canary_version: shared,
            input_hash: String::new(),
            input: None,
            baseline_prediction: None,
            canary_prediction: None,
            cosine_similarity: None,
            baseline_norm: None,
            canary_norm: None,
            baseline_latency_ms: None,
            canary_latency_ms: None,
            baseline_outcome: TargetOutcome::Ok,
            canary_outcome: TargetOutcome::Ok,
            sample_rate: 1.0,
            baseline_embedding: None,
            canary_embedding: None,
        })
    }

    fn items(batch: &[ShadowRecord]) -> Vec<u32> {
        batch.iter().map(|r| r.item).collect()
    }

    #[test]
    fn gathering_takes_the_rows_that_come_while_it_waits_and_ends_when_the_senders_go() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let sender = std::thread::spawn(move || {
            for i in 0..5 {
                tx.send(row(i)).unwrap();
                std::thread::sleep(Duration::from_millis(7));
            }
        });
        let mut batch = Vec::new();
        let started = Instant::now();
        gather(&rx, &mut batch, started + Duration::from_secs(30));
        sender.join().unwrap();
        assert_eq!(items(&batch), [0, 1, 2, 3, 4]);
        // The senders' drop ended it (a shutdown), not the 30 s deadline.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn gathering_ends_at_its_deadline_and_at_a_full_batch() {
        let (tx, rx) = crossbeam_channel::bounded(MAX_BATCH_ROWS + 8);
        tx.send(row(1)).unwrap();
        let mut batch = Vec::new();
        let started = Instant::now();
        gather(&rx, &mut batch, started + Duration::from_millis(50));
        assert_eq!(items(&batch), [1]);
        assert!(started.elapsed() >= Duration::from_millis(50));
        // A full batch ends it at once, and what is over stays queued for the next.
        for i in 0..MAX_BATCH_ROWS as u32 + 8 {
            tx.send(row(i)).unwrap();
        }
        batch.clear();
        let started = Instant::now();
        gather(&rx, &mut batch, started + Duration::from_secs(30));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(batch.len(), MAX_BATCH_ROWS);
        assert_eq!(rx.len(), 8);
        drop(tx);
    }
}
