//! The calls to baseline and canary (or the primary's own answer, with
//! `reuse_primary`), each bounded by the request's shadow timeout, and the parse of
//! their answers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::oneshot;

use super::{Mirror, ShadowJob, Wire};
use crate::grpc::grpc_status;
use crate::metrics::Target;
use crate::protocol::ModelOutput;
use crate::shadow_log::TargetOutcome;
use crate::upstream::h2::{UnaryAnswer, UnaryUpstream};
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
        if self.rewrite.is_some() && job.wire == Wire::Http1 {
            h.remove(header::CONTENT_LENGTH);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        h.insert(self.shadow_header.clone(), HeaderValue::from_static("1"));
        if let Ok(mut v) = HeaderValue::from_str(&job.request_id) {
            // Never indexed by HPACK on HTTP/2: a new value on every call.
            v.set_sensitive(true);
            h.insert(self.request_id_header.clone(), v);
        }
        h
    }

    /// One side of the pair: the primary's own answer when it is reused, else a call.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn side(
        &self,
        which: Target,
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
                self.call(Route::First, which, job, path, headers, body, timeout)
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
            .duration(self.protocol_index(job.wire), which)
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
        bytes: &Bytes,
    ) -> (TargetOutcome, Option<ModelOutput>) {
        let parsed = match job.wire {
            Wire::Http1 => self.extractor.parse(bytes).map_err(|e| e.to_string()),
            Wire::Grpc(protocol) => match self.grpc.as_ref().and_then(|g| g.decoder(protocol)) {
                // The answer's own buffer: no copy.
                Some(decoder) => decoder.decode(bytes).map_err(|e| e.to_string()),
                None => Err(format!("no decoder for {protocol}")),
            },
        };
        match parsed {
            Ok(out) => (TargetOutcome::Ok, Some(out)),
            Err(e) => {
                tracing::debug!(request_id = %job.request_id, target = which.as_str(), error = %e, "bad model output");
                (TargetOutcome::InvalidEmbedding, None)
            }
        }
    }

    /// One shadow call to `which` side, over HTTP/1.1 or HTTP/2 as the job's wire says.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call(
        &self,
        route: Route,
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
        let method = if self.rewrite.is_some() && job.wire == Wire::Http1 {
            Method::POST
        } else {
            job.method.clone()
        };
        let max = self.max_response_bytes;
        let exchange = async {
            match job.wire {
                Wire::Http1 => {
                    let upstream = self.http1_upstream(route, which);
                    let mut req = Request::new(Full::new(body));
                    *req.method_mut() = method;
                    *req.uri_mut() = uri;
                    *req.headers_mut() = headers.clone();
                    http1_exchange(upstream, req, max).await
                }
                Wire::Grpc(_) => {
                    let upstream = self
                        .grpc_upstream(route, which)
                        .ok_or_else(|| CallError::Transport("no HTTP/2 target".into()))?;
                    let path = uri
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/"));
                    let answer = upstream
                        .call(method, path, headers.clone(), body, max)
                        .await
                        .map_err(|e| CallError::Transport(error_chain(&e)))?;
                    grpc_answer(answer)
                }
            }
        };
        let result = tokio::time::timeout(timeout, exchange).await;
        let latency = started.elapsed();
        self.metrics
            .shadow
            .duration(self.protocol_index(job.wire), which)
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

/// Which connection pool of a side a call goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// The side's own.
    First,
    /// The baseline's second pool, for the self-similarity repeat.
    Again,
}

impl Mirror {
    fn http1_upstream(&self, route: Route, which: Target) -> &Upstream {
        match (route, which) {
            (Route::Again, _) => &self.self_upstream,
            (Route::First, Target::Baseline) => &self.baseline.upstream,
            (Route::First, Target::Canary) => &self.canary.upstream,
        }
    }

    fn grpc_upstream(&self, route: Route, which: Target) -> Option<&UnaryUpstream> {
        let g = self.grpc.as_ref()?;
        Some(match (route, which) {
            (Route::Again, _) => &g.again,
            (Route::First, Target::Baseline) => &g.baseline,
            (Route::First, Target::Canary) => &g.canary,
        })
    }
}

/// Send over HTTP/1.1 and read the whole answer (at most `max` bytes); a status other
/// than 2xx is a failed call.
async fn http1_exchange(
    upstream: &Upstream,
    req: Request<Full<Bytes>>,
    max: usize,
) -> Result<Bytes, CallError> {
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
}

/// A unary gRPC call's answer: a failed call unless HTTP says 200 and `grpc-status` (in
/// the trailers, or in the head of a trailers-only answer) says 0.
fn grpc_answer(answer: UnaryAnswer) -> Result<Bytes, CallError> {
    if answer.status != http::StatusCode::OK {
        return Err(CallError::Status(answer.status.as_u16()));
    }
    match grpc_status(&answer.headers).or_else(|| answer.trailers.as_ref().and_then(grpc_status)) {
        Some(0) => Ok(answer.body),
        Some(code) => Err(CallError::Grpc(code)),
        None => Err(CallError::Transport(
            "gRPC answer without grpc-status".into(),
        )),
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("grpc-status {0}")]
    Grpc(u32),
}
