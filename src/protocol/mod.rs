//! TEMPORARY stand-in until the protocol parsers land (same API).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[serde(rename = "openai")]
    OpenAi,
    Tei,
    #[serde(rename = "kserve_v2")]
    KServeV2,
    #[serde(rename = "tfserving")]
    TfServing,
    Generic,
}
impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Tei => "tei",
            Protocol::KServeV2 => "kserve_v2",
            Protocol::TfServing => "tfserving",
            Protocol::Generic => "generic",
        }
    }
}
pub struct ModelOutput {
    pub embedding: Vec<f32>,
    pub prediction: Option<String>,
}
#[derive(Debug, thiserror::Error)]
#[error("bad pointer")]
pub struct PointerError;
#[derive(Debug, thiserror::Error)]
#[error("malformed")]
pub struct ParseError;
impl ParseError {
    pub fn kind(&self) -> &'static str {
        "malformed"
    }
}
#[derive(Debug, thiserror::Error)]
#[error("rewrite failed")]
pub struct RewriteError;
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    pub path: String,
    pub input_pointer: String,
}
pub struct Extractor {
    pointer: String,
}
impl Extractor {
    pub fn new(protocol: Protocol, e: &str, _p: &str) -> Result<Self, PointerError> {
        Ok(Self {
            pointer: if e.is_empty() {
                match protocol {
                    Protocol::OpenAi => "/data/0/embedding".into(),
                    _ => "/0".into(),
                }
            } else {
                e.into()
            },
        })
    }
    pub fn parse(&self, body: &[u8]) -> Result<ModelOutput, ParseError> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ParseError)?;
        let a = v
            .pointer(&self.pointer)
            .and_then(|a| a.as_array())
            .ok_or(ParseError)?;
        let e: Option<Vec<f32>> = a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect();
        Ok(ModelOutput {
            embedding: e.ok_or(ParseError)?,
            prediction: None,
        })
    }
}
pub fn rewrite_request(_p: Protocol, _r: &Rewrite, body: &[u8]) -> Result<Vec<u8>, RewriteError> {
    Ok(body.to_vec())
}
