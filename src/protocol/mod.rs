//! How each model server shapes embeddings and predictions: turns a response body into a
//! [`ModelOutput`] without building a JSON tree, and rewrites requests for shadow calls.
//!
//! The parser is a purpose-built scanner ([`scan`]) that walks the body once, following
//! every configured pointer at the same time, validates everything (a body serde_json
//! rejects is rejected here too), skips what no pointer asks for, and reads the embedding's
//! numbers straight into a `Vec<f32>`. Long flat arrays of plain decimals, the usual
//! embedding, take a faster path ([`fast`]); anything unusual there falls back to the
//! scanner, which also produces every error.
//!
//! Every number comes out bit-for-bit as serde_json (with `float_roundtrip`) followed by
//! `as f32` gives: the fast conversions are provably equal except within a few f64 ulps
//! of an f32 rounding midpoint, and there (and for long or extreme numbers) `fast-float2`
//! gives the correctly rounded f64 first.

mod fast;
mod rewrite;
mod scan;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;

pub use rewrite::{rewrite_request, Rewrite, RewriteError};
use scan::{Scanner, StrSpan, MAX_DEPTH};

/// A model server's way of answering an embeddings request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OpenAI-compatible `/v1/embeddings` (float or `encoding_format: "base64"`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Hugging Face text-embeddings-inference `/embed`: `[[...]]`.
    Tei,
    /// KServe / Open Inference Protocol v2: `outputs[0].data` with `shape`.
    #[serde(rename = "kserve_v2")]
    KServeV2,
    /// TensorFlow Serving REST `predictions`.
    #[serde(rename = "tfserving")]
    TfServing,
    /// Anything else: the embedding is wherever `embedding_pointer` says.
    Generic,
}

impl Protocol {
    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Tei => "tei",
            Protocol::KServeV2 => "kserve_v2",
            Protocol::TfServing => "tfserving",
            Protocol::Generic => "generic",
        }
    }

    /// Where the embedding lies when config does not say.
    fn default_embedding_pointer(self) -> Option<&'static str> {
        match self {
            Protocol::OpenAi => Some("/data/0/embedding"),
            Protocol::Tei => Some("/0"),
            Protocol::KServeV2 => Some("/outputs/0/data"),
            Protocol::TfServing => Some("/predictions"),
            Protocol::Generic => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one model call returned, as far as the comparison cares.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutput {
    /// The embedding: finite, non-empty (it may be all zeros; the compare step judges that).
    pub embedding: Vec<f32>,
    /// The value at `prediction_pointer` as text, if one is configured and it is not null.
    pub prediction: Option<String>,
}

/// A JSON pointer in config that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// Not an RFC 6901 pointer.
    #[error("invalid JSON pointer {pointer:?}: {reason}")]
    Invalid {
        /// The pointer as configured.
        pointer: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `protocol = "generic"` without `embedding_pointer`.
    #[error("protocol \"generic\" needs an embedding_pointer")]
    MissingEmbeddingPointer,
}

/// Why a response body gave no usable [`ModelOutput`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON (or trailing characters after it).
    #[error("malformed JSON at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset in the body where the problem was seen.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
    /// The body ends before its JSON does.
    #[error("body ends early (after {offset} bytes)")]
    Truncated {
        /// Length of the body.
        offset: usize,
    },
    /// Nothing at a pointer the protocol or config needs.
    #[error("no value at {pointer}")]
    MissingField {
        /// The pointer.
        pointer: String,
    },
    /// A value of the wrong kind at a pointer.
    #[error("{pointer}: expected {expected}")]
    WrongType {
        /// The pointer.
        pointer: String,
        /// What should have been there.
        expected: &'static str,
    },
    /// The embedding has no elements.
    #[error("embedding at {pointer} is empty")]
    Empty {
        /// The pointer.
        pointer: String,
    },
    /// An element is NaN or infinite (`NaN`/`Infinity` literals as Python writes them, a
    /// number too large for f32, or such a value in base64).
    #[error("embedding element {index} is not a finite f32")]
    NonFinite {
        /// Index of the element in the (flattened) embedding.
        index: usize,
    },
    /// A base64 embedding that does not decode to little-endian f32s.
    #[error("base64 embedding: {reason}")]
    BadBase64 {
        /// What was wrong.
        reason: String,
    },
    /// KServe `shape` does not agree with the length of `data`.
    #[error("shape {shape:?} does not match {len} data elements")]
    Shape {
        /// The declared shape.
        shape: Vec<u64>,
        /// Number of data elements found.
        len: usize,
    },
}

