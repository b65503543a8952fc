//! The proxy port's HTTP/2 server module: connections that open with the HTTP/2 preface
//! (h2c, prior knowledge; `h1::server::Server::with_h2` detects it) are served by
//! hyper's HTTP/2 (the h2 crate) and every stream is forwarded to the primary's HTTP/2
//! endpoint (`primary.http2_url`), as gRPC model servers listen on a port of their own.
//!
//! Pass-through is exact: messages, headers and trailers (`grpc-status`, `grpc-message`,
//! `-bin` metadata) are streamed both ways frame by frame under HTTP/2 flow control,
//! unary and streaming alike; `grpc-timeout` reaches the primary unchanged; a client's
//! `RST_STREAM` drops the primary's stream, which resets it there too. The sidecar adds
//! only the request id (`primary.request_id_header`). A primary that cannot be reached
//! or does not answer within `primary.timeout` gives a gRPC client `UNAVAILABLE` or
//! `DEADLINE_EXCEEDED` (a trailers-only answer), anyone else `502` or `504`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::grpc::{grpc_status, GrpcProtocol, GRPC_MESSAGE, GRPC_STATUS, GRPC_TIMEOUT};
use crate::metrics::Metrics;
use crate::mirror::{Mirror, ShadowJob, Wire};
use crate::reference_monitor::{Answer, ReferenceMonitor};
use crate::upstream::error_chain;
use crate::upstream::gather;
use crate::upstream::h2::{H2Upstream, PrimaryBody, RecvBody};

/// Body of a stream's answer: the primary's, passed through, or none (an answer the
/// sidecar made, all in its head).
pub type H2ClientBody = Either<MeteredStream, Empty<Bytes>>;

/// gRPC status codes the sidecar answers with itself.
const GRPC_UNAVAILABLE: u32 = 14;
const GRPC_DEADLINE_EXCEEDED: u32 = 4;

/// gRPC status for a request message over `limits.max_body_bytes`.
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;
/// gRPC status for a request whose stream failed before its message was whole.
const GRPC_CANCELLED: u32 = 1;

/// The HTTP/2 primary path, shared by all HTTP/2 connections.
pub struct H2Proxy {
    primary: H2Upstream,
    timeout: Duration,
    request_id_header: HeaderName,
    max_body_bytes: usize,
    mirror: Arc<Mirror>,
    /// The gRPC methods whose unary calls are offered to the mirror.
    mirrored: Vec<GrpcProtocol>,
    metrics: Arc<Metrics>,
    /// `[reference]`: a sample of the answers of `shadow.grpc_methods` (mirrored or not)
    /// is copied and scored.
    reference: Option<Arc<ReferenceMonitor>>,
    scored: Vec<GrpcProtocol>,
}

impl H2Proxy {
    /// `None` when `primary.http2_url` is not set: the proxy port then speaks HTTP/1.1
    /// only, and an HTTP/2 preface is refused as a bad HTTP/1.1 head.
    pub fn new(
        cfg: &Config,
        mirror: Arc<Mirror>,
        metrics: Arc<Metrics>,
        tls: &Arc<rustls::ClientConfig>,
        reference: Option<Arc<ReferenceMonitor>>,
    ) -> Option<Self> {
        let url = cfg.checked().primary_http2_url.as_ref()?;
        Some(H2Proxy {
            primary: H2Upstream::new(url, tls),
            timeout: cfg.primary.timeout,
            request_id_header: cfg.checked().request_id_header.clone(),
            max_body_bytes: cfg.limits.max_body_bytes,
            mirrored: mirror.grpc_methods().collect(),
            mirror,
            metrics,
            scored: cfg
                .shadow
                .grpc_methods
                .iter()
                .filter_map(|m| GrpcProtocol::from_method_path(m))
                .collect(),
            reference,
        })
    }

    /// The handler the HTTP/1.1 server hands HTTP/2 connections to.
    pub fn into_handler(self) -> h1::server::H2Handler {
        let proxy = Arc::new(self);
        Arc::new(move |stream, stop| {
            let proxy = proxy.clone();
            Box::pin(serve_connection(proxy, stream, stop))
        })
    }

