//! The shadow log (placeholder until the Parquet writer lands): record type only.
mod record;
pub use record::{ShadowRecord, TargetOutcome};

/// Placeholder sender until the writer lands.
#[derive(Clone, Debug, Default)]
pub struct ShadowLogSender;
impl ShadowLogSender {
    pub fn try_log(&self, _rec: ShadowRecord) -> bool {
        true
    }
}
