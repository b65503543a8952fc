//! The primary path: forward each request to the model server in this pod, stream its
//! answer back unchanged, and offer sampled requests to the mirror without ever waiting
//! for it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use h1::server::RequestBody;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use tokio::sync::{oneshot, Semaphore};

use crate::metrics::{Metrics, MirrorDecision, PrimaryMetrics};
use crate::mirror::{Mirror, ShadowJob};
use crate::sampler::{Decision, Sampler};
use crate::upstream::{PooledBody, Upstream};

/// Body of requests sent upstream: streamed through, or buffered when mirrored.
pub type UpstreamBody = Either<Limited<RequestBody>, Full<Bytes>>;
/// Body of responses to the client: the primary's, streamed, or one the sidecar made.
pub type ClientBody = Either<MeteredBody, Full<Bytes>>;
/// Everything the primary path needs, shared by all connections.
pub struct Proxy {
    pub primary: Uri,
    /// Keep-alive connections to the primary.
    pub upstream: Upstream,
    pub timeout: std::time::Duration,
    pub count_4xx_as_errors: bool,
    pub request_id_header: HeaderName,
    pub max_body_bytes: usize,
    pub sampler: Sampler,
    pub mirror: Arc<Mirror>,
    /// Caps concurrent shadow comparisons; a sample that finds it empty is dropped.
    pub shadow_permits: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// Remembers served ids for labels and conversions posted later.
    pub feedback: Arc<crate::feedback::Feedback>,
    /// Finds the generated-token count in responses (`metrics.tokens_field`).
    pub tokens_finder: memchr::memmem::Finder<'static>,
}

impl Proxy {
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

        if let Some(len) = content_length(&parts.headers) {
            if len > self.max_body_bytes as u64 {
                return Ok(local_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body over limits.max_body_bytes",
                    &id_value,
                ));
            }
        }

        let mut shadow = None;
        // With reuse_primary, a copy of the primary's answer for the mirror.
        let mut tee = None;
        let decision = self
            .sampler
            .decide(&parts.method, parts.uri.path(), request_id, started);
        // Stalled bodies (`limits.body_read_timeout`, enforced by the connection) are cut
        // on both paths, streamed and buffered, and both answer 408.
        let body = Limited::new(body, self.max_body_bytes);
        let upstream_body = match decision {
            Decision::NotEligible => Either::Left(body),
            Decision::NotSampled => {
                self.metrics
                    .shadow
                    .decision(MirrorDecision::NotSampled)
                    .inc();
                Either::Left(body)
            }
            Decision::RateLimited => {
                self.metrics
                    .shadow
                    .decision(MirrorDecision::RateLimited)
                    .inc();
                Either::Left(body)
            }
            Decision::Mirror { self_similarity } => {
                match self.shadow_permits.clone().try_acquire_owned() {
                    Err(_) => {
                        self.metrics.shadow.decision(MirrorDecision::Dropped).inc();
                        self.metrics.shadow.dropped();
                        Either::Left(body)
                    }
                    Ok(permit) => {
                        // The mirror needs the whole body; read it once, send the same bytes to all.
                        // On any failure `permit` is dropped here, before the answer goes out.
                        match body.collect().await {
                            Ok(collected) => {
                                let bytes = collected.to_bytes();
                                shadow = Some((permit, bytes.clone(), self_similarity));
                                Either::Right(Full::new(bytes))
                            }
                            Err(e) => {
                                self.metrics
                                    .shadow
                                    .decision(MirrorDecision::BodyUnavailable)
                                    .inc();
                                return Ok(body_failed(&*e, request_id, &id_value).unwrap_or_else(
                                    || {
                                        local_response(
                                            StatusCode::BAD_REQUEST,
                                            "request body ended early",
                                            &id_value,
                                        )
                                    },
                                ));
                            }
                        }
                    }
                }
            }
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
        // Dropped when the primary's head is in or the request failed: the shadow calls
        // start then (`mirror::PRIMARY_HEAD_WAIT`).
        let mut head_tx = None;
        if let Some((permit, bytes, self_similarity)) = shadow {
            let (tx, head_rx) = oneshot::channel::<()>();
            head_tx = Some(tx);
            self.metrics.shadow.decision(MirrorDecision::Mirrored).inc();
            let primary_response = self.mirror.reuse.map(|_| {
                let (tx, rx) = oneshot::channel();
                tee = Some(Tee {
                    buf: Vec::new(),
                    max: self.mirror.max_response_bytes,
                    tx: Some(tx),
                });
                rx
            });
            let job = ShadowJob {
                request_id: request_id.to_string(),
                method: parts.method.clone(),
                path: path_and_query.as_str().to_string(),
                headers: parts.headers.clone(),
                body: bytes,
                received_at,
                self_similarity,
                primary_response,
                primary_head: Some(head_rx),
            };
            let mirror = self.mirror.clone();
            tokio::spawn(async move { mirror.run(job, permit).await });
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
                let body = MeteredBody {
                    inner: body,
                    started,
                    proxy: self.clone(),
                    scan: TokenScan::default(),
                    done: false,
                    tee,
                };
                Ok(Response::from_parts(parts, Either::Left(body)))
            }
            Ok(Err(e)) => {
                // The client's faults, not the primary's: no error counted, no 502.
                if let Some(resp) = body_failed(&e, request_id, &id_value) {
                    return Ok(resp);
                }
                m.errors.inc();
                m.duration_for(None)
                    .observe(started.elapsed().as_secs_f64());
                tracing::warn!(request_id = %request_id, error = %crate::upstream::error_chain(&e), "primary request failed");
                let why = format!("primary {} unavailable: {}", self.primary, short_reason(&e));
                Ok(local_response(StatusCode::BAD_GATEWAY, &why, &id_value))
            }
            Err(_) => {
                m.errors.inc();
                m.duration_for(None)
                    .observe(started.elapsed().as_secs_f64());
                let why = format!(
                    "primary {} did not answer within {:?}",
                    self.primary, self.timeout
                );
                Ok(local_response(StatusCode::GATEWAY_TIMEOUT, &why, &id_value))
            }
        }
    }
}

