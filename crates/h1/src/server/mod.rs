//! The server side: connections from clients, one task each, reading request heads,
//! handing each request to a handler and writing its answer back; and the accept loop
//! around them ([`Server`]): a cap on open connections with `503` beyond it, and
//! graceful shutdown.
//!
//! What a connection does: keep-alive and pipelining, request bodies read straight out
//! of the connection's buffer as the handler asks for them ([`RequestBody`]),
//! `100 Continue`, responses framed by length or chunked, a head-read timeout, a
//! body-read timeout, shutdown that lets a request in progress finish.
//!
//! Behaviour a client sees:
//!
//! - A refused head gets the status [`Error::status`] names (`400`, `405`, `431`,
//!   `501`) and the connection closes; the handler never sees it.
//! - [`Config::header_read_timeout`] bounds the wait for a whole head, counted from when
//!   the connection starts waiting for one. A client that sent part of a head gets
//!   `408`; an idle keep-alive connection is closed without a word.
//! - [`Config::body_read_timeout`] bounds each pause of the client while the handler
//!   waits for body data: the body then fails with [`Error::BodyTimeout`] (the
//!   handler answers, usually `408`). The clock runs only while the body waits for the
//!   client, not while the handler is busy elsewhere.
//! - A request whose body the handler did not read to the end (it answered early, e.g.
//!   `413`) is answered with `connection: close`.
//! - On shutdown, idle connections close; a connection busy with a request finishes it
//!   and answers with `connection: close`.
//! - If the answer's body fails midway, the connection closes without finishing the
//!   message, so the client sees a cut answer, never a short one that looks whole.
//! - A handler's answer with an interim status (1xx) is replaced by `500`: this server
//!   sends `100 Continue` itself and switches no protocols.

mod wire;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};

pub use wire::{encode_response_head, parse_request, RequestHead, ResponseFraming};

use crate::body::{self, Decoder, Step};
use crate::{MAX_HEADERS, MAX_HEAD_BYTES};

/// A client connection's read buffer starts at, and grows by at least, this much.
const READ_CHUNK: usize = 8 * 1024;
/// Response data frames at least this large are written from their own buffer instead
/// of copied behind the head.
const COPY_LIMIT: usize = 16 * 1024;
/// A connection keeps at most this much write buffer between requests.
const MAX_KEPT_WRITE_BUF: usize = 64 * 1024;

