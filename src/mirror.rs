//! The shadow path: one bounded task per sampled request calls baseline and canary
//! concurrently, parses their embeddings, compares them, and hands the result to the
//! drift statistics, the metrics and the shadow log. Nothing here can reach the client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::compare::{self, CompareError, Side};
use crate::drift::DriftState;
use crate::metrics::{Metrics, PairOutcome, Target};
use crate::protocol::{self, Extractor, ModelOutput, Protocol, Rewrite};
use crate::proxy::{error_chain, SHADOW_HEADER};
use crate::sampler::id_hash;
use crate::shadow::{ShadowLogSender, ShadowRecord, TargetOutcome};
use crate::upstream::Upstream;

/// One sampled request, as the mirror needs it.
pub struct ShadowJob {
    pub request_id: String,
    pub method: Method,
    /// Path and query as the client sent them.
    pub path: String,
    /// Already without hop-by-hop headers; credentials are removed here.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub received_at: SystemTime,
    pub self_similarity: bool,
    /// With `reuse_primary`: the primary's own answer, for the side it serves.
    pub primary_response: Option<oneshot::Receiver<Result<Bytes, String>>>,
    /// Closed when the primary's response head is in (or the primary failed): the
    /// shadow calls wait for it, at most [`PRIMARY_HEAD_WAIT`].
    pub primary_head: Option<oneshot::Receiver<()>>,
}

/// How long shadow calls wait for the primary's response head before they start anyway.
/// Waiting keeps the sidecar's work for the shadows out of the client's way: sent before
/// the primary answered, on a single-threaded runtime the two shadow sends delayed the
/// client's response (client p50 1.36x of unmirrored in the 50 ms-target bench row;
/// BENCHMARKS.md). A model slower than this gets its shadows started after this long,
/// so a sample is held at most this much longer than before.
pub const PRIMARY_HEAD_WAIT: Duration = Duration::from_millis(5);

/// One shadow target.
pub struct ShadowTarget {
    /// Keep-alive connections to the target.
    pub upstream: Upstream,
    pub version: Arc<str>,
}

/// Fixed labels written into every shadow record.
pub struct RecordLabels {
    pub model: Arc<str>,
    pub pod: Arc<str>,
    pub sample_rate: f32,
    pub store_inputs: bool,
    pub store_embeddings: bool,
}

/// The mirror: clients, targets, parsing and where results go.
pub struct Mirror {
    pub baseline: ShadowTarget,
    pub canary: ShadowTarget,
    /// A second pool of connections to the baseline for the self-similarity call, so the
    /// repeat goes over another connection and cannot ride in the same server-side batch
    /// as the first.
    pub self_upstream: Upstream,
    pub protocol: Protocol,
    pub extractor: Extractor,
    pub rewrite: Option<Rewrite>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub forward_credentials: bool,
    pub strip_headers: Vec<HeaderName>,
    pub request_id_header: HeaderName,
    pub metrics: Arc<Metrics>,
    pub drift: Arc<Mutex<DriftState>>,
    pub feedback: Arc<crate::feedback::Feedback>,
    pub log: Option<ShadowLogSender>,
    pub labels: RecordLabels,
    /// The side whose version this pod serves, when `reuse_primary` is on: its answer is
    /// the primary's, and it is not called.
    pub reuse: Option<Target>,
}

/// What one shadow call produced.
struct CallResult {
    outcome: TargetOutcome,
    latency: Duration,
    output: Option<ModelOutput>,
}

impl Mirror {
    /// Run one comparison; the permit is held until it is fully accounted for.
    pub async fn run(self: Arc<Self>, mut job: ShadowJob, permit: OwnedSemaphorePermit) {
        self.metrics.shadow.in_flight.inc();
        if let Some(head) = job.primary_head.take() {
            let _ = tokio::time::timeout(PRIMARY_HEAD_WAIT, head).await;
        }
        let primary = job.primary_response.take();
        self.compare_job(&job, primary).await;
        self.metrics.shadow.in_flight.dec();
        drop(permit);
    }

