//! The client side: keep-alive HTTP/1.1 connections to one origin ([`Client`]).
//!
//! Made for a proxy that talks to a few fixed origins: the pool is a stack of idle
//! connections per origin, nothing more, and a request is one exchange on a socket the
//! request's own task owns: the head and whatever body is ready go out in one write,
//! the response head is parsed from one read, and the body is handed out as slices of
//! the read buffer. A connection goes back on the stack when its response body has been
//! read to the end ([`ResponseBody`]). (hyper's client instead runs a task per
//! connection and passes each request and response through channels to it.)
//!
//! Behaviour: TCP_NODELAY, a 5 s connect timeout, TLS through rustls for `https://`
//! origins, the `Host` header set from the origin, idle connections dropped after
//! [`IDLE_TIMEOUT`] or as soon as the server closes them, interim (1xx) answers skipped.
//! A request whose reused connection turns out to be closed (the server gave up on it
//! while it sat idle) is sent again on another connection only when its method is
//! idempotent (RFC 9110 section 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) and all
//! of it was in the first write; a POST is never sent twice. Request bodies are sent
//! whole before the response is read.

mod wire;

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
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub use wire::{
    encode_request_head, parse_response, request_framing, RequestFraming, ResponseHead,
};

use crate::body::{self, Decoder, Step};
use crate::MAX_HEAD_BYTES;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long an idle connection is kept: shorter than common server keep-alive timeouts
/// (uvicorn's 5 s is the outlier; most are ≥ 60 s); a connection the server closes
/// earlier is noticed and dropped before it is handed out.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect timeout for new connections (TCP and TLS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Read buffers grow by this much; many small responses share one allocation.
const READ_CHUNK: usize = 16 * 1024;

/// A write buffer larger than this after a request (a big body went out) is not kept.
const MAX_KEPT_WRITE_BUF: usize = 64 * 1024;

