//! gRPC message framing: the Length-Prefixed-Message of the gRPC-over-HTTP/2 spec, a
//! 1-byte compressed flag and a 4-byte big-endian length before each message.
//!
//! A unary call's body (request or answer) holds exactly one message; [`unframe`] checks
//! that and returns it. Compressed messages are refused: shadowgate does not negotiate
//! `grpc-encoding` and does not decompress.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes before each message: flag and length.
pub const HEADER_LEN: usize = 5;

/// Default cap on one message: gRPC's own default receive limit (4 MiB), so an answer a
/// stock client would take is never refused here, and a larger one is.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Why a unary body does not hold one usable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than 5 bytes: no complete header.
    #[error("body of {len} bytes is shorter than the 5-byte gRPC message header")]
    ShortHeader {
        /// Body length.
        len: usize,
    },
    /// Compressed flag 1: the message is compressed with the call's `grpc-encoding`.
    #[error("message is compressed; shadowgate does not decompress gRPC messages")]
    Compressed,
    /// A flag other than 0 or 1 (the spec defines no other).
    #[error("invalid gRPC compressed flag {flag}")]
    BadFlag {
        /// The flag byte.
        flag: u8,
    },
    /// The header declares more bytes than the cap.
    #[error("message of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The body ends before the declared length.
    #[error("message declares {declared} bytes but the body holds {available} after the header")]
    Truncated {
        /// Declared length.
        declared: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// Bytes after the message: a second message or garbage.
    #[error("{extra} bytes after the message; a unary body holds exactly one")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

impl FrameError {
    /// Short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::ShortHeader { .. } => "short_header",
            FrameError::Compressed => "compressed",
            FrameError::BadFlag { .. } => "bad_flag",
            FrameError::TooLarge { .. } => "too_large",
            FrameError::Truncated { .. } => "truncated",
            FrameError::Trailing { .. } => "trailing_bytes",
        }
    }
}

/// Where the one message of a unary body lies, after every check.
fn message_range(body: &[u8], max_len: usize) -> Result<std::ops::Range<usize>, FrameError> {
    let Some(&[flag, a, b, c, d]) = body.first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::ShortHeader { len: body.len() });
    };
    match flag {
        0 => {}
        1 => return Err(FrameError::Compressed),
        flag => return Err(FrameError::BadFlag { flag }),
    }
    // u32 always fits usize on the 32- and 64-bit targets this builds for.
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    let available = body.len() - HEADER_LEN;
    if len > available {
        return Err(FrameError::Truncated {
            declared: len,
            available,
        });
    }
    if len < available {
        return Err(FrameError::Trailing {
            extra: available - len,
        });
    }
    Ok(HEADER_LEN..body.len())
}

/// The one message of a unary body (a slice of it), refusing compressed messages, bodies
/// shorter or longer than the header says, and messages over `max_len` bytes.
pub fn unframe(body: &[u8], max_len: usize) -> Result<&[u8], FrameError> {
    message_range(body, max_len).map(|r| &body[r])
}

/// As [`unframe`], for a body already in [`Bytes`]: the message shares its buffer (no
/// copy), and so do `bytes` fields prost decodes from it.
pub fn unframe_bytes(body: &Bytes, max_len: usize) -> Result<Bytes, FrameError> {
    message_range(body, max_len).map(|r| body.slice(r))
}

/// One uncompressed message, framed: header and `message`.
///
/// # Panics
/// When `message` is 4 GiB or longer, which no gRPC length prefix can say.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + message.len());
    put_header(&mut out, message.len());
    out.put_slice(message);
    out.freeze()
}

/// A protobuf message encoded straight into its frame (one allocation).
///
/// # Panics
/// When the encoding is 4 GiB or longer.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(HEADER_LEN + len);
    put_header(&mut out, len);
    // Infallible: the buffer grows as needed.
    message.encode_raw(&mut out);
    out.freeze()
}

fn put_header(out: &mut BytesMut, len: usize) {
    let len = u32::try_from(len).expect("a gRPC message is shorter than 4 GiB");
    out.put_u8(0);
    out.put_u32(len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_then_unframe() {
        let framed = frame(b"hello");
        assert_eq!(&framed[..], b"\0\0\0\0\x05hello");
        assert_eq!(unframe(&framed, 5), Ok(&b"hello"[..]));
        assert_eq!(&unframe_bytes(&framed, 5).unwrap()[..], b"hello");
    }

    #[test]
    fn empty_message_is_valid() {
        let framed = frame(b"");
        assert_eq!(&framed[..], b"\0\0\0\0\0");
        assert_eq!(unframe(&framed, 0), Ok(&b""[..]));
    }

    #[test]
    fn big_endian_length() {
        let msg = vec![7u8; 0x0001_0203];
        let framed = frame(&msg);
        assert_eq!(&framed[..5], &[0, 0x00, 0x01, 0x02, 0x03]);
        assert_eq!(unframe(&framed, 1 << 20).map(<[u8]>::len), Ok(0x0001_0203));
    }

    #[test]
    fn encode_matches_frame_of_encoding() {
        let m = super::super::pb::tei::EmbedResponse {
            embeddings: vec![1.0, -2.5],
            metadata: None,
        };
        assert_eq!(encode(&m), frame(&prost::Message::encode_to_vec(&m)));
    }

    #[test]
    fn errors() {
        assert_eq!(unframe(b"", 10), Err(FrameError::ShortHeader { len: 0 }));
        assert_eq!(
            unframe(b"\0\0\0\0", 10),
            Err(FrameError::ShortHeader { len: 4 })
        );
        assert_eq!(unframe(b"\x01\0\0\0\x01x", 10), Err(FrameError::Compressed));
        assert_eq!(
            unframe(b"\x02\0\0\0\x01x", 10),
            Err(FrameError::BadFlag { flag: 2 })
        );
        assert_eq!(
            unframe(b"\0\0\0\0\x0bhello", 10),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        // A huge declared length is refused as too large before it is found missing.
        assert_eq!(
            unframe(b"\0\xff\xff\xff\xff", 10),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 10
            })
        );
        assert_eq!(
            unframe(b"\0\0\0\0\x06hello", 10),
            Err(FrameError::Truncated {
                declared: 6,
                available: 5
            })
        );
        assert_eq!(
            unframe(b"\0\0\0\0\x04hello", 10),
            Err(FrameError::Trailing { extra: 1 })
        );
        // Two messages back to back: the second is trailing bytes of the first.
        let two = [frame(b"ab"), frame(b"cd")].concat();
        assert_eq!(unframe(&two, 10), Err(FrameError::Trailing { extra: 7 }));
    }

    #[test]
    fn error_texts_and_kinds() {
        assert_eq!(
            FrameError::Compressed.to_string(),
            "message is compressed; shadowgate does not decompress gRPC messages"
        );
        let kinds: Vec<_> = [
            FrameError::ShortHeader { len: 0 },
            FrameError::Compressed,
            FrameError::BadFlag { flag: 9 },
            FrameError::TooLarge { len: 2, max: 1 },
            FrameError::Truncated {
                declared: 2,
                available: 1,
            },
            FrameError::Trailing { extra: 1 },
        ]
        .iter()
        .map(FrameError::kind)
        .collect();
        assert_eq!(
            kinds,
            [
                "short_header",
                "compressed",
                "bad_flag",
                "too_large",
                "truncated",
                "trailing_bytes"
            ]
        );
    }
}
