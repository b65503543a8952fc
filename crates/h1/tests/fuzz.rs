//! Fuzzing without nightly: proptest builds valid request heads, response heads and
//! chunked bodies, mutates a few bytes (replace, insert, delete, biased to the bytes
//! framing turns on), and checks the parsers against small reference readers written
//! straight from RFC 9112 and nginx's and h11's rules:
//!
//! - nothing panics, on mutated input or on arbitrary bytes;
//! - a head the crate accepts is one the reference accepts, with the same framing (body
//!   length, chunked or none) and keep-alive: never more lenient than the rules;
//! - a chunked body decodes, in any split into reads, to exactly what the reference
//!   decodes, and fails exactly when the reference fails.
//!
//! Case counts are bounded so the whole file runs in a few seconds in a debug build.

use bytes::BytesMut;
use h1::body::{Decoder, Step};
use http::Method;
use proptest::prelude::*;
use shadowgate_h1 as h1;

// ---------------------------------------------------------------------------------
// Reference readers: slow, simple, line by line.

/// The framing a reference reader gives a message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Eof,
}

/// Header fields, names in lower case, values trimmed.
type Fields = Vec<(String, Vec<u8>)>;

/// A head split into its start line and fields, as any HTTP/1 reader sees it once the
/// syntax is accepted: lines end in LF (CR before it optional), fields are `name:value`
/// with whitespace trimmed around the value.
fn split_head(raw: &[u8]) -> Option<(String, Fields)> {
    let mut lines = Vec::new();
    let mut rest = raw;
    loop {
        let at = rest.iter().position(|&b| b == b'\n')?;
        let mut line = &rest[..at];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        rest = &rest[at + 1..];
        if line.is_empty() {
            if lines.is_empty() {
                continue; // httparse skips empty lines before the start line
            }
            break;
        }
        lines.push(line.to_vec());
    }
    let start = String::from_utf8_lossy(lines.first()?).into_owned();
    let mut fields = Vec::new();
    for line in &lines[1..] {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = String::from_utf8(line[..colon].to_vec())
            .ok()?
            .to_ascii_lowercase();
        let value = line[colon + 1..].trim_ascii().to_vec();
        fields.push((name, value));
    }
    Some((start, fields))
}

fn values<'a>(fields: &'a Fields, name: &str) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

