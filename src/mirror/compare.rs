//! One mirrored request's comparison: both answers judged item by item, the pairs
//! recorded in the drift statistics, the slices and the shadow log, and counted last.

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderMap;
use tokio::sync::oneshot;

use super::call::CallResult;
use super::call::Route;
use super::{Mirror, ShadowJob, Wire};
use crate::compare::{self, CompareError, Side};
use crate::ids::id_hash;
use crate::metrics::{InvalidReason, PairOutcome, Target};
use crate::protocol::{self, ModelOutput, RequestItems};
use crate::shadow_log::{ShadowRecord, TargetOutcome};
use crate::slices::{PairRef, Slicer};

/// Pairs of a request to count under `model_embedding_pairs_total` (and, when invalid,
/// `model_embedding_invalid_pairs_total`).
#[derive(Debug, Clone, Copy)]
enum PairCount {
    Pairs(PairOutcome, u64),
    Invalid(InvalidReason, u64),
}

/// One item of a mirrored request: each side's outcome for it, and the comparison when
/// both gave a usable embedding.
#[derive(Debug, Clone, Copy)]
struct ItemResult {
    baseline: TargetOutcome,
    canary: TargetOutcome,
    comparison: Option<compare::Comparison>,
}

impl ItemResult {
    fn failed(baseline: TargetOutcome, canary: TargetOutcome) -> Self {
        Self {
            baseline,
            canary,
            comparison: None,
        }
    }

    fn set_invalid(&mut self, side: Side) {
        match side {
            Side::Baseline => self.baseline = TargetOutcome::InvalidEmbedding,
            Side::Canary => self.canary = TargetOutcome::InvalidEmbedding,
        }
    }
}