/// A response the sidecar itself makes (413, 502, 504, ...): short text, request id set.
pub fn local_response(status: StatusCode, why: &str, id: &HeaderValue) -> Response<ClientBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "shadowgate: {why}\n"
    )))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(HeaderName::from_static("x-request-id"), id.clone());
    resp
}

/// `408` for a client that paused its body longer than `limits.body_read_timeout`. The
/// rest of its body is never read, so the connection cannot be reused: say so.
fn body_timeout_response(request_id: &str, id: &HeaderValue) -> Response<ClientBody> {
    tracing::debug!(request_id = %request_id, "request body stalled; answering 408");
    let mut resp = local_response(
        StatusCode::REQUEST_TIMEOUT,
        "request body stalled longer than limits.body_read_timeout",
        id,
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1): the fixed set and any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const HOP: [HeaderName; 9] = [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ];
    // Runs twice per request on maps of a handful of headers: one pass of name
    // comparisons says which hop-by-hop headers are there, and only those are removed.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // `Connection` may name more headers to drop. Its usual values ("keep-alive",
        // "close") name none beyond the fixed set, so nothing is allocated for them.
        let mut named = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let token = token.trim();
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || HOP.iter().any(|h| token.eq_ignore_ascii_case(h.as_str()))
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// `e` or the first of its causes that is an `E`: a request body's own error reaches us
/// wrapped in the client's (`request body for …` → `E`).
fn find_in_chain<'e, E: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<E>() {
            return Some(found);
        }
        source = s.source();
    }
    None
}

/// The answer to a request whose body failed on the client's side (`e` or a cause of it):
/// `413` over `limits.max_body_bytes`, `408` for a pause over `limits.body_read_timeout`,
/// `400` naming a framing error or saying the body ended early. `None` when the client's
/// body is not what failed.
fn body_failed(
    e: &(dyn std::error::Error + 'static),
    request_id: &str,
    id: &HeaderValue,
) -> Option<Response<ClientBody>> {
    if find_in_chain::<LengthLimitError>(e).is_some() {
        return Some(local_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body over limits.max_body_bytes",
            id,
        ));
    }
    Some(match find_in_chain::<h1::server::Error>(e)? {
        h1::server::Error::BodyTimeout(_) => body_timeout_response(request_id, id),
        framing @ h1::server::Error::Body(h1::body::Error::Chunk(_)) => {
            local_response(StatusCode::BAD_REQUEST, &framing.to_string(), id)
        }
        _ => local_response(StatusCode::BAD_REQUEST, "request body ended early", id),
    })
}

/// The innermost cause: "Connection refused (os error 111)" rather than "client error (Connect)".
fn short_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Finds the generated-token count (`"completion_tokens": N`) in a streamed response
/// without parsing it: a byte search per chunk, carrying a short tail across chunks.
struct TokenScan {
    /// The last bytes of the previous chunk (`tail_len` of them): no allocation.
    tail: [u8; TOKEN_TAIL],
    tail_len: usize,
    found: Option<u64>,
}

