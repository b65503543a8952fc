//! Keep-alive HTTP/1.1 connections to one upstream (the primary, the baseline or the
//! canary), with the client's HTTP/1 written out in [`h1`].
//!
//! The sidecar talks to exactly three fixed origins, so the pool is a stack of idle
//! connections per origin, nothing more, and a request is one exchange on a socket the
//! request's own task owns: the head and whatever body is ready go out in one write, the
//! response head is parsed from one read, and the body is handed out as slices of the
//! read buffer. A connection goes back on the stack when its response body has been read
//! to the end ([`PooledBody`]). hyper's client instead runs a task per connection and
//! passes each request and response through channels to it; that hand-off was most of
//! the gap to nginx on plain proxying (BENCHMARKS.md, "What moved in the fourth
//! session").
//!
//! Behaviour: TCP_NODELAY, a 5 s connect timeout, TLS through rustls for `https://`
//! origins, the `Host` header set from the origin, idle connections dropped after
//! [`IDLE_TIMEOUT`] or as soon as the server closes them, and a request whose reused
//! connection turns out to be closed (the server gave up on it while it sat idle) sent
//! again on another connection, when all of it was in the first write. Request bodies
//! are sent whole before the response is read.

use std::error::Error as StdError;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::h1::{self, Decoder, ProtoError, RequestFraming, Step};

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long an idle connection is kept: shorter than common server keep-alive timeouts
/// (uvicorn's 5 s is the outlier; most are ≥ 60 s); a connection the server closes
/// earlier is noticed and dropped before it is handed out.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect timeout for new upstream connections (TCP and TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Read buffers grow by this much; many small responses share one allocation.
const READ_CHUNK: usize = 16 * 1024;

/// A write buffer larger than this after a request (a big body went out) is not kept.
const MAX_KEPT_WRITE_BUF: usize = 64 * 1024;

