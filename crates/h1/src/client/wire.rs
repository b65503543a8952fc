//! The client's side of the wire: request heads out, response heads in. Pure functions
//! over buffers, so every rule is tested without a socket.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

use super::Error;
use crate::body::Decoder;
use crate::fields::{self, Coding, Keep, Span};
use crate::{MAX_HEADERS, MAX_HEAD_BYTES};

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

/// Append a request head to `out`: request line with `target` (origin form, or `*`),
/// `host` unless the request names one, the request's fields except framing and
/// connection ones (`connection`, `keep-alive`, `upgrade`, `te`, `trailer`,
/// `proxy-connection`: this client keeps connections alive, asks for no upgrade and
/// takes no trailers), then ours.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    host: &HeaderValue,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        fields::field(out, b"host", host.as_bytes());
    }
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || fields::is_connection_field(name)
        {
            continue;
        }
        fields::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(n) => {
            fields::field(out, b"content-length", fields::itoa(n, &mut [0; 20]));
        }
        RequestFraming::Chunked => fields::field(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

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

/// Parse a complete response head to a `method` request at the front of `buf` and
/// remove it from `buf`; `Ok(None)` when more bytes are needed. Header values share
/// `buf`'s memory.
///
/// Refused: heads over 64 KiB (whether they arrive in one read or many), a `101` (this
/// client never asks for an upgrade), `transfer-encoding` other than exactly `chunked`
/// (h11's rule: a proxy that does not decode a coding cannot re-frame it), and
/// `content-length` values that are not one number.
pub fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, Error> {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut raw)?
    {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => return Err(Error::HeadTooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Error::HeadTooLarge);
    }
    let status =
        StatusCode::from_u16(res.code.unwrap_or(0)).map_err(|_| Error::Invalid("status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::Invalid(
            "101 Switching Protocols without an upgrade request",
        ));
    }
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut spans = [Span::default(); MAX_HEADERS];
    let count = fields::spans_of(res.headers, buf.as_ptr() as usize, &mut spans);
    let head: Bytes = buf.split_to(len).freeze();
    let headers =
        fields::headers_from(&head, &spans[..count], Keep::All).map_err(Error::Invalid)?;
    let mut keep_alive = match version {
        Version::HTTP_11 => !fields::has_token(&headers, header::CONNECTION, "close"),
        _ => fields::has_token(&headers, header::CONNECTION, "keep-alive"),
    };
    // The framing fields are checked on every answer, as h11 does, also where they
    // frame nothing (HEAD, 204, 304): they may be passed on.
    let coding = match fields::transfer_coding(&headers) {
        Coding::Unsupported => return Err(Error::Invalid("transfer-encoding other than chunked")),
        Coding::Malformed(why) => return Err(Error::Invalid(why)),
        coding => coding,
    };
    let length = match headers.contains_key(header::CONTENT_LENGTH) {
        true => {
            Some(fields::content_length(&headers).ok_or(Error::Invalid("invalid content-length"))?)
        }
        false => None,
    };
    let body = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Decoder::Length(0)
    } else if coding == Coding::Chunked {
        // RFC 9112 section 6.3: chunked wins over a content-length, and such a message
        // "ought to be handled as an error": its connection is not reused.
        if length.is_some() {
            keep_alive = false;
        }
        Decoder::CHUNKED
    } else if let Some(n) = length {
        Decoder::Length(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> ResponseHead {
        let mut buf = BytesMut::from(raw);
        parse_response(&mut buf, &Method::POST).unwrap().unwrap()
    }

    fn refused(raw: &[u8]) -> String {
        let mut buf = BytesMut::from(raw);
        parse_response(&mut buf, &Method::POST)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn request_heads_carry_host_fields_and_framing() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        let host = HeaderValue::from_static("model:8080");
        let mut out = Vec::new();
        encode_request_head(
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
        encode_request_head(&mut out, &Method::GET, "", &h, &host, RequestFraming::Empty);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nx-request-id: r1\r\nhost: other\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_request_head(
            &mut out,
            &Method::OPTIONS,
            "*",
            &HeaderMap::new(),
            &host,
            RequestFraming::Chunked,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "OPTIONS * HTTP/1.1\r\nhost: model:8080\r\ntransfer-encoding: chunked\r\n\r\n"
        );
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
    fn response_heads_are_parsed_and_framed() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\nx_under: kept\r\n\r\nhello");
        assert_eq!(h.status, 200);
        assert_eq!(h.body, Decoder::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(
            h.headers["x_under"], "kept",
            "upstream names with _ are kept, as nginx does"
        );

        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.body, Decoder::CHUNKED);
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.body, Decoder::CHUNKED);
        assert!(
            !h.keep_alive,
            "chunked wins, and the connection is not trusted again"
        );
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
        let mut bad = BytesMut::from(
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        );
        assert!(
            parse_response(&mut bad, &Method::HEAD).is_err(),
            "checked without a body too"
        );
        let h = head("HTTP/1.1 100 Continue\r\n\r\n");
        assert!(h.body.is_done());
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n");
        assert_eq!(h.body, Decoder::Length(4));

        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        assert!(parse_response(&mut buf, &Method::HEAD)
            .unwrap()
            .unwrap()
            .body
            .is_done());
    }

    #[test]
    fn bad_partial_and_oversized_heads_say_so() {
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Len");
        assert!(parse_response(&mut partial, &Method::GET)
            .unwrap()
            .is_none());
        assert_eq!(partial.len(), 28, "nothing consumed");
        for (raw, why) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n"[..], "invalid response: invalid content-length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid response: invalid content-length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "invalid response: invalid content-length"),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed response head: invalid response status"),
            (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", "invalid response: 101 Switching Protocols without an upgrade request"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "invalid response: transfer-encoding other than chunked"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", "invalid response: transfer-encoding other than chunked"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "invalid response: chunked listed twice in transfer-encoding"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n", "invalid response: transfer-encoding sent twice"),
        ] {
            assert_eq!(refused(raw), why, "{:?}", String::from_utf8_lossy(raw));
        }
        // Too large arriving in pieces, and arriving whole in one read.
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.extend_from_slice(&[b'a'; MAX_HEAD_BYTES]);
        assert_eq!(refused(&huge), "response head over 65536 bytes");
        let mut whole = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..(100 * 1024 / 1100) {
            whole.extend_from_slice(format!("x-{i}: {}\r\n", "v".repeat(1090)).as_bytes());
        }
        whole.extend_from_slice(b"content-length: 0\r\n\r\n");
        assert!(whole.len() > 90 * 1024);
        assert_eq!(refused(&whole), "response head over 65536 bytes");
    }
}
