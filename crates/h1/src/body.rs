//! Message bodies on the wire, both directions: the decoder that reads a body out of a
//! connection's buffer (by length, chunked, or until the peer closes) and the chunk
//! encoder. Pure functions over buffers.
//!
//! The chunked decoder follows RFC 9112 section 7.1 strictly, as h11 does: a chunk-size
//! line is hex digits first (no whitespace before them), then optional whitespace and
//! extensions, and ends in CRLF; chunk data is followed by exactly CRLF; trailer lines
//! are header fields. Extensions and trailers are read and dropped.

use bytes::{Bytes, BytesMut};

use crate::fields::is_tchar;
use crate::MAX_HEAD_BYTES;

/// Longest chunk-size or trailer line accepted.
pub const MAX_LINE_BYTES: usize = 4 * 1024;
/// Most bytes of trailer fields accepted after the last chunk (a head's limit).
pub const MAX_TRAILER_BYTES: usize = MAX_HEAD_BYTES;

/// A body that does not follow its framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
    #[error("connection closed before the end of the body")]
    Closed,
}

/// Reads a body out of a connection's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the peer closes the connection (responses only).
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
    /// After the last chunk: trailer lines until an empty one; this many bytes so far.
    Trailers(usize),
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
    /// A decoder for a chunked body, before its first chunk.
    pub const CHUNKED: Decoder = Decoder::Chunked(Chunked::Size);

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
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
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
    fn settle(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
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

    /// The peer closed the connection: the end of an [`Decoder::Eof`] body, an error
    /// for any other unfinished one.
    pub fn on_eof(&mut self) -> Result<(), Error> {
        match self {
            Decoder::Eof | Decoder::Done | Decoder::Length(0) => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(Error::Closed),
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
fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<ChunkStep, Error> {
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
fn advance_framing(state: &mut Chunked, buf: &mut BytesMut) -> Result<ChunkStep, Error> {
    if *state == Chunked::DataEnd {
        // Exactly CRLF; anything else is known to be wrong from its first byte.
        match &buf[..buf.len().min(2)] {
            [] | [b'\r'] => return Ok(ChunkStep::NeedMore),
            [b'\r', b'\n'] => {
                let _ = buf.split_to(2);
                *state = Chunked::Size;
                return Ok(ChunkStep::Moved);
            }
            _ => return Err(Error::Chunk("chunk data not followed by CRLF")),
        }
    }
    let Some(line) = take_line(buf)? else {
        return Ok(ChunkStep::NeedMore);
    };
    match state {
        Chunked::Size => {
            let size = chunk_size(&line)?;
            *state = if size == 0 {
                Chunked::Trailers(0)
            } else {
                Chunked::Data(size)
            };
        }
        Chunked::Trailers(_) if line.is_empty() => return Ok(ChunkStep::Ended),
        // Trailer fields are checked and dropped: they are not forwarded.
        Chunked::Trailers(seen) => {
            *seen += line.len() + 2;
            if *seen > MAX_TRAILER_BYTES {
                return Err(Error::Chunk("trailer section too large"));
            }
            if !is_field_line(&line) {
                return Err(Error::Chunk("trailer line is not a header field"));
            }
        }
        Chunked::DataEnd | Chunked::Data(_) => {}
    }
    Ok(ChunkStep::Moved)
}

/// `chunk-size [ chunk-ext ]` of a chunk-size line (CRLF already removed): hex digits
/// first, then optional whitespace, then nothing or `;` and extensions of visible
/// characters and whitespace.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::Chunk("chunk size is not hex digits"));
    }
    if digits > 16 {
        return Err(Error::Chunk("chunk size too large"));
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(v)))
            .filter(|&s| s < 1 << 62)
            .ok_or(Error::Chunk("chunk size too large"))?;
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    match rest.first() {
        None => Ok(size),
        Some(b';') if rest.iter().all(|&b| is_field_char(b)) => Ok(size),
        Some(b';') => Err(Error::Chunk("invalid character in chunk extension")),
        Some(_) => Err(Error::Chunk("junk after chunk size")),
    }
}

/// A field-value character or whitespace (RFC 9110 section 5.5): no CR, LF, NUL or
/// other controls.
fn is_field_char(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// `field-name ":" OWS field-value OWS` (no line folding).
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|&b| is_tchar(b))
        && line[colon + 1..].iter().all(|&b| is_field_char(b))
}