fn lists_token(fields: &Fields, name: &str, token: &str) -> bool {
    values(fields, name).iter().any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// `Some(n)` when every `content-length` value is the same decimal number.
fn one_length(fields: &Fields) -> Option<u64> {
    let mut found = None;
    for v in values(fields, "content-length") {
        for part in v.split(|&b| b == b',') {
            let part = std::str::from_utf8(part.trim_ascii()).ok()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = part.parse().ok()?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

/// A request head by the rules: `None` when it must be refused.
fn reference_request(raw: &[u8]) -> Option<(Framing, bool)> {
    let (start, fields) = split_head(raw)?;
    // nginx drops names with `_`; this crate also drops `upgrade`.
    let fields: Vec<_> = fields
        .into_iter()
        .filter(|(n, _)| !n.contains('_') && n != "upgrade")
        .collect();
    let mut parts = start.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    if method == "CONNECT" || method == "TRACE" {
        return None;
    }
    let lower = target.to_ascii_lowercase();
    let absolute = ["http://", "https://"].iter().any(|scheme| {
        lower
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with(['/', '?', '#']))
    });
    if !(target.starts_with('/') || (target == "*" && method == "OPTIONS") || absolute) {
        return None;
    }
    let hosts = values(&fields, "host");
    if hosts.len() > 1 || (http11 && hosts.is_empty()) {
        return None;
    }
    if let Some(host) = hosts.first() {
        // Whatever else the host grammar allows, never these.
        if host
            .iter()
            .any(|&b| b <= b' ' || b >= 0x7f || b"/@?#\\\"<>{}|^`".contains(&b))
        {
            return None;
        }
    }
    let keep_alive = if http11 {
        !lists_token(&fields, "connection", "close")
    } else {
        lists_token(&fields, "connection", "keep-alive")
    };
    let te = values(&fields, "transfer-encoding");
    let framing = if !te.is_empty() {
        // nginx 1.22: one field, exactly `chunked`, HTTP/1.1, no content-length.
        let has_cl = !values(&fields, "content-length").is_empty();
        if te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked") || !http11 || has_cl {
            return None;
        }
        Framing::Chunked
    } else if values(&fields, "content-length").is_empty() {
        Framing::None
    } else {
        Framing::Length(one_length(&fields)?)
    };
    Some((framing, keep_alive))
}

/// A response head to `method` by the rules: `None` when it must be refused.
fn reference_response(raw: &[u8], method: &Method) -> Option<(Framing, bool)> {
    let (start, fields) = split_head(raw)?;
    let mut parts = start.splitn(3, ' ');
    let (version, code) = (parts.next()?, parts.next()?);
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    let code: u16 = code.parse().ok()?;
    if code == 101 || !(100..=999).contains(&code) {
        return None;
    }
    let mut keep_alive = if http11 {
        !lists_token(&fields, "connection", "close")
    } else {
        lists_token(&fields, "connection", "keep-alive")
    };
    // h11: transfer-encoding, if any, is exactly `chunked`; content-length is one number.
    let te = values(&fields, "transfer-encoding");
    if !te.is_empty() && (te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked")) {
        return None;
    }
    let has_cl = !values(&fields, "content-length").is_empty();
    let length = if has_cl {
        Some(one_length(&fields)?)
    } else {
        None
    };
    let framing = if *method == Method::HEAD || code < 200 || code == 204 || code == 304 {
        Framing::Length(0)
    } else if !te.is_empty() {
        if has_cl {
            keep_alive = false;
        }
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::Eof
    };
    Some((framing, keep_alive))
}

fn framing_of(d: &Decoder) -> Framing {
    match d {
        Decoder::Done => Framing::None,
        Decoder::Length(n) => Framing::Length(*n),
        Decoder::Chunked(_) => Framing::Chunked,
        Decoder::Eof => Framing::Eof,
    }
}

/// What a chunked body is by the rules, read from a whole buffer.
#[derive(Debug, PartialEq, Eq)]
enum Chunks {
    /// The data, and how many bytes the body took.
    Body(Vec<u8>, usize),
    Incomplete,
    Invalid,
}

fn reference_chunked(wire: &[u8]) -> Chunks {
    let mut at = 0;
    let mut data = Vec::new();
    // A CRLF-ended line at `at`, without the CRLF; `Err` for a bare LF.
    let line = |at: usize| -> Result<Option<&[u8]>, ()> {
        let Some(lf) = wire[at..].iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        if lf == 0 || wire[at + lf - 1] != b'\r' {
            return Err(());
        }
        Ok(Some(&wire[at..at + lf - 1]))
    };
    let visible = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80;
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    loop {
        let size_line = match line(at) {
            Ok(Some(l)) => l,
            Ok(None) => return Chunks::Incomplete,
            Err(()) => return Chunks::Invalid,
        };
        at += size_line.len() + 2;
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 || digits > 16 {
            return Chunks::Invalid;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&size_line[..digits]).unwrap(), 16);
        let Some(size) = size.ok().filter(|&s| s < 1 << 62) else {
            return Chunks::Invalid; // sizes near u64::MAX are refused as too large
        };
        let ext = &size_line[digits..];
        let ext = &ext[ext.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
        if !(ext.is_empty() || (ext[0] == b';' && ext.iter().all(|&b| visible(b)))) {
            return Chunks::Invalid;
        }
        if size == 0 {
            break;
        }
        let size = size as usize;
        if wire.len() < at + size {
            return Chunks::Incomplete;
        }
        data.extend_from_slice(&wire[at..at + size]);
        at += size;
        match &wire[at..wire.len().min(at + 2)] {
            b"\r\n" => at += 2,
            [] | b"\r" => return Chunks::Incomplete,
            _ => return Chunks::Invalid,
        }
    }
    loop {
        let trailer = match line(at) {
            Ok(Some(l)) => l,
            Ok(None) => return Chunks::Incomplete,
            Err(()) => return Chunks::Invalid,
        };
        at += trailer.len() + 2;
        if trailer.is_empty() {
            return Chunks::Body(data, at);
        }
        let Some(colon) = trailer.iter().position(|&b| b == b':') else {
            return Chunks::Invalid;
        };
        if colon == 0
            || !trailer[..colon].iter().all(|&b| tchar(b))
            || !trailer[colon + 1..].iter().all(|&b| visible(b))
        {
            return Chunks::Invalid;
        }
    }
}

/// The crate's decoder on `wire` fed in pieces of `step` bytes.
fn decode_chunked(wire: &[u8], step: usize) -> Chunks {
    let mut d = Decoder::CHUNKED;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match d.decode(&mut buf) {
            Err(_) => return Chunks::Invalid,
            Ok(Step::Data(b)) => out.extend_from_slice(&b),
            Ok(Step::Done) => return Chunks::Body(out, fed - buf.len()),
            Ok(Step::NeedMore) if fed == wire.len() => return Chunks::Incomplete,
            Ok(Step::NeedMore) => {
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Generators.

/// Bytes that framing turns on, and a few others.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => prop::sample::select(&b" \t\r\n,;:_-0159afAFxX\"/*@?%"[..]),
        1 => any::<u8>(),
    ]
}

/// One byte changed at a position: anywhere, or (`near_delimiter`) next to a space,
/// colon, comma, semicolon or line end, where framing is decided.
#[derive(Debug, Clone)]
struct Mutation {
    at: usize,
    near_delimiter: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Replace(u8),
    Insert(u8),
    Delete,
    /// A token from a dictionary of what framing rules are about.
    InsertToken(&'static [u8]),
}

/// Pieces that turn a valid head or body into a near miss.
const DICTIONARY: &[&[u8]] = &[
    b",",
    b", ",
    b"chunked",
    b", chunked",
    b"identity, ",
    b"gzip, ",
    b"\r\nTransfer-Encoding: chunked",
    b"\r\nTransfer-Encoding: identity",
    b"\r\nContent-Length: 5",
    b"\r\nContent-Length: 6",
    b"\r\nHost: m",
    b"\r\nConnection: close",
    b"\r\nUpgrade: h2c",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"_",
    b"-1",
    b"a b/c",
    b"user@",
    b"*",
    b"host:443",
    b"CONNECT",
    b"HTTP/1.0",
    b"101",
    b";ext",
    b"0\r\n\r\n",
];

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let kind = prop_oneof![
        interesting_byte().prop_map(Kind::Replace),
        interesting_byte().prop_map(Kind::Insert),
        Just(Kind::Delete),
        prop::sample::select(DICTIONARY).prop_map(Kind::InsertToken),
    ];
    prop::collection::vec(
        (any::<usize>(), any::<bool>(), kind).prop_map(|(at, near_delimiter, kind)| Mutation {
            at,
            near_delimiter,
            kind,
        }),
        1..=3,
    )
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let near: Vec<usize> = (0..=bytes.len())
            .filter(|&i| {
                let delimiter = |j: usize| bytes.get(j).is_some_and(|b| b" :,;\r\n".contains(b));
                delimiter(i) || (i > 0 && delimiter(i - 1))
            })
            .collect();
        let at = match m.near_delimiter && !near.is_empty() {
            true => near[m.at % near.len()],
            false => m.at % (bytes.len() + 1),
        };
        match m.kind {
            Kind::Insert(b) => bytes.insert(at, b),
            Kind::InsertToken(t) => {
                bytes.splice(at..at, t.iter().copied());
            }
            Kind::Replace(b) if at < bytes.len() => bytes[at] = b,
            Kind::Delete if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

fn request_head() -> impl Strategy<Value = Vec<u8>> {
    // Mostly heads the rules accept, so that mutations start from something accepted.
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "OPTIONS", "HEAD", "DELETE"]);
    let target = prop::sample::select(vec!["/", "/v1/embeddings?x=1", "/", "*", "http://m:8/p"]);
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    let host = prop::bool::weighted(0.9);
    let framing = prop::sample::select(vec![
        "",
        "Content-Length: 5\r\n",
        "content-length: 5, 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\n",
    ]);
    let extra = prop::collection::vec(
        prop::sample::select(vec![
            "Host: model:8000\r\n",
            "Connection: close\r\n",
            "Connection: keep-alive\r\n",
            "X_Under: 1\r\n",
            "x-request-id: r-1\r\n",
            "Expect: 100-continue\r\n",
            "Upgrade: websocket\r\n",
        ]),
        0..4,
    );
    (method, target, version, host, framing, extra).prop_map(
        |(method, target, version, host, framing, extra)| {
            let mut head = format!("{method} {target} {version}\r\n");
            if host {
                head.push_str("Host: m\r\n");
            }
            head.push_str(framing);
            for e in extra {
                head.push_str(e);
            }
            head.push_str("\r\nhello");
            head.into_bytes()
        },
    )
}

fn response_head() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec![
        "200 OK",
        "204 No Content",
        "304 Not Modified",
        "100 Continue",
        "404 Not Found",
        "101 Switching Protocols",
    ]);
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
    let framing = prop::sample::select(vec![
        "",
        "Content-Length: 5\r\n",
        "content-length: 5, 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ]);
    let extra = prop::collection::vec(
        prop::sample::select(vec![
            "Connection: close\r\n",
            "Connection: keep-alive\r\n",
            "x_under: 1\r\n",
            "content-type: application/json\r\n",
        ]),
        0..3,
    );
    (version, status, framing, extra).prop_map(|(version, status, framing, extra)| {
        let mut head = format!("{version} {status}\r\n{framing}");
        for e in extra {
            head.push_str(e);
        }
        head.push_str("\r\nhello");
        head.into_bytes()
    })
}

fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..40),
        prop::sample::select(vec!["", ";a=1", " ;b", ";q=\"x y\""]),
        any::<bool>(),
    );
    let trailers = prop::collection::vec(
        prop::sample::select(vec!["x-t: 1", "x-empty:", "checksum: abc"]),
        0..3,
    );
    (prop::collection::vec(chunk, 0..5), trailers).prop_map(|(chunks, trailers)| {
        let mut wire = Vec::new();
        for (data, ext, upper) in chunks {
            let size = if upper {
                format!("{:X}", data.len())
            } else {
                format!("{:x}", data.len())
            };
            wire.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
            wire.extend_from_slice(&data);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        for t in trailers {
            wire.extend_from_slice(format!("{t}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\nNEXT");
        wire
    })
}

// ---------------------------------------------------------------------------------
// Properties.

fn check_request(raw: &[u8]) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(raw);
    if let Ok(Some(head)) = h1::server::parse_request(&mut buf) {
        let head_len = raw.len() - buf.len();
        let reference = reference_request(&raw[..head_len]);
        prop_assert_eq!(
            reference,
            Some((framing_of(&head.body), head.keep_alive)),
            "accepted {:?}",
            String::from_utf8_lossy(&raw[..head_len])
        );
        prop_assert!(head.headers.keys().all(|n| !n.as_str().contains('_')));
    }
    Ok(())
}

fn check_response(raw: &[u8], method: &Method) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(raw);
    if let Ok(Some(head)) = h1::client::parse_response(&mut buf, method) {
        let head_len = raw.len() - buf.len();
        let reference = reference_response(&raw[..head_len], method);
        prop_assert_eq!(
            reference,
            Some((framing_of(&head.body), head.keep_alive)),
            "accepted {:?}",
            String::from_utf8_lossy(&raw[..head_len])
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn valid_request_heads_parse_as_the_rules_say(raw in request_head()) {
        check_request(&raw)?;
        // Unmutated, the crate also accepts all that the rules accept.
        let mut buf = BytesMut::from(&raw[..]);
        let accepted = h1::server::parse_request(&mut buf);
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        prop_assert_eq!(
            accepted.is_ok(),
            reference_request(&raw[..end]).is_some(),
            "{:?}: {:?}",
            String::from_utf8_lossy(&raw),
            accepted.err()
        );
    }

    #[test]
    fn mutated_request_heads_are_never_accepted_against_the_rules(
        raw in request_head(),
        m in mutations(),
    ) {
        check_request(&mutate(raw, &m))?;
    }

    #[test]
    fn mutated_response_heads_are_never_accepted_against_the_rules(
        raw in response_head(),
        m in mutations(),
        head in any::<bool>(),
    ) {
        let method = if head { Method::HEAD } else { Method::GET };
        check_response(&raw, &method)?;
        check_response(&mutate(raw, &m), &method)?;
    }

    #[test]
    fn chunked_bodies_decode_as_the_rules_say_in_any_reads(
        wire in chunked_body(),
        m in prop::option::of(mutations()),
        step in 1usize..64,
    ) {
        let wire = match m {
            Some(m) => mutate(wire, &m),
            None => wire,
        };
        let expected = reference_chunked(&wire);
        let got = decode_chunked(&wire, step);
        prop_assert_eq!(&got, &expected, "{:?}", String::from_utf8_lossy(&wire));
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = h1::server::parse_request(&mut BytesMut::from(&raw[..]));
        let _ = h1::client::parse_response(&mut BytesMut::from(&raw[..]), &Method::GET);
        let _ = decode_chunked(&raw, 7);
    }
}
