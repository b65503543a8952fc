//! The request side of a batch: how many inputs a request carries and each one's text,
//! so that every item of a batched request becomes one compared pair (and the shadow log
//! can store, and slices can measure, the item's own input).
//!
//! Read with the same walker as responses, without a JSON tree. Where each protocol puts
//! its inputs:
//!
//! | protocol | inputs | items |
//! |---|---|---|
//! | openai | `input` | a string is one item; an array of strings (or of token arrays) is one item each; an array of numbers (one token array) is one item |
//! | tei | `inputs` | as openai |
//! | kserve_v2 | `inputs[0]` | `shape[0]` items when `shape` has rank 2 or more, or when `data` holds strings (a BYTES tensor); else one |
//! | tfserving | `instances` | one item per element (the columnar `inputs` form does not say) |
//! | generic | — | not said: the answer's items are compared without a count check |

use super::scan::{Scanner, StrSpan};
use super::{parse_pointer, Capture, Found, ParseError, Protocol, Role, Walker};

/// What a request says about its items.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestItems {
    /// How many inputs the request carries; `None` when the protocol does not say or the
    /// body cannot be read (the answers' items are then compared without this check).
    pub count: Option<usize>,
    /// Every item's input text, back to back: item `i` ends at `ends[i]`. Strings are
    /// decoded; other JSON values (token arrays, objects) are their compact JSON text.
    text: String,
    ends: Vec<usize>,
}

impl RequestItems {
    /// A request known to carry `count` items, without their texts.
    pub fn counted(count: usize) -> Self {
        Self {
            count: Some(count),
            ..Self::default()
        }
    }

    /// A request of these inputs, one item each.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut items = Self::default();
        for t in texts {
            items.text.push_str(t);
            items.ends.push(items.text.len());
        }
        items.count = Some(items.ends.len());
        items
    }

    /// Item `i`'s input, when the request's shape gives one per item.
    pub fn input(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..end)
    }

    /// Appends the item whose JSON value lies at `span` of `body`, as [`json_text`] reads
    /// it, straight into `text` (no allocation of its own for unescaped strings).
    fn push_value(&mut self, body: &[u8], (start, end): (usize, usize)) -> Result<(), ParseError> {
        let raw = &body[start..end];
        let bad_utf8 = || ParseError::Malformed {
            offset: start,
            reason: "invalid UTF-8",
        };
        if raw.first() == Some(&b'"') && !raw.contains(&b'\\') {
            let text = std::str::from_utf8(&raw[1..raw.len() - 1]).map_err(|_| bad_utf8())?;
            self.text.push_str(text);
        } else {
            self.text.push_str(&json_text(body, (start, end))?);
        }
        self.ends.push(self.text.len());
        Ok(())
    }
}

/// Reads the items of a request body. Never fails: a body it cannot read gives
/// `count: None`.
pub fn request_items(protocol: Protocol, body: &[u8]) -> RequestItems {
    read(protocol, body).unwrap_or_default()
}

fn read(protocol: Protocol, body: &[u8]) -> Result<RequestItems, ParseError> {
    let (input, shape) = match protocol {
        Protocol::OpenAi => ("/input", None),
        Protocol::Tei => ("/inputs", None),
        Protocol::TfServing => ("/instances", None),
        Protocol::KServeV2 => ("/inputs/0/data", Some("/inputs/0/shape")),
        Protocol::Generic => return Ok(RequestItems::default()),
    };
    let capture = |pointer: &str, role| -> Result<Capture, ParseError> {
        Ok(Capture {
            pointer: pointer.to_owned(),
            tokens: parse_pointer(pointer).map_err(|_| ParseError::MissingField {
                pointer: pointer.to_owned(),
            })?,
            role,
        })
    };
    let mut captures = vec![capture(input, Role::Span)?];
    if let Some(shape) = shape {
        captures.push(capture(shape, Role::Shape)?);
    }
    let found = Walker::run(body, &captures, 0, usize::MAX)?;
    let Some(span) = found.span(0) else {
        return Ok(RequestItems::default());
    };
    let elements = Elements::of(body, span)?;
    Ok(match protocol {
        Protocol::OpenAi | Protocol::Tei => match &elements {
            // One string, or one token array.
            Elements::Scalar(_) => elements.items(body, 1)?,
            Elements::Array(e) if e.first().is_some_and(|s| is_number(body, *s)) => {
                let mut items = RequestItems::counted(1);
                items.push_value(body, span)?;
                items
            }
            Elements::Array(e) => elements.items(body, e.len())?,
        },
        Protocol::TfServing => match &elements {
            Elements::Array(e) => elements.items(body, e.len())?,
            Elements::Scalar(_) => RequestItems::default(),
        },
        Protocol::KServeV2 => kserve_items(body, &found, &elements)?,
        Protocol::Generic => RequestItems::default(),
    })
}

/// KServe v2's first input tensor: a BYTES tensor of shape `[N]` or `[N, 1]` is N texts;
/// a numeric tensor of rank 2 or more is `shape[0]` items; rank 0 or 1 numbers are one.
fn kserve_items(
    body: &[u8],
    found: &Found,
    elements: &Elements,
) -> Result<RequestItems, ParseError> {
    let Some(shape) = &found.shape else {
        return Ok(RequestItems::default());
    };
    let Elements::Array(e) = elements else {
        return Ok(RequestItems::default());
    };
    let strings = !e.is_empty() && e.iter().all(|s| body[s.0] == b'"');
    let count = match shape.first() {
        Some(&n) if shape.len() >= 2 || strings => usize::try_from(n).unwrap_or(usize::MAX),
        _ => 1,
    };
    if strings && e.len() == count {
        elements.items(body, count)
    } else {
        Ok(RequestItems::counted(count))
    }
}

