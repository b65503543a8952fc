//! The server's side of the wire: request heads in, response heads out. Pure functions
//! over buffers, so every rule is tested without a socket.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version};

use super::Error;
use crate::body::Decoder;
use crate::fields::{self, Coding, Keep, Span};
use crate::{MAX_HEADERS, MAX_HEAD_BYTES};

/// A parsed request head and how its body is framed.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// Origin form (`/path?query`), absolute form (`http://host/path`), or `*` (OPTIONS).
    pub uri: http::Uri,
    pub version: Version,
    /// The fields, without those this crate drops (names with `_`, `upgrade`).
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
/// Refused, with the status [`Error::status`] gives (the crate documentation lists
/// them): malformed heads, heads over 64 KiB or 100 fields, request targets other than
/// origin form, absolute form and `*` for OPTIONS, `CONNECT` and `TRACE`, a missing,
/// repeated or invalid `Host` (HTTP/1.1), and framing that could smuggle a request
/// (RFC 9112 section 6.3, read as nginx 1.22 does).
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<RequestHead>, Error> {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(e) => return Err(Error::Head(e)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Error::HeadTooLarge);
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| Error::Invalid("method"))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let path = req.path.unwrap_or("");
    let target = (path.as_ptr() as usize - base, path.len());
    let mut spans = [Span::default(); MAX_HEADERS];
    let count = fields::spans_of(req.headers, base, &mut spans);
    let head: Bytes = buf.split_to(len).freeze();
    let target = head.slice(target.0..target.0 + target.1);

    // nginx refuses these methods before looking further (405, "client sent CONNECT
    // method"): a tunnel or a reflected request has no place in front of a model.
    if method == Method::CONNECT {
        return Err(Error::MethodNotAllowed("CONNECT"));
    }
    if method == Method::TRACE {
        return Err(Error::MethodNotAllowed("TRACE"));
    }
    let uri = request_target(&method, target)?;
    let headers =
        fields::headers_from(&head, &spans[..count], Keep::Request).map_err(Error::Invalid)?;

    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => return Err(Error::Invalid("no host")),
        (Some(_), Some(_)) => return Err(Error::Invalid("host sent twice")),
        (Some(host), None) if !fields::is_valid_host(host.as_bytes()) => {
            return Err(Error::Invalid("invalid host"))
        }
        _ => {}
    }

    let keep_alive = match version {
        Version::HTTP_11 => !fields::has_token(&headers, header::CONNECTION, "close"),
        _ => fields::has_token(&headers, header::CONNECTION, "keep-alive"),
    };
    let body = match fields::transfer_coding(&headers) {
        Coding::Absent if headers.contains_key(header::CONTENT_LENGTH) => Decoder::Length(
            fields::content_length(&headers).ok_or(Error::Invalid("content-length"))?,
        ),
        Coding::Absent => Decoder::Done,
        _ if version == Version::HTTP_10 => {
            return Err(Error::Invalid("transfer-encoding in an HTTP/1.0 request"))
        }
        Coding::Malformed(why) => return Err(Error::Invalid(why)),
        Coding::Unsupported => {
            return Err(Error::NotImplemented(
                "transfer-encoding other than chunked",
            ))
        }
        Coding::Chunked if headers.contains_key(header::CONTENT_LENGTH) => {
            return Err(Error::Invalid("both transfer-encoding and content-length"))
        }
        Coding::Chunked => Decoder::CHUNKED,
    };
    let expect_continue = version == Version::HTTP_11
        && !body.is_done()
        && fields::has_token(&headers, header::EXPECT, "100-continue");
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

