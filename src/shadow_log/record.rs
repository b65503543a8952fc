//! One row of the shadow log: what the mirror path learned about one sampled request.

use std::sync::Arc;

/// Outcome of one shadow call, as written to `baseline_outcome` / `canary_outcome`
/// and used as the `outcome` label of `shadowgate_shadow_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetOutcome {
    /// 2xx with a parseable, valid embedding.
    Ok,
    /// Transport error or non-2xx status.
    Error,
    /// No complete answer within `[shadow].timeout`.
    Timeout,
    /// 2xx, but the body held no usable embedding (malformed, NaN, empty, zero, ...).
    InvalidEmbedding,
}

impl TargetOutcome {
    /// The label / column value.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetOutcome::Ok => "ok",
            TargetOutcome::Error => "error",
            TargetOutcome::Timeout => "timeout",
            TargetOutcome::InvalidEmbedding => "invalid_embedding",
        }
    }
}

/// One item of a mirrored request (one input of a batch; a single-input request is
/// item 0). Strings shared by every row (model, pod, versions) are
/// `Arc<str>` so building a record does not allocate them again.
#[derive(Debug, Clone)]
pub struct ShadowRecord {
    pub request_id: String,
    /// The input's index in its request (0 for a single-input request).
    pub item: u32,
    /// Microseconds since the Unix epoch, UTC: when the request arrived.
    pub ts_micros: i64,
    pub model: Arc<str>,
    pub pod: Arc<str>,
    pub baseline_version: Arc<str>,
    pub canary_version: Arc<str>,
    /// Hex of a 64-bit hash of the item's input (of the request body as received when
    /// the protocol does not say where its inputs are).
    pub input_hash: String,
    /// The item's input (the request body, UTF-8 lossy, when the protocol does not say
    /// where its inputs are); only when `store_inputs` is on.
    pub input: Option<String>,
    pub baseline_prediction: Option<String>,
    pub canary_prediction: Option<String>,
    /// Present only when both sides gave a valid embedding of the same dimension.
    pub cosine_similarity: Option<f32>,
    pub baseline_norm: Option<f32>,
    pub canary_norm: Option<f32>,
    pub baseline_latency_ms: Option<f32>,
    pub canary_latency_ms: Option<f32>,
    pub baseline_outcome: TargetOutcome,
    pub canary_outcome: TargetOutcome,
    /// The sampling probability in force, so readers can re-weight (1 / sample_rate).
    pub sample_rate: f32,
    /// Only when `store_embeddings` is on.
    pub baseline_embedding: Option<Vec<f32>>,
    pub canary_embedding: Option<Vec<f32>>,
}
