//! Shadow log: one Parquet row per mirrored request, in a Hive-partitioned tree that
//! pyarrow, DuckDB, Spark and Trino read as one table, written off the hot path.
//!
//! - [`record`]: the row type the mirror path fills.
//! - `schema`: the Arrow schema ([`arrow_schema`]) and Parquet settings.
//! - `layout`: partition directories and file names.
//! - `writer`: bounded queue ([`ShadowLogSender::try_log`]), writer thread, rotation,
//!   close ([`ShadowLogGuard::close`]).
//! - `recovery`: leftover temporary files at start.
//! - `metrics`: [`ShadowLogMetrics`].
//! - `upload`: the local spool and the thread that sends closed files to an object store
//!   ([`crate::store`]) when `dir` is `s3://...`.
//!
//! Guarantees: a reader never sees a partial file (files are written as
//! `.<name>.parquet.tmp`, fsynced, then renamed); every row `try_log` accepted is in a
//! closed file once `close` returns, unless its file hit a write error (then it is
//! counted in `dropped_total{reason="write_error"}`); a `kill -9` loses at most the open
//! file of each partition (≤ `max_rows_per_file` rows, ≤ `max_file_age` old), whose
//! leftover is quarantined at the next start, never deleted.

mod layout;
mod metrics;
pub mod record;
mod recovery;
mod schema;
mod upload;
mod writer;

pub use layout::QUARANTINE_DIR;
pub use metrics::ShadowLogMetrics;
pub use record::{ShadowRecord, TargetOutcome};
pub use recovery::{QuarantinedFile, RecoveryReport};
pub use schema::{
    arrow_schema, records_to_batch, writer_properties, ROW_GROUP_MAX_BYTES, SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
};
pub use upload::UploadSummary;
pub use writer::{
    start, start_gated, ShadowLogError, ShadowLogGuard, ShadowLogSender, WriterOptions,
    WriterSummary, DEFAULT_MAX_FILE_AGE, DEFAULT_MAX_ROWS_PER_FILE, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_ROW_GROUP_ROWS,
};

/// Start the shadow log of `[shadow_log]` for this pod, reporting any leftover files an
/// earlier run's kill left behind. With an object-store `dir`, the store is checked
/// first (a probe object under `_shadowgate/`), so bad credentials or a missing bucket
/// stop the start with the reason.
pub fn open(
    cfg: &crate::config::ShadowLogConfig,
    pod: &str,
    metrics: ShadowLogMetrics,
) -> Result<(ShadowLogSender, ShadowLogGuard), ShadowLogError> {
    let mut opts = WriterOptions {
        max_rows_per_file: cfg.max_rows_per_file,
        max_file_age: cfg.max_file_age,
        queue_capacity: cfg.queue_capacity,
        store_inputs: cfg.store_inputs,
        store_embeddings: cfg.store_embeddings,
        ..WriterOptions::new(cfg.dir.clone(), pod)
    };
    let (sender, guard) = match cfg.remote_url() {
        None => start(opts, metrics)?,
        Some(url) => {
            let remote = crate::store::Remote::from_url(url, cfg.upload_timeout)?;
            let spool = cfg.spool_dir.clone();
            // Recovery first, so that the uploader finds recovered files complete.
            let unwritable = |source| ShadowLogError::Unwritable {
                dir: spool.clone(),
                source,
            };
            std::fs::create_dir_all(&spool).map_err(unwritable)?;
            let report =
                recovery::recover(&spool, &metrics).map_err(|source| ShadowLogError::Recovery {
                    dir: spool.clone(),
                    source,
                })?;
            let uploader = upload::Uploader::start(
                remote,
                spool.clone(),
                cfg.spool_max_bytes,
                pod,
                metrics.clone(),
            )?;
            opts.dir = spool;
            opts.spool = Some(uploader.spool());
            let (sender, mut guard) = start(opts, metrics)?;
            guard.attach(uploader, report);
            tracing::info!(store = url, spool = %cfg.spool_dir.display(),
                "shadow log: files go to the object store through the local spool");
            (sender, guard)
        }
    };
    let report = guard.recovery_report();
    if !report.is_empty() {
        tracing::warn!(
            ?report,
            "shadow log: leftover temporary files from an earlier run were recovered or set aside"
        );
    }
    Ok((sender, guard))
}
