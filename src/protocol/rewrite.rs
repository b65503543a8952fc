//! The optional request rewrite: turns an incoming request (a chat completion, say) into
//! the protocol's embeddings request for the shadow calls.

use super::scan::{Scanner, StrSpan};
use super::{parse_pointer, Capture, ParseError, PointerError, Protocol, Role, Walker};

/// `[shadow].rewrite`: where to send shadow calls and which string of the incoming
/// request to embed.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Path of the embeddings endpoint on the baseline and canary, e.g. `/v1/embeddings`.
    pub path: String,
    /// RFC 6901 pointer to the input text in the incoming body, e.g. `/messages/0/content`.
    pub input_pointer: String,
}

impl Rewrite {
    /// Checks what config validation can check without a request.
    pub fn validate(&self) -> Result<(), RewriteError> {
        if !self.path.starts_with('/') {
            return Err(RewriteError::BadPath {
                path: self.path.clone(),
            });
        }
        parse_pointer(&self.input_pointer)?;
        Ok(())
    }
}

/// Why an incoming request could not be rewritten (the sample is then not mirrored).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewriteError {
    /// `rewrite.path` is not an absolute path.
    #[error("rewrite path {path:?} must start with '/'")]
    BadPath {
        /// The configured path.
        path: String,
    },
    /// `rewrite.input_pointer` is not a usable pointer.
    #[error("rewrite input_pointer: {0}")]
    Pointer(#[from] PointerError),
    /// The incoming body is not JSON.
    #[error("request body: {0}")]
    Body(#[from] ParseError),
    /// Nothing at `input_pointer`.
    #[error("request body has no value at {pointer}")]
    MissingInput {
        /// The pointer.
        pointer: String,
    },
    /// The value at `input_pointer` is not a string.
    #[error("request body value at {pointer} is not a string")]
    NotAString {
        /// The pointer.
        pointer: String,
    },
}

impl RewriteError {
    /// Short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RewriteError::BadPath { .. } => "bad_path",
            RewriteError::Pointer(_) => "bad_pointer",
            RewriteError::Body(_) => "malformed_body",
            RewriteError::MissingInput { .. } => "missing_input",
            RewriteError::NotAString { .. } => "not_a_string",
        }
    }
}

/// Builds the embeddings request for the shadow calls from an incoming request body: the
/// string at `input_pointer`, wrapped in the protocol's embeddings-request shape
/// (openai `{"input": s, "model": m}` with the incoming `"model"` kept if present,
/// tei `{"inputs": s}`, kserve_v2 one BYTES input, tfserving `{"instances": [s]}`,
/// generic `{"input": s}`).
pub fn rewrite_request(
    protocol: Protocol,
    rewrite: &Rewrite,
    body: &[u8],
) -> Result<Vec<u8>, RewriteError> {
    let mut captures = vec![Capture {
        pointer: rewrite.input_pointer.clone(),
        tokens: parse_pointer(&rewrite.input_pointer)?,
        role: Role::Span,
    }];
    if protocol == Protocol::OpenAi {
        captures.push(Capture {
            pointer: "/model".to_owned(),
            tokens: parse_pointer("/model")?,
            role: Role::Span,
        });
    }
    let found = Walker::run(body, &captures, 0, usize::MAX)?;
    let scanner = Scanner::new(body);
    let (start, end) = found.span(0).ok_or_else(|| RewriteError::MissingInput {
        pointer: rewrite.input_pointer.clone(),
    })?;
    if body[start] != b'"' {
        return Err(RewriteError::NotAString {
            pointer: rewrite.input_pointer.clone(),
        });
    }
    let mut text = Vec::with_capacity(end - start);
    scanner.unescape(
        StrSpan {
            start: start + 1,
            end: end - 1,
            escaped: body[start..end].contains(&b'\\'),
        },
        &mut text,
    )?;
    let text = String::from_utf8(text).map_err(|_| ParseError::Malformed {
        offset: start,
        reason: "invalid UTF-8",
    })?;
    let mut input = String::with_capacity(text.len() + 2);
    push_json_string(&mut input, &text);
    let mut out = String::with_capacity(input.len() + 96);
    match protocol {
        Protocol::OpenAi => {
            out.push_str("{\"input\":");
            out.push_str(&input);
            if let Some((ms, me)) = found.span(1) {
                if body[ms] == b'"' {
                    out.push_str(",\"model\":");
                    // A validated JSON string from the body is valid JSON text as it is.
                    out.push_str(&String::from_utf8_lossy(&body[ms..me]));
                }
            }
            out.push('}');
        }
        Protocol::Tei => {
            out.push_str("{\"inputs\":");
            out.push_str(&input);
            out.push('}');
        }
        Protocol::KServeV2 => {
            out.push_str(
                "{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[",
            );
            out.push_str(&input);
            out.push_str("]}]}");
        }
        Protocol::TfServing => {
            out.push_str("{\"instances\":[");
            out.push_str(&input);
            out.push_str("]}");
        }
        Protocol::Generic => {
            out.push_str("{\"input\":");
            out.push_str(&input);
            out.push('}');
        }
    }
    Ok(out.into_bytes())
}

/// Appends `s` as a JSON string literal (RFC 8259 escapes; everything else verbatim).
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
