//! What both sides do with header fields: slice them out of a parsed head without
//! copying, read the framing fields strictly, write fields and numbers.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::MAX_HEADERS;

/// A header field's name and value as offsets into its head.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
}

/// Where each header's name and value sit relative to `base`, so they can be sliced out
/// of one frozen copy of the head instead of copied field by field. Returns the count.
pub(crate) fn spans_of(
    parsed: &[httparse::Header<'_>],
    base: usize,
    spans: &mut [Span; MAX_HEADERS],
) -> usize {
    for (span, h) in spans.iter_mut().zip(parsed.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        // A head is parsed out of a buffer far below 4 GiB (heads are capped at 64 KiB).
        *span = Span {
            name: name as u32,
            name_len: h.name.len() as u32,
            value: value as u32,
            value_len: h.value.len() as u32,
        };
    }
    parsed.len()
}

/// Which fields of a head are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Every field (response heads from an upstream).
    All,
    /// Not the names with `_` (nginx's `underscores_in_headers off`, dropped silently),
    /// nor `upgrade` (this crate does not switch protocols): request heads from clients.
    Request,
}

/// The header map of a frozen head, from [`spans_of`].
pub(crate) fn headers_from(
    head: &Bytes,
    spans: &[Span],
    keep: Keep,
) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for s in spans {
        let (n0, v0) = (s.name as usize, s.value as usize);
        let name = &head[n0..n0 + s.name_len as usize];
        if keep == Keep::Request
            && (memchr::memchr(b'_', name).is_some() || name.eq_ignore_ascii_case(b"upgrade"))
        {
            continue;
        }
        let name = HeaderName::from_bytes(name).map_err(|_| "header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v0 + s.value_len as usize))
            .map_err(|_| "header value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Whether any of the `name` fields lists `token` (comma-separated, any case).
pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The one length all `content-length` values agree on ("5", or "5, 5" twice, as h11
/// accepts); `None` for anything else (signs, spaces inside, disagreeing values).
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

/// What the `transfer-encoding` fields of a head say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// No `transfer-encoding` field.
    Absent,
    /// Exactly one field whose value is exactly `chunked` (any case).
    Chunked,
    /// A well-formed list that is not just `chunked` (`gzip, chunked`, `identity`, ...):
    /// a coding this crate does not implement.
    Unsupported,
    /// Malformed: the field twice, an empty list element (`, chunked`), `chunked` twice.
    Malformed(&'static str),
}

/// Read the `transfer-encoding` fields as nginx 1.22 does for requests (one field, value
/// exactly `chunked`), naming why anything else is refused.
pub(crate) fn transfer_coding(headers: &HeaderMap) -> Coding {
    let mut fields = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let Some(value) = fields.next() else {
        return Coding::Absent;
    };
    if fields.next().is_some() {
        return Coding::Malformed("transfer-encoding sent twice");
    }
    let value = value.as_bytes();
    if value.eq_ignore_ascii_case(b"chunked") {
        return Coding::Chunked;
    }
    let mut chunked = 0;
    for element in value.split(|&b| b == b',') {
        let element = element.trim_ascii();
        if element.is_empty() {
            return Coding::Malformed("empty element in transfer-encoding");
        }
        // A coding may carry parameters (`gzip;q=1`): the name is what precedes them.
        let name = element
            .split(|&b| b == b';')
            .next()
            .unwrap_or(element)
            .trim_ascii();
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Coding::Malformed("invalid transfer coding");
        }
        if name.eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Coding::Malformed("chunked listed twice in transfer-encoding");
    }
    Coding::Unsupported
}

/// A `tchar` of RFC 9110 section 5.6.2 (the characters of a token).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `value` is a valid `Host` field value (RFC 9110 section 7.2): `uri-host [
/// ":" port ]` of RFC 3986, or empty. No user info, no path, no spaces.
pub(crate) fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        // IP-literal: hex digits, colons and dots (IPv6, IPv4 tail), or IPvFuture.
        let Some(end) = memchr::memchr(b']', rest) else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b":.-_~!$&'()*+,;=".contains(&b))
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => (literal, None),
            [b':', port @ ..] => (literal, Some(port)),
            _ => return false,
        }
    } else {
        match memchr::memrchr(b':', value) {
            Some(at) => (&value[..at], Some(&value[at + 1..])),
            None => (value, None),
        }
    };
    let reg_name_ok = value.starts_with(b"[") || is_reg_name(host);
    let port_ok = port.is_none_or(|p| p.iter().all(u8::is_ascii_digit));
    reg_name_ok && port_ok
}

/// `*( unreserved / pct-encoded / sub-delims )` of RFC 3986.
fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = host.get(i) {
        if b == b'%' {
            let hex = |at: usize| host.get(at).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Append `name: value CRLF`.
pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Decimal digits of `n`, without going through `fmt`.
pub(crate) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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

/// Whether a field is about this one connection (RFC 9112 section 9.6, RFC 9110 section
/// 7.6.1) and so never copied from one connection to another by the encoders: the
/// encoders write their own `connection`, and upgrades and trailers are not supported.
pub(crate) fn is_connection_field(name: &HeaderName) -> bool {
    use http::header;
    *name == header::CONNECTION
        || *name == header::UPGRADE
        || *name == header::TE
        || *name == header::TRAILER
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn te(values: &[&'static str]) -> Coding {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::TRANSFER_ENCODING, HeaderValue::from_static(v));
        }
        transfer_coding(&h)
    }

    #[test]
    fn transfer_encoding_is_exactly_chunked_or_named_as_refused() {
        assert_eq!(te(&[]), Coding::Absent);
        assert_eq!(te(&["chunked"]), Coding::Chunked);
        assert_eq!(te(&["Chunked"]), Coding::Chunked);
        for v in [
            "gzip, chunked",
            "identity, chunked",
            "identity",
            "gzip",
            "chunked;q=1",
        ] {
            assert_eq!(te(&[v]), Coding::Unsupported, "{v}");
        }
        for v in [
            ", chunked",
            "chunked,",
            "gzip,,chunked",
            "chunked, chunked",
            "chunked, gzip, CHUNKED",
            "gz ip",
            "\"chunked\"",
        ] {
            assert!(matches!(te(&[v]), Coding::Malformed(_)), "{v}");
        }
        assert!(matches!(te(&["identity", "chunked"]), Coding::Malformed(_)));
        assert!(matches!(te(&["chunked", "chunked"]), Coding::Malformed(_)));
    }

    #[test]
    fn host_values_follow_rfc_3986() {
        for ok in [
            "",
            "model",
            "model:8080",
            "model_server:8000",
            "a.b-c~d",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8080",
            "x%41y",
            "host:",
        ] {
            assert!(is_valid_host(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "a b/c",
            "a b",
            "a/b",
            "user@host",
            "host:80x",
            "[::1",
            "[::1]x",
            "[]",
            "x%4",
            "x%zz",
            "a\tb",
            "h\u{7f}",
            "é",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_written_without_fmt() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(
            itoa(u64::MAX, &mut [0; 20]),
            u64::MAX.to_string().as_bytes()
        );
    }
}