/// What a client did wrong, or what the server would not do; each has the status the
/// client is answered with ([`Error::status`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The head is not HTTP/1.x.
    #[error("malformed request head: {0}")]
    Head(httparse::Error),
    #[error("request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields")]
    HeadTooLarge,
    /// A head that parses but breaks a rule (framing, `Host`, request target).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// Valid HTTP this server does not implement (transfer codings other than chunked).
    #[error("{0} is not supported")]
    NotImplemented(&'static str),
    /// `CONNECT`, `TRACE`.
    #[error("method {0} is not allowed")]
    MethodNotAllowed(&'static str),
    /// Part of a head arrived, not all of it, within [`Config::header_read_timeout`].
    #[error("request head not received within {0:?}")]
    HeadTimeout(Duration),
    /// More than [`Config::max_connections`] connections were open.
    #[error("too many open connections")]
    Overloaded,
    /// The client paused its body longer than [`Config::body_read_timeout`].
    #[error("no request body data for {0:?}")]
    BodyTimeout(Duration),
    /// The body does not follow its framing, or the client closed before its end.
    #[error("request body: {0}")]
    Body(#[from] body::Error),
    #[error("reading the request body: {0}")]
    Io(#[from] io::Error),
    /// A [`RequestBody`] polled after its request was answered.
    #[error("the request body was read after its connection moved on to the next request")]
    Stale,
}

impl Error {
    /// The status a client gets for it, as nginx answers: 431 for heads too large, 405
    /// for refused methods, 501 for unsupported codings, 408 for timeouts, 503 over the
    /// connection cap, 500 for a stale body (a handler bug), else 400.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Error::HeadTimeout(_) | Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Error::Stale => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Head(_) | Error::Invalid(_) | Error::Body(_) | Error::Io(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

/// Per-connection settings and the connection cap.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Longest wait for a whole request head (nginx: `client_header_timeout`).
    pub header_read_timeout: Duration,
    /// Longest pause between two reads of a request body (nginx: `client_body_timeout`).
    pub body_read_timeout: Duration,
    /// Most connections open at once; beyond, `503` and close ([`Server`] only).
    pub max_connections: usize,
    /// The body of the answers the server gives by itself (refused heads, `408` for a
    /// head, `503` over the cap), from the reason. [`default_refusal_text`] names the
    /// problem; a product can add its name and the setting that applies.
    pub refusal_text: fn(&Error) -> String,
}

impl Default for Config {
    /// nginx's defaults: 60 s for heads and body pauses; 1024 connections.
    fn default() -> Self {
        Config {
            header_read_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            refusal_text: default_refusal_text,
        }
    }
}

/// The reason and a newline.
pub fn default_refusal_text(e: &Error) -> String {
    format!("{e}\n")
}

/// The socket and what has been read from it; shared by the connection task and the
/// body of the request it is serving.
struct Shared {
    io: TcpStream,
    read: Mutex<ReadState>,
}

struct ReadState {
    buf: BytesMut,
    /// The current request's body framing.
    decoder: Decoder,
    /// Counts requests on the connection; a body from an earlier one reads nothing.
    generation: u64,
    /// The client sent `expect: 100-continue` and has not had its `100 Continue`.
    continue_pending: bool,
    /// The client closed its side.
    eof: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ReadState> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ReadState {
    /// One read from the socket into `buf`: `Ready(Ok(()))` when something happened
    /// (bytes or end of stream), `Pending` when the socket has nothing yet.
    fn poll_fill(
        &mut self,
        io: &TcpStream,
        cx: &mut Context<'_>,
        want: Option<u64>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(io.poll_read_ready(cx))?;
            body::reserve_read(&mut self.buf, want, READ_CHUNK);
            // A read that leaves room in the buffer emptied the socket: its readiness is
            // cleared with it (the closure's WouldBlock), as tokio's own `poll_read` does,
            // so that the next wait goes to epoll instead of a read that finds nothing.
            let room = self.buf.capacity() - self.buf.len();
            let mut got = None;
            let read = io.try_io(Interest::READABLE, || {
                let n = io.try_read_buf(&mut self.buf)?;
                got = Some(n);
                if n > 0 && n < room {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match (got, read) {
                (Some(0), _) => {
                    self.eof = true;
                    return Poll::Ready(Ok(()));
                }
                (Some(_), _) => return Poll::Ready(Ok(())),
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (None, Err(e)) => return Poll::Ready(Err(e)),
                (None, Ok(())) => continue,
            }
        }
    }
}

/// The body of a client's request, read from the connection as it is polled.
pub struct RequestBody {
    /// `None` for a request without a body.
    shared: Option<Arc<Shared>>,
    generation: u64,
    /// Bytes still to come when the framing says.
    remaining: Option<u64>,
    done: bool,
    timer: BodyTimer,
}

/// The body-read deadline. Created the first time the body has to wait: a body that
/// arrived with its head (the common case) never touches the timer wheel.
struct BodyTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` measures the current wait (false once data has arrived).
    armed: bool,
}

impl BodyTimer {
    /// The body has to wait for the client: start the clock if this wait is new, and
    /// say whether it ran out.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let sleep = match self.sleep.as_mut() {
            Some(s) => {
                if !self.armed {
                    s.as_mut().reset(Instant::now() + timeout);
                }
                s
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep(timeout))),
        };
        self.armed = true;
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("remaining", &self.remaining)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl RequestBody {
    /// A body with nothing in it (tests, requests without a body).
    pub fn empty() -> Self {
        Self {
            shared: None,
            generation: 0,
            remaining: Some(0),
            done: true,
            timer: BodyTimer {
                timeout: Duration::ZERO,
                sleep: None,
                armed: false,
            },
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let Some(shared) = this.shared.as_ref() else {
            return Poll::Ready(None);
        };
        let mut st = shared.lock();
        if st.generation != this.generation {
            this.done = true;
            return Poll::Ready(Some(Err(Error::Stale)));
        }
        loop {
            let st = &mut *st;
            match st.decoder.decode(&mut st.buf) {
                Ok(Step::Data(data)) => {
                    this.remaining = st.decoder.remaining();
                    this.done = st.decoder.is_done();
                    this.timer.armed = false;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    this.done = true;
                    this.remaining = Some(0);
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            if st.eof {
                this.done = true;
                return Poll::Ready(Some(Err(body::Error::Closed.into())));
            }
            if st.continue_pending {
                // Tiny and first on the socket's send queue: it goes out whole or the
                // connection is broken, and then the read below says so.
                st.continue_pending = false;
                let _ = shared.io.try_write(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            match st.poll_fill(&shared.io, cx, this.remaining) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Pending if this.timer.poll_expired(cx) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::BodyTimeout(this.timer.timeout))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            _ if self.done => SizeHint::with_exact(0),
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Why waiting for a request head ended without one.
enum HeadEnd {
    /// The client closed the connection between requests, or shutdown began while it
    /// was idle.
    Closed,
    Refused(Error),
    Io,
}

/// The head-read deadline. One timer per connection, moved only when it fires early:
/// a request costs a clock read, not a timer-wheel insert and remove.
struct HeadTimer {
    timeout: Duration,
    want: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl HeadTimer {
    fn start(&mut self) {
        self.want = Instant::now() + self.timeout;
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let want = self.want;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(want)));
        if sleep.deadline() > want {
            sleep.as_mut().reset(want);
        }
        while sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= want {
                return true;
            }
            sleep.as_mut().reset(want);
        }
        false
    }
}

/// Serve one client connection until it closes, breaks, times out or shutdown ends it.
/// `stop` turning true is shutdown.
pub async fn serve_connection<H, F, B>(
    io: TcpStream,
    cfg: Config,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let shared = Arc::new(Shared {
        io,
        read: Mutex::new(ReadState {
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: Decoder::Done,
            generation: 0,
            continue_pending: false,
            eof: false,
        }),
    });
    let mut out = Vec::with_capacity(4096);
    let mut timer = HeadTimer {
        timeout: cfg.header_read_timeout,
        want: Instant::now(),
        sleep: None,
    };
    let stop_flag = stop.clone();
    let mut stopped = Box::pin(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let mut stopping = false;
    loop {
        timer.start();
        let head = poll_fn(|cx| {
            let mut st = shared.lock();
            let st = &mut *st;
            loop {
                if !st.buf.is_empty() {
                    match parse_request(&mut st.buf) {
                        Ok(Some(head)) => return Poll::Ready(Ok(head)),
                        Ok(None) => {}
                        Err(e) => return Poll::Ready(Err(HeadEnd::Refused(e))),
                    }
                }
                if st.eof {
                    return Poll::Ready(Err(HeadEnd::Closed));
                }
                if st.buf.is_empty() && (stopping || stopped.as_mut().poll(cx).is_ready()) {
                    stopping = true;
                    return Poll::Ready(Err(HeadEnd::Closed));
                }
                match st.poll_fill(&shared.io, cx, None) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(HeadEnd::Io)),
                    // Idle (nothing of a head yet): close quietly, as for a client that
                    // went away; a 408 there could be read as the answer to a request
                    // the client sends at the same moment.
                    Poll::Pending if timer.poll_expired(cx) => {
                        return Poll::Ready(Err(if st.buf.is_empty() {
                            HeadEnd::Closed
                        } else {
                            HeadEnd::Refused(Error::HeadTimeout(timer.timeout))
                        }))
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        let head = match head {
            Ok(head) => head,
            Err(HeadEnd::Closed | HeadEnd::Io) => break,
            Err(HeadEnd::Refused(e)) => {
                tracing::debug!(error = %e, "refused a request head");
                refuse(&shared.io, &mut out, &e, cfg.refusal_text).await;
                break;
            }
        };

        let generation = {
            let mut st = shared.lock();
            st.generation += 1;
            st.decoder = head.body.clone();
            st.continue_pending = head.expect_continue;
            st.generation
        };
        let body = if head.body.is_done() {
            RequestBody::empty()
        } else {
            RequestBody {
                shared: Some(shared.clone()),
                generation,
                remaining: head.body.remaining(),
                done: false,
                timer: BodyTimer {
                    timeout: cfg.body_read_timeout,
                    sleep: None,
                    armed: false,
                },
            }
        };
        let method = head.method.clone();
        let version = head.version;
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = version;
        *req.headers_mut() = head.headers;

        let resp = handler(req).await;

        let body_read = {
            let mut st = shared.lock();
            let read = st.decoder.is_done();
            // Whatever still holds the body reads nothing more from this connection.
            st.generation += 1;
            st.continue_pending = false;
            read
        };
        stopping = stopping || *stop_flag.borrow();
        let close = !head.keep_alive || !body_read || stopping;
        match write_response(&shared.io, &mut out, resp, &method, version, close).await {
            Ok(true) if !close => {}
            _ => break,
        }
        if out.capacity() > MAX_KEPT_WRITE_BUF {
            out = Vec::with_capacity(4096);
        }
    }
    // Close our side first, so that a client still sending gets our answer and a FIN,
    // not a reset.
    if let Ok(shared) = Arc::try_unwrap(shared) {
        let mut io = shared.io;
        let _ = io.shutdown().await;
    }
}

/// Answer a request the connection will not serve, then the caller closes it.
async fn refuse(io: &TcpStream, out: &mut Vec<u8>, e: &Error, text: fn(&Error) -> String) {
    let why = text(e);
    out.clear();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    encode_response_head(
        out,
        e.status(),
        &headers,
        ResponseFraming::Length(why.len() as u64),
        Some(b"close"),
        &http_date(),
    );
    out.extend_from_slice(why.as_bytes());
    let _ = write_all(io, out).await;
}

/// Write a response; `Ok(true)` when the message went out whole and framed so that the
/// connection can carry another.
async fn write_response<B>(
    io: &TcpStream,
    out: &mut Vec<u8>,
    resp: Response<B>,
    method: &Method,
    version: Version,
    close: bool,
) -> io::Result<bool>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, mut body) = resp.into_parts();
    if parts.status.is_informational() {
        tracing::warn!(status = %parts.status, "handler answered with an interim status; 500 instead");
        out.clear();
        encode_response_head(
            out,
            StatusCode::INTERNAL_SERVER_ERROR,
            &http::HeaderMap::new(),
            ResponseFraming::Length(0),
            Some(b"close"),
            &http_date(),
        );
        write_all(io, out).await?;
        return Ok(false);
    }
    let framing = ResponseFraming::choose(method, version, parts.status, body.size_hint().exact());
    let date = if parts.headers.contains_key(header::DATE) {
        Vec::new()
    } else {
        http_date()
    };
    // HTTP/1.0 clients keep a connection only when told.
    let connection: Option<&[u8]> = if close || framing == ResponseFraming::Close {
        Some(b"close")
    } else if version == Version::HTTP_10 {
        Some(b"keep-alive")
    } else {
        None
    };
    out.clear();
    encode_response_head(
        out,
        parts.status,
        &parts.headers,
        framing,
        connection,
        &date,
    );
    if framing == ResponseFraming::None {
        write_all(io, out).await?;
        return Ok(true);
    }
    let mut sent: u64 = 0;
    loop {
        // Gather every frame that is ready behind the head; write when the body has to
        // wait or the gathered bytes are many.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                write_all(io, out).await?;
                out.clear();
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers are not forwarded
            },
            Some(Err(e)) => {
                // Cut the message: whatever went out stays short of its framing.
                tracing::debug!(error = %e, "response body failed; closing the connection");
                write_all(io, out).await?;
                return Ok(false);
            }
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if let ResponseFraming::Length(n) = framing {
            if sent > n {
                tracing::warn!(declared = n, "response body longer than its length; cut");
                write_all(io, out).await?;
                return Ok(false);
            }
        }
        if framing == ResponseFraming::Chunked {
            body::encode_chunk_head(out, data.len());
        }
        if data.len() >= COPY_LIMIT {
            write_all(io, out).await?;
            out.clear();
            write_all(io, &data).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if framing == ResponseFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= MAX_KEPT_WRITE_BUF {
            write_all(io, out).await?;
            out.clear();
        }
    }
    let whole = match framing {
        ResponseFraming::Length(n) => sent == n,
        ResponseFraming::Chunked => {
            out.extend_from_slice(body::CHUNKED_END);
            true
        }
        ResponseFraming::Close => false,
        ResponseFraming::None => true,
    };
    write_all(io, out).await?;
    Ok(whole)
}

/// Write all of `buf`, waiting for the socket only when it is full.
async fn write_all(io: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match io.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Today's `date` header value, formatted once a second per thread.
fn http_date() -> Vec<u8> {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, Vec<u8>)> = const { std::cell::RefCell::new((0, Vec::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now).into_bytes());
        }
        c.1.clone()
    })
}

/// The accept loop: every connection on its own task, at most
/// [`Config::max_connections`] at once (beyond, `503` and close without reading the
/// request), and a shutdown that lets requests in progress finish.
pub struct Server<H> {
    config: Config,
    handler: H,
    /// Open connections hold a permit each; shutdown waits for all of them.
    permits: Arc<Semaphore>,
    stop: watch::Sender<bool>,
    /// Where connections that open with the HTTP/2 preface go ([`Server::with_h2`]).
    h2: Option<H2Handler>,
}

/// Serves a connection that opened with the HTTP/2 connection preface (nothing of it has
/// been read), until it ends or the shutdown signal turns `true`.
pub type H2Handler = Arc<
    dyn Fn(TcpStream, watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// The client connection preface of HTTP/2 (RFC 9113 section 3.4): how a client with
/// prior knowledge (h2c) opens a connection.
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Does the connection open with [`H2_PREFACE`]? Peeks (reads nothing) until the bytes
/// in differ from it or hold all of it; an HTTP/1.1 request differs by its second byte
/// at the latest. `false` when nothing decides within `within` or the peer closes: the
/// HTTP/1.1 side then answers the head timeout or sees the close itself.
pub async fn opens_with_h2_preface(stream: &TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 24];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return false;
        }
        if n == H2_PREFACE.len() {
            return true;
        }
        if n == seen {
            // A preface split over packets, and nothing new yet: peek again shortly
            // (a peek of bytes already seen returns at once).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen = n;
    }
}

impl<H, F, B> Server<H>
where
    H: Fn(Request<RequestBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display + Send,
{
    pub fn new(config: Config, handler: H) -> Self {
        Server {
            permits: Arc::new(Semaphore::new(config.max_connections)),
            config,
            handler,
            stop: watch::channel(false).0,
            h2: None,
        }
    }

    /// Hand connections that open with the HTTP/2 preface to `h2`, under the same
    /// connection cap and shutdown; all others are served as HTTP/1.1 as before.
    pub fn with_h2(mut self, h2: H2Handler) -> Self {
        self.h2 = Some(h2);
        self
    }

    /// Accept and serve connections from `listener` until `stop` resolves. Failed
    /// accepts (EMFILE and friends) back off for 50 ms instead of spinning.
    pub async fn accept(&self, listener: &TcpListener, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _peer)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    self.spawn(stream);
                }
                () = &mut stop => return,
            }
        }
    }

    /// Serve one accepted connection on its own task, or shed it when at the cap.
    pub fn spawn(&self, stream: TcpStream) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tokio::spawn(shed(stream, self.config.refusal_text));
            return;
        };
        let _ = stream.set_nodelay(true);
        let handler = self.handler.clone();
        let config = self.config;
        let stopped = self.stop.subscribe();
        let h2 = self.h2.clone();
        tokio::spawn(async move {
            match h2 {
                Some(h2) if opens_with_h2_preface(&stream, config.header_read_timeout).await => {
                    h2(stream, stopped).await
                }
                _ => serve_connection(stream, config, handler, stopped).await,
            }
            drop(permit);
        });
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.permits.available_permits()
    }

    /// Shut down: idle connections close at once, busy ones after their current
    /// request (answered with `connection: close`). Waits for them until `deadline`;
    /// returns how many were still open then.
    pub async fn drain(&self, deadline: Instant) -> usize {
        let _ = self.stop.send(true);
        let max = u32::try_from(self.config.max_connections).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(deadline, self.permits.acquire_many(max)).await {
            Ok(_) => 0,
            Err(_) => self.open_connections(),
        }
    }
}

/// Over the connection cap: answer `503` and close, without reading the request.
async fn shed(stream: TcpStream, text: fn(&Error) -> String) {
    let mut out = Vec::new();
    refuse(&stream, &mut out, &Error::Overloaded, text).await;
    let mut stream = stream;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests;
