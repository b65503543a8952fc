//! One string at a JSON pointer, read without building the document: how a route finds
//! the model a request names (`/model` in OpenAI-style bodies). Every value on the way
//! that is not on the pointer's path is skipped by the scanner, so a batch of 2048
//! inputs costs one pass and no allocation but the answer.

use std::borrow::Cow;

use super::scan::{Scanner, StrSpan};
use super::{parse_pointer, ParseError, PointerError, Token};

/// A pointer to a string, e.g. `/model`.
#[derive(Debug, Clone)]
pub struct StringPointer {
    tokens: Vec<Token>,
}

impl StringPointer {
    /// An RFC 6901 pointer without the `*` wildcard.
    pub fn new(pointer: &str) -> Result<Self, PointerError> {
        let tokens = parse_pointer(pointer)?;
        if tokens.iter().any(|t| t.any) {
            return Err(PointerError::Invalid {
                pointer: pointer.to_owned(),
                reason: "'*' names many values; a route reads one string",
            });
        }
        Ok(Self { tokens })
    }

    /// The string at the pointer; None when the body is not JSON, the path is missing
    /// or the value there is not a string.
    pub fn find<'b>(&self, body: &'b [u8]) -> Option<Cow<'b, str>> {
        let mut s = Scanner::new(body);
        self.descend(&mut s).ok().flatten().and_then(|span| {
            if span.escaped {
                let mut out = Vec::with_capacity(span.end - span.start);
                s.unescape(span, &mut out).ok()?;
                String::from_utf8(out).ok().map(Cow::Owned)
            } else {
                std::str::from_utf8(&body[span.start..span.end])
                    .ok()
                    .map(Cow::Borrowed)
            }
        })
    }

    fn descend(&self, s: &mut Scanner<'_>) -> Result<Option<StrSpan>, ParseError> {
        for (depth, token) in self.tokens.iter().enumerate() {
            let found = match s.next_token()? {
                b'{' => object_member(s, depth, &token.key)?,
                b'[' => match token.index {
                    Some(i) => array_element(s, depth, i)?,
                    None => false,
                },
                _ => false,
            };
            if !found {
                return Ok(None);
            }
        }
        if s.next_token()? != b'"' {
            return Ok(None);
        }
        s.string().map(Some)
    }
}

/// Moves the cursor (on `{`) to the value of `key`; false when the object has none.
fn object_member(s: &mut Scanner<'_>, depth: usize, key: &[u8]) -> Result<bool, ParseError> {
    s.enter(depth)?;
    if s.next_token()? == b'}' {
        return Ok(false);
    }
    let mut unescaped = Vec::new();
    loop {
        let k = s.key()?;
        let matches = if k.escaped {
            unescaped.clear();
            s.unescape(k, &mut unescaped)?;
            unescaped == key
        } else {
            &s.buf[k.start..k.end] == key
        };
        if matches {
            return Ok(true);
        }
        s.skip_value(depth + 1)?;
        if s.object_next()? {
            return Ok(false);
        }
    }
}

/// Moves the cursor (on `[`) to element `index`; false when the array is shorter.
fn array_element(s: &mut Scanner<'_>, depth: usize, index: usize) -> Result<bool, ParseError> {
    s.enter(depth)?;
    if s.next_token()? == b']' {
        return Ok(false);
    }
    for _ in 0..index {
        s.skip_value(depth + 1)?;
        if s.array_next()? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(body: &str, pointer: &str) -> Option<String> {
        StringPointer::new(pointer)
            .unwrap()
            .find(body.as_bytes())
            .map(Cow::into_owned)
    }

    #[test]
    fn finds_the_model_wherever_it_is_in_the_body() {
        let big = format!(
            r#"{{"input":[{}],"encoding_format":"float","model":"minilm"}}"#,
            vec![r#""a \"quoted\" text""#; 2048].join(",")
        );
        assert_eq!(find(&big, "/model").as_deref(), Some("minilm"));
        assert_eq!(
            find(r#"{"model":"m\u00e9"}"#, "/model").as_deref(),
            Some("mé")
        );
        assert_eq!(
            find(r#"{"mo\u0064el":"x"}"#, "/model").as_deref(),
            Some("x")
        );
        assert_eq!(
            find(r#"{"a":{"b":[1,{"c":"deep"}]}}"#, "/a/b/1/c").as_deref(),
            Some("deep")
        );
    }

    #[test]
    fn missing_non_string_and_broken_bodies_name_no_model() {
        for body in [
            r#"{"input":"x"}"#,
            r#"{"model":3}"#,
            r#"{"model":null}"#,
            r#"["model"]"#,
            r#"{"input":"x","model""#,
            "not json",
            "",
        ] {
            assert_eq!(find(body, "/model"), None, "{body}");
        }
        assert!(StringPointer::new("/data/*/model").is_err());
        assert!(StringPointer::new("model").is_err());
    }
}
