//! Start-up recovery of temporary files left by a writer that died mid-file (`kill -9`).
//!
//! A temporary file whose footer is intact and whose pages all decode was complete when
//! the writer died (between its footer and the rename): it is renamed into place. Any
//! other is moved under `<dir>/_quarantine/` with its partition path, never deleted.
//! Parquet is unreadable without its footer, and row groups flushed before it do not
//! help, so what a killed writer loses is the rows of its open files: at most one file
//! per partition, bounded by `max_rows_per_file` and `max_file_age`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::layout::{final_name_of_temp, QUARANTINE_DIR};
use super::metrics::ShadowLogMetrics;

/// What recovery found under the log directory at start.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Final paths of temporary files that were complete and are now visible.
    pub recovered: Vec<PathBuf>,
    /// Temporary files that could not be read, moved aside.
    pub quarantined: Vec<QuarantinedFile>,
    /// Temporary files that could be neither renamed nor moved (left in place, still
    /// hidden from readers), with the error.
    pub failed: Vec<(PathBuf, String)>,
}

/// One temporary file moved under `_quarantine/`.
#[derive(Debug, Clone)]
pub struct QuarantinedFile {
    /// Where it was.
    pub from: PathBuf,
    /// Where it is now.
    pub to: PathBuf,
    /// Why it was not recovered.
    pub reason: String,
}

impl RecoveryReport {
    /// True when there was nothing to recover.
    pub fn is_empty(&self) -> bool {
        self.recovered.is_empty() && self.quarantined.is_empty() && self.failed.is_empty()
    }
}

/// Recovers or quarantines every temporary file under `root` (outside `_quarantine/`).
/// Errors only when the tree itself cannot be listed.
pub(crate) fn recover(root: &Path, metrics: &ShadowLogMetrics) -> io::Result<RecoveryReport> {
    let mut temps = Vec::new();
    find_temp_files(root, true, &mut temps)?;
    temps.sort();
    let mut report = RecoveryReport::default();
    for temp in temps {
        match recover_one(root, &temp) {
            Ok(Outcome::Recovered(to)) => {
                tracing::info!(file = %to.display(), "shadow log: recovered a complete temporary file");
                metrics.recovered_files.inc();
                report.recovered.push(to);
            }
            Ok(Outcome::Quarantined(q)) => {
                tracing::warn!(from = %q.from.display(), to = %q.to.display(), reason = %q.reason,
                    "shadow log: quarantined an unreadable temporary file");
                metrics.quarantined_files.inc();
                report.quarantined.push(q);
            }
            Err(e) => {
                tracing::error!(file = %temp.display(), error = %e,
                    "shadow log: cannot recover or quarantine a temporary file; left in place");
                report.failed.push((temp, e.to_string()));
            }
        }
    }
    Ok(report)
}

enum Outcome {
    Recovered(PathBuf),
    Quarantined(QuarantinedFile),
}

fn recover_one(root: &Path, temp: &Path) -> io::Result<Outcome> {
    let name = temp
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let dir = temp.parent().unwrap_or(root);
    let reason = match (final_name_of_temp(name), check_readable(temp)) {
        (Some(final_name), Ok(())) => {
            let to = dir.join(final_name);
            if to.exists() {
                format!("{} already exists", to.display())
            } else {
                fs::rename(temp, &to)?;
                sync_dir(dir);
                return Ok(Outcome::Recovered(to));
            }
        }
        (None, _) => "not a shadow-log temporary file name".to_owned(),
        (_, Err(e)) => e,
    };
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let qdir = root.join(QUARANTINE_DIR).join(rel);
    fs::create_dir_all(&qdir)?;
    let mut to = qdir.join(name);
    let mut n = 1;
    while to.exists() {
        to = qdir.join(format!("{name}.{n}"));
        n += 1;
    }
    fs::rename(temp, &to)?;
    sync_dir(dir);
    Ok(Outcome::Quarantined(QuarantinedFile {
        from: temp.to_path_buf(),
        to,
        reason,
    }))
}

/// Reads the whole file: an intact footer is not enough if a page was torn.
fn check_readable(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("open: {e}"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| format!("footer: {e}"))?;
    for batch in reader {
        batch.map_err(|e| format!("data: {e}"))?;
    }
    Ok(())
}

fn find_temp_files(dir: &Path, top: bool, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let name = entry.file_name();
        if kind.is_dir() {
            if !(top && name == QUARANTINE_DIR) {
                find_temp_files(&entry.path(), false, out)?;
            }
        } else if kind.is_file() && name.to_str().is_some_and(is_temp_candidate) {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Our temporary files are `.<name>.parquet.tmp`; other dot-files (editors, probes) are
/// not ours to move.
fn is_temp_candidate(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".parquet.tmp")
}

/// Makes a rename durable; a failure only weakens durability, so it is logged.
pub(crate) fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "shadow log: fsync of directory failed");
    }
}