impl ParseError {
    /// Short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::Malformed { .. } => "malformed",
            ParseError::Truncated { .. } => "truncated",
            ParseError::MissingField { .. } => "missing_field",
            ParseError::WrongType { .. } => "wrong_type",
            ParseError::Empty { .. } => "empty",
            ParseError::NonFinite { .. } => "non_finite",
            ParseError::BadBase64 { .. } => "bad_base64",
            ParseError::Shape { .. } => "shape",
        }
    }
}

/// One reference token of a pointer, pre-split for matching keys and indices.
#[derive(Debug, Clone)]
struct Token {
    key: Box<[u8]>,
    /// The token read as an array index (RFC 6901: `0` or digits without a leading zero).
    index: Option<usize>,
}

/// Parses an RFC 6901 pointer; the empty pointer (the whole document) is refused because
/// config uses "" for "not set".
fn parse_pointer(pointer: &str) -> Result<Vec<Token>, PointerError> {
    let invalid = |reason| PointerError::Invalid {
        pointer: pointer.to_owned(),
        reason,
    };
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(invalid("must start with '/'"));
    };
    let mut tokens = Vec::new();
    for raw in rest.split('/') {
        let mut key = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '~' {
                match chars.next() {
                    Some('0') => key.push('~'),
                    Some('1') => key.push('/'),
                    _ => return Err(invalid("'~' must be followed by '0' or '1'")),
                }
            } else {
                key.push(c);
            }
        }
        let canonical_index =
            key == "0" || (!key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
        let index = if canonical_index {
            key.parse().ok()
        } else {
            None
        };
        tokens.push(Token {
            key: key.into_bytes().into_boxed_slice(),
            index,
        });
    }
    if tokens.len() >= MAX_DEPTH {
        return Err(invalid("deeper than any accepted body"));
    }
    Ok(tokens)
}

/// How the value at the embedding pointer may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbeddingShape {
    /// A flat array of numbers, or (if `base64`) a base64 string of little-endian f32s.
    Flat { base64: bool },
    /// A flat array, or an array of rows of which the first is taken (tfserving).
    RowsOrFlat,
    /// Numbers nested to any depth, flattened in order (kserve `data`).
    Flatten,
}

/// What the walker does with the value at a capture's pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Embedding(EmbeddingShape),
    /// KServe `shape`: an array of non-negative integers.
    Shape,
    /// Remember where the value lies; interpreted after the walk.
    Span,
}

#[derive(Debug, Clone)]
struct Capture {
    pointer: String,
    tokens: Vec<Token>,
    role: Role,
}

/// At most: embedding, shape, prediction (bits of a `u8` mask in the walker).
const MAX_CAPTURES: usize = 4;

/// What one walk found.
struct Found {
    embedding: Option<Vec<f32>>,
    shape: Option<Vec<u64>>,
    spans: [Option<(usize, usize)>; MAX_CAPTURES],
}

/// Walks a body once, following every capture's pointer at the same time.
struct Walker<'a, 'c> {
    s: Scanner<'a>,
    captures: &'c [Capture],
    found: Found,
    capacity_hint: usize,
    scratch: Vec<u8>,
}

impl<'a, 'c> Walker<'a, 'c> {
    fn run(
        body: &'a [u8],
        captures: &'c [Capture],
        capacity_hint: usize,
    ) -> Result<Found, ParseError> {
        debug_assert!(captures.len() <= MAX_CAPTURES);
        let mut w = Walker {
            s: Scanner::new(body),
            captures,
            found: Found {
                embedding: None,
                shape: None,
                spans: [None; MAX_CAPTURES],
            },
            capacity_hint,
            scratch: Vec::new(),
        };
        let all = (1u8 << captures.len()) - 1;
        w.value(0, all)?;
        w.s.finish()?;
        Ok(w.found)
    }

