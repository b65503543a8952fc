//! The primary path: forward each request to the model server in this pod, stream its
//! answer back unchanged, and offer each request to the mirror without ever waiting for
//! it. Protocol-neutral: a server module per wire protocol ([`http1`]) reads requests
//! off connections and hands them to [`Proxy::handle`].
//!
//! - [`http1`]: the proxy port's HTTP/1.1 server (crates/h1), its limits and refusals.
//! - [`h2`]: HTTP/2 with prior knowledge (h2c, gRPC) on the same port, served by hyper's
//!   HTTP/2 and passed through to the primary's HTTP/2 endpoint.
//! - `headers`: hop-by-hop headers, the declared length.
//! - `body`: the primary's answer on its way back (timing, token count, the copy for
//!   `reuse_primary`).
//! - `answer`: the answers the sidecar makes itself (413, 408, 400, 502, 504).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use h1::server::RequestBody;
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::feedback::Feedback;
use crate::metrics::Metrics;
use crate::mirror::{Head, Router, ShadowJob};
use crate::reference_monitor::ReferenceMonitor;
use crate::upstream::Upstream;

mod answer;
mod body;
pub mod h2;
mod headers;
pub mod http1;

pub use body::{MeteredBody, Tee};
pub use headers::strip_hop_by_hop;

/// Body of requests sent upstream: streamed through, or buffered when mirrored.
pub type UpstreamBody = Either<Limited<RequestBody>, Full<Bytes>>;
/// Body of responses to the client: the primary's, streamed, or one the sidecar made.
pub type ClientBody = Either<MeteredBody, Full<Bytes>>;

/// Everything the primary path needs, shared by all connections.
pub struct Proxy {
    primary: Uri,
    /// Keep-alive connections to the primary.
    upstream: Upstream,
    timeout: Duration,
    count_4xx_as_errors: bool,
    request_id_header: HeaderName,
    max_body_bytes: usize,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    /// Remembers served ids for labels and conversions posted later.
    feedback: Arc<Feedback>,
    /// Finds the generated-token count in responses (`metrics.tokens_field`).
    tokens_finder: memchr::memmem::Finder<'static>,
    /// `[reference]`: scores a sample of the primary's answers, off the client path.
    reference: Option<Arc<ReferenceMonitor>>,
}

impl Proxy {
    /// The primary path of `[primary]` (with `limits.max_body_bytes` and
    /// `metrics.tokens_field`), offering requests to the lanes of `router`.
    pub fn new(
        cfg: &Config,
        router: Arc<Router>,
        metrics: Arc<Metrics>,
        feedback: Arc<Feedback>,
        tls: Arc<rustls::ClientConfig>,
        reference: Option<Arc<ReferenceMonitor>>,
    ) -> Self {
        let checked = cfg.checked();
        Proxy {
            primary: checked.primary_url.clone(),
            upstream: Upstream::new(&checked.primary_url, 1024, tls),
            timeout: cfg.primary.timeout,
            count_4xx_as_errors: cfg.primary.count_4xx_as_errors,
            request_id_header: checked.request_id_header.clone(),
            max_body_bytes: cfg.limits.max_body_bytes,
            router,
            metrics,
            feedback,
            tokens_finder: memchr::memmem::Finder::new(cfg.metrics.tokens_field.as_bytes())
                .into_owned(),
            reference,
        }
    }

    /// The primary's base URL.
    pub fn primary(&self) -> &Uri {
        &self.primary
    }

    /// The routes and lanes this proxy offers requests to.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Handle one client request. Never fails: upstream problems become 502/504 answers.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<Response<ClientBody>, Infallible> {
        let started = Instant::now();
        let received_at = SystemTime::now();
        let (mut parts, body) = req.into_parts();

        // The client's id when it is printable ASCII, else a new UUIDv7. The header value
        // shares the parsed request's buffer: no copy on the common path.
        let id_value = match parts.headers.get(&self.request_id_header) {
            Some(v) if !v.is_empty() && v.to_str().is_ok() => v.clone(),
            _ => crate::ids::new_request_id(received_at),
        };
        let request_id = id_value.to_str().unwrap_or("invalid");
        let feedback_key = self.feedback.prefetch(request_id);