    /// Forward one stream. Never fails: upstream problems become answers.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<H2ClientBody> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let mut id_value = match parts.headers.get(&self.request_id_header) {
            Some(v) if !v.is_empty() && v.to_str().is_ok() => v.clone(),
            _ => crate::ids::new_request_id(SystemTime::now()),
        };
        // A new value on every call: HPACK sends it as a literal never indexed, so it
        // does not churn the connections' header tables (and is not searched for there).
        id_value.set_sensitive(true);
        let request_id = id_value.to_str().unwrap_or("invalid").to_string();
        let grpc = is_grpc(&parts.headers);
        // The client's deadline, when it is sooner than primary.timeout.
        let limit = grpc_timeout(&parts.headers).map_or(self.timeout, |t| t.min(self.timeout));
        parts
            .headers
            .insert(self.request_id_header.clone(), id_value.clone());
        parts.headers.remove(header::HOST);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));

        // Unary calls of the mirrored methods: the one request message is read whole,
        // then sent on to the primary and to the mirror. Everything else streams through.
        let method = grpc
            .then(|| GrpcProtocol::from_method_path(path.path()))
            .flatten();
        // A call carrying `shadow.header` is a shadow copy already: never mirrored again.
        let protocol = method.filter(|p| {
            self.mirrored.contains(p) && !parts.headers.contains_key(&self.mirror.shadow_header)
        });
        // `[reference]`: this answer is copied as it streams to the client and scored
        // whole, off the client path.
        let scored = method.filter(|p| self.scored.contains(p)).and_then(|p| {
            let m = self.reference.as_ref().filter(|m| m.sampled(&request_id))?;
            Some(AnswerCopy {
                protocol: p,
                monitor: m.clone(),
                data: BytesMut::new(),
            })
        });
        let mut shadow = None;
        let upstream_body = match protocol.and_then(|p| {
            let admission = self
                .mirror
                .admit_eligible(Wire::Grpc(p), &request_id, started)?;
            Some((p, admission))
        }) {
            None => PrimaryBody::Stream(body),
            Some((protocol, admission)) => {
                match Limited::new(body, self.max_body_bytes).collect().await {
                    Ok(collected) => {
                        let bytes = collected.to_bytes();
                        shadow = Some((protocol, admission, bytes.clone()));
                        PrimaryBody::Whole(bytes)
                    }
                    Err(e) => {
                        self.mirror.abandon(admission);
                        let (status, code, why) = if e.is::<LengthLimitError>() {
                            (
                                StatusCode::PAYLOAD_TOO_LARGE,
                                GRPC_RESOURCE_EXHAUSTED,
                                "request message over limits.max_body_bytes",
                            )
                        } else {
                            (
                                StatusCode::BAD_REQUEST,
                                GRPC_CANCELLED,
                                "request stream ended before its message",
                            )
                        };
                        return self.local(grpc, status, code, why, id_value);
                    }
                }
            }
        };
        // Dropped when the primary's answer has gone to the client (or failed): the shadow
        // calls start then, at most `mirror::PRIMARY_HEAD_WAIT` after the call came in,
        // so they do not compete with a unary answer on its way out.
        let mut head_tx = None;
        if let Some((protocol, admission, bytes)) = shadow {
            let (tx, head_rx) = oneshot::channel::<()>();
            head_tx = Some(tx);
            let job = ShadowJob {
                request_id,
                method: parts.method.clone(),
                path: path.as_str().to_string(),
                headers: parts.headers.clone(),
                body: bytes,
                received_at: SystemTime::now(),
                wire: Wire::Grpc(protocol),
                primary_response: None,
                primary_head: Some(head_rx),
            };
            self.mirror.start(admission, job);
        }
        parts.uri = self.primary.uri_for(path);

        let m = &self.metrics.primary;
        m.requests.inc();
        let deadline = tokio::time::Instant::from_std(started + limit);
        let sent = tokio::time::timeout_at(deadline, self.primary.send(parts, upstream_body)).await;
        match sent {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                // A trailers-only answer carries its grpc-status in the head.
                let failed = parts.status.is_server_error()
                    || grpc_status(&parts.headers).is_some_and(is_server_fault);
                parts
                    .headers
                    .insert(self.request_id_header.clone(), id_value);
                let body = MeteredStream {
                    inner: body,
                    started,
                    metrics: self.metrics.clone(),
                    failed,
                    done: false,
                    answered: head_tx,
                    copy: scored,
                };
                Response::from_parts(parts, Either::Left(body))
            }
            Ok(Err(e)) => {
                m.errors.inc();
                tracing::warn!(error = %error_chain(&e), "HTTP/2 primary request failed");
                let why = format!("primary {} unavailable: {e}", self.primary.authority());
                self.local(
                    grpc,
                    StatusCode::BAD_GATEWAY,
                    GRPC_UNAVAILABLE,
                    &why,
                    id_value,
                )
            }
            Err(_) => {
                m.errors.inc();
                let why = format!(
                    "primary {} did not answer within {limit:?} (primary.timeout or the call's grpc-timeout)",
                    self.primary.authority()
                );
                self.local(
                    grpc,
                    StatusCode::GATEWAY_TIMEOUT,
                    GRPC_DEADLINE_EXCEEDED,
                    &why,
                    id_value,
                )
            }
        }
    }

    /// An answer the sidecar makes: for gRPC, a trailers-only answer (HTTP 200 with
    /// `grpc-status` and `grpc-message` in the head, as gRPC requires); else the HTTP
    /// status with the reason in a header.
    fn local(
        &self,
        grpc: bool,
        status: StatusCode,
        grpc_status: u32,
        why: &str,
        id: HeaderValue,
    ) -> Response<H2ClientBody> {
        let mut resp = Response::new(Either::Right(Empty::new()));
        let h = resp.headers_mut();
        h.insert(self.request_id_header.clone(), id);
        let message = HeaderValue::from_str(&percent_encode(&format!("shadowgate: {why}")))
            .unwrap_or_else(|_| HeaderValue::from_static("shadowgate"));
        if grpc {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert(GRPC_STATUS, HeaderValue::from(grpc_status));
            h.insert(GRPC_MESSAGE, message);
        } else {
            h.insert("x-shadowgate-error", message);
            *resp.status_mut() = status;
        }
        resp
    }
}

