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
mod items;
mod lookup;
mod rewrite;
mod scan;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;

pub use items::{request_items, RequestItems};
pub use lookup::StringPointer;
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
            Protocol::OpenAi => Some("/data/*/embedding"),
            Protocol::Tei => Some("/*"),
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

/// What one model call returned, as far as the comparison cares: one embedding per item
/// of the request (a batch of N inputs gives N items, in input order).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutput {
    /// The items' embeddings, row-major, [`ModelOutput::dim`] floats each: finite, and
    /// at least one item (an item may be all zeros; the compare step judges that).
    pub data: Vec<f32>,
    /// Floats per item (> 0).
    pub dim: usize,
    /// Per item, the value at `prediction_pointer` as text (`None` when null); empty when
    /// no prediction pointer is configured. A pointer without `*` gives item 0's.
    pub predictions: Vec<Option<String>>,
}

impl ModelOutput {
    /// Number of items.
    pub fn items(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Item `i`'s embedding (empty when there is no such item).
    pub fn embedding(&self, i: usize) -> &[f32] {
        self.data
            .get(i * self.dim..(i + 1) * self.dim)
            .unwrap_or_default()
    }

    /// Item `i`'s prediction, if any.
    pub fn prediction(&self, i: usize) -> Option<&str> {
        self.predictions.get(i).and_then(|p| p.as_deref())
    }
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
    /// The items of a batch have different lengths.
    #[error("item {item} has {len} elements, item 0 has {expected}")]
    Ragged {
        /// The first item whose length differs.
        item: usize,
        /// Its length.
        len: usize,
        /// Item 0's length.
        expected: usize,
    },
    /// More items than the configured cap (`shadow.max_batch_items`).
    #[error("more than {max} items in one answer")]
    TooManyItems {
        /// The cap.
        max: usize,
    },
    /// OpenAI `data[i].index` values that are not a permutation of 0..N.
    #[error("{pointer}: {reason}")]
    BadIndex {
        /// The index pointer.
        pointer: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A per-item value found a different number of times than there are items.
    #[error("{found} {what} for {expected} items")]
    ItemCount {
        /// What was counted.
        what: &'static str,
        /// How many were found.
        found: usize,
        /// How many items there are.
        expected: usize,
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
            ParseError::Ragged { .. } => "ragged",
            ParseError::TooManyItems { .. } => "too_many_items",
            ParseError::BadIndex { .. } => "bad_index",
            ParseError::ItemCount { .. } => "item_count",
        }
    }
}

/// One reference token of a pointer, pre-split for matching keys and indices.
#[derive(Debug, Clone)]
struct Token {
    key: Box<[u8]>,
    /// The token read as an array index (RFC 6901: `0` or digits without a leading zero).
    index: Option<usize>,
    /// `*`: every element of an array, in order (an object's key `*` still matches
    /// literally). The one extension to RFC 6901, for batches: `/data/*/embedding`.
    any: bool,
}

/// Parses an RFC 6901 pointer; the empty pointer (the whole document) is refused because
/// config uses "" for "not set". `*` is a wildcard over array elements, at most once.
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
            any: key == "*",
            key: key.into_bytes().into_boxed_slice(),
            index,
        });
    }
    if tokens.len() >= MAX_DEPTH {
        return Err(invalid("deeper than any accepted body"));
    }
    if tokens.iter().filter(|t| t.any).count() > 1 {
        return Err(invalid("at most one '*' (one batch dimension)"));
    }
    Ok(tokens)
}

/// Where the wildcard of a parsed pointer is, if it has one.
fn wildcard_at(tokens: &[Token]) -> Option<usize> {
    tokens.iter().position(|t| t.any)
}

/// How the value at the embedding pointer may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbeddingShape {
    /// Exactly one item: a flat array of numbers, or (if `base64`) a base64 string of
    /// little-endian f32s. For pointers with a `*`, which match once per item.
    Row { base64: bool },
    /// One item as in `Row`, or an array of such items (a 2-D array: a batch).
    Rows { base64: bool },
    /// Numbers nested to any depth, flattened in order (kserve `data`); `shape` splits
    /// them into items.
    Flatten,
}

/// What the walker does with the value at a capture's pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Embedding(EmbeddingShape),
    /// KServe `shape`: an array of non-negative integers.
    Shape,
    /// OpenAI `data[i].index`: a non-negative integer per item.
    Index,
    /// Remember where the value lies (each time it matches); interpreted after the walk.
    Span,
}

