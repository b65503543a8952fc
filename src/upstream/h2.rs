//! HTTP/2 upstreams (prior knowledge for `h2c://`, ALPN `h2` for `https://`): one
//! multiplexed connection per target over the h2 crate's client (hyper's HTTP/2), for
//! gRPC model servers.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::CONNECT_TIMEOUT;

/// Why an HTTP/2 upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("the server did not agree to HTTP/2 in the TLS handshake (ALPN h2); it offers only HTTP/1.1 there")]
    NoH2Alpn,
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

/// Where an HTTP/2 upstream is and how to reach it: TCP with prior knowledge for
/// `h2c://` (and `http://`), TLS with ALPN `h2` for `https://`.
struct Dialer {
    authority: Authority,
    /// For `https://`: the connector (the sidecar's roots, ALPN `h2` only) and the name
    /// the certificate must carry.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// A connection's byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Dialer {
    /// `tls` is the sidecar's one client configuration (`[tls]`); an `https://` URL uses
    /// a copy of it that offers only `h2` in ALPN.
    fn new(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Self {
        let authority = url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("localhost"));
        let tls = (url.scheme() == Some(&Scheme::HTTPS)).then(|| {
            let mut config = rustls::ClientConfig::clone(tls);
            config.alpn_protocols = vec![b"h2".to_vec()];
            let name = ServerName::try_from(authority.host().to_string())
                .unwrap_or_else(|_| ServerName::try_from("invalid").expect("a valid DNS name"));
            (tokio_rustls::TlsConnector::from(Arc::new(config)), name)
        });
        Dialer { authority, tls }
    }

    /// The upstream's URI for a client's path (HTTP/2 sends scheme and authority as
    /// pseudo-headers).
    fn uri_for(&self, path: PathAndQuery) -> Uri {
        let scheme = if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        Uri::builder()
            .scheme(scheme)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .unwrap_or_default()
    }

    /// A new connection, TLS done and `h2` agreed when it is `https://`.
    async fn dial(&self) -> Result<Box<dyn Io>, H2Error> {
        let tcp =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.authority.as_str()))
                .await
                .map_err(|_| H2Error::ConnectTimeout(CONNECT_TIMEOUT))?
                .map_err(H2Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let stream = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(H2Error::Tls)?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(H2Error::NoH2Alpn);
        }
        Ok(Box::new(stream))
    }
}

/// Settings of every HTTP/2 upstream connection: hyper's client defaults (windows of
/// 2 MiB per stream and 5 MiB per connection, so an answer of a few hundred kB needs no
/// WINDOW_UPDATE round trip; 16 KiB frames and header lists; no server push).
fn client_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(2 << 20)
        .initial_connection_window_size(5 << 20)
        .max_frame_size(16 << 10)
        .max_header_list_size(16 << 10)
        .max_send_buffer_size(1 << 20)
        .initial_max_send_streams(100)
        .enable_push(false);
    b
}

/// One multiplexed HTTP/2 connection to an upstream over the h2 crate's client, opened on
/// first use and again after it closes (or refuses new streams, as after a GOAWAY).
/// Streams beyond the server's concurrency limit wait for a slot (`SendRequest::ready`).
struct Conn {
    dialer: Dialer,
    /// The open connection's handle, and whether its connection task has ended.
    sender: tokio::sync::Mutex<Option<(h2::client::SendRequest<Bytes>, Arc<AtomicBool>)>>,
}