    async fn compare_job(
        &self,
        job: &ShadowJob,
        primary: Option<oneshot::Receiver<Result<Bytes, String>>>,
    ) {
        let (path, body) = match &self.rewrite {
            Some(rw) => match protocol::rewrite_request(self.protocol, rw, &job.body) {
                Ok(b) => (rw.path.clone(), Bytes::from(b)),
                Err(e) => {
                    // The input is not one the rewrite understands: nothing to compare.
                    tracing::debug!(request_id = %job.request_id, error = %e, "rewrite failed");
                    self.account(job, None, None, PairOutcome::Invalid, None);
                    return;
                }
            },
            None => (job.path.clone(), job.body.clone()),
        };
        let headers = self.shadow_headers(job);
        let (b_primary, c_primary) = match self.reuse {
            Some(Target::Baseline) => (primary, None),
            Some(Target::Canary) => (None, primary),
            None => (None, None),
        };
        let (mut b, mut c) = tokio::join!(
            self.side(
                Target::Baseline,
                &self.baseline,
                job,
                &path,
                &headers,
                body.clone(),
                b_primary
            ),
            self.side(
                Target::Canary,
                &self.canary,
                job,
                &path,
                &headers,
                body.clone(),
                c_primary
            ),
        );

        let mut comparison = None;
        let outcome = match (&b.output, &c.output) {
            (Some(bo), Some(co)) => match compare::compare(&bo.embedding, &co.embedding) {
                Ok(cmp) => {
                    comparison = Some(cmp);
                    PairOutcome::Compared
                }
                Err(e) => {
                    match e {
                        CompareError::NonFinite(Side::Baseline)
                        | CompareError::ZeroVector(Side::Baseline) => {
                            b.outcome = TargetOutcome::InvalidEmbedding
                        }
                        CompareError::NonFinite(Side::Canary)
                        | CompareError::ZeroVector(Side::Canary) => {
                            c.outcome = TargetOutcome::InvalidEmbedding
                        }
                        CompareError::Empty | CompareError::DimensionMismatch { .. } => {}
                    }
                    tracing::debug!(request_id = %job.request_id, error = %e, "pair not comparable");
                    PairOutcome::Invalid
                }
            },
            _ => pair_outcome(b.outcome, c.outcome),
        };
        self.metrics
            .shadow
            .outcome(Target::Baseline, b.outcome)
            .inc();
        self.metrics.shadow.outcome(Target::Canary, c.outcome).inc();

        if let Some(cmp) = comparison {
            let agree = match (&b.output, &c.output) {
                (Some(bo), Some(co)) => match (&bo.prediction, &co.prediction) {
                    (Some(bp), Some(cp)) => Some(compare::predictions_agree(bp, cp)),
                    _ => None,
                },
                _ => None,
            };
            self.metrics.drift.observe_cosine(cmp.cosine);
            let now = Instant::now();
            if let Ok(mut d) = self.drift.lock() {
                d.record(now, cmp.cosine, cmp.canary_norm / cmp.baseline_norm, agree);
            }
            if job.self_similarity {
                self.self_similarity(job, &path, &headers, body, &b).await;
            }
        }
        self.account(job, Some(&b), Some(&c), outcome, comparison);
    }

    /// Call the baseline a second time with the same input and record its self-distance.
    async fn self_similarity(
        &self,
        job: &ShadowJob,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        first: &CallResult,
    ) {
        let again = self
            .call(
                &self.self_upstream,
                Target::Baseline,
                job,
                path,
                headers,
                body,
            )
            .await;
        let (Some(a), Some(b)) = (&first.output, &again.output) else {
            return;
        };
        if let Ok(cmp) = compare::compare(&a.embedding, &b.embedding) {
            self.metrics
                .drift
                .self_distance
                .observe((1.0 - cmp.cosine).max(0.0));
            if let Ok(mut d) = self.drift.lock() {
                d.record_self(Instant::now(), cmp.cosine);
            }
        }
    }