/// Why an exchange with the origin failed. The first three name the origin and keep
/// their cause, so that printing the chain gives e.g. "connect to https://...: invalid
/// peer certificate: UnknownIssuer"; the others are those causes, or what a
/// [`ResponseBody`] fails with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {0}")]
    Connect(Uri, #[source] BoxError),
    #[error("request to {0}")]
    Request(Uri, #[source] BoxError),
    /// The request's own body failed (the caller's body errored or did not match its
    /// announced length); the cause is the body's error.
    #[error("request body for {0}")]
    RequestBody(Uri, #[source] BoxError),
    #[error("malformed response head: {0}")]
    Head(#[from] httparse::Error),
    #[error("response head over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// A response that parses but breaks a rule (framing, status).
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("connection closed {0}")]
    Closed(&'static str),
    /// A kept connection closed without answering a request that is not idempotent: it
    /// may have been processed, so it is not sent again.
    #[error("the kept-alive connection closed before the response head; {0} is not idempotent, so it was not sent again")]
    NotResent(Method),
    #[error("response body: {0}")]
    Body(#[from] body::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Keep-alive connections to one origin (`scheme://authority`), shared by all requests.
pub struct Client {
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

/// Whether a request may be sent twice (RFC 9110 section 9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Client {
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
        Client {
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

    /// Idle connections in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle.lock().map_or(0, |idle| idle.len())
    }

    /// Send `req` (its URI in origin form, path and query, or `*`) and return the
    /// response head; the connection goes back to the pool once the body has been read
    /// to the end. The `Host` header is set to the origin's unless the request has one.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<ResponseBody>, Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (parts, mut body) = req.into_parts();
        let framing = request_framing(
            &parts.method,
            &parts.headers,
            body.size_hint().exact(),
            body.is_end_stream(),
        );
        let (mut conn, mut reused) = self.checkout_or_connect().await?;
        let mut out = std::mem::take(&mut conn.write);
        out.clear();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        encode_request_head(
            &mut out,
            &parts.method,
            target,
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
        let idempotent = is_idempotent(&parts.method);
        let head = loop {
            let wrote = write_all(&mut conn.io, &out).await;
            let wrote = match wrote {
                Ok(()) if whole => Ok(()),
                Ok(()) => {
                    self.stream_rest(&mut conn, &mut body, &mut sent, &mut out)
                        .await
                }
                Err(e) if reused && whole && is_closed(&e) => Err(ReadHeadError::Closed),
                Err(e) => return Err(self.request_error(Error::Io(e))),
            };
            let result = match wrote {
                Ok(()) => read_head(&mut conn, &parts.method).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(head) => break head,
                // A reused connection the server had closed: nothing of this request
                // was answered, and all of it is in `out`. Send it again elsewhere if
                // doing so twice is harmless.
                Err(ReadHeadError::Closed) if reused && whole && idempotent => {
                    (conn, reused) = self.checkout_or_connect().await?;
                }
                Err(ReadHeadError::Closed) if reused && !idempotent => {
                    return Err(self.request_error(Error::NotResent(parts.method)))
                }
                Err(ReadHeadError::Closed) => {
                    return Err(self.request_error(Error::Closed("before the response head")))
                }
                Err(ReadHeadError::Failed(e)) => return Err(self.request_error(e)),
                Err(ReadHeadError::Sending(e)) => return Err(e),
            }
        };
        if out.capacity() <= MAX_KEPT_WRITE_BUF {
            conn.write = out;
        }
        let mut body = ResponseBody {
            conn: Some(conn),
            pool: self.pool.clone(),
            decoder: head.body,
            keep_alive: head.keep_alive,
        };
        if body.decoder.is_done() {
            body.release(); // no body (HEAD, 204, 304, length 0): it may never be polled
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
    ) -> Result<(), ReadHeadError>
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
            .map_err(|e| ReadHeadError::Sending(self.body_error(e)))?;
            write_all(&mut conn.io, out)
                .await
                .map_err(|e| ReadHeadError::Sending(self.request_error(Error::Io(e))))?;
            if ended {
                return Ok(());
            }
        }
    }

    async fn checkout_or_connect(&self) -> Result<(Box<Conn>, bool), Error> {
        match self.pool.checkout() {
            Some(conn) => Ok((conn, true)),
            // Boxed: the connect and TLS handshake state is large and rarely needed;
            // inline it would be part of every request's future and copied with it.
            None => Ok((Box::pin(self.connect()).await?, false)),
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, Error> {
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
            Ok(Err(e)) => return Err(Error::Connect(self.origin.clone(), e.into())),
            Err(_) => {
                let why = format!("timed out after {CONNECT_TIMEOUT:?}");
                return Err(Error::Connect(self.origin.clone(), why.into()));
            }
        };
        Ok(Box::new(Conn {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
        }))
    }

    fn request_error(&self, e: Error) -> Error {
        Error::Request(self.origin.clone(), Box::new(e))
    }

    fn body_error(&self, e: SendError) -> Error {
        match e {
            SendError::Body(e) => Error::RequestBody(self.origin.clone(), e),
            SendError::Framing(why) => Error::Request(self.origin.clone(), why.into()),
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
                        RequestFraming::Chunked => body::encode_chunk(out, &data),
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
                out.extend_from_slice(body::CHUNKED_END);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

enum ReadHeadError {
    /// The connection ended (EOF or reset) before any byte of a response.
    Closed,
    /// Anything else on the way to a response head (the cause, without the origin).
    Failed(Error),
    /// Sending the rest of the body failed (already with the origin).
    Sending(Error),
}

/// Read until a whole final response head is in, skipping `100 Continue` and the like.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<ResponseHead, ReadHeadError> {
    let mut got_any = !conn.read.is_empty();
    loop {
        match parse_response(&mut conn.read, method) {
            Ok(Some(head)) if head.status.is_informational() => {}
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {
                body::reserve_read(&mut conn.read, None, READ_CHUNK);
                match conn.io.read_buf(&mut conn.read).await {
                    Ok(0) if !got_any => return Err(ReadHeadError::Closed),
                    Ok(0) => {
                        return Err(ReadHeadError::Failed(Error::Closed(
                            "in the middle of the response head",
                        )))
                    }
                    Ok(_) => got_any = true,
                    Err(e) if !got_any && is_closed(&e) => return Err(ReadHeadError::Closed),
                    Err(e) => return Err(ReadHeadError::Failed(e.into())),
                }
            }
            Err(e) => return Err(ReadHeadError::Failed(e)),
        }
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
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

/// A response body from a [`Client`], as slices of the connection's read buffer.
/// When it has been read to the end, its connection goes back to the pool; dropped
/// earlier, the connection is closed.
pub struct ResponseBody {
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
    decoder: Decoder,
    keep_alive: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("decoder", &self.decoder)
            .field("pooled", &self.conn.is_some())
            .finish()
    }
}

impl ResponseBody {
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

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
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
            body::reserve_read(&mut conn.read, this.decoder.remaining(), READ_CHUNK);
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

#[cfg(test)]
mod tests;