    /// One value at nesting `depth`; `mask` holds the captures whose pointer matched the
    /// path so far.
    fn value(&mut self, depth: usize, mask: u8) -> Result<(), ParseError> {
        if mask == 0 {
            return self.s.skip_value(depth);
        }
        let captures = self.captures;
        let first = self.s.next_token()?;
        let start = self.s.pos;
        let mut here = 0u8;
        for (i, c) in captures.iter().enumerate() {
            if mask & (1 << i) != 0 && c.tokens.len() == depth {
                here |= 1 << i;
            }
        }
        let deeper = mask & !here;
        let reader = captures
            .iter()
            .enumerate()
            .find(|(i, c)| here & (1 << i) != 0 && c.role != Role::Span);
        match reader {
            Some((_, c)) => match c.role {
                Role::Embedding(shape) => {
                    let v = self.embedding(shape, &c.pointer, depth)?;
                    self.found.embedding = Some(v);
                }
                Role::Shape => {
                    let v = self.shape(&c.pointer)?;
                    self.found.shape = Some(v);
                }
                Role::Span => {}
            },
            None if deeper != 0 && first == b'{' => self.object(depth, deeper)?,
            None if deeper != 0 && first == b'[' => self.array(depth, deeper)?,
            None => self.s.skip_value(depth)?,
        }
        let end = self.s.pos;
        for (i, c) in captures.iter().enumerate() {
            if here & (1 << i) != 0 && c.role == Role::Span {
                self.found.spans[i] = Some((start, end));
            }
        }
        Ok(())
    }

    fn object(&mut self, depth: usize, mask: u8) -> Result<(), ParseError> {
        let captures = self.captures;
        self.s.enter(depth)?;
        if self.s.next_token()? == b'}' {
            self.s.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.s.key()?;
            let mut child = 0u8;
            for (i, c) in captures.iter().enumerate() {
                if mask & (1 << i) != 0 && self.key_is(key, &c.tokens[depth].key)? {
                    child |= 1 << i;
                }
            }
            self.value(depth + 1, child)?;
            if self.s.object_next()? {
                return Ok(());
            }
        }
    }

    fn key_is(&mut self, key: StrSpan, want: &[u8]) -> Result<bool, ParseError> {
        if !key.escaped {
            return Ok(&self.s.buf[key.start..key.end] == want);
        }
        self.s.unescape(key, &mut self.scratch)?;
        Ok(self.scratch == want)
    }

    fn array(&mut self, depth: usize, mask: u8) -> Result<(), ParseError> {
        self.s.enter(depth)?;
        if self.s.next_token()? == b']' {
            self.s.pos += 1;
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            let mut child = 0u8;
            for (i, c) in self.captures.iter().enumerate() {
                if mask & (1 << i) != 0 && c.tokens[depth].index == Some(index) {
                    child |= 1 << i;
                }
            }
            self.value(depth + 1, child)?;
            if self.s.array_next()? {
                return Ok(());
            }
            index += 1;
        }
    }

    /// Reads the embedding value at the cursor (already on its first byte).
    fn embedding(
        &mut self,
        shape: EmbeddingShape,
        pointer: &str,
        depth: usize,
    ) -> Result<Vec<f32>, ParseError> {
        let wrong = |expected| ParseError::WrongType {
            pointer: pointer.to_owned(),
            expected,
        };
        let mut out = Vec::with_capacity(self.capacity_hint);
        match (self.s.buf[self.s.pos], shape) {
            (b'[', EmbeddingShape::Flat { .. }) => {
                self.numbers(&mut out, pointer, depth, false)?;
            }
            (b'[', EmbeddingShape::Flatten) => {
                self.numbers(&mut out, pointer, depth, true)?;
            }
            (b'[', EmbeddingShape::RowsOrFlat) => {
                let outer = self.s.pos;
                self.s.enter(depth)?;
                if self.s.next_token()? == b'[' {
                    self.numbers(&mut out, pointer, depth + 1, false)?;
                    while !self.s.array_next()? {
                        self.s.skip_value(depth + 1)?;
                    }
                } else {
                    self.s.pos = outer;
                    self.numbers(&mut out, pointer, depth, false)?;
                }
            }
            (b'"', EmbeddingShape::Flat { base64: true }) => {
                // The decoder rejects every byte outside the base64 alphabet, so an
                // unescaped string needs no scan of its own beyond finding its end.
                let content = self.s.pos + 1;
                let plain_end = memchr::memchr2(b'"', b'\\', &self.s.buf[content..])
                    .map(|n| content + n)
                    .filter(|&end| self.s.buf[end] == b'"');
                let span = match plain_end {
                    Some(end) => {
                        self.s.pos = end + 1;
                        StrSpan {
                            start: content,
                            end,
                            escaped: false,
                        }
                    }
                    None => self.s.string()?,
                };
                out = if span.escaped {
                    self.s.unescape(span, &mut self.scratch)?;
                    decode_base64(&self.scratch)?
                } else {
                    decode_base64(&self.s.buf[span.start..span.end])?
                };
            }
            (_, EmbeddingShape::Flat { base64: true }) => {
                return Err(wrong("an array of numbers or a base64 string"))
            }
            _ => return Err(wrong("an array of numbers")),
        }
        if out.is_empty() {
            return Err(ParseError::Empty {
                pointer: pointer.to_owned(),
            });
        }
        Ok(out)
    }