        if let Some(len) = headers::content_length(&parts.headers) {
            if len > self.max_body_bytes as u64 {
                return Ok(self.local_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body over limits.max_body_bytes",
                    &id_value,
                ));
            }
        }

        // Stalled bodies (`limits.body_read_timeout`, enforced by the connection) are cut
        // on both paths, streamed and buffered, and both answer 408.
        let body = Limited::new(body, self.max_body_bytes);
        let mut shadow = None;
        let head = self.router.admit_head(
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            request_id,
            started,
        );
        let upstream_body = match head {
            Head::Pass => Either::Left(body),
            // The mirror needs the whole body; read it once, send the same bytes to all.
            Head::Lane(..) | Head::ReadBody => match body.collect().await {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    let lane = match head {
                        Head::Lane(lane, admission) => Some((lane, admission)),
                        _ => self.router.admit_body(&bytes, request_id, started),
                    };
                    shadow = lane.map(|(lane, admission)| (lane, admission, bytes.clone()));
                    Either::Right(Full::new(bytes))
                }
                Err(e) => {
                    // The admission is released before the answer goes out.
                    if let Head::Lane(lane, admission) = head {
                        lane.abandon(admission);
                    }
                    return Ok(self
                        .body_failed(&*e, request_id, &id_value)
                        .unwrap_or_else(|| {
                            self.local_response(
                                StatusCode::BAD_REQUEST,
                                "request body ended early",
                                &id_value,
                            )
                        }));
                }
            },
        };

        // Headers for the shadow copies are taken before the primary request consumes them.
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        parts
            .headers
            .insert(self.request_id_header.clone(), id_value.clone());
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // With reuse_primary, a copy of the primary's answer for the mirror.
        let mut tee = None;
        // Dropped when the primary's head is in or the request failed: the shadow calls
        // start then (`mirror::PRIMARY_HEAD_WAIT`).
        let mut head_tx = None;
        if let Some((lane, admission, bytes)) = shadow {
            let (tx, head_rx) = oneshot::channel::<()>();
            head_tx = Some(tx);
            let primary_response = lane.reuse.map(|_| {
                let (t, rx) = Tee::new(lane.max_response_bytes);
                tee = Some(t);
                rx
            });
            let job = ShadowJob {
                request_id: request_id.to_string(),
                method: parts.method.clone(),
                path: path_and_query.as_str().to_string(),
                headers: parts.headers.clone(),
                body: bytes,
                received_at,
                wire: crate::mirror::Wire::Http1,
                primary_response,
                primary_head: Some(head_rx),
            };
            lane.start(admission, job);
        }

        // `[reference]`: the same copy of the answer (or its own), scored once whole.
        // Handed over by the copy itself once the client has the whole answer.
        if let Some(monitor) = self.reference.as_ref().filter(|m| m.sampled(request_id)) {
            match tee.as_mut() {
                Some(t) => t.add_monitor(monitor.clone()),
                None => tee = Some(Tee::for_monitor(monitor.clone())),
            }
        }

        // Origin form (`/path?query`): the upstream adds the Host header.
        parts.uri = Uri::from(path_and_query);
        let upstream_req = Request::from_parts(parts, upstream_body);
        let m = &self.metrics.primary;
        // From the request's arrival, which is already on hand: no extra clock read.
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let result = tokio::time::timeout_at(deadline, self.upstream.send(upstream_req)).await;
        drop(head_tx);
        m.requests.inc();
        match result {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                let status = parts.status;
                if status.is_server_error()
                    || (self.count_4xx_as_errors && status.is_client_error())
                {
                    m.errors.inc();
                }
                if status.is_success() {
                    self.feedback.served_key(feedback_key, started);
                } else if let Some(t) = tee.as_mut() {
                    t.fail(format!("primary answered HTTP {}", status.as_u16()));
                }
                strip_hop_by_hop(&mut parts.headers);
                parts
                    .headers
                    .insert(self.request_id_header.clone(), id_value.clone());
                let body = MeteredBody::new(body, started, self.clone(), tee);
                Ok(Response::from_parts(parts, Either::Left(body)))
            }
            Ok(Err(e)) => {
                // The client's faults, not the primary's: no error counted, no 502.
                if let Some(resp) = self.body_failed(&e, request_id, &id_value) {
                    return Ok(resp);
                }
                m.errors.inc();
                m.duration_for(None)
                    .observe(started.elapsed().as_secs_f64());
                tracing::warn!(request_id = %request_id, error = %crate::upstream::error_chain(&e), "primary request failed");
                let why = format!(
                    "primary {} unavailable: {}",
                    self.primary,
                    answer::short_reason(&e)
                );
                Ok(self.local_response(StatusCode::BAD_GATEWAY, &why, &id_value))
            }
            Err(_) => {
                m.errors.inc();
                m.duration_for(None)
                    .observe(started.elapsed().as_secs_f64());
                let why = format!(
                    "primary {} did not answer within {:?}",
                    self.primary, self.timeout
                );
                Ok(self.local_response(StatusCode::GATEWAY_TIMEOUT, &why, &id_value))
            }
        }
    }
}