/// Enough of the previous chunk to catch a key and its number split across chunks.
const TOKEN_TAIL: usize = 64;

impl Default for TokenScan {
    fn default() -> Self {
        Self {
            tail: [0; TOKEN_TAIL],
            tail_len: 0,
            found: None,
        }
    }
}

impl TokenScan {
    fn feed(&mut self, finder: &memchr::memmem::Finder<'_>, chunk: &[u8]) {
        if self.tail_len > 0 {
            let mut joined = [0u8; 2 * TOKEN_TAIL];
            let head = chunk.len().min(TOKEN_TAIL);
            joined[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            joined[self.tail_len..self.tail_len + head].copy_from_slice(&chunk[..head]);
            self.scan(finder, &joined[..self.tail_len + head]);
        }
        self.scan(finder, chunk);
        let keep = chunk.len().min(TOKEN_TAIL);
        self.tail[..keep].copy_from_slice(&chunk[chunk.len() - keep..]);
        self.tail_len = keep;
    }

    fn scan(&mut self, finder: &memchr::memmem::Finder<'_>, bytes: &[u8]) {
        for at in finder.find_iter(bytes) {
            let rest = &bytes[at + finder.needle().len()..];
            let rest = skip(rest, |b| b == b'"' || b.is_ascii_whitespace() || b == b':');
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            // A number cut by the chunk end is read again, whole, from the joined tail.
            if digits > 0 && digits < rest.len() {
                if let Some(n) = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    self.found = Some(n);
                }
            }
        }
    }
}

fn skip(mut s: &[u8], pred: impl Fn(u8) -> bool) -> &[u8] {
    while let Some((&b, rest)) = s.split_first() {
        if !pred(b) {
            break;
        }
        s = rest;
    }
    s
}

/// The primary's response body, passed through frame by frame (nothing is buffered),
/// observing the duration histogram when the last frame has gone out.
pub struct MeteredBody {
    inner: PooledBody,
    started: Instant,
    /// For the metrics and the token finder: one reference count, no per-request copies.
    proxy: Arc<Proxy>,
    scan: TokenScan,
    done: bool,
    tee: Option<Tee>,
}

/// The primary's answer as one side of a comparison (`reuse_primary`): frames are copied
/// as they stream past, and the whole body goes to the mirror at the end. A failed,
/// cut or oversized answer sends an error instead.
pub struct Tee {
    buf: Vec<u8>,
    max: usize,
    tx: Option<oneshot::Sender<Result<Bytes, String>>>,
}

impl Tee {
    fn push(&mut self, data: &[u8]) {
        if self.tx.is_none() {
            return;
        }
        if self.buf.len() + data.len() > self.max {
            self.fail(format!("primary answer over {} bytes", self.max));
            return;
        }
        self.buf.extend_from_slice(data);
    }

    fn fail(&mut self, why: String) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(why));
        }
        self.buf = Vec::new();
    }

    fn complete(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Ok(Bytes::from(std::mem::take(&mut self.buf))));
        }
    }
}

impl MeteredBody {
    fn finish(&mut self, failed: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let metrics: &PrimaryMetrics = &self.proxy.metrics.primary;
        if failed {
            metrics.errors.inc();
        }
        if let Some(tee) = self.tee.as_mut() {
            if failed {
                tee.fail("primary answer cut off".into());
            } else {
                tee.complete();
            }
        }
        metrics
            .duration_for(self.scan.found)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = h1::client::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::client::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.scan.feed(&this.proxy.tokens_finder, data);
                    if let Some(tee) = this.tee.as_mut() {
                        tee.push(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(false);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(true),
            Poll::Ready(None) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // The client went away before the end: still a served request, still timed, but
        // the copy for the mirror is incomplete.
        if !self.done {
            if let Some(tee) = self.tee.as_mut() {
                tee.fail("client left before the end of the answer".into());
            }
        }
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_chunks(chunks: &[&[u8]]) -> Option<u64> {
        let finder = memchr::memmem::Finder::new(b"completion_tokens").into_owned();
        let mut s = TokenScan::default();
        for c in chunks {
            s.feed(&finder, c);
        }
        s.found
    }

    #[test]
    fn token_count_found_whole_and_split_across_chunks() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":123,"total_tokens":128}}"#;
        assert_eq!(scan_chunks(&[body]), Some(123));
        for cut in 1..body.len() {
            assert_eq!(
                scan_chunks(&[&body[..cut], &body[cut..]]),
                Some(123),
                "cut at {cut}"
            );
        }
        assert_eq!(scan_chunks(&[b"{\"data\":[1,2,3]}"]), None);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
