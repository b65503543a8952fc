//! The batch accuracy job (`shadowgate accuracy`): joins the Parquet shadow log with
//! ground-truth labels by (request id, item) and reports, per model and per (baseline,
//! canary) pair, how the two versions compare on the same inputs. Every count is per
//! item: a batched request of 8 inputs is 8 rows, 8 labels, 8 scored pairs; a
//! version-1 shadow log (no `item` column) and a label without `item` mean item 0.
//!
//! Flow: [`labels`] loads the label files into an (id, item) → label table; [`files`] lists
//! the shadow-log tree and prunes partitions by path; [`logs`] streams the row groups
//! on every core and counts into per-group tables; [`report`] turns the counts into
//! numbers ([`stats`]) and renders them; [`push`] sends them to a Pushgateway.
//! `deploy/spark/accuracy_job.py` is the same job for Apache Spark and must give the
//! same JSON.

pub mod columns;
pub mod files;
pub mod labels;
pub mod logs;
pub mod push;
pub mod remote;
pub mod report;
pub mod stats;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use report::{Report, SkippedFile};

/// Arguments of `shadowgate accuracy`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccuracyArgs {
    /// Shadow-log tree(s) (`<dir>/model=<m>/date=YYYY-MM-DD/hour=HH/*.parquet`) or files;
    /// a tree may be in object storage (`s3://bucket/prefix`, `az://`, with the
    /// credentials of the environment, as the sidecar reads them).
    #[arg(long, required = true, num_args = 1..)]
    pub logs: Vec<PathBuf>,
    /// Label file(s) or directories: Parquet, CSV (with a header) or JSON lines
    /// (.jsonl/.ndjson/.json), by extension; also `s3://...` like `--logs`.
    #[arg(long, required = true, num_args = 1..)]
    pub labels: Vec<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Push the numbers to this Pushgateway (http://host:port), job
    /// `shadowgate_accuracy`, grouped by model.
    #[arg(long)]
    pub pushgateway: Option<String>,
    /// Only this model.
    #[arg(long)]
    pub model: Option<String>,
    /// Only rows with `ts` at or after this time (RFC 3339 or YYYY-MM-DD, UTC default).
    #[arg(long)]
    pub since: Option<String>,
    /// Only rows with `ts` before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Request-id column of the label files.
    #[arg(long, default_value = "request_id")]
    pub label_id_column: String,
    /// Label column of the label files.
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Item column of the label files: which input of a batched request the label is
    /// for (a non-negative integer). Optional: a file without it, or a null or empty
    /// value, means item 0; other values (negative, fractional, text) make the row
    /// invalid. Empty to ignore the column.
    #[arg(long, default_value = "item")]
    pub label_item_column: String,
    /// Timestamp column of the label files, used (when a file has it) to keep the
    /// latest of duplicate labels: a timestamp type, seconds since the epoch, or RFC 3339.
    #[arg(long, default_value = "ts")]
    pub label_ts_column: String,
    /// Skip corrupt or unreadable files (listed in the report) instead of failing.
    #[arg(long)]
    pub skip_bad_files: bool,
    /// Never print progress.
    #[arg(long)]
    pub quiet: bool,
}

impl AccuracyArgs {
    /// Arguments with the command line's defaults.
    pub fn new(logs: Vec<PathBuf>, labels: Vec<PathBuf>) -> Self {
        AccuracyArgs {
            logs,
            labels,
            json: None,
            pushgateway: None,
            model: None,
            since: None,
            until: None,
            label_id_column: "request_id".into(),
            label_column: "label".into(),
            label_item_column: "item".into(),
            label_ts_column: "ts".into(),
            skip_bad_files: false,
            quiet: true,
        }
    }
}

/// Why the job failed. Every variant names the file or URL concerned.
#[derive(Debug, thiserror::Error)]
pub enum AccuracyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Corrupt, not Parquet, or missing a required shadow-log column: skippable.
    #[error("{}: {problem}", path.display())]
    BadFile { path: PathBuf, problem: String },
    /// A label file without the configured id or label column.
    #[error("{}: no column `{column}` (see --label-id-column / --label-column)", path.display())]
    MissingColumn { path: PathBuf, column: String },
    #[error(
        "{}: shadow-log schema version {found} is not supported (this shadowgate reads up to {}); upgrade shadowgate",
        path.display(), logs::SCHEMA_VERSION
    )]
    SchemaVersion { path: PathBuf, found: String },
    #[error("{0}")]
    Usage(String),
    #[error("writing {}: {source}", path.display())]
    WriteJson {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pushing to {url}: {problem}")]
    Push { url: String, problem: String },
}

impl AccuracyError {
    /// sysexits-style exit code for `main`.
    pub fn exit_code(&self) -> u8 {
        match self {
            AccuracyError::Usage(_) => 64,  // EX_USAGE
            AccuracyError::Io { .. } => 66, // EX_NOINPUT
            AccuracyError::BadFile { .. }
            | AccuracyError::MissingColumn { .. }
            | AccuracyError::SchemaVersion { .. } => 65, // EX_DATAERR
            AccuracyError::WriteJson { .. } => 73, // EX_CANTCREAT
            AccuracyError::Push { .. } => 69, // EX_UNAVAILABLE
        }
    }
}