    /// Appends the numbers of the array at the cursor to `out`; with `flatten`, nested
    /// arrays are read in order, otherwise they are a type error. Tries the fast path
    /// first; this careful loop handles the rest and reports errors.
    fn numbers(
        &mut self,
        out: &mut Vec<f32>,
        pointer: &str,
        depth: usize,
        flatten: bool,
    ) -> Result<(), ParseError> {
        if depth < MAX_DEPTH {
            let before = out.len();
            if let Some(end) = fast::flat_numbers(self.s.buf, self.s.pos, out) {
                self.s.pos = end;
                return Ok(());
            }
            // Not the common shape, or broken: parse it carefully for the exact error.
            out.truncate(before);
        }
        self.s.enter(depth)?;
        if self.s.next_token()? == b']' {
            self.s.pos += 1;
            return Ok(());
        }
        loop {
            let b = match self.s.buf.get(self.s.pos) {
                Some(&b) if b > b' ' => b,
                _ => self.s.next_token()?,
            };
            let finite = match b {
                b'0'..=b'9' => true,
                b'-' if self.s.buf.get(self.s.pos + 1) != Some(&b'I') => true,
                b'-' | b'N' | b'I' => false,
                b'[' if flatten => {
                    self.numbers(out, pointer, depth + 1, true)?;
                    if self.s.array_next()? {
                        return Ok(());
                    }
                    continue;
                }
                b'[' | b'{' | b'"' | b't' | b'f' | b'n' => {
                    return Err(ParseError::WrongType {
                        pointer: pointer.to_owned(),
                        expected: if flatten {
                            "nested arrays of numbers"
                        } else {
                            "a flat array of numbers"
                        },
                    })
                }
                _ => return Err(self.s.malformed("expected a JSON value")),
            };
            if finite {
                let v = self.s.f32_number()?;
                if !v.is_finite() {
                    return Err(ParseError::NonFinite { index: out.len() });
                }
                out.push(v);
            } else if self.s.non_finite_literal()? {
                return Err(ParseError::NonFinite { index: out.len() });
            } else {
                return Err(self.s.malformed("expected a JSON value"));
            }
            if self.s.array_next()? {
                return Ok(());
            }
        }
    }

    /// Reads an array of non-negative integers (KServe `shape`).
    fn shape(&mut self, pointer: &str) -> Result<Vec<u64>, ParseError> {
        let wrong = || ParseError::WrongType {
            pointer: pointer.to_owned(),
            expected: "an array of non-negative integers",
        };
        if self.s.buf[self.s.pos] != b'[' {
            return Err(wrong());
        }
        self.s.pos += 1;
        let mut dims = Vec::new();
        if self.s.next_token()? == b']' {
            self.s.pos += 1;
            return Ok(dims);
        }
        loop {
            match self.s.next_token()? {
                b'0'..=b'9' => {}
                b'-' | b'[' | b'{' | b'"' | b't' | b'f' | b'n' => return Err(wrong()),
                _ => return Err(self.s.malformed("expected a JSON value")),
            }
            let (end, _) = self.s.number_end()?;
            let text = &self.s.buf[self.s.pos..end];
            // Digits only (no fraction or exponent), and within u64.
            let dim = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(wrong)?;
            dims.push(dim);
            self.s.pos = end;
            if self.s.array_next()? {
                return Ok(dims);
            }
        }
    }
}

/// Decodes OpenAI's `encoding_format: "base64"`: standard base64 of little-endian f32s.
fn decode_base64(text: &[u8]) -> Result<Vec<f32>, ParseError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ParseError::BadBase64 {
            reason: e.to_string(),
        })?;
    if bytes.len() % 4 != 0 {
        return Err(ParseError::BadBase64 {
            reason: format!("{} bytes is not a whole number of f32s", bytes.len()),
        });
    }
    // Convert, then check: two simple loops the compiler vectorizes.
    let out: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    match out.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(ParseError::NonFinite { index }),
        None => Ok(out),
    }
}

/// The value at a span as prediction text: strings decoded, `null` as `None`, numbers
/// and booleans as written, arrays and objects as compact JSON.
fn span_text(s: &Scanner<'_>, (start, end): (usize, usize)) -> Result<Option<String>, ParseError> {
    let raw = &s.buf[start..end];
    let bytes = match raw.first() {
        Some(b'n') => return Ok(None),
        Some(b'"') => {
            let mut out = Vec::with_capacity(raw.len());
            s.unescape(
                StrSpan {
                    start: start + 1,
                    end: end - 1,
                    escaped: raw.contains(&b'\\'),
                },
                &mut out,
            )?;
            out
        }
        Some(b'[' | b'{') => minify(raw),
        _ => raw.to_vec(),
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ParseError::Malformed {
            offset: start,
            reason: "invalid UTF-8",
        })
}