#[derive(Debug, Clone)]
struct Capture {
    pointer: String,
    tokens: Vec<Token>,
    role: Role,
}

/// At most: embedding, shape or index, prediction (bits of a `u8` mask in the walker).
const MAX_CAPTURES: usize = 4;

/// Default cap on the items of one batch ([`Extractor::with_max_items`]): a batch with
/// more is refused with [`ParseError::TooManyItems`] instead of being compared. OpenAI
/// accepts at most 2048 inputs per request, so this cap never refuses a valid OpenAI
/// batch; a larger one costs the shadow path memory and time out of proportion.
pub const DEFAULT_MAX_ITEMS: usize = 2048;

/// What one walk found.
struct Found {
    /// The embedding items, row-major, `dim` floats each.
    data: Vec<f32>,
    dim: usize,
    rows: usize,
    /// Set when the embedding pointer matched at least once (possibly an empty array).
    matched: bool,
    shape: Option<Vec<u64>>,
    indices: Vec<u64>,
    /// Every place each `Span` capture matched, in document order.
    spans: [Vec<(usize, usize)>; MAX_CAPTURES],
}

impl Found {
    /// Where capture `i` matched first.
    fn span(&self, i: usize) -> Option<(usize, usize)> {
        self.spans[i].first().copied()
    }
}

/// Walks a body once, following every capture's pointer at the same time.
struct Walker<'a, 'c> {
    s: Scanner<'a>,
    captures: &'c [Capture],
    found: Found,
    max_items: usize,
    scratch: Vec<u8>,
}

