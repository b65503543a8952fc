//! The calls to baseline and canary (or the primary's own answer, with
//! `reuse_primary`), each bounded by the request's shadow timeout, and the parse of
//! their answers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::oneshot;

use super::{Mirror, ShadowJob, ShadowTarget, SHADOW_HEADER};
use crate::metrics::Target;
use crate::protocol::ModelOutput;
use crate::shadow_log::TargetOutcome;
use crate::upstream::{error_chain, Upstream};

/// What one shadow call produced.
pub(super) struct CallResult {
    pub(super) outcome: TargetOutcome,
    pub(super) latency: Duration,
    pub(super) output: Option<ModelOutput>,
}

impl Mirror {
    /// Headers for shadow calls: the client's, minus credentials (unless configured) and
    /// configured sensitive headers, plus the shadow marker.
    pub(super) fn shadow_headers(&self, job: &ShadowJob) -> HeaderMap {
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
    pub(super) async fn side(
        &self,
        which: Target,
        target: &ShadowTarget,
        job: &ShadowJob,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        primary: Option<oneshot::Receiver<Result<Bytes, String>>>,
        timeout: Duration,
    ) -> CallResult {
        match primary {
            Some(rx) => self.primary_answer(which, job, rx, timeout).await,
            None => {
                self.call(&target.upstream, which, job, path, headers, body, timeout)
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
        timeout: Duration,
    ) -> CallResult {
        let started = Instant::now();
        let waited = tokio::time::timeout(timeout, rx).await;
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
    pub(super) async fn call(
        &self,
        upstream: &Upstream,
        which: Target,
        job: &ShadowJob,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
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
        let result = tokio::time::timeout(timeout, exchange).await;
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