fn parse_time(flag: &str, v: &Option<String>) -> Result<Option<i64>, AccuracyError> {
    v.as_deref()
        .map(|s| {
            files::parse_timestamp(s).ok_or_else(|| {
                AccuracyError::Usage(format!(
                    "--{flag} {s:?}: expected RFC 3339 (2024-05-01T12:00:00Z) or YYYY-MM-DD"
                ))
            })
        })
        .transpose()
}

/// Reads, joins and scores; no output.
pub fn compute(args: &AccuracyArgs) -> Result<Report, AccuracyError> {
    let since = parse_time("since", &args.since)?;
    let until = parse_time("until", &args.until)?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(AccuracyError::Usage(
                "--since must be before --until".into(),
            ));
        }
    }
    let cols = labels::LabelColumns {
        id: args.label_id_column.clone(),
        label: args.label_column.clone(),
        ts: Some(args.label_ts_column.clone()).filter(|s| !s.is_empty()),
        item: Some(args.label_item_column.clone()).filter(|s| !s.is_empty()),
    };
    let progress = logs::Progress::default();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        if !args.quiet {
            scope.spawn(|| show_progress(&progress, &done));
        }
        let result = (|| {
            // Object-store inputs (s3://...) are fetched first, the log tree pruned by
            // listing; the temporary copy goes when `fetched` does.
            let mut fetched = remote::Fetched::new()?;
            let prune = remote::Prune {
                model: args.model.clone(),
                since,
                until,
            };
            let logs = fetched.localize(&args.logs, &["parquet"], Some(&prune))?;
            let label_inputs = fetched.localize(&args.labels, &labels::LABEL_EXTENSIONS, None)?;
            if fetched.objects > 0 && !args.quiet {
                eprintln!(
                    "fetched {} objects ({} bytes) from the object store; {} partition prefixes pruned unlisted",
                    fetched.objects, fetched.bytes, fetched.prefixes_pruned
                );
            }
            let (table, mut skipped) = labels::load(&label_inputs, &cols, args.skip_bad_files)?;
            let shadow_files = files::list_files(&logs, &["parquet"])?;
            let filter = logs::RowFilter {
                model: args.model.clone(),
                since,
                until,
            };
            let scan = logs::scan(
                shadow_files,
                &filter,
                &table,
                args.skip_bad_files,
                &progress,
            )?;
            skipped.extend(scan.skipped);
            skipped.sort_by(|a, b| a.path.cmp(&b.path));
            let matched = scan.matched.iter().filter(|&&m| m).count() as u64;
            Ok(report::build(
                &scan.groups,
                &table.counts,
                matched,
                scan.files_read,
                scan.files_pruned,
                skipped,
            ))
        })();
        done.store(true, Ordering::Relaxed);
        result
    })
}

/// Runs the job: compute, write `--json`, push to `--pushgateway`. The caller prints
/// [`Report::to_table`].
pub fn run(args: &AccuracyArgs) -> Result<Report, AccuracyError> {
    let report = compute(args)?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    if let Some(url) = &args.pushgateway {
        push::push(url, &report)?;
    }
    Ok(report)
}

/// Writes the JSON report through a temporary file and a rename, so a reader never
/// sees half a report.
pub fn write_json(path: &std::path::Path, report: &Report) -> Result<(), AccuracyError> {
    let err = |e| AccuracyError::WriteJson {
        path: path.to_path_buf(),
        source: e,
    };
    let mut text = serde_json::to_string_pretty(report).map_err(|e| err(e.into()))?;
    text.push('\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Progress on stderr: at once on a terminal (one updating line), else one line every
/// few seconds once the run has taken longer than [`QUIET_FOR`].
fn show_progress(p: &logs::Progress, done: &AtomicBool) {
    const QUIET_FOR: Duration = Duration::from_secs(2);
    const TICK: Duration = Duration::from_millis(100);
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let start = Instant::now();
    let mut last = start;
    let mut shown = false;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let due = if shown {
            now - last >= every
        } else if tty {
            now - start >= Duration::from_millis(250)
        } else {
            now - start >= QUIET_FOR
        };
        if !due {
            continue;
        }
        last = now;
        let rows = p.rows_done.load(Ordering::Relaxed);
        let secs = (now - start).as_secs_f64();
        let line = format!(
            "accuracy: {}/{} files, {} rows, {:.0} rows/s, {:.1} s",
            p.files_done.load(Ordering::Relaxed),
            p.files_total.load(Ordering::Relaxed),
            rows,
            rows as f64 / secs,
            secs
        );
        if tty {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
        shown = true;
    }
    if tty && shown {
        eprint!("\r\x1b[K");
    }
}
