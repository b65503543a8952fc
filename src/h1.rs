//! The HTTP/1.1 wire format (RFC 9112) of both sides of the proxy: request heads read
//! from clients and response heads written back ([`crate::downstream`]); request heads
//! written to upstreams and response heads read from them ([`crate::upstream`]); body
//! framing both ways. Pure functions over buffers, so every framing rule is tested here
//! without a socket.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Most header fields a head may carry (hyper's limit too).
pub const MAX_HEADERS: usize = 100;
/// Longest head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE_BYTES: usize = 4 * 1024;

/// A response the client cannot read as HTTP/1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("malformed response head: {0}")]
    Head(#[from] httparse::Error),
    #[error("response head over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("invalid header field in response: {0}")]
    Field(&'static str),
    #[error("invalid content-length in response")]
    ContentLength,
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
    #[error("connection closed {0}")]
    Closed(&'static str),
}

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no framing header (a GET).
    Empty,
    /// `content-length: n`.
    Length(u64),
    /// `transfer-encoding: chunked`, for bodies of unknown length.
    Chunked,
}

/// The framing for a request: the body's exact length when known (a buffered body, or a
/// streamed one the client announced with `content-length`), else the announced length,
/// else chunked. An empty body on a method that usually has none gets no header at all.
pub fn request_framing(
    method: &Method,
    headers: &HeaderMap,
    exact_len: Option<u64>,
    ended: bool,
) -> RequestFraming {
    // The common case, a body of known non-zero length, needs no header lookup.
    if let Some(n) = exact_len.filter(|&n| n > 0) {
        return RequestFraming::Length(n);
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let len = exact_len
        .or(announced)
        .or(if ended { Some(0) } else { None });
    match len {
        Some(0) if announced.is_none() && !expects_body(method) => RequestFraming::Empty,
        Some(n) => RequestFraming::Length(n),
        None => RequestFraming::Chunked,
    }
}

fn expects_body(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Append a request head to `out`: request line in origin form, `host` unless the
/// request names one, the request's fields except its own framing ones, then ours.
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    host: &HeaderValue,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if path_and_query.is_empty() {
        b"/"
    } else {
        path_and_query.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        field(out, b"host", host.as_bytes());
    }
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(n) => {
            field(out, b"content-length", itoa(n, &mut [0; 20]));
        }
        RequestFraming::Chunked => field(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Decimal digits of `n`, without going through `fmt`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Append one piece of a chunked body: `size CRLF data CRLF`.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return; // a zero-size chunk would end the body
    }
    encode_chunk_head(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Append the size line of a chunk of `len` (> 0) bytes; its data and CRLF follow.
pub fn encode_chunk_head(out: &mut Vec<u8>, len: usize) {
    let mut hex = [0u8; 16];
    let mut at = hex.len();
    let mut n = len;
    loop {
        at -= 1;
        hex[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const CHUNKED_END: &[u8] = b"0\r\n\r\n";

/// A parsed response head and how its body is framed.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Decoder,
    /// Whether the connection can carry another request once the body has been read.
    pub keep_alive: bool,
}

/// Parse a complete response head at the front of `buf` and remove it from `buf`;
/// `Ok(None)` when more bytes are needed. Header values share `buf`'s memory.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, ProtoError> {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut raw)?
    {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => {
            return Err(ProtoError::HeadTooLarge)
        }
        httparse::Status::Partial => return Ok(None),
    };
    let status = StatusCode::from_u16(res.code.unwrap_or(0))
        .map_err(|_| ProtoError::Field("status code"))?;
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut spans = [Span::default(); MAX_HEADERS];
    let count = spans_of(res.headers, buf.as_ptr() as usize, &mut spans);
    let head: Bytes = buf.split_to(len).freeze();
    let headers = headers_from(&head, &spans[..count]).map_err(ProtoError::Field)?;
    let mut keep_alive = match version {
        Version::HTTP_11 => !has_token(&headers, header::CONNECTION, "close"),
        _ => has_token(&headers, header::CONNECTION, "keep-alive"),
    };
    let body = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            keep_alive = false; // the connection now speaks something else
        }
        Decoder::Length(0)
    } else if let Some(te) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let last = te.as_bytes().rsplit(|&b| b == b',').next().unwrap_or(b"");
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Decoder::Chunked(Chunked::Size)
        } else {
            keep_alive = false;
            Decoder::Eof
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        Decoder::Length(content_length(&headers)?)
    } else {
        keep_alive = false;
        Decoder::Eof
    };
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        body,
        keep_alive,
    }))
}