/// The request target in one of the forms a server (not a forward proxy) takes: origin
/// form, absolute form with an `http` or `https` scheme, or `*` for OPTIONS
/// (RFC 9112 section 3.2). Authority form belongs to CONNECT, which is refused before.
fn request_target(method: &Method, target: Bytes) -> Result<http::Uri, Error> {
    match target.first() {
        Some(b'/') => {}
        Some(b'*') if target.len() == 1 => {
            if *method != Method::OPTIONS {
                return Err(Error::Invalid(
                    "* as the target of a method other than OPTIONS",
                ));
            }
        }
        _ => {
            let scheme = target.split(|&b| b == b':').next().unwrap_or(b"");
            let absolute = (scheme.eq_ignore_ascii_case(b"http")
                || scheme.eq_ignore_ascii_case(b"https"))
                && target[scheme.len()..].starts_with(b"://");
            if !absolute {
                return Err(Error::Invalid(
                    "request target not in origin or absolute form",
                ));
            }
        }
    }
    let uri = http::Uri::from_maybe_shared(target).map_err(|_| Error::Invalid("request target"))?;
    if uri.scheme().is_some() && uri.host().is_none_or(str::is_empty) {
        return Err(Error::Invalid("absolute form without a host"));
    }
    Ok(uri)
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body may follow (HEAD, 1xx, 204, 304); the head's own length fields are kept.
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
/// and connection ones (`connection`, `keep-alive`, `upgrade`, `te`, `trailer`,
/// `proxy-connection`), then ours: `date` when the response has none, the framing, and
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
        if fields::is_connection_field(name)
            || (!keep_framing
                && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING))
        {
            continue;
        }
        fields::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(header::DATE) {
        fields::field(out, b"date", date);
    }
    match framing {
        ResponseFraming::None | ResponseFraming::Close => {}
        ResponseFraming::Length(n) => {
            fields::field(out, b"content-length", fields::itoa(n, &mut [0; 20]))
        }
        ResponseFraming::Chunked => fields::field(out, b"transfer-encoding", b"chunked"),
    }
    if let Some(value) = connection {
        fields::field(out, b"connection", value);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Chunked;
    use http::HeaderValue;

    fn request(raw: &str) -> Result<Option<RequestHead>, Error> {
        let mut buf = BytesMut::from(raw);
        parse_request(&mut buf)
    }

    fn refused(raw: &str) -> (StatusCode, String) {
        let e = request(raw).expect_err(raw);
        (e.status(), e.to_string())
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

        let h = request("POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Decoder::Chunked(Chunked::Size));
        let h = request("GET / HTTP/1.1\r\nHost: m\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.body.is_done());
        let h = request(
            "POST / HTTP/1.1\r\nHost: m\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.expect_continue);
        let h = request("POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3, 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Decoder::Length(3));
        assert!(request("POST / HTTP/1.1\r\nContent-Len").unwrap().is_none());
        // HTTP/1.0 needs no Host.
        let h = request("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.version, Version::HTTP_10);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let ka = |raw: &str| request(raw).unwrap().unwrap().keep_alive;
        assert!(ka("GET / HTTP/1.1\r\nHost: m\r\n\r\n"));
        assert!(!ka(
            "GET / HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn transfer_encodings_other_than_chunked_are_501_and_malformed_ones_400() {
        let post = |te: &str| format!("POST / HTTP/1.1\r\nHost: m\r\n{te}\r\n\r\n");
        for te in [
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: identity, chunked",
            "Transfer-Encoding: identity",
            "Transfer-Encoding: chunked, gzip",
            "Transfer-Encoding: chunked;ext=1",
        ] {
            assert_eq!(
                refused(&post(te)),
                (
                    StatusCode::NOT_IMPLEMENTED,
                    "transfer-encoding other than chunked is not supported".into()
                ),
                "{te}"
            );
        }
        for (te, why) in [
            (
                "Transfer-Encoding: , chunked",
                "empty element in transfer-encoding",
            ),
            (
                "Transfer-Encoding: chunked,",
                "empty element in transfer-encoding",
            ),
            (
                "Transfer-Encoding: chunked, chunked",
                "chunked listed twice in transfer-encoding",
            ),
            (
                "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
                "transfer-encoding sent twice",
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                "transfer-encoding sent twice",
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 3",
                "both transfer-encoding and content-length",
            ),
        ] {
            assert_eq!(
                refused(&post(te)),
                (StatusCode::BAD_REQUEST, format!("invalid request: {why}")),
                "{te}"
            );
        }
        assert_eq!(
            refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn connect_trace_and_targets_a_server_does_not_take_are_refused() {
        for (raw, status, why) in [
            (
                "CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
                405,
                "method CONNECT is not allowed",
            ),
            (
                "TRACE / HTTP/1.1\r\nHost: m\r\n\r\n",
                405,
                "method TRACE is not allowed",
            ),
            (
                "GET host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
                400,
                "invalid request: request target not in origin or absolute form",
            ),
            (
                "GET * HTTP/1.1\r\nHost: m\r\n\r\n",
                400,
                "invalid request: * as the target of a method other than OPTIONS",
            ),
            (
                "GET ftp://m/x HTTP/1.1\r\nHost: m\r\n\r\n",
                400,
                "invalid request: request target not in origin or absolute form",
            ),
            (
                "GET http:/x HTTP/1.1\r\nHost: m\r\n\r\n",
                400,
                "invalid request: request target not in origin or absolute form",
            ),
            (
                "GET x HTTP/1.1\r\nHost: m\r\n\r\n",
                400,
                "invalid request: request target not in origin or absolute form",
            ),
        ] {
            let (got, text) = refused(raw);
            assert_eq!((got.as_u16(), text.as_str()), (status, why), "{raw:?}");
        }
        let h = request("OPTIONS * HTTP/1.1\r\nHost: m\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.uri.path_and_query().map(|p| p.as_str()), Some("*"));
        let h = request("GET http://m:80/p?q HTTP/1.1\r\nHost: m\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.uri.path_and_query().map(|p| p.as_str()), Some("/p?q"));
        assert_eq!(h.uri.host(), Some("m"));
    }

    #[test]
    fn host_must_be_there_once_and_valid() {
        for (raw, why) in [
            ("GET / HTTP/1.1\r\n\r\n", "no host"),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                "host sent twice",
            ),
            (
                "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
                "host sent twice",
            ),
            ("GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n", "invalid host"),
            ("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", "invalid host"),
            ("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", "invalid host"),
        ] {
            assert_eq!(
                refused(raw),
                (StatusCode::BAD_REQUEST, format!("invalid request: {why}")),
                "{raw:?}"
            );
        }
        assert!(request("GET / HTTP/1.1\r\nHost:\r\n\r\n")
            .unwrap()
            .is_some());
        assert!(request("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
            .unwrap()
            .is_some());
    }

    #[test]
    fn names_with_underscores_and_upgrade_are_dropped() {
        let h = request(
            "GET / HTTP/1.1\r\nHost: m\r\nX_Forwarded_For: 1.2.3.4\r\nContent_Length: 9\r\nUpgrade: websocket\r\nConnection: upgrade\r\nx-ok: 1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        let names: Vec<&str> = h.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "connection", "x-ok"]);
        assert!(h.body.is_done(), "content_length is not content-length");
    }

    #[test]
    fn broken_and_oversized_heads_are_refused_with_the_right_status() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: m\r\nContent-Length: abc\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: m\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: m\r\nContent-Length: +1\r\n\r\n",
            "NOT HTTP AT ALL\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : m\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: m\r\n folded\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: m\r\n\r\n",
        ] {
            assert_eq!(refused(raw).0, StatusCode::BAD_REQUEST, "{raw:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let e = refused(&format!("GET / HTTP/1.1\r\nHost: m\r\n{many}\r\n"));
        assert_eq!(e.0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let long = "a".repeat(MAX_HEAD_BYTES + 1);
        let e = refused(&format!("GET / HTTP/1.1\r\nx-long: {long}"));
        assert_eq!(e.0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let e = refused(&format!(
            "GET / HTTP/1.1\r\nHost: m\r\nx-long: {long}\r\n\r\n"
        ));
        assert_eq!(
            e.0,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "whole, in one piece"
        );
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
    }

    #[test]
    fn response_heads_are_written_with_our_framing_and_connection_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-t"));
        let date = b"Sun, 29 Nov 2026 01:00:00 GMT";
        let ok = StatusCode::OK;
        let mut out = Vec::new();
        encode_response_head(&mut out, ok, &h, ResponseFraming::Length(2), None, date);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: Sun, 29 Nov 2026 01:00:00 GMT\r\ncontent-length: 2\r\n\r\n"
        );
        let mut out = Vec::new();
        h.insert(header::DATE, HeaderValue::from_static("upstream's"));
        encode_response_head(
            &mut out,
            StatusCode::BAD_GATEWAY,
            &h,
            ResponseFraming::Chunked,
            Some(b"close"),
            date,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ndate: upstream's\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        // HEAD keeps the length the body would have had.
        let mut out = Vec::new();
        encode_response_head(&mut out, ok, &h, ResponseFraming::None, None, date);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 999\r\ndate: upstream's\r\n\r\n"
        );
    }
}