/// The value at the inputs pointer: one value, or an array's elements.
enum Elements {
    Scalar((usize, usize)),
    Array(Vec<(usize, usize)>),
}

impl Elements {
    fn of(body: &[u8], (start, end): (usize, usize)) -> Result<Self, ParseError> {
        if body[start] != b'[' {
            return Ok(Elements::Scalar((start, end)));
        }
        let mut s = Scanner::new(&body[..end]);
        s.pos = start;
        s.enter(0)?;
        let mut spans = Vec::new();
        if s.next_token()? == b']' {
            return Ok(Elements::Array(spans));
        }
        loop {
            s.next_token()?;
            let at = s.pos;
            s.skip_value(1)?;
            spans.push((at, s.pos));
            if s.array_next()? {
                return Ok(Elements::Array(spans));
            }
        }
    }

    /// `count` items, each one's text from its element.
    fn items(&self, body: &[u8], count: usize) -> Result<RequestItems, ParseError> {
        let mut items = RequestItems::counted(count);
        match self {
            Elements::Scalar(span) => items.push_value(body, *span)?,
            Elements::Array(spans) => {
                let bytes = spans.iter().map(|(a, b)| b - a).sum();
                items.text.reserve(bytes);
                items.ends.reserve(spans.len());
                for &span in spans {
                    items.push_value(body, span)?;
                }
            }
        }
        Ok(items)
    }
}

fn is_number(body: &[u8], (start, _): (usize, usize)) -> bool {
    matches!(body[start], b'-' | b'0'..=b'9')
}

/// A validated JSON value as input text: a string decoded, anything else as written.
fn json_text(body: &[u8], (start, end): (usize, usize)) -> Result<String, ParseError> {
    let raw = &body[start..end];
    let bytes = if raw.first() == Some(&b'"') {
        let mut out = Vec::with_capacity(raw.len());
        Scanner::new(body).unescape(
            StrSpan {
                start: start + 1,
                end: end - 1,
                escaped: raw.contains(&b'\\'),
            },
            &mut out,
        )?;
        out
    } else {
        raw.to_vec()
    };
    String::from_utf8(bytes).map_err(|_| ParseError::Malformed {
        offset: start,
        reason: "invalid UTF-8",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(p: Protocol, body: &str) -> (Option<usize>, Vec<Option<String>>) {
        let r = request_items(p, body.as_bytes());
        let n = r.count.unwrap_or(0);
        (
            r.count,
            (0..n).map(|i| r.input(i).map(str::to_owned)).collect(),
        )
    }

    fn some(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some((*s).to_owned())).collect()
    }

    #[test]
    fn openai_inputs_one_string_many_strings_and_token_arrays() {
        let p = Protocol::OpenAi;
        assert_eq!(
            items(p, r#"{"input":"h\u00e9llo","model":"m"}"#),
            (Some(1), some(&["héllo"]))
        );
        assert_eq!(
            items(p, r#"{"model":"m","input":["a", "b\n", "c"]}"#),
            (Some(3), some(&["a", "b\n", "c"]))
        );
        assert_eq!(
            items(p, r#"{"input":[1, 2, 3]}"#),
            (Some(1), some(&["[1, 2, 3]"]))
        );
        assert_eq!(
            items(p, r#"{"input":[[1,2],[3]]}"#),
            (Some(2), some(&["[1,2]", "[3]"]))
        );
        assert_eq!(items(p, r#"{"input":[]}"#), (Some(0), vec![]));
        assert_eq!(items(p, r#"{"model":"m"}"#), (None, vec![]));
        assert_eq!(items(p, r#"{"input":["a""#), (None, vec![]));
    }

    #[test]
    fn tei_tfserving_kserve_and_generic() {
        assert_eq!(
            items(Protocol::Tei, r#"{"inputs":["x","yy"]}"#),
            (Some(2), some(&["x", "yy"]))
        );
        assert_eq!(
            items(Protocol::TfServing, r#"{"instances":["x",{"a":1}]}"#),
            (Some(2), some(&["x", r#"{"a":1}"#]))
        );
        assert_eq!(
            items(Protocol::TfServing, r#"{"inputs":{"a":[1]}}"#),
            (None, vec![])
        );
        let bytes = r#"{"inputs":[{"name":"t","shape":[2],"datatype":"BYTES","data":["p","q"]}]}"#;
        assert_eq!(
            items(Protocol::KServeV2, bytes),
            (Some(2), some(&["p", "q"]))
        );
        let matrix =
            r#"{"inputs":[{"name":"x","shape":[3,2],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#;
        assert_eq!(
            items(Protocol::KServeV2, matrix),
            (Some(3), vec![None, None, None])
        );
        let vector = r#"{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        assert_eq!(items(Protocol::KServeV2, vector), (Some(1), vec![None]));
        assert_eq!(
            items(Protocol::Generic, r#"{"input":["a","b"]}"#),
            (None, vec![])
        );
    }
}