/// The one length all `content-length` values agree on ("5", or "5, 5" twice).
fn content_length(headers: &HeaderMap) -> Result<u64, ProtoError> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(ProtoError::ContentLength);
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err(ProtoError::ContentLength);
            }
            found = Some(n);
        }
    }
    found.ok_or(ProtoError::ContentLength)
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Reads a response body out of the connection's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the server closes the connection.
    Eof,
    /// The body has ended.
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// Nothing decodable yet: read more.
    NeedMore,
    /// The body ended (its bytes are consumed from the buffer).
    Done,
}

impl Decoder {
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }

    /// Bytes of body still to come, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Take the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, ProtoError> {
        let step = match self {
            Decoder::Done | Decoder::Length(0) => {
                *self = Decoder::Done;
                return Ok(Step::Done);
            }
            Decoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (*left).min(buf.len() as u64) as usize;
                *left -= n as u64;
                Step::Data(buf.split_to(n).freeze())
            }
            Decoder::Eof => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                Step::Data(buf.split().freeze())
            }
            Decoder::Chunked(state) => match decode_chunked(state, buf)? {
                ChunkStep::Data(data) => Step::Data(data),
                ChunkStep::NeedMore | ChunkStep::Moved => return Ok(Step::NeedMore),
                ChunkStep::Ended => {
                    *self = Decoder::Done;
                    return Ok(Step::Done);
                }
            },
        };
        // Look past the data for the end of the body, so that the last piece already
        // says "ended" and the connection can be released with it.
        self.settle(buf)?;
        Ok(step)
    }

    /// Consume the framing that follows data (chunk ends, the last chunk, trailers) as
    /// far as `buf` allows, without taking data.
    fn settle(&mut self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        match self {
            Decoder::Length(0) => *self = Decoder::Done,
            Decoder::Chunked(state) => loop {
                if matches!(state, Chunked::Data(_)) {
                    break;
                }
                match advance_framing(state, buf)? {
                    ChunkStep::NeedMore => break,
                    ChunkStep::Ended => {
                        *self = Decoder::Done;
                        break;
                    }
                    ChunkStep::Moved | ChunkStep::Data(_) => {}
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// The server closed the connection: the end of an [`Decoder::Eof`] body, an error
    /// for any other unfinished one.
    pub fn on_eof(&mut self) -> Result<(), ProtoError> {
        match self {
            Decoder::Eof | Decoder::Done | Decoder::Length(0) => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(ProtoError::Closed("before the end of the response body")),
        }
    }
}

/// What the chunked decoder found.
enum ChunkStep {
    Data(Bytes),
    NeedMore,
    /// The empty line after the trailers was consumed: the body ended.
    Ended,
    /// One framing line consumed; go on.
    Moved,
}

/// The next piece of chunk data in `buf`, after whatever framing comes first.
fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<ChunkStep, ProtoError> {
    loop {
        if let Chunked::Data(left) = state {
            if buf.is_empty() {
                return Ok(ChunkStep::NeedMore);
            }
            let n = (*left).min(buf.len() as u64) as usize;
            *left -= n as u64;
            if *left == 0 {
                *state = Chunked::DataEnd;
            }
            return Ok(ChunkStep::Data(buf.split_to(n).freeze()));
        }
        match advance_framing(state, buf)? {
            ChunkStep::Moved => {}
            other => return Ok(other),
        }
    }
}

/// Consume one framing line: a chunk size, a chunk's end, a trailer.
fn advance_framing(state: &mut Chunked, buf: &mut BytesMut) -> Result<ChunkStep, ProtoError> {
    let Some(line) = take_line(buf)? else {
        return Ok(ChunkStep::NeedMore);
    };
    match state {
        Chunked::Size => {
            let digits = line[..]
                .split(|&b| b == b';')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            if digits.is_empty() || digits.len() > 15 {
                return Err(ProtoError::Chunk("bad chunk size"));
            }
            let mut size = 0u64;
            for &d in digits {
                let v = (d as char)
                    .to_digit(16)
                    .ok_or(ProtoError::Chunk("bad chunk size"))?;
                size = size * 16 + u64::from(v);
            }
            *state = if size == 0 {
                Chunked::Trailers
            } else {
                Chunked::Data(size)
            };
        }
        Chunked::DataEnd => {
            if !line.is_empty() {
                return Err(ProtoError::Chunk("chunk longer than its size"));
            }
            *state = Chunked::Size;
        }
        // Trailer fields are dropped: the proxy does not forward trailers.
        Chunked::Trailers if line.is_empty() => return Ok(ChunkStep::Ended),
        Chunked::Trailers | Chunked::Data(_) => {}
    }
    Ok(ChunkStep::Moved)
}

/// Remove one line (ending in LF, CR before it optional) from the front of `buf`.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, ProtoError> {
    match memchr::memchr(b'\n', buf) {
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err(ProtoError::Chunk("line too long")),
        None => Ok(None),
    }
}

/// Most room made for one read of a body whose length is known, so a large body (a
/// batch of embeddings) takes few reads.
pub const MAX_READ: usize = 256 * 1024;

/// Make room in a connection's read buffer for the next read: a quarter of `chunk`, or as
/// much of a body's known `rest` as [`MAX_READ`] allows. The buffer's unused tail is
/// reused while it is large enough; a new allocation is at least `chunk`. Both sides of
/// the proxy read this way.
pub fn reserve_read(buf: &mut BytesMut, rest: Option<u64>, chunk: usize) {
    let want = rest.map_or(chunk / 4, |n| {
        usize::try_from(n).map_or(MAX_READ, |n| n.clamp(chunk / 4, MAX_READ))
    });
    if buf.capacity() - buf.len() < want {
        buf.reserve(want.max(chunk));
    }
}

/// A request head a client sent that cannot be served; the answer names why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request head: {0}")]
    Head(#[from] httparse::Error),
    #[error("request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields")]
    HeadTooLarge,
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

impl RequestError {
    /// The status a client gets for it: 431 for heads too large, else 400.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::HeadTooLarge | RequestError::Head(httparse::Error::TooManyHeaders) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A parsed request head and how its body is framed.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: http::Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Decoder,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// `expect: 100-continue`: the client waits for a `100 Continue` before the body.
    pub expect_continue: bool,
}

/// Parse a complete request head at the front of `buf` and remove it from `buf`;
/// `Ok(None)` when more bytes are needed. Header values share `buf`'s memory.
///
/// Framing follows RFC 9112 section 6.3, strictly where a lenient reading would let a
/// request be smuggled: `transfer-encoding` whose last coding is not `chunked`, both
/// `transfer-encoding` and `content-length`, or `content-length` values that disagree
/// are refused.
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<RequestHead>, RequestError> {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(RequestError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
        Err(e) => return Err(e.into()),
    };
    if len > MAX_HEAD_BYTES {
        return Err(RequestError::HeadTooLarge);
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| RequestError::Invalid("method"))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let path = req.path.unwrap_or("");
    let target = (path.as_ptr() as usize - base, path.len());
    let mut spans = [Span::default(); MAX_HEADERS];
    let count = spans_of(req.headers, base, &mut spans);
    let head: Bytes = buf.split_to(len).freeze();
    let uri = http::Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|_| RequestError::Invalid("request target"))?;
    let headers =
        headers_from(&head, &spans[..count]).map_err(|_| RequestError::Invalid("header field"))?;
    let mut keep_alive = match version {
        Version::HTTP_11 => !has_token(&headers, header::CONNECTION, "close"),
        _ => has_token(&headers, header::CONNECTION, "keep-alive"),
    };
    let body = if let Some(te) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let last = te.as_bytes().rsplit(|&b| b == b',').next().unwrap_or(b"");
        if version == Version::HTTP_10 || !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(RequestError::Invalid(
                "transfer-encoding must end in chunked",
            ));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(RequestError::Invalid(
                "both transfer-encoding and content-length",
            ));
        }
        Decoder::Chunked(Chunked::Size)
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        Decoder::Length(
            content_length(&headers).map_err(|_| RequestError::Invalid("content-length"))?,
        )
    } else {
        Decoder::Done
    };
    let expect_continue = version == Version::HTTP_11
        && !body.is_done()
        && has_token(&headers, header::EXPECT, "100-continue");
    if method == Method::CONNECT {
        keep_alive = false;
    }
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        body,
        keep_alive,
        expect_continue,
    }))
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body may follow (HEAD, 1xx, 204, 304); the head's own fields are kept.
    None,
    /// `content-length: n`.
    Length(u64),
    /// `transfer-encoding: chunked` (HTTP/1.1 clients).
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    Close,
}