impl Mirror {
    pub(super) async fn compare_job(
        &self,
        job: &ShadowJob,
        primary: Option<oneshot::Receiver<Result<Bytes, String>>>,
        self_similarity: bool,
    ) {
        let rewrite = self.rewrite.as_ref().filter(|_| job.wire == Wire::Http1);
        let (path, body) = match rewrite {
            Some(rw) => match protocol::rewrite_request(self.protocol, rw, &job.body) {
                Ok(b) => (rw.path.clone(), Bytes::from(b)),
                Err(e) => {
                    // The input is not one the rewrite understands: nothing to compare.
                    tracing::debug!(request_id = %job.request_id, error = %e, "rewrite failed");
                    self.metrics.drift.invalid(InvalidReason::Rewrite, 1);
                    return;
                }
            },
            None => (job.path.clone(), job.body.clone()),
        };
        let inputs = match job.wire {
            Wire::Http1 => protocol::request_items(self.protocol, &body),
            Wire::Grpc(p) => self
                .grpc
                .as_ref()
                .and_then(|g| g.decoder(p))
                .and_then(|d| d.request(&body))
                .unwrap_or_default(),
        };
        match inputs.count {
            Some(0) => {
                self.metrics.drift.invalid(InvalidReason::EmptyBatch, 1);
                return;
            }
            Some(n) if n > self.max_batch_items => {
                tracing::debug!(request_id = %job.request_id, items = n, max = self.max_batch_items, "batch not mirrored: too many items");
                self.metrics
                    .drift
                    .invalid(InvalidReason::TooManyItems, n as u64);
                return;
            }
            _ => {}
        }
        let timeout = self.timeout_for(inputs.count.unwrap_or(1));
        let headers = self.shadow_headers(job);
        let (b_primary, c_primary) = match self.reuse {
            Some(Target::Baseline) => (primary, None),
            Some(Target::Canary) => (None, primary),
            None => (None, None),
        };
        let (mut b, mut c) = tokio::join!(
            self.side(
                Target::Baseline,
                job,
                &path,
                &headers,
                body.clone(),
                b_primary,
                timeout,
            ),
            self.side(
                Target::Canary,
                job,
                &path,
                &headers,
                body.clone(),
                c_primary,
                timeout,
            ),
        );

        let mut counts = Vec::new();
        let items = self.judge(job, &inputs, &mut b, &mut c, &mut counts);
        self.metrics
            .shadow
            .outcome(self.protocol_index(job.wire), Target::Baseline, b.outcome)
            .inc();
        self.metrics
            .shadow
            .outcome(self.protocol_index(job.wire), Target::Canary, c.outcome)
            .inc();
        self.metrics.shadow.batch_items.observe(items.len() as f64);

        let compared: Vec<(usize, f64)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| it.comparison.map(|cmp| (i, cmp.cosine)))
            .collect();
        // Both sides timed on the same input: one latency pair per request (the primary's
        // own answer, with reuse_primary, was not timed as a shadow call).
        let timed = self.reuse.is_none()
            && b.outcome == TargetOutcome::Ok
            && c.outcome == TargetOutcome::Ok;
        if timed && compared.is_empty() {
            if let Ok(mut d) = self.drift.lock() {
                d.record_latency(Instant::now(), b.latency, c.latency);
            }
        }
        if !compared.is_empty() {
            let (bo, co) = (b.output.as_ref(), c.output.as_ref());
            let now = Instant::now();
            if let Ok(mut d) = self.drift.lock() {
                if timed {
                    d.record_latency(now, b.latency, c.latency);
                }
                for (i, it) in items.iter().enumerate() {
                    let Some(cmp) = it.comparison else { continue };
                    let agree = match (
                        bo.and_then(|o| o.prediction(i)),
                        co.and_then(|o| o.prediction(i)),
                    ) {
                        (Some(bp), Some(cp)) => Some(compare::predictions_agree(bp, cp)),
                        _ => None,
                    };
                    d.record(now, cmp.cosine, cmp.canary_norm / cmp.baseline_norm, agree);
                }
            }
            for &(_, cosine) in &compared {
                self.metrics.drift.observe_cosine(cosine);
            }
            if let (Some(slicer), Some(bo)) = (&self.slicer, b.output.as_ref()) {
                self.record_slices(slicer, job, &inputs, &body, bo, &compared);
            }
            if self_similarity {
                self.self_similarity(job, &path, &headers, body, &b, &compared, timeout)
                    .await;
            }
        }
        self.account(job, &inputs, &b, &c, &items);
        // Last: a pair counted means its request is fully accounted for (drift, slices,
        // self-similarity, shadow log), which tests and the demo wait on.
        for count in counts {
            match count {
                PairCount::Pairs(outcome, n) => self.metrics.drift.pair(outcome).inc_by(n),
                PairCount::Invalid(reason, n) => self.metrics.drift.invalid(reason, n),
            }
        }
    }

    /// Puts every compared item into its slices: the item's own input picks the length
    /// slice, the request's field (from the body the client sent) the field slice, the
    /// baseline's embedding the region.
    fn record_slices(
        &self,
        slicer: &Slicer,
        job: &ShadowJob,
        inputs: &RequestItems,
        body: &[u8],
        baseline: &ModelOutput,
        compared: &[(usize, f64)],
    ) {
        let field = slicer
            .wants_field()
            .then(|| slicer.field_value(&job.headers, &job.body))
            .flatten();
        let input = |i: usize| {
            inputs
                .input(i)
                .map(str::as_bytes)
                .or_else(|| inputs.count.is_none().then_some(body))
        };
        if let Ok(mut stats) = self.slice_stats.lock() {
            for &(i, cosine) in compared {
                let set = slicer.assign(input(i), field.as_deref(), baseline.embedding(i));
                stats.record(
                    set,
                    &PairRef {
                        cosine,
                        request_id: &job.request_id,
                        item: i as u32,
                        input: if self.labels.store_inputs {
                            input(i)
                        } else {
                            None
                        },
                    },
                );
            }
        }
    }

    /// Turns two answers into one outcome per item, and counts each item's pair.
    /// The pair counts go to `counts`, counted once everything else of the request is
    /// done ([`PairCount`]).
    fn judge(
        &self,
        job: &ShadowJob,
        inputs: &RequestItems,
        b: &mut CallResult,
        c: &mut CallResult,
        counts: &mut Vec<PairCount>,
    ) -> Vec<ItemResult> {
        let (bo, co) = match (&b.output, &c.output) {
            (Some(bo), Some(co)) => (bo, co),
            _ => {
                // At least one side gave nothing: every item shares its fate.
                let n = inputs
                    .count
                    .or(b.output.as_ref().map(ModelOutput::items))
                    .or(c.output.as_ref().map(ModelOutput::items))
                    .unwrap_or(1);
                let outcome = pair_outcome(b.outcome, c.outcome);
                if outcome == PairOutcome::Invalid {
                    counts.push(PairCount::Invalid(InvalidReason::BadAnswer, n as u64));
                } else {
                    counts.push(PairCount::Pairs(outcome, n as u64));
                }
                return vec![ItemResult::failed(b.outcome, c.outcome); n];
            }
        };
        let (nb, nc) = (bo.items(), co.items());
        let mismatch = if nb != nc {
            Some(InvalidReason::ItemCount)
        } else if inputs.count.is_some_and(|n| n != nb) {
            Some(InvalidReason::InputCount)
        } else {
            None
        };
        if let Some(reason) = mismatch {
            tracing::debug!(request_id = %job.request_id, baseline_items = nb, canary_items = nc, request_items = ?inputs.count, "item counts differ");
            let n = inputs.count.unwrap_or(nb.max(nc));
            counts.push(PairCount::Invalid(reason, n as u64));
            return vec![ItemResult::failed(b.outcome, c.outcome); n];
        }
        let mut items = Vec::with_capacity(nb);
        let mut compared = 0u64;
        for i in 0..nb {
            let mut it = ItemResult::failed(TargetOutcome::Ok, TargetOutcome::Ok);
            match compare::compare(bo.embedding(i), co.embedding(i)) {
                Ok(cmp) => {
                    it.comparison = Some(cmp);
                    compared += 1;
                }
                Err(e) => {
                    let reason = match e {
                        CompareError::NonFinite(side) => {
                            it.set_invalid(side);
                            InvalidReason::NonFinite
                        }
                        CompareError::ZeroVector(side) => {
                            it.set_invalid(side);
                            InvalidReason::ZeroVector
                        }
                        CompareError::Empty | CompareError::DimensionMismatch { .. } => {
                            InvalidReason::Dimension
                        }
                    };
                    tracing::debug!(request_id = %job.request_id, item = i, error = %e, "pair not comparable");
                    counts.push(PairCount::Invalid(reason, 1));
                }
            }
            items.push(it);
        }
        counts.push(PairCount::Pairs(PairOutcome::Compared, compared));
        // A call whose answer holds an unusable item is reported as such.
        if items
            .iter()
            .any(|it| it.baseline == TargetOutcome::InvalidEmbedding)
        {
            b.outcome = TargetOutcome::InvalidEmbedding;
        }
        if items
            .iter()
            .any(|it| it.canary == TargetOutcome::InvalidEmbedding)
        {
            c.outcome = TargetOutcome::InvalidEmbedding;
        }
        items
    }

    /// Call the baseline a second time with the same input and record its self-distance
    /// for every item that was compared.
    #[allow(clippy::too_many_arguments)]
    async fn self_similarity(
        &self,
        job: &ShadowJob,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        first: &CallResult,
        compared: &[(usize, f64)],
        timeout: Duration,
    ) {
        let again = self
            .call(
                Route::Again,
                Target::Baseline,
                job,
                path,
                headers,
                body,
                timeout,
            )
            .await;
        let (Some(a), Some(b)) = (&first.output, &again.output) else {
            return;
        };
        if a.items() != b.items() {
            return;
        }
        // (cos(baseline, canary), cos(baseline, baseline')) per item: the noise-adjusted
        // bound pairs them (drift/ratio.rs).
        let pairs: Vec<(f64, f64)> = compared
            .iter()
            .filter_map(|&(i, cross)| {
                let again = compare::compare(a.embedding(i), b.embedding(i)).ok()?;
                Some((cross, again.cosine))
            })
            .collect();
        for &(_, cos) in &pairs {
            self.metrics
                .drift
                .self_distance
                .observe((1.0 - cos).max(0.0));
        }
        if let Ok(mut d) = self.drift.lock() {
            let now = Instant::now();
            for &(cross, cos) in &pairs {
                d.record_self_paired(now, cross, cos);
            }
        }
    }

    /// Hands the items' predictions to the online join and writes one shadow record
    /// per item.
    fn account(
        &self,
        job: &ShadowJob,
        inputs: &RequestItems,
        b: &CallResult,
        c: &CallResult,
        items: &[ItemResult],
    ) {
        let (bo, co) = (b.output.as_ref(), c.output.as_ref());
        let predictions_of = |o: Option<&ModelOutput>| o.is_some_and(|o| !o.predictions.is_empty());
        if self.feeds_labels && (predictions_of(bo) || predictions_of(co)) {
            let preds = (0..items.len())
                .map(|i| {
                    (
                        bo.and_then(|o| o.prediction(i)).map(str::to_owned),
                        co.and_then(|o| o.prediction(i)).map(str::to_owned),
                    )
                })
                .collect();
            self.feedback
                .predictions(&job.request_id, preds, Instant::now());
        }
        let Some(log) = &self.log else { return };
        let l = &self.labels;
        let ts_micros = job
            .received_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let body_hash = || format!("{:016x}", id_hash(&job.body, 0));
        let embedding = |o: Option<&ModelOutput>, i: usize| {
            if l.store_embeddings {
                o.map(|o| o.embedding(i).to_vec()).filter(|e| !e.is_empty())
            } else {
                None
            }
        };
        for (i, it) in items.iter().enumerate() {
            let input = inputs.input(i);
            let cmp = it.comparison;
            let record = ShadowRecord {
                request_id: job.request_id.clone(),
                item: i as u32,
                ts_micros,
                model: l.model.clone(),
                pod: l.pod.clone(),
                baseline_version: self.baseline.version.clone(),
                canary_version: self.canary.version.clone(),
                input_hash: input
                    .map(|t| format!("{:016x}", id_hash(t.as_bytes(), 0)))
                    .unwrap_or_else(body_hash),
                // A gRPC body is protobuf, not text: without the item's own input, none.
                input: l
                    .store_inputs
                    .then(|| match (input, job.wire) {
                        (Some(t), _) => Some(t.to_owned()),
                        (None, Wire::Http1) => {
                            Some(String::from_utf8_lossy(&job.body).into_owned())
                        }
                        (None, Wire::Grpc(_)) => None,
                    })
                    .flatten(),
                baseline_prediction: bo.and_then(|o| o.prediction(i)).map(str::to_owned),
                canary_prediction: co.and_then(|o| o.prediction(i)).map(str::to_owned),
                cosine_similarity: cmp.map(|c| c.cosine as f32),
                baseline_norm: cmp.map(|c| c.baseline_norm as f32),
                canary_norm: cmp.map(|c| c.canary_norm as f32),
                baseline_latency_ms: Some(b.latency.as_secs_f32() * 1000.0),
                canary_latency_ms: Some(c.latency.as_secs_f32() * 1000.0),
                baseline_outcome: it.baseline,
                canary_outcome: it.canary,
                sample_rate: l.sample_rate,
                baseline_embedding: embedding(bo, i),
                canary_embedding: embedding(co, i),
            };
            // A full queue is counted by the shadow log itself.
            let _ = log.try_log(record);
        }
    }
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