/// Serve one HTTP/2 connection until it ends; on shutdown, `GOAWAY` and let the streams
/// in progress finish.
async fn serve_connection(proxy: Arc<H2Proxy>, stream: TcpStream, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        // Boxed: hyper spawns a task per stream and moves its future (spawn, completion);
        // a pointer moves for a few bytes where the handler's whole state would be copied.
        Box::pin(async move { Ok::<_, Infallible>(proxy.handle(req).await) })
    });
    // Each turn's frames leave in one write: a unary answer's message and trailers in one
    // segment (upstream/gather.rs).
    let (io, flusher) = gather::gathered(stream);
    // The primary's answer passes unchanged: no `date` added (it sends its own, or none).
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .auto_date_header(false)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(flusher.wrap(conn));
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().conn().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves when the shutdown signal is `true` (at once if it already is).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            // The server is gone without a signal: never resolve, serve to the end.
            std::future::pending::<()>().await;
        }
    }
}

/// `application/grpc`, `application/grpc+proto`, ... (gRPC over HTTP/2).
fn is_grpc(h: &http::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// gRPC codes that are the server's fault, counted like HTTP 5xx in
/// `model_inference_errors_total`: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS. The client's own faults (INVALID_ARGUMENT, NOT_FOUND, ...)
/// are not, as 4xx are not.
fn is_server_fault(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The primary's answer on its way to the client, frame by frame (nothing buffered):
/// when it ends, its duration is observed and a server-fault `grpc-status` in its
/// trailers, or a reset, is counted as an error.
pub struct MeteredStream {
    inner: RecvBody,
    started: Instant,
    metrics: Arc<Metrics>,
    failed: bool,
    done: bool,
    /// Held until the answer ends; its drop lets the mirrored call's shadows start.
    answered: Option<oneshot::Sender<()>>,
    /// The answer's data, for `[reference]`, when this call is scored.
    copy: Option<AnswerCopy>,
}

/// A scored call's answer being copied: handed to the monitor when it ends with
/// `grpc-status: 0`, dropped if it grows over `max_bytes` or fails.
struct AnswerCopy {
    protocol: GrpcProtocol,
    monitor: Arc<ReferenceMonitor>,
    data: BytesMut,
}

impl MeteredStream {
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.answered.take();
        if let Some(c) = self.copy.take().filter(|_| !self.failed) {
            c.monitor.offer(Answer::Grpc(c.protocol, c.data.freeze()));
        }
        let m = &self.metrics.primary;
        if self.failed {
            m.errors.inc();
        }
        m.duration_for(None)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl http_body::Body for MeteredStream {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    let status = grpc_status(t);
                    if status.is_some_and(is_server_fault) {
                        this.failed = true;
                    }
                    if status != Some(0) {
                        this.copy = None;
                    }
                }
                if let (Some(c), Some(d)) = (this.copy.as_mut(), frame.data_ref()) {
                    if c.data.len() + d.len() > c.monitor.max_bytes {
                        this.copy = None;
                    } else {
                        c.data.extend_from_slice(d);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => {
                this.failed = true;
                this.copy = None;
                this.finish();
            }
            std::task::Poll::Ready(None) => this.finish(),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        // The client went away (RST_STREAM) before the end: still a served call, timed.
        self.finish();
    }
}

/// The call's deadline (`grpc-timeout`: at most 8 digits and a unit, H M S m u n).
fn grpc_timeout(h: &http::HeaderMap) -> Option<Duration> {
    let v = h.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2: bytes outside 0x20..0x7e and `%`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let t = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("150m"), Some(Duration::from_millis(150)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("100u"), Some(Duration::from_micros(100)));
        assert_eq!(t("123456789S"), None, "at most 8 digits");
        assert_eq!(t("5x"), None);
        assert_eq!(t("S"), None);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c"), "a b%25c");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("x\ny"), "x%0Ay");
    }
}
