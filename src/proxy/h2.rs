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

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::upstream::error_chain;
use crate::upstream::h2::H2Upstream;

/// Body of a stream's answer: the primary's, passed through, or none (an answer the
/// sidecar made, all in its head).
pub type H2ClientBody = Either<Incoming, Empty<Bytes>>;

/// gRPC status codes the sidecar answers with itself.
const GRPC_UNAVAILABLE: u32 = 14;
const GRPC_DEADLINE_EXCEEDED: u32 = 4;

/// The HTTP/2 primary path, shared by all HTTP/2 connections.
pub struct H2Proxy {
    primary: H2Upstream,
    timeout: Duration,
    request_id_header: HeaderName,
    metrics: Arc<Metrics>,
}

impl H2Proxy {
    /// `None` when `primary.http2_url` is not set: the proxy port then speaks HTTP/1.1
    /// only, and an HTTP/2 preface is refused as a bad HTTP/1.1 head.
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Option<Self> {
        let url = cfg.checked().primary_http2_url.as_ref()?;
        Some(H2Proxy {
            primary: H2Upstream::new(url),
            timeout: cfg.primary.timeout,
            request_id_header: cfg.checked().request_id_header.clone(),
            metrics,
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
        let id_value = match parts.headers.get(&self.request_id_header) {
            Some(v) if !v.is_empty() && v.to_str().is_ok() => v.clone(),
            _ => crate::ids::new_request_id(SystemTime::now()),
        };
        let grpc = is_grpc(&parts.headers);
        parts
            .headers
            .insert(self.request_id_header.clone(), id_value.clone());
        parts.headers.remove(header::HOST);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = self.primary.uri_for(path);
        let upstream_req = Request::from_parts(parts, Either::Left(body));

        let m = &self.metrics.primary;
        m.requests.inc();
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let sent = tokio::time::timeout_at(deadline, self.primary.send(upstream_req)).await;
        match sent {
            Ok(Ok(resp)) => {
                if resp.status().is_server_error() {
                    m.errors.inc();
                }
                m.duration_for(None)
                    .observe(started.elapsed().as_secs_f64());
                let (mut parts, body) = resp.into_parts();
                parts
                    .headers
                    .insert(self.request_id_header.clone(), id_value);
                Response::from_parts(parts, Either::Left(body))
            }
            Ok(Err(e)) => {
                m.errors.inc();
                tracing::warn!(error = %error_chain(&e), "HTTP/2 primary request failed");
                let why = format!("primary {} unavailable: {e}", self.primary.authority);
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
                    "primary {} did not answer within {:?}",
                    self.primary.authority, self.timeout
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
            h.insert("grpc-status", HeaderValue::from(grpc_status));
            h.insert("grpc-message", message);
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
        async move { Ok::<_, Infallible>(proxy.handle(req).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
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
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c"), "a b%25c");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("x\ny"), "x%0Ay");
    }
}