/// Remove one CRLF-ended line from the front of `buf`; a bare LF is an error.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
    match memchr::memchr(b'\n', buf) {
        Some(end) if end > MAX_LINE_BYTES => Err(Error::Chunk("line too long")),
        Some(end) if end == 0 || buf[end - 1] != b'\r' => {
            Err(Error::Chunk("line not ended by CRLF"))
        }
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err(Error::Chunk("line too long")),
        None => Ok(None),
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

/// Most room made for one read of a body whose length is known, so a large body (a
/// batch of embeddings) takes few reads.
pub(crate) const MAX_READ: usize = 256 * 1024;

/// Make room in a connection's read buffer for the next read: a quarter of `chunk`, or as
/// much of a body's known `rest` as [`MAX_READ`] allows. The buffer's unused tail is
/// reused while it is large enough; a new allocation is at least `chunk`. Both sides
/// read this way.
pub(crate) fn reserve_read(buf: &mut BytesMut, rest: Option<u64>, chunk: usize) {
    let want = rest.map_or(chunk / 4, |n| {
        usize::try_from(n).map_or(MAX_READ, |n| n.clamp(chunk / 4, MAX_READ))
    });
    if buf.capacity() - buf.len() < want {
        buf.reserve(want.max(chunk));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `wire` fed in pieces of `step` bytes; the data and whether it ended.
    fn decode_in_pieces(
        mut d: Decoder,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, bool), Error> {
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

    fn chunked(wire: &[u8]) -> Result<(Vec<u8>, bool), Error> {
        decode_in_pieces(Decoder::CHUNKED, wire, wire.len().max(1))
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
        let wire = b"5;ext=1\r\nhello\r\n1A \t;a=\"b c\";d\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\nx-other:\r\n\r\nHTTP/1.1";
        for step in 1..=wire.len() {
            let mut buf = BytesMut::new();
            let mut d = Decoder::CHUNKED;
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
        let mut d = Decoder::CHUNKED;
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"abc"))
        );
        assert!(d.is_done(), "{d:?}");
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_chunks_are_refused_with_the_reason() {
        for (wire, why) in [
            (&b"zz\r\n"[..], "chunk size is not hex digits"),
            (b" 5\r\nhello\r\n0\r\n\r\n", "chunk size is not hex digits"),
            (b"\t5\r\nhello\r\n0\r\n\r\n", "chunk size is not hex digits"),
            (b"+5\r\nhello\r\n0\r\n\r\n", "chunk size is not hex digits"),
            (b"0x5\r\nhello\r\n0\r\n\r\n", "junk after chunk size"),
            (b"5 5\r\nhello\r\n0\r\n\r\n", "junk after chunk size"),
            (
                b"5;a\rb\r\nhello\r\n0\r\n\r\n",
                "invalid character in chunk extension",
            ),
            (
                b"5;a\x00\r\nhello\r\n0\r\n\r\n",
                "invalid character in chunk extension",
            ),
            (b"5\nhello\r\n0\r\n\r\n", "line not ended by CRLF"),
            (b"3\r\nabcd\r\n", "chunk data not followed by CRLF"),
            (b"3\r\nabc\n0\r\n\r\n", "chunk data not followed by CRLF"),
            (
                b"3\r\nabc\r\r\n0\r\n\r\n",
                "chunk data not followed by CRLF",
            ),
            (
                b"3\r\nabc\r\n0\r\nnot a field\r\n\r\n",
                "trailer line is not a header field",
            ),
            (
                b"3\r\nabc\r\n0\r\n: empty name\r\n\r\n",
                "trailer line is not a header field",
            ),
            (
                b"3\r\nabc\r\n0\r\n folded: x\r\n\r\n",
                "trailer line is not a header field",
            ),
            (
                b"3\r\nabc\r\n0\r\nx: a\rb\r\n\r\n",
                "trailer line is not a header field",
            ),
            (b"3\r\nabc\r\n0\r\nx: 1\n\r\n", "line not ended by CRLF"),
            (b"10000000000000000\r\n", "chunk size too large"),
            (b"4000000000000000\r\n", "chunk size too large"),
        ] {
            assert_eq!(
                chunked(wire),
                Err(Error::Chunk(why)),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut long = BytesMut::from(&[b'1'; MAX_LINE_BYTES + 1][..]);
        let mut d = Decoder::CHUNKED;
        assert_eq!(d.decode(&mut long), Err(Error::Chunk("line too long")));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILER_BYTES / 16 {
            trailers.extend_from_slice(b"x-filler: 12345\r\n");
        }
        assert_eq!(
            chunked(&trailers),
            Err(Error::Chunk("trailer section too large"))
        );
    }

    #[test]
    fn eof_ends_only_bodies_framed_by_it() {
        let mut d = Decoder::Eof;
        assert!(d.on_eof().is_ok());
        assert!(d.is_done());
        assert_eq!(Decoder::Length(3).on_eof(), Err(Error::Closed));
        let mut d = Decoder::CHUNKED;
        assert_eq!(d.on_eof(), Err(Error::Closed));
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
    }
}