impl<'a, 'c> Walker<'a, 'c> {
    fn run(
        body: &'a [u8],
        captures: &'c [Capture],
        capacity_hint: usize,
        max_items: usize,
    ) -> Result<Found, ParseError> {
        debug_assert!(captures.len() <= MAX_CAPTURES);
        let mut w = Walker {
            s: Scanner::new(body),
            captures,
            found: Found {
                data: Vec::with_capacity(capacity_hint),
                dim: 0,
                rows: 0,
                matched: false,
                shape: None,
                indices: Vec::new(),
                spans: Default::default(),
            },
            max_items,
            scratch: Vec::new(),
        };
        let all = (1u8 << captures.len()) - 1;
        match w.value(0, all).and_then(|()| w.s.finish()) {
            Ok(()) => Ok(w.found),
            Err(
                e @ (ParseError::Malformed { .. }
                | ParseError::Truncated { .. }
                | ParseError::NonFinite { .. }),
            ) => Err(e),
            Err(e) => {
                // serde_json refuses a body that is not JSON before it looks inside it;
                // so does this, whatever the walk tripped over first.
                let mut s = Scanner::new(body);
                s.skip_value(0).and_then(|()| s.finish())?;
                Err(e)
            }
        }
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
                    self.found.matched = true;
                    self.embedding(shape, &c.pointer, depth)?;
                }
                Role::Shape => {
                    let v = self.integers(&c.pointer)?;
                    self.found.shape = Some(v);
                }
                Role::Index => {
                    let v = self.integer(&c.pointer)?;
                    self.found.indices.push(v);
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
                let spans = &mut self.found.spans[i];
                if !c.tokens.iter().any(|t| t.any) {
                    // One value per document: a repeated key's last one wins.
                    spans.clear();
                }
                spans.push((start, end));
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
        self.batch_starts(depth, mask);
        self.s.enter(depth)?;
        if self.s.next_token()? == b']' {
            self.s.pos += 1;
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            let mut child = 0u8;
            for (i, c) in self.captures.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    let t = &c.tokens[depth];
                    if t.any || t.index == Some(index) {
                        child |= 1 << i;
                    }
                }
            }
            self.value(depth + 1, child)?;
            if self.s.array_next()? {
                return Ok(());
            }
            index += 1;
        }
    }

    /// An array at a capture's `*` holds the whole batch: what an earlier match of the
    /// same pointer found is dropped (a repeated key: the last one wins, as in serde).
    fn batch_starts(&mut self, depth: usize, mask: u8) {
        for (i, c) in self.captures.iter().enumerate() {
            if mask & (1 << i) == 0 || !c.tokens[depth].any {
                continue;
            }
            let f = &mut self.found;
            match c.role {
                Role::Embedding(_) => {
                    f.data.clear();
                    f.rows = 0;
                }
                Role::Index => f.indices.clear(),
                Role::Span => f.spans[i].clear(),
                Role::Shape => {}
            }
        }
    }

    /// Reads the embedding value at the cursor (already on its first byte) into
    /// `found.data`, one or more items.
    fn embedding(
        &mut self,
        shape: EmbeddingShape,
        pointer: &str,
        depth: usize,
    ) -> Result<(), ParseError> {
        let wrong = |expected| ParseError::WrongType {
            pointer: pointer.to_owned(),
            expected,
        };
        let base64 = match shape {
            EmbeddingShape::Row { base64 } | EmbeddingShape::Rows { base64 } => base64,
            EmbeddingShape::Flatten => false,
        };
        if shape != (EmbeddingShape::Row { base64 }) {
            // The value is the whole batch; a repeated key's last value wins.
            self.found.data.clear();
            self.found.rows = 0;
        }
        match (self.s.buf[self.s.pos], shape) {
            (b'[', EmbeddingShape::Flatten) => self.row(pointer, depth, true),
            (b'[', EmbeddingShape::Row { .. }) => self.row(pointer, depth, false),
            (b'[', EmbeddingShape::Rows { .. }) => {
                let outer = self.s.pos;
                self.s.enter(depth)?;
                match self.s.next_token()? {
                    b'[' => loop {
                        if self.s.next_token()? != b'[' {
                            return Err(wrong("an array of arrays of numbers"));
                        }
                        self.row(pointer, depth + 1, false)?;
                        if self.s.array_next()? {
                            return Ok(());
                        }
                    },
                    b'"' if base64 => loop {
                        if self.s.next_token()? != b'"' {
                            return Err(wrong("an array of base64 strings"));
                        }
                        self.base64_row(pointer)?;
                        if self.s.array_next()? {
                            return Ok(());
                        }
                    },
                    _ => {
                        self.s.pos = outer;
                        self.row(pointer, depth, false)
                    }
                }
            }
            (b'"', _) if base64 => self.base64_row(pointer),
            _ if base64 => Err(wrong("an array of numbers or a base64 string")),
            _ => Err(wrong("an array of numbers")),
        }
    }

    /// One item from the number array at the cursor.
    fn row(&mut self, pointer: &str, depth: usize, flatten: bool) -> Result<(), ParseError> {
        let start = self.found.data.len();
        let mut data = std::mem::take(&mut self.found.data);
        let read = self.numbers(&mut data, pointer, depth, flatten);
        self.found.data = data;
        read?;
        self.end_row(start, pointer)
    }

    /// One item from the base64 string at the cursor.
    fn base64_row(&mut self, pointer: &str) -> Result<(), ParseError> {
        // The decoder rejects every byte outside the base64 alphabet, so an unescaped
        // string needs no scan of its own beyond finding its end.
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
        let start = self.found.data.len();
        if span.escaped {
            self.s.unescape(span, &mut self.scratch)?;
            decode_base64(&self.scratch, &mut self.found.data)?;
        } else {
            decode_base64(&self.s.buf[span.start..span.end], &mut self.found.data)?;
        }
        self.end_row(start, pointer)
    }

    /// Closes the item that began at `start` in `found.data`: not empty, as long as the
    /// others, and within the item cap.
    fn end_row(&mut self, start: usize, pointer: &str) -> Result<(), ParseError> {
        let f = &mut self.found;
        let len = f.data.len() - start;
        if len == 0 {
            return Err(ParseError::Empty {
                pointer: pointer.to_owned(),
            });
        }
        if f.rows == 0 {
            f.dim = len;
        } else if len != f.dim {
            return Err(ParseError::Ragged {
                item: f.rows,
                len,
                expected: f.dim,
            });
        }
        f.rows += 1;
        if f.rows > self.max_items {
            return Err(ParseError::TooManyItems {
                max: self.max_items,
            });
        }
        Ok(())
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

    /// Reads a non-negative integer that fits in u64 (cursor on its first byte).
    fn integer(&mut self, pointer: &str) -> Result<u64, ParseError> {
        let wrong = || ParseError::WrongType {
            pointer: pointer.to_owned(),
            expected: "a non-negative integer",
        };
        match self.s.next_token()? {
            b'0'..=b'9' => {}
            b'-' | b'[' | b'{' | b'"' | b't' | b'f' | b'n' => return Err(wrong()),
            _ => return Err(self.s.malformed("expected a JSON value")),
        }
        let (end, _) = self.s.number_end()?;
        let text = &self.s.buf[self.s.pos..end];
        // Digits only (no fraction or exponent), and within u64.
        let n = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(wrong)?;
        self.s.pos = end;
        Ok(n)
    }

    /// Reads an array of non-negative integers (KServe `shape`).
    fn integers(&mut self, pointer: &str) -> Result<Vec<u64>, ParseError> {
        if self.s.buf[self.s.pos] != b'[' {
            return Err(ParseError::WrongType {
                pointer: pointer.to_owned(),
                expected: "an array of non-negative integers",
            });
        }
        self.s.pos += 1;
        let mut dims = Vec::new();
        if self.s.next_token()? == b']' {
            self.s.pos += 1;
            return Ok(dims);
        }
        loop {
            dims.push(self.integer(pointer).map_err(|e| match e {
                ParseError::WrongType { pointer, .. } => ParseError::WrongType {
                    pointer,
                    expected: "an array of non-negative integers",
                },
                e => e,
            })?);
            if self.s.array_next()? {
                return Ok(dims);
            }
        }
    }
}