impl Conn {
    fn new(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Self {
        Conn {
            dialer: Dialer::new(url, tls),
            sender: tokio::sync::Mutex::new(None),
        }
    }

    /// The shared connection's handle, ready for one more stream. A connection that was
    /// open but takes no new stream (it went away) is replaced once.
    async fn ready(&self) -> Result<h2::client::SendRequest<Bytes>, H2Error> {
        let (sender, fresh) = self.connection().await?;
        match sender.ready().await {
            Ok(s) => Ok(s),
            Err(_) if !fresh => {
                self.forget();
                let (sender, _) = self.connection().await?;
                Ok(sender.ready().await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The open connection, or a new one (`true`).
    async fn connection(&self) -> Result<(h2::client::SendRequest<Bytes>, bool), H2Error> {
        let mut slot = self.sender.lock().await;
        if let Some((s, closed)) = slot.as_ref() {
            if !closed.load(Ordering::Acquire) {
                return Ok((s.clone(), false));
            }
        }
        // One write per turn of the connection's task, reads that take what is there
        // (gather.rs).
        let (io, flusher) = super::gather::gathered(self.dialer.dial().await?);
        let (sender, conn) = client_builder().handshake(io).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let (authority, done) = (self.dialer.authority.clone(), Arc::clone(&closed));
        tokio::spawn(async move {
            if let Err(e) = flusher.wrap(conn).await {
                tracing::debug!(%authority, error = %e, "HTTP/2 upstream connection ended");
            }
            done.store(true, Ordering::Release);
        });
        *slot = Some((sender.clone(), closed));
        Ok((sender, true))
    }

    /// Mark the open connection unusable: the next call dials a new one.
    fn forget(&self) {
        if let Ok(slot) = self.sender.try_lock() {
            if let Some((_, closed)) = slot.as_ref() {
                closed.store(true, Ordering::Release);
            }
        }
    }

    /// A request head for `path` on this upstream, without the headers HTTP/2 forbids.
    fn head(
        &self,
        method: http::Method,
        path: PathAndQuery,
        mut headers: http::HeaderMap,
    ) -> Result<Request<()>, H2Error> {
        strip_connection_headers(&mut headers);
        let mut req = Request::builder()
            .method(method)
            .uri(self.dialer.uri_for(path))
            .body(())?;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// Headers that are HTTP/1.1 connection-specific, which HTTP/2 forbids (RFC 9113
/// 8.2.2), as hyper's client strips them; `te` only as `trailers`. Requests that came
/// over HTTP/2 carry none of them (h2 refuses them), so the names are looked over once
/// and nothing is removed unless one is there.
fn strip_connection_headers(headers: &mut http::HeaderMap) {
    const FORBIDDEN: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
    ];
    if headers.keys().any(|k| FORBIDDEN.contains(&k.as_str())) {
        for name in FORBIDDEN {
            headers.remove(name);
        }
    }
    if headers
        .get(http::header::TE)
        .is_some_and(|v| v != "trailers")
    {
        headers.remove(http::header::TE);
    }
}

/// A request body for the primary: a client's stream passed through, or bytes the
/// sidecar holds (a mirrored call's message, read whole).
pub enum PrimaryBody {
    Stream(Incoming),
    Whole(Bytes),
}

/// The primary's HTTP/2 endpoint: every call of an HTTP/2 client, any method, unary or
/// streaming, over one multiplexed connection (the h2 crate's client, driven from the
/// calling task: a request whose body is whole by the time it is sent, as a unary gRPC
/// call's is, costs no task of its own; a body still arriving is piped by a task under
/// HTTP/2 flow control).
pub struct H2Upstream {
    conn: Conn,
}

impl H2Upstream {
    pub fn new(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Self {
        H2Upstream {
            conn: Conn::new(url, tls),
        }
    }

    /// The upstream's URI for a client's path.
    pub fn uri_for(&self, path: PathAndQuery) -> Uri {
        self.conn.dialer.uri_for(path)
    }

    /// `host:port` of the upstream.
    pub fn authority(&self) -> &Authority {
        &self.conn.dialer.authority
    }

    /// Send one request (its head's URI carries the path) and wait for the answer's
    /// head; the answer's body streams as the caller reads it. Dropping the future or the
    /// answer's body before the end resets the stream (RST_STREAM CANCEL).
    pub async fn send(
        &self,
        parts: http::request::Parts,
        body: PrimaryBody,
    ) -> Result<Response<RecvBody>, H2Error> {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut head = self.conn.head(parts.method, path, parts.headers)?;
        *head.extensions_mut() = parts.extensions;
        let mut sender = self.conn.ready().await?;
        let empty = matches!(&body, PrimaryBody::Whole(b) if b.is_empty());
        let (answer, mut stream) = sender.send_request(head, empty)?;
        match body {
            PrimaryBody::Whole(b) if b.is_empty() => {}
            PrimaryBody::Whole(b) => stream.send_data(b, true)?,
            PrimaryBody::Stream(incoming) => {
                let mut pipe = Pipe {
                    body: incoming,
                    tx: stream,
                    held: None,
                };
                // A unary call's message is usually whole already: then it is queued now
                // and no task is needed.
                let first =
                    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut pipe).poll(cx)))
                        .await;
                if first.is_pending() {
                    tokio::spawn(pipe);
                }
            }
        }
        Ok(answer.await?.map(RecvBody::new))
    }
}

/// A client's request body on its way to the primary, chunk by chunk: a chunk is read
/// from the client only when the previous one has been given stream window, so at most
/// one chunk waits here and one in h2's queue (the last chunk is queued at once: it is
/// held either way). A client's reset or a failed read resets the primary's stream; the
/// primary's reset ends the pipe (dropping the client's body).
struct Pipe {
    body: Incoming,
    tx: h2::SendStream<Bytes>,
    /// A chunk read and waiting for window, and whether it ends the stream.
    held: Option<(Bytes, bool)>,
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = &mut *self;
        loop {
            if let Poll::Ready(reason) = me.tx.poll_reset(cx) {
                tracing::debug!(?reason, "HTTP/2 primary reset a stream still being sent");
                return Poll::Ready(());
            }
            if let Some((data, eos)) = me.held.take() {
                if !eos {
                    while me.tx.capacity() == 0 {
                        match me.tx.poll_capacity(cx) {
                            Poll::Pending => {
                                me.held = Some((data, eos));
                                return Poll::Pending;
                            }
                            Poll::Ready(Some(Ok(0))) => {}
                            Poll::Ready(Some(Ok(_))) => break,
                            Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                        }
                    }
                }
                if me.tx.send_data(data, eos).is_err() || eos {
                    return Poll::Ready(());
                }
                continue;
            }
            match std::pin::Pin::new(&mut me.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let eos = me.body.is_end_stream();
                        if data.is_empty() {
                            if me.tx.send_data(data, eos).is_err() || eos {
                                return Poll::Ready(());
                            }
                        } else {
                            if !eos {
                                me.tx.reserve_capacity(1);
                            }
                            me.held = Some((data, eos));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            me.tx.reserve_capacity(0);
                            let _ = me.tx.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "client request body failed; resetting the primary's stream");
                    me.tx.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(());
                }
                Poll::Ready(None) => {
                    let _ = me.tx.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// The body of an HTTP/2 upstream's answer: its DATA, then its trailers, as they arrive.
/// Window is given back as each chunk is taken, so the upstream sends on only as fast as
/// the reader reads. A reset with `NO_ERROR` or `CANCEL` ends the body without an error,
/// as hyper's own client body does.
pub struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl RecvBody {
    fn new(recv: h2::RecvStream) -> Self {
        RecvBody {
            recv,
            data_done: false,
        }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        let me = &mut *self;
        if !me.data_done {
            match std::task::ready!(me.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                Some(Err(e)) => {
                    return match e.reason() {
                        Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL) => Poll::Ready(None),
                        _ => Poll::Ready(Some(Err(e))),
                    };
                }
                None => me.data_done = true,
            }
        }
        match std::task::ready!(me.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(http_body::Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// A whole answer to a unary call.
#[derive(Debug)]
pub struct UnaryAnswer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    /// The DATA frames' bytes (the first frame's own buffer when there is one frame).
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
}

/// Unary calls (the whole message out, the whole answer back) on one multiplexed
/// connection: the mirror's gRPC shadow calls. The call opens the stream, queues the
/// message with END_STREAM and reads the answer in the calling task. Dropping the call
/// (its timeout) resets the stream (RST_STREAM CANCEL).
pub struct UnaryUpstream {
    conn: Conn,
}

impl UnaryUpstream {
    pub fn new(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Self {
        UnaryUpstream {
            conn: Conn::new(url, tls),
        }
    }

    /// One call: `method` on `path` with `headers` (connection-specific ones left out,
    /// as HTTP/2 forbids them) and `body`; the answer's DATA at most `max` bytes.
    pub async fn call(
        &self,
        method: http::Method,
        path: PathAndQuery,
        headers: http::HeaderMap,
        body: Bytes,
        max: usize,
    ) -> Result<UnaryAnswer, H2Error> {
        let req = self.conn.head(method, path, headers)?;
        let mut sender = self.conn.ready().await?;
        let (answer, mut stream) = sender.send_request(req, body.is_empty())?;
        if !body.is_empty() {
            // Queued whole: h2 sends it as the stream's and the connection's windows allow.
            stream.send_data(body, true)?;
        }
        let (head, mut recv) = answer.await?.into_parts();
        let mut first: Option<Bytes> = None;
        let mut rest = bytes::BytesMut::new();
        let mut total = 0usize;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            total += chunk.len();
            if total > max {
                return Err(H2Error::TooLarge(max));
            }
            match &first {
                None => first = Some(chunk),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        let trailers = recv.trailers().await?;
        let body = if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            rest.freeze()
        };
        Ok(UnaryAnswer {
            status: head.status,
            headers: head.headers,
            body,
            trailers,
        })
    }
}

/// What a probe of an HTTP/2 endpoint found.
#[derive(Debug)]
pub enum Probe {
    /// It answered a request over HTTP/2 with prior knowledge (any status).
    Http2,
    /// Nothing listens there now (it may start later than the sidecar).
    Unreachable(String),
    /// Something listens but does not speak HTTP/2 with prior knowledge (an HTTP/1.1-only
    /// server answers the HTTP/2 preface with an HTTP/1.1 error, which is no frame).
    NotHttp2(String),
}

/// Ask `url` for `/` over HTTP/2 (prior knowledge, or TLS with ALPN `h2`), within
/// `within`.
pub async fn probe(url: &Uri, tls: &Arc<rustls::ClientConfig>, within: Duration) -> Probe {
    let upstream = H2Upstream::new(url, tls);
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.uri = upstream.uri_for(PathAndQuery::from_static("/"));
    match tokio::time::timeout(
        within,
        upstream.send(parts, PrimaryBody::Whole(Bytes::new())),
    )
    .await
    {
        Ok(Ok(_)) => Probe::Http2,
        Ok(Err(e @ (H2Error::Connect(_) | H2Error::ConnectTimeout(_)))) => {
            Probe::Unreachable(e.to_string())
        }
        Ok(Err(e)) => Probe::NotHttp2(crate::upstream::error_chain(&e)),
        Err(_) => Probe::NotHttp2(format!("no HTTP/2 answer within {within:?}")),
    }
}
