//! Prometheus handles of the shadow-log writer, registered once and passed in.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every series carries the const label `model` (the model the sidecar fronts), like the
/// other `shadowgate_shadow_*` series, so that one Prometheus can tell sidecars of
/// different models apart. Cheap to clone: the handles are shared.
#[derive(Clone, Debug)]
pub struct ShadowLogMetrics {
    /// `shadowgate_shadow_log_rows_total`: rows in closed (renamed, readable) files.
    pub rows: IntCounter,
    /// `shadowgate_shadow_log_files_total`: files closed and renamed into place.
    pub files: IntCounter,
    /// `shadowgate_shadow_log_bytes_total`: size of those files.
    pub bytes: IntCounter,
    /// `shadowgate_shadow_log_dropped_total{reason="queue_full"}`: `try_log` found the
    /// queue full.
    pub dropped_queue_full: IntCounter,
    /// `..._dropped_total{reason="write_error"}`: rows of a file that could not be
    /// written, opened or closed.
    pub dropped_write_error: IntCounter,
    /// `..._dropped_total{reason="closed"}`: `try_log` after the log was closed.
    pub dropped_closed: IntCounter,
    /// `shadowgate_shadow_log_queue_depth`: rows waiting for the writer.
    pub queue_depth: IntGauge,
    /// `shadowgate_shadow_log_write_errors_total`: failed files (open, write or close).
    pub write_errors: IntCounter,
    /// `shadowgate_shadow_log_recovered_files_total{result="recovered"}`.
    pub recovered_files: IntCounter,
    /// `shadowgate_shadow_log_recovered_files_total{result="quarantined"}`.
    pub quarantined_files: IntCounter,
    /// `..._dropped_total{reason="spool_full"}`: rows the writer dropped because the
    /// closed files waiting for the object store filled `spool_max_bytes`.
    pub dropped_spool_full: IntCounter,
    /// `..._dropped_total{reason="upload_lost"}`: rows of files still in the spool when
    /// the shutdown grace period ended.
    pub dropped_upload_lost: IntCounter,
    /// `shadowgate_shadow_log_uploaded_files_total`: files complete in the object store.
    pub uploaded_files: IntCounter,
    /// `shadowgate_shadow_log_uploaded_rows_total`: rows in those files.
    pub uploaded_rows: IntCounter,
    /// `shadowgate_shadow_log_uploaded_bytes_total`: bytes of those files.
    pub uploaded_bytes: IntCounter,
    /// `shadowgate_shadow_log_upload_errors_total`: failed upload attempts (retried).
    pub upload_errors: IntCounter,
    /// `shadowgate_shadow_log_spool_bytes`: closed files waiting for the store.
    pub spool_bytes: IntGauge,
    /// `shadowgate_shadow_log_spool_files`: how many.
    pub spool_files: IntGauge,
}

impl ShadowLogMetrics {
    /// Creates and registers every series, with all label values present from the start
    /// (a counter that appears only on its first increment breaks `rate()` and alerts).
    pub fn register(registry: &Registry, model: &str) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("model", model);
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::with_opts(opts(name, help))?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter_vec =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(opts(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };

        let dropped = counter_vec(
            "shadowgate_shadow_log_dropped_total",
            "Shadow-log rows dropped, by reason (queue_full, write_error, closed, spool_full, \
             upload_lost).",
            "reason",
        )?;
        let recovered = counter_vec(
            "shadowgate_shadow_log_recovered_files_total",
            "Temporary files found at start: recovered (readable, renamed into place) or \
             quarantined (moved under _quarantine/).",
            "result",
        )?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::with_opts(opts(name, help))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let queue_depth = gauge(
            "shadowgate_shadow_log_queue_depth",
            "Shadow-log rows waiting in the writer's queue.",
        )?;

        Ok(ShadowLogMetrics {
            rows: counter(
                "shadowgate_shadow_log_rows_total",
                "Shadow-log rows in closed, readable Parquet files.",
            )?,
            files: counter(
                "shadowgate_shadow_log_files_total",
                "Shadow-log Parquet files closed and renamed into place.",
            )?,
            bytes: counter(
                "shadowgate_shadow_log_bytes_total",
                "Bytes of closed shadow-log Parquet files.",
            )?,
            write_errors: counter(
                "shadowgate_shadow_log_write_errors_total",
                "Shadow-log files that failed to open, write or close (their rows are dropped).",
            )?,
            dropped_queue_full: dropped.with_label_values(&["queue_full"]),
            dropped_write_error: dropped.with_label_values(&["write_error"]),
            dropped_closed: dropped.with_label_values(&["closed"]),
            queue_depth,
            recovered_files: recovered.with_label_values(&["recovered"]),
            quarantined_files: recovered.with_label_values(&["quarantined"]),
            dropped_spool_full: dropped.with_label_values(&["spool_full"]),
            dropped_upload_lost: dropped.with_label_values(&["upload_lost"]),
            uploaded_files: counter(
                "shadowgate_shadow_log_uploaded_files_total",
                "Shadow-log files complete in the object store (shadow_log.dir = s3://...).",
            )?,
            uploaded_rows: counter(
                "shadowgate_shadow_log_uploaded_rows_total",
                "Rows in shadow-log files complete in the object store.",
            )?,
            uploaded_bytes: counter(
                "shadowgate_shadow_log_uploaded_bytes_total",
                "Bytes of shadow-log files complete in the object store.",
            )?,
            upload_errors: counter(
                "shadowgate_shadow_log_upload_errors_total",
                "Failed uploads of shadow-log files to the object store (each is retried).",
            )?,
            spool_bytes: gauge(
                "shadowgate_shadow_log_spool_bytes",
                "Bytes of closed shadow-log files in the local spool, waiting for the object store.",
            )?,
            spool_files: gauge(
                "shadowgate_shadow_log_spool_files",
                "Closed shadow-log files in the local spool, waiting for the object store.",
            )?,
        })
    }
}