/// Decodes OpenAI's `encoding_format: "base64"` (standard base64 of little-endian f32s)
/// onto the end of `out`.
fn decode_base64(text: &[u8], out: &mut Vec<f32>) -> Result<(), ParseError> {
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
    let start = out.len();
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    match out[start..].iter().position(|v| !v.is_finite()) {
        Some(index) => Err(ParseError::NonFinite {
            index: start + index,
        }),
        None => Ok(()),
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
    /// KServe: the `shape` capture that splits the flattened data into items.
    shape: Option<usize>,
    /// OpenAI: the `index` capture that orders the items.
    index: Option<usize>,
    prediction: Option<usize>,
    /// The prediction pointer has a `*`: one prediction per item.
    prediction_per_item: bool,
    max_items: usize,
    /// Floats of the last answer, to size the next one's buffer in one allocation.
    last_len: AtomicUsize,
}

impl Extractor {
    /// `embedding_pointer` is required for [`Protocol::Generic`], an optional override for
    /// the others (KServe then checks `shape` beside it when the pointer ends in `/data`);
    /// an empty `prediction_pointer` means no prediction. Pointers follow RFC 6901, plus
    /// `*` for "every element of this array" (module doc of the README: batches).
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
        let tokens = parse_pointer(pointer)?;
        let per_match = wildcard_at(&tokens).is_some();
        let shape = match protocol {
            Protocol::KServeV2 => EmbeddingShape::Flatten,
            _ => {
                let base64 = matches!(protocol, Protocol::OpenAi | Protocol::Generic);
                if per_match {
                    EmbeddingShape::Row { base64 }
                } else {
                    EmbeddingShape::Rows { base64 }
                }
            }
        };
        let mut captures = vec![Capture {
            pointer: pointer.to_owned(),
            tokens,
            role: Role::Embedding(shape),
        }];
        let mut shape_index = None;
        let mut index = None;
        match protocol {
            Protocol::KServeV2 if !per_match => {
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
            Protocol::OpenAi if per_match => {
                // OpenAI matches items to inputs by `index`, which may come in any order.
                if let Some(parent) = pointer.strip_suffix("/embedding") {
                    let index_pointer = format!("{parent}/index");
                    index = Some(captures.len());
                    captures.push(Capture {
                        tokens: parse_pointer(&index_pointer)?,
                        pointer: index_pointer,
                        role: Role::Index,
                    });
                }
            }
            _ => {}
        }
        let mut prediction = None;
        let mut prediction_per_item = false;
        if !prediction_pointer.is_empty() {
            prediction = Some(captures.len());
            let tokens = parse_pointer(prediction_pointer)?;
            prediction_per_item = wildcard_at(&tokens).is_some();
            captures.push(Capture {
                pointer: prediction_pointer.to_owned(),
                tokens,
                role: Role::Span,
            });
        }
        Ok(Self {
            protocol,
            captures,
            shape: shape_index,
            index,
            prediction,
            prediction_per_item,
            max_items: DEFAULT_MAX_ITEMS,
            last_len: AtomicUsize::new(0),
        })
    }

    /// Refuse answers with more than `max` items ([`ParseError::TooManyItems`]).
    pub fn with_max_items(mut self, max: usize) -> Self {
        self.max_items = max.max(1);
        self
    }

    /// The protocol this extractor reads.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The pointer the embeddings are read from (the protocol's default unless configured).
    pub fn embedding_pointer(&self) -> &str {
        &self.captures[0].pointer
    }

    /// Parses one response body: every item of a batch, in input order.
    pub fn parse(&self, body: &[u8]) -> Result<ModelOutput, ParseError> {
        let hint = self.last_len.load(Ordering::Relaxed).clamp(16, 1 << 20);
        let mut found = Walker::run(body, &self.captures, hint, self.max_items)?;
        if !found.matched {
            return Err(ParseError::MissingField {
                pointer: self.captures[0].pointer.clone(),
            });
        }
        if found.rows == 0 {
            return Err(ParseError::Empty {
                pointer: self.captures[0].pointer.clone(),
            });
        }
        if let Some(i) = self.shape {
            let shape = found.shape.take().ok_or_else(|| ParseError::MissingField {
                pointer: self.captures[i].pointer.clone(),
            })?;
            split_by_shape(&mut found, shape, self.max_items)?;
        }
        let mut predictions = match self.prediction {
            None => Vec::new(),
            Some(i) => {
                let scanner = Scanner::new(body);
                let spans = &found.spans[i];
                if self.prediction_per_item {
                    if spans.len() != found.rows {
                        return Err(ParseError::ItemCount {
                            what: "predictions",
                            found: spans.len(),
                            expected: found.rows,
                        });
                    }
                    spans
                        .iter()
                        .map(|&s| span_text(&scanner, s))
                        .collect::<Result<Vec<_>, _>>()?
                } else {
                    // One prediction for the whole answer: it belongs to item 0.
                    let span = found.span(i).ok_or_else(|| ParseError::MissingField {
                        pointer: self.captures[i].pointer.clone(),
                    })?;
                    let mut v = vec![None; found.rows];
                    v[0] = span_text(&scanner, span)?;
                    v
                }
            }
        };
        if let Some(i) = self.index {
            order_by_index(
                &mut found,
                &mut predictions,
                self.prediction_per_item,
                &self.captures[i].pointer,
            )?;
        }
        self.last_len.store(found.data.len(), Ordering::Relaxed);
        Ok(ModelOutput {
            data: found.data,
            dim: found.dim,
            predictions,
        })
    }
}

/// Checks KServe's `shape` against the flattened data and splits it into items: shape
/// `[N, ...]` of rank 2 or more is N items, rank 0 or 1 is one item.
fn split_by_shape(found: &mut Found, shape: Vec<u64>, max_items: usize) -> Result<(), ParseError> {
    let len = found.data.len();
    let product = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if product != Some(len as u64) {
        return Err(ParseError::Shape { shape, len });
    }
    let rows = if shape.len() >= 2 {
        shape[0] as usize
    } else {
        1
    };
    if rows > max_items {
        return Err(ParseError::TooManyItems { max: max_items });
    }
    // rows divides len because the product matched, and len > 0.
    found.rows = rows;
    found.dim = len / rows;
    Ok(())
}

/// Puts OpenAI items in input order by their `index`: it must be a permutation of
/// 0..N. An answer without any `index` keeps document order (the usual servers write
/// `index` and keep the order, which costs nothing here).
fn order_by_index(
    found: &mut Found,
    predictions: &mut Vec<Option<String>>,
    per_item: bool,
    pointer: &str,
) -> Result<(), ParseError> {
    let n = found.rows;
    if found.indices.is_empty() {
        return Ok(());
    }
    let bad = |reason| ParseError::BadIndex {
        pointer: pointer.to_owned(),
        reason,
    };
    if found.indices.len() != n {
        return Err(bad("not every item has an index"));
    }
    let mut seen = vec![false; n];
    for &i in &found.indices {
        let i = usize::try_from(i).map_err(|_| bad("index out of range"))?;
        match seen.get_mut(i) {
            None => return Err(bad("index out of range")),
            Some(true) => return Err(bad("index given twice")),
            Some(s) => *s = true,
        }
    }
    if found
        .indices
        .iter()
        .enumerate()
        .all(|(k, &i)| i == k as u64)
    {
        return Ok(());
    }
    let dim = found.dim;
    let mut data = vec![0f32; found.data.len()];
    for (k, &i) in found.indices.iter().enumerate() {
        let i = i as usize;
        data[i * dim..(i + 1) * dim].copy_from_slice(&found.data[k * dim..(k + 1) * dim]);
    }
    found.data = data;
    if per_item {
        let mut ordered = vec![None; n];
        for (k, &i) in found.indices.iter().enumerate() {
            ordered[i as usize] = predictions[k].take();
        }
        *predictions = ordered;
    }
    Ok(())
}