    /// Count the pair and write its shadow record.
    fn account(
        &self,
        job: &ShadowJob,
        b: Option<&CallResult>,
        c: Option<&CallResult>,
        outcome: PairOutcome,
        comparison: Option<compare::Comparison>,
    ) {
        self.metrics.drift.pair(outcome).inc();
        let prediction = |r: Option<&CallResult>| {
            r.and_then(|r| r.output.as_ref())
                .and_then(|o| o.prediction.clone())
        };
        let (bp, cp) = (prediction(b), prediction(c));
        if bp.is_some() || cp.is_some() {
            self.feedback
                .predictions(&job.request_id, vec![(bp, cp)], Instant::now());
        }
        let Some(log) = &self.log else { return };
        let l = &self.labels;
        let embedding = |r: Option<&CallResult>| {
            if l.store_embeddings {
                r.and_then(|r| r.output.as_ref())
                    .map(|o| o.embedding.clone())
            } else {
                None
            }
        };
        let record = ShadowRecord {
            request_id: job.request_id.clone(),
            ts_micros: job
                .received_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0),
            model: l.model.clone(),
            pod: l.pod.clone(),
            baseline_version: self.baseline.version.clone(),
            canary_version: self.canary.version.clone(),
            input_hash: format!("{:016x}", id_hash(&job.body, 0)),
            input: l
                .store_inputs
                .then(|| String::from_utf8_lossy(&job.body).into_owned()),
            baseline_prediction: prediction(b),
            canary_prediction: prediction(c),
            cosine_similarity: comparison.map(|c| c.cosine as f32),
            baseline_norm: comparison.map(|c| c.baseline_norm as f32),
            canary_norm: comparison.map(|c| c.canary_norm as f32),
            baseline_latency_ms: b.map(|r| r.latency.as_secs_f32() * 1000.0),
            canary_latency_ms: c.map(|r| r.latency.as_secs_f32() * 1000.0),
            baseline_outcome: b
                .map(|r| r.outcome)
                .unwrap_or(TargetOutcome::InvalidEmbedding),
            canary_outcome: c
                .map(|r| r.outcome)
                .unwrap_or(TargetOutcome::InvalidEmbedding),
            sample_rate: l.sample_rate,
            baseline_embedding: embedding(b),
            canary_embedding: embedding(c),
        };
        // A full queue is counted by the shadow log itself.
        let _ = log.try_log(record);
    }

    /// Headers for shadow calls: the client's, minus credentials (unless configured) and
    /// configured sensitive headers, plus the shadow marker.
    fn shadow_headers(&self, job: &ShadowJob) -> HeaderMap {
        let mut h = job.headers.clone();
        if !self.forward_credentials {
            h.remove(header::AUTHORIZATION);
            h.remove(header::COOKIE);
        }
        for name in &self.strip_headers {
            h.remove(name);
        }
        if self.rewrite.is_some() {
            h.remove(header::CONTENT_LENGTH);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        h.insert(
            HeaderName::from_static(SHADOW_HEADER),
            HeaderValue::from_static("1"),
        );
        if let Ok(v) = HeaderValue::from_str(&job.request_id) {
            h.insert(self.request_id_header.clone(), v);
        }
        h
    }

    /// One side of the pair: the primary's own answer when it is reused, else a call.
    #[allow(clippy::too_many_arguments)]
    async fn side(
        &self,
        which: Target,
        target: &ShadowTarget,
        job: &ShadowJob,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        primary: Option<oneshot::Receiver<Result<Bytes, String>>>,
    ) -> CallResult {
        match primary {
            Some(rx) => self.primary_answer(which, job, rx).await,
            None => {
                self.call(&target.upstream, which, job, path, headers, body)
                    .await
            }
        }
    }

    /// The primary's own answer as one side of the pair.
    async fn primary_answer(
        &self,
        which: Target,
        job: &ShadowJob,
        rx: oneshot::Receiver<Result<Bytes, String>>,
    ) -> CallResult {
        let started = Instant::now();
        let waited = tokio::time::timeout(self.timeout, rx).await;
        let latency = job
            .received_at
            .elapsed()
            .unwrap_or_else(|_| started.elapsed());
        self.metrics
            .shadow
            .duration(which)
            .observe(latency.as_secs_f64());
        let (outcome, output) = match waited {
            Err(_) => (TargetOutcome::Timeout, None),
            Ok(Err(_)) => (TargetOutcome::Error, None),
            Ok(Ok(Err(why))) => {
                tracing::debug!(request_id = %job.request_id, target = which.as_str(), error = %why, "primary answer unusable");
                (TargetOutcome::Error, None)
            }
            Ok(Ok(Ok(bytes))) => self.parse(which, job, &bytes),
        };
        CallResult {
            outcome,
            latency,
            output,
        }
    }

    fn parse(
        &self,
        which: Target,
        job: &ShadowJob,
        bytes: &[u8],
    ) -> (TargetOutcome, Option<ModelOutput>) {
        match self.extractor.parse(bytes) {
            Ok(out) => (TargetOutcome::Ok, Some(out)),
            Err(e) => {
                tracing::debug!(request_id = %job.request_id, target = which.as_str(), error = %e, "bad model output");
                (TargetOutcome::InvalidEmbedding, None)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        upstream: &Upstream,
        which: Target,
        job: &ShadowJob,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> CallResult {
        let started = Instant::now();
        let Ok(uri) = path.parse::<Uri>() else {
            return CallResult {
                outcome: TargetOutcome::Error,
                latency: Duration::ZERO,
                output: None,
            };
        };
        let method = if self.rewrite.is_some() {
            Method::POST
        } else {
            job.method.clone()
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers.clone();

        let max = self.max_response_bytes;
        let exchange = async {
            let resp = upstream
                .send(req)
                .await
                .map_err(|e| CallError::Transport(error_chain(&e)))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(CallError::Status(status.as_u16()));
            }
            Ok(bytes)
        };
        let result = tokio::time::timeout(self.timeout, exchange).await;
        let latency = started.elapsed();
        self.metrics
            .shadow
            .duration(which)
            .observe(latency.as_secs_f64());
        let (outcome, output) = match result {
            Err(_) => (TargetOutcome::Timeout, None),
            Ok(Err(e)) => {
                tracing::debug!(request_id = %job.request_id, target = which.as_str(), error = %e, "shadow call failed");
                (TargetOutcome::Error, None)
            }
            Ok(Ok(bytes)) => self.parse(which, job, &bytes),
        };
        CallResult {
            outcome,
            latency,
            output,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {0}")]
    Status(u16),
}

/// The pair outcome when at least one side failed. A timeout on either side is a
/// timeout; otherwise the baseline's failure is named before the canary's.
fn pair_outcome(b: TargetOutcome, c: TargetOutcome) -> PairOutcome {
    use TargetOutcome::*;
    match (b, c) {
        (Timeout, _) | (_, Timeout) => PairOutcome::Timeout,
        (InvalidEmbedding, _) | (_, InvalidEmbedding) => PairOutcome::Invalid,
        (Error, _) => PairOutcome::BaselineError,
        (_, Error) => PairOutcome::CanaryError,
        (Ok, Ok) => PairOutcome::Compared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_outcomes_name_the_failing_side() {
        use TargetOutcome::*;
        assert_eq!(pair_outcome(Error, Ok), PairOutcome::BaselineError);
        assert_eq!(pair_outcome(Ok, Error), PairOutcome::CanaryError);
        assert_eq!(pair_outcome(Error, Timeout), PairOutcome::Timeout);
        assert_eq!(pair_outcome(Ok, InvalidEmbedding), PairOutcome::Invalid);
    }
}