/// Drops the whitespace outside strings of a validated JSON value.
fn minify(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in raw {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

/// Reads embeddings (and predictions) out of one protocol's response bodies.
///
/// Built once from config and shared by all shadow tasks.
#[derive(Debug)]
pub struct Extractor {
    protocol: Protocol,
    captures: Vec<Capture>,
    shape: Option<usize>,
    prediction: Option<usize>,
    /// Length of the last embedding, to size the next one's buffer in one allocation.
    last_len: AtomicUsize,
}

impl Extractor {
    /// `embedding_pointer` is required for [`Protocol::Generic`], an optional override for
    /// the others (KServe then checks `shape` beside it when the pointer ends in `/data`);
    /// an empty `prediction_pointer` means no prediction. Pointers follow RFC 6901.
    pub fn new(
        protocol: Protocol,
        embedding_pointer: &str,
        prediction_pointer: &str,
    ) -> Result<Self, PointerError> {
        let pointer = match (embedding_pointer, protocol.default_embedding_pointer()) {
            ("", Some(default)) => default,
            ("", None) => return Err(PointerError::MissingEmbeddingPointer),
            (given, _) => given,
        };
        let shape = match protocol {
            Protocol::OpenAi | Protocol::Generic => EmbeddingShape::Flat { base64: true },
            Protocol::Tei => EmbeddingShape::Flat { base64: false },
            Protocol::KServeV2 => EmbeddingShape::Flatten,
            Protocol::TfServing => EmbeddingShape::RowsOrFlat,
        };
        let tokens = parse_pointer(pointer)?;
        let mut captures = vec![Capture {
            pointer: pointer.to_owned(),
            tokens,
            role: Role::Embedding(shape),
        }];
        let mut shape_index = None;
        if protocol == Protocol::KServeV2 {
            if let Some(parent) = pointer.strip_suffix("/data") {
                let shape_pointer = format!("{parent}/shape");
                shape_index = Some(captures.len());
                captures.push(Capture {
                    tokens: parse_pointer(&shape_pointer)?,
                    pointer: shape_pointer,
                    role: Role::Shape,
                });
            }
        }
        let mut prediction = None;
        if !prediction_pointer.is_empty() {
            prediction = Some(captures.len());
            captures.push(Capture {
                pointer: prediction_pointer.to_owned(),
                tokens: parse_pointer(prediction_pointer)?,
                role: Role::Span,
            });
        }
        Ok(Self {
            protocol,
            captures,
            shape: shape_index,
            prediction,
            last_len: AtomicUsize::new(0),
        })
    }

    /// The protocol this extractor reads.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Parses one response body.
    pub fn parse(&self, body: &[u8]) -> Result<ModelOutput, ParseError> {
        let hint = self.last_len.load(Ordering::Relaxed).clamp(16, 1 << 16);
        let found = Walker::run(body, &self.captures, hint)?;
        let mut embedding = found.embedding.ok_or_else(|| ParseError::MissingField {
            pointer: self.captures[0].pointer.clone(),
        })?;
        if let Some(i) = self.shape {
            let shape = found.shape.ok_or_else(|| ParseError::MissingField {
                pointer: self.captures[i].pointer.clone(),
            })?;
            take_first_row(&mut embedding, shape)?;
        }
        let prediction = match self.prediction {
            None => None,
            Some(i) => {
                let span = found.spans[i].ok_or_else(|| ParseError::MissingField {
                    pointer: self.captures[i].pointer.clone(),
                })?;
                span_text(&Scanner::new(body), span)?
            }
        };
        self.last_len.store(embedding.len(), Ordering::Relaxed);
        Ok(ModelOutput {
            embedding,
            prediction,
        })
    }
}

/// Checks KServe's `shape` against the flattened data and keeps the first row of a batch.
fn take_first_row(data: &mut Vec<f32>, shape: Vec<u64>) -> Result<(), ParseError> {
    let product = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if product != Some(data.len() as u64) {
        return Err(ParseError::Shape {
            shape,
            len: data.len(),
        });
    }
    if shape.len() >= 2 && shape[0] > 1 {
        // shape[0] divides len because the product matched.
        let row = data.len() / shape[0] as usize;
        data.truncate(row);
    }
    Ok(())
}