/// Why an upstream request failed. The causes are kept, so `error_chain` prints e.g.
/// "connect to https://...: invalid peer certificate: UnknownIssuer".
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {0}")]
    Connect(Uri, #[source] BoxError),
    #[error("request to {0}")]
    Request(Uri, #[source] BoxError),
    /// The request's own body failed (the client stalled or sent too much); the cause is
    /// the body's error.
    #[error("request body for {0}")]
    Body(Uri, #[source] BoxError),
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the upstream's response body: {0}")]
    Io(#[from] io::Error),
    #[error("reading the upstream's response body: {0}")]
    Proto(#[from] ProtoError),
}

/// Opens connections for hyper-util's general client (the sidecar's own traffic that is
/// not an upstream: the demo, the Pushgateway, tests): TCP with TCP_NODELAY and a 5 s
/// connect timeout; for `https://`, HTTP/1.1 over TLS checked against `tls`' roots.
pub fn connector(tls: Arc<rustls::ClientConfig>) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // The TLS layer, not the TCP connector, decides which schemes are allowed.
    http.enforce_http(false);
    HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// Keep-alive connections to one origin (`scheme://authority`), shared by all requests.
pub struct Upstream {
    origin: Uri,
    host: HeaderValue,
    /// Where to connect: host name or address, and port.
    addr: (String, u16),
    /// For `https://` origins: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    pool: Arc<Pool>,
}

struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// One connection and its buffers. Boxed once when connected, so that the pool, the
/// request and the response body pass a pointer around, not ~100 bytes.
struct Conn {
    io: Stream,
    /// Bytes read and not yet handed out.
    read: BytesMut,
    /// The request being written (kept between requests for its allocation).
    write: Vec<u8>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Upstream {
    /// A pool for `origin` (only its scheme and authority are used) keeping at most
    /// `max_idle` idle connections; `https://` origins are verified against `tls`.
    pub fn new(origin: &Uri, max_idle: usize, tls: Arc<rustls::ClientConfig>) -> Self {
        let mut parts = http::uri::Parts::default();
        parts.scheme = origin.scheme().cloned();
        parts.authority = origin.authority().cloned();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let origin = Uri::from_parts(parts).unwrap_or_else(|_| origin.clone());
        let host = origin
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        let https = origin.scheme_str() == Some("https");
        // `[::1]` in a URL is `::1` to the resolver and to the certificate check.
        let name = origin
            .host()
            .unwrap_or("localhost")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = origin.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(|| {
            let mut config = Arc::unwrap_or_clone(tls);
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let server = ServerName::try_from(name.clone())
                .unwrap_or_else(|_| ServerName::try_from("invalid.").expect("valid DNS name"));
            (TlsConnector::from(Arc::new(config)), server)
        });
        Upstream {
            origin,
            host,
            addr: (name, port),
            tls,
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                max_idle,
            }),
        }
    }

    /// The origin requests go to, `scheme://authority/`.
    pub fn origin(&self) -> &Uri {
        &self.origin
    }

    /// Send `req` (its URI in origin form: path and query) and return the response head;
    /// the connection goes back to the pool once the body has been read to the end.
    /// The `Host` header is set to the origin's unless the request has one.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<PooledBody>, UpstreamError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (parts, mut body) = req.into_parts();
        let framing = h1::request_framing(
            &parts.method,
            &parts.headers,
            body.size_hint().exact(),
            body.is_end_stream(),
        );
        let (mut conn, mut reused) = self.checkout_or_connect().await?;
        let mut out = std::mem::take(&mut conn.write);
        out.clear();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        h1::encode_head(
            &mut out,
            &parts.method,
            path,
            &parts.headers,
            &self.host,
            framing,
        );
        let mut sent = BodySent::new(framing);
        // The head and every body frame that is ready now, in one write.
        let whole = match framing {
            RequestFraming::Empty => true,
            _ => poll_fn(|cx| sent.gather(Pin::new(&mut body), cx, &mut out))
                .await
                .map_err(|e| self.body_error(e))?,
        };
        let head = loop {
            let wrote = write_all(&mut conn.io, &out).await;
            let wrote = match wrote {
                Ok(()) if whole => Ok(()),
                Ok(()) => {
                    self.stream_rest(&mut conn, &mut body, &mut sent, &mut out)
                        .await
                }
                Err(e) => Err(self.request_error(e)),
            };
            let result = match wrote {
                Ok(()) => read_head(&mut conn, &parts.method).await,
                Err(e) if reused && whole && is_closed(&e) => Err(ReadHeadError::Closed),
                Err(e) => return Err(e),
            };
            match result {
                Ok(head) => break head,
                // A reused connection the server had closed: nothing of this request
                // was answered, and all of it is in `out`. Send it again elsewhere.
                Err(ReadHeadError::Closed) if reused && whole => {
                    (conn, reused) = self.checkout_or_connect().await?;
                }
                Err(ReadHeadError::Closed) => {
                    return Err(self.request_error(ProtoError::Closed("before the response head")))
                }
                Err(ReadHeadError::Io(e)) => return Err(self.request_error(e)),
                Err(ReadHeadError::Proto(e)) => return Err(self.request_error(e)),
            }
        };
        if out.capacity() <= MAX_KEPT_WRITE_BUF {
            conn.write = out;
        }
        let mut body = PooledBody {
            conn: Some(conn),
            pool: self.pool.clone(),
            decoder: head.body,
            keep_alive: head.keep_alive,
        };
        if body.decoder.is_done() {
            body.release(); // no body (HEAD, 204, 304, length 0): hyper may never poll it
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }

    /// Send the body frames that were not ready for the first write, as they come.
    async fn stream_rest<B>(
        &self,
        conn: &mut Conn,
        body: &mut B,
        sent: &mut BodySent,
        out: &mut Vec<u8>,
    ) -> Result<(), UpstreamError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        loop {
            out.clear();
            let ended = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending if !out.is_empty() => Poll::Ready(Ok(false)),
                Poll::Pending => Poll::Pending,
                Poll::Ready(frame) => Poll::Ready(sent.push(frame, body.is_end_stream(), out)),
            })
            .await
            .map_err(|e| self.body_error(e))?;
            write_all(&mut conn.io, out)
                .await
                .map_err(|e| self.request_error(e))?;
            if ended {
                return Ok(());
            }
        }
    }

    async fn checkout_or_connect(&self) -> Result<(Box<Conn>, bool), UpstreamError> {
        match self.pool.checkout() {
            Some(conn) => Ok((conn, true)),
            // Boxed: the connect and TLS handshake state is large and rarely needed;
            // inline it would be part of every request's future and copied with it.
            None => Ok((Box::pin(self.connect()).await?, false)),
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, UpstreamError> {
        let open = async {
            let tcp = TcpStream::connect((self.addr.0.as_str(), self.addr.1)).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, io::Error>(match &self.tls {
                None => Stream::Plain(tcp),
                Some((tls, name)) => Stream::Tls(Box::new(tls.connect(name.clone(), tcp).await?)),
            })
        };
        let io = match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(UpstreamError::Connect(self.origin.clone(), e.into())),
            Err(_) => {
                let why = format!("timed out after {CONNECT_TIMEOUT:?}");
                return Err(UpstreamError::Connect(self.origin.clone(), why.into()));
            }
        };
        Ok(Box::new(Conn {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
        }))
    }

    fn request_error(&self, e: impl Into<BoxError>) -> UpstreamError {
        UpstreamError::Request(self.origin.clone(), e.into())
    }

    fn body_error(&self, e: SendError) -> UpstreamError {
        match e {
            SendError::Body(e) => UpstreamError::Body(self.origin.clone(), e),
            SendError::Framing(why) => UpstreamError::Request(self.origin.clone(), why.into()),
        }
    }
}

/// A request body failed, or did not match the length it announced.
enum SendError {
    Body(BoxError),
    Framing(&'static str),
}

/// What of the request body has gone into the write buffer.
struct BodySent {
    framing: RequestFraming,
    bytes: u64,
}

impl BodySent {
    fn new(framing: RequestFraming) -> Self {
        BodySent { framing, bytes: 0 }
    }

    /// Append the frames that are ready now; `Ready(Ok(true))` when the body ended.
    fn gather<B>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
    ) -> Poll<Result<bool, SendError>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        loop {
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Ready(Ok(false)),
                Poll::Ready(frame) => {
                    if self.push(frame, body.is_end_stream(), out)? {
                        return Poll::Ready(Ok(true));
                    }
                    if out.len() >= MAX_KEPT_WRITE_BUF {
                        return Poll::Ready(Ok(false)); // send this much first
                    }
                }
            }
        }
    }

    /// Append one polled frame with its framing; `Ok(true)` when the body ended.
    fn push<E: Into<BoxError>>(
        &mut self,
        frame: Option<Result<Frame<Bytes>, E>>,
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> Result<bool, SendError> {
        match frame {
            None => return self.finish(out).map(|()| true),
            Some(Err(e)) => return Err(SendError::Body(e.into())),
            Some(Ok(frame)) => {
                // Trailers are not forwarded.
                if let Ok(data) = frame.into_data() {
                    self.bytes += data.len() as u64;
                    match self.framing {
                        RequestFraming::Length(n) if self.bytes > n => {
                            return Err(SendError::Framing(
                                "request body longer than its content-length",
                            ))
                        }
                        RequestFraming::Chunked => h1::encode_chunk(out, &data),
                        _ => out.extend_from_slice(&data),
                    }
                }
            }
        }
        if end_stream {
            return self.finish(out).map(|()| true);
        }
        Ok(false)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), SendError> {
        match self.framing {
            RequestFraming::Length(n) if self.bytes != n => Err(SendError::Framing(
                "request body shorter than its content-length",
            )),
            RequestFraming::Chunked => {
                out.extend_from_slice(h1::CHUNKED_END);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

enum ReadHeadError {
    /// The connection ended (EOF or reset) before any byte of a response.
    Closed,
    Io(io::Error),
    Proto(ProtoError),
}

/// Read until a whole response head is in, skipping `100 Continue` and the like.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<h1::ResponseHead, ReadHeadError> {
    let mut got_any = !conn.read.is_empty();
    loop {
        match h1::parse_head(&mut conn.read, method) {
            Ok(Some(head))
                if head.status.is_informational()
                    && head.status != http::StatusCode::SWITCHING_PROTOCOLS => {}
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {
                h1::reserve_read(&mut conn.read, None, READ_CHUNK);
                match conn.io.read_buf(&mut conn.read).await {
                    Ok(0) if !got_any => return Err(ReadHeadError::Closed),
                    Ok(0) => {
                        return Err(ReadHeadError::Proto(ProtoError::Closed(
                            "in the middle of the response head",
                        )))
                    }
                    Ok(_) => got_any = true,
                    Err(e) if !got_any && is_closed(&e) => return Err(ReadHeadError::Closed),
                    Err(e) => return Err(ReadHeadError::Io(e)),
                }
            }
            Err(e) => return Err(ReadHeadError::Proto(e)),
        }
    }
}

fn is_closed(e: &(dyn StdError + 'static)) -> bool {
    let io = e
        .downcast_ref::<io::Error>()
        .or_else(|| e.source().and_then(|s| s.downcast_ref::<io::Error>()));
    io.is_some_and(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        )
    })
}

async fn write_all(io: &mut Stream, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

impl Pool {
    /// The most recently used idle connection that is still open, if any (warm in
    /// every cache). Never waits.
    fn checkout(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(Idle { conn, since }) = idle.pop() {
            if since.elapsed() <= IDLE_TIMEOUT && conn.io.is_open_and_quiet() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, conn: Box<Conn>) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        // The oldest are at the front: drop those idle too long, so a pool that saw a
        // burst does not keep its connections open for ever.
        let stale = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) > IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
        }
    }
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether an idle connection can carry a request: the server has neither closed it
    /// nor sent anything unasked (for TLS, a close_notify). A peek that asks tokio's
    /// readiness state first, so a quiet connection costs no system call.
    fn is_open_and_quiet(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        self.tcp().poll_peek(&mut cx, &mut buf).is_pending()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A response body from an [`Upstream`], as slices of the connection's read buffer.
/// When it has been read to the end, its connection goes back to the pool; dropped
/// earlier, the connection is closed.
pub struct PooledBody {
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
    decoder: Decoder,
    keep_alive: bool,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("decoder", &self.decoder)
            .field("pooled", &self.conn.is_some())
            .finish()
    }
}

impl PooledBody {
    /// The body ended: the connection goes back to the pool if it can carry another
    /// request (keep-alive, and nothing unread beyond this response).
    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if self.keep_alive && conn.read.is_empty() {
                if conn.read.capacity() > 4 * READ_CHUNK {
                    conn.read = BytesMut::with_capacity(READ_CHUNK); // after a large answer
                }
                self.pool.put(conn);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = this.decoder.decode(&mut conn.read);
            match step {
                Ok(Step::Data(data)) => {
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            h1::reserve_read(&mut conn.read, this.decoder.remaining(), READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(0)) => {
                    this.keep_alive = false;
                    if let Err(e) = this.decoder.on_eof() {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