impl ResponseFraming {
    /// The framing for a response to `method` over `version`, given the body's exact
    /// length when known.
    pub fn choose(
        method: &Method,
        version: Version,
        status: StatusCode,
        exact_len: Option<u64>,
    ) -> Self {
        if *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            ResponseFraming::None
        } else if let Some(n) = exact_len {
            ResponseFraming::Length(n)
        } else if version == Version::HTTP_11 {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::Close
        }
    }
}

/// Append a response head to `out`: status line, the response's fields except framing
/// and connection ones, then ours: `date` when the response has none, the framing, and
/// `connection` when given (`close`, or `keep-alive` for an HTTP/1.0 client).
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    connection: Option<&[u8]>,
    date: &[u8],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let keep_framing = framing == ResponseFraming::None;
    for (name, value) in headers {
        if name == header::CONNECTION
            || (!keep_framing
                && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING))
        {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(header::DATE) {
        field(out, b"date", date);
    }
    match framing {
        ResponseFraming::None | ResponseFraming::Close => {}
        ResponseFraming::Length(n) => field(out, b"content-length", itoa(n, &mut [0; 20])),
        ResponseFraming::Chunked => field(out, b"transfer-encoding", b"chunked"),
    }
    if let Some(value) = connection {
        field(out, b"connection", value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Where each header's name and value sit relative to `base`, so they can be sliced out
/// of one frozen copy of the head instead of copied field by field. Returns the count.
fn spans_of(
    parsed: &[httparse::Header<'_>],
    base: usize,
    spans: &mut [Span; MAX_HEADERS],
) -> usize {
    for (span, h) in spans.iter_mut().zip(parsed.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        // A head is parsed out of a buffer far below 4 GiB.
        *span = Span {
            name: name as u32,
            name_len: h.name.len() as u32,
            value: value as u32,
            value_len: h.value.len() as u32,
        };
    }
    parsed.len()
}

/// A header field's name and value as offsets into its head.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
}

/// The header map of a frozen head, from [`spans_of`].
fn headers_from(head: &Bytes, spans: &[Span]) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for s in spans {
        let (n0, v0) = (s.name as usize, s.value as usize);
        let name = HeaderName::from_bytes(&head[n0..n0 + s.name_len as usize])
            .map_err(|_| "header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v0 + s.value_len as usize))
            .map_err(|_| "header value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> ResponseHead {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, &Method::POST).unwrap().unwrap()
    }

    /// Decode `wire` fed in pieces of `step` bytes; the data and whether it ended.
    fn decode_in_pieces(
        mut d: Decoder,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, bool), ProtoError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::Done => return Ok((out, true)),
                Step::NeedMore if fed >= wire.len() => return Ok((out, false)),
                Step::NeedMore => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    fn request(raw: &str) -> Result<Option<RequestHead>, RequestError> {
        let mut buf = BytesMut::from(raw);
        parse_request(&mut buf)
    }

    #[test]
    fn request_heads_parse_with_their_framing_and_leave_the_body() {
        let mut buf = BytesMut::from(
            "POST /v1/embeddings?x=1 HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\nX-Id: a\r\n\r\nhelloGET",
        );
        let h = parse_request(&mut buf).unwrap().unwrap();
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/v1/embeddings");
        assert_eq!(h.uri.query(), Some("x=1"));
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.headers["x-id"], "a");
        assert_eq!(h.body, Decoder::Length(5));
        assert!(h.keep_alive && !h.expect_continue);
        assert_eq!(
            &buf[..],
            b"helloGET",
            "the body and what follows stay in the buffer"
        );

        let h = request("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Decoder::Chunked(Chunked::Size));
        let h = request("GET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert!(h.body.is_done());
        let h = request("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.expect_continue);
        let h = request("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Decoder::Length(3));
        assert!(request("POST / HTTP/1.1\r\nContent-Len").unwrap().is_none());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let ka = |raw: &str| request(raw).unwrap().unwrap().keep_alive;
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn smuggling_shapes_and_broken_heads_are_refused_with_the_right_status() {
        let refused = |raw: &str| request(raw).unwrap_err();
        for raw in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "NOT HTTP AT ALL\r\n\r\n",
        ] {
            assert_eq!(refused(raw).status(), StatusCode::BAD_REQUEST, "{raw:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let e = refused(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
        assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let long = "a".repeat(MAX_HEAD_BYTES + 1);
        let e = refused(&format!("GET / HTTP/1.1\r\nx-long: {long}"));
        assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn response_heads_frame_by_length_chunks_or_close() {
        let m = Method::POST;
        let ok = StatusCode::OK;
        let v11 = Version::HTTP_11;
        assert_eq!(
            ResponseFraming::choose(&m, v11, ok, Some(7)),
            ResponseFraming::Length(7)
        );
        assert_eq!(
            ResponseFraming::choose(&m, v11, ok, None),
            ResponseFraming::Chunked
        );
        assert_eq!(
            ResponseFraming::choose(&m, Version::HTTP_10, ok, None),
            ResponseFraming::Close
        );
        for (method, status) in [
            (Method::HEAD, ok),
            (m.clone(), StatusCode::NO_CONTENT),
            (m.clone(), StatusCode::NOT_MODIFIED),
        ] {
            assert_eq!(
                ResponseFraming::choose(&method, v11, status, Some(7)),
                ResponseFraming::None
            );
        }

        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let date = b"Sun, 29 Nov 2026 01:00:00 GMT";
        let mut out = Vec::new();
        encode_response_head(&mut out, ok, &h, ResponseFraming::Length(2), None, date);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: Sun, 29 Nov 2026 01:00:00 GMT\r\ncontent-length: 2\r\n\r\n"
        );
        let mut out = Vec::new();
        h.insert(header::DATE, HeaderValue::from_static("upstream's"));
        let status = StatusCode::BAD_GATEWAY;
        encode_response_head(
            &mut out,
            status,
            &h,
            ResponseFraming::Chunked,
            Some(b"close"),
            date,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
        assert!(
            text.contains("date: upstream's\r\n") && !text.contains("2026"),
            "{text}"
        );
        assert!(text.contains("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"));
        assert!(
            !text.contains("content-length") && !text.contains("keep-alive"),
            "{text}"
        );
        // HEAD keeps the length the body would have had.
        let mut out = Vec::new();
        encode_response_head(&mut out, ok, &h, ResponseFraming::None, None, date);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("content-length: 999\r\n"));
    }

    #[test]
    fn request_heads_carry_host_fields_and_framing() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let host = HeaderValue::from_static("model:8080");
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::POST,
            "/v1/embeddings?x=1",
            &h,
            &host,
            RequestFraming::Length(12),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/embeddings?x=1 HTTP/1.1\r\nhost: model:8080\r\nx-request-id: r1\r\ncontent-length: 12\r\n\r\n"
        );
        let mut out = Vec::new();
        h.insert(header::HOST, HeaderValue::from_static("other"));
        encode_head(&mut out, &Method::GET, "", &h, &host, RequestFraming::Empty);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET / HTTP/1.1\r\n"), "{text}");
        assert!(
            text.contains("host: other\r\n") && !text.contains("model:8080"),
            "{text}"
        );
        assert!(!text.contains("content-length"), "{text}");
    }

    #[test]
    fn request_framing_follows_the_body_then_the_announced_length() {
        let none = HeaderMap::new();
        let mut cl = HeaderMap::new();
        cl.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        assert_eq!(
            request_framing(&Method::GET, &none, Some(0), true),
            RequestFraming::Empty
        );
        assert_eq!(
            request_framing(&Method::POST, &none, Some(0), true),
            RequestFraming::Length(0)
        );
        assert_eq!(
            request_framing(&Method::POST, &none, Some(100), false),
            RequestFraming::Length(100)
        );
        assert_eq!(
            request_framing(&Method::POST, &cl, None, false),
            RequestFraming::Length(7)
        );
        assert_eq!(
            request_framing(&Method::POST, &none, None, false),
            RequestFraming::Chunked
        );
    }

    #[test]
    fn chunks_are_hex_sized_and_empty_data_writes_nothing() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'a'; 26]);
        encode_chunk(&mut out, b"");
        out.extend_from_slice(CHUNKED_END);
        let mut expected = b"1a\r\n".to_vec();
        expected.extend_from_slice(&[b'a'; 26]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(
            itoa(u64::MAX, &mut [0; 20]),
            u64::MAX.to_string().as_bytes()
        );
    }

    #[test]
    fn response_heads_are_parsed_and_framed() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello");
        assert_eq!(h.status, 200);
        assert_eq!(h.body, Decoder::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);

        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.body, Decoder::Chunked(Chunked::Size));
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.body, Decoder::Eof);
        assert!(!h.keep_alive, "a body read to EOF ends the connection");
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
        assert!(h.body.is_done());
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n");
        assert_eq!(h.body, Decoder::Length(4));

        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        assert!(parse_head(&mut buf, &Method::HEAD)
            .unwrap()
            .unwrap()
            .body
            .is_done());
    }

    #[test]
    fn bad_or_partial_heads_say_so() {
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Len");
        assert!(parse_head(&mut partial, &Method::GET).unwrap().is_none());
        assert_eq!(partial.len(), 28, "nothing consumed");
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert_eq!(
                parse_head(&mut buf, &Method::GET).unwrap_err(),
                ProtoError::ContentLength,
                "{bad}"
            );
        }
        let mut buf = BytesMut::from("HTTP/1.1 2x0 OK\r\n\r\n");
        assert!(parse_head(&mut buf, &Method::GET).is_err());
        let mut huge = BytesMut::from("HTTP/1.1 200 OK\r\n");
        huge.extend_from_slice(&[b'a'; MAX_HEAD_BYTES]);
        assert_eq!(
            parse_head(&mut huge, &Method::GET).unwrap_err(),
            ProtoError::HeadTooLarge
        );
    }

    #[test]
    fn length_bodies_end_exactly_at_their_length_in_any_pieces() {
        for step in [1, 2, 3, 7, 100] {
            let (data, ended) =
                decode_in_pieces(Decoder::Length(10), b"0123456789NEXT", step).unwrap();
            assert_eq!(data, b"0123456789", "step {step}");
            assert!(ended);
        }
        let (data, ended) = decode_in_pieces(Decoder::Length(10), b"01234", 3).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"01234"[..], false));
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces_and_leave_what_follows() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nHTTP/1.1";
        for step in 1..=wire.len() {
            let mut buf = BytesMut::new();
            let mut d = Decoder::Chunked(Chunked::Size);
            let mut out = Vec::new();
            let mut fed = 0;
            loop {
                match d.decode(&mut buf).unwrap() {
                    Step::Data(b) => out.extend_from_slice(&b),
                    Step::Done => break,
                    Step::NeedMore => {
                        assert!(fed < wire.len(), "step {step}: ran out");
                        let end = (fed + step).min(wire.len());
                        buf.extend_from_slice(&wire[fed..end]);
                        fed = end;
                    }
                }
            }
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            let mut rest = buf.to_vec();
            rest.extend_from_slice(&wire[fed..]);
            assert_eq!(rest, b"HTTP/1.1", "step {step}");
        }
    }

    #[test]
    fn a_whole_chunked_body_in_the_buffer_ends_with_its_last_data() {
        let mut buf = BytesMut::from("3\r\nabc\r\n0\r\n\r\n");
        let mut d = Decoder::Chunked(Chunked::Size);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"abc"))
        );
        assert!(d.is_done(), "{d:?}");
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [&b"zz\r\n"[..], b"3\r\nabcd\r\n", b"10000000000000000\r\n"] {
            let err = decode_in_pieces(Decoder::Chunked(Chunked::Size), bad, 64).unwrap_err();
            assert!(matches!(err, ProtoError::Chunk(_)), "{err:?}");
        }
        let mut long = BytesMut::from(&[b'1'; MAX_LINE_BYTES + 1][..]);
        assert!(Decoder::Chunked(Chunked::Size).decode(&mut long).is_err());
    }

    #[test]
    fn eof_ends_only_bodies_framed_by_it() {
        let mut d = Decoder::Eof;
        assert!(d.on_eof().is_ok());
        assert!(d.is_done());
        assert!(Decoder::Length(3).on_eof().is_err());
        assert!(Decoder::Chunked(Chunked::Size).on_eof().is_err());
    }
}
