//! gRPC model servers: which unary methods carry embeddings, how their bodies are framed,
//! and how their protobuf answers become a [`ModelOutput`] for the comparison, as
//! [`crate::protocol`] does for JSON bodies.
//!
//! Pure: bytes in, values out. The HTTP/2 transport lives elsewhere; it hands a whole
//! unary body (framed, as on the wire) to [`GrpcDecoder::decode`] and
//! [`GrpcDecoder::request_items`].
//!
//! | protocol | method | embedding |
//! |---|---|---|
//! | `oip_v2` | `/inference.GRPCInferenceService/ModelInfer` | the named output (else the first): `raw_output_contents` at its index (FP32, FP16, BF16, FP64 little-endian) or `contents.fp32_contents`/`fp64_contents`; `shape` `[N, ...]` is N items |
//! | `tei` | `/tei.v1.Embed/Embed` | `embeddings`, one item |
//! | `tfserving` | `/tensorflow.serving.PredictionService/Predict` | `outputs[name]` (else the only one): `tensor_content` or `float_val`/`half_val`/`double_val`; `tensor_shape` `[N, ...]` is N items |

mod decode;
pub mod frame;
pub mod pb;
#[cfg(test)]
mod tests;

pub use decode::{
    bf16_to_f32, decode_oip_v2, decode_tei, decode_tfserving, f16_to_f32, oip_v2_request_items,
    tei_request_items, tfserving_request_items, GrpcDecodeError,
};
pub use frame::{FrameError, DEFAULT_MAX_MESSAGE_BYTES};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};

use crate::protocol::{ModelOutput, DEFAULT_MAX_ITEMS};

/// gRPC's status trailer (or header, in a trailers-only answer). The names are constants
/// so that a lookup hashes them without parsing a string first (every call looks).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// gRPC's status message.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// A call's deadline.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The `grpc-status` code in `h`, if there is a valid one.
pub fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get(&GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// A gRPC model server's way of answering an embeddings call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum GrpcProtocol {
    /// KServe / Open Inference Protocol v2 (Triton, KServe, MLServer, ...): `ModelInfer`.
    #[serde(rename = "oip_v2")]
    OipV2,
    /// Hugging Face text-embeddings-inference: `tei.v1.Embed/Embed`.
    #[serde(rename = "tei")]
    Tei,
    /// TensorFlow Serving: `PredictionService/Predict`.
    #[serde(rename = "tfserving")]
    TfServing,
}

impl GrpcProtocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [GrpcProtocol; 3] = [
        GrpcProtocol::OipV2,
        GrpcProtocol::Tei,
        GrpcProtocol::TfServing,
    ];

    /// The name used in config, logs and the `protocol` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcProtocol::OipV2 => "oip_v2",
            GrpcProtocol::Tei => "tei",
            GrpcProtocol::TfServing => "tfserving",
        }
    }

    /// The HTTP/2 `:path` of the unary method whose calls this protocol reads
    /// (`/package.Service/Method`).
    pub fn method_path(self) -> &'static str {
        match self {
            GrpcProtocol::OipV2 => "/inference.GRPCInferenceService/ModelInfer",
            GrpcProtocol::Tei => "/tei.v1.Embed/Embed",
            GrpcProtocol::TfServing => "/tensorflow.serving.PredictionService/Predict",
        }
    }

    /// The protocol whose method has this `:path`; `None` for any other method (health
    /// checks, metadata, streaming calls), which are passed through without mirroring.
    pub fn from_method_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.method_path() == path)
    }
}

impl std::fmt::Display for GrpcProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads embeddings out of one protocol's unary answers, and item counts out of its
/// requests. Built once from config and shared by all shadow tasks.
#[derive(Debug, Clone)]
pub struct GrpcDecoder {
    protocol: GrpcProtocol,
    output: Option<String>,
    max_items: usize,
    max_message_bytes: usize,
}

impl GrpcDecoder {
    /// `output` names the output tensor holding the embedding (OIP v2, TF Serving; TEI
    /// has one); `None` takes the first (OIP) or the only one (TF Serving).
    pub fn new(protocol: GrpcProtocol, output: Option<&str>) -> Self {
        Self {
            protocol,
            output: output.map(str::to_owned),
            max_items: DEFAULT_MAX_ITEMS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// Refuse answers with more than `max` items ([`GrpcDecodeError::TooManyItems`]).
    pub fn with_max_items(mut self, max: usize) -> Self {
        self.max_items = max.max(1);
        self
    }

    /// Refuse messages over `max` bytes ([`FrameError::TooLarge`]).
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// The protocol this decoder reads.
    pub fn protocol(&self) -> GrpcProtocol {
        self.protocol
    }

    /// The configured output name, if any.
    pub fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }

    /// Decodes one unary answer body (framed as on the wire): every item, in input order.
    pub fn decode(&self, body: &Bytes) -> Result<ModelOutput, GrpcDecodeError> {
        let message = frame::unframe_bytes(body, self.max_message_bytes)?;
        match self.protocol {
            GrpcProtocol::OipV2 => decode_oip_v2(message, self.output(), self.max_items),
            GrpcProtocol::Tei => decode_tei(message),
            GrpcProtocol::TfServing => decode_tfserving(message, self.output(), self.max_items),
        }
    }

    /// The request's items: their count (to check the answers' item counts against) and,
    /// where the protocol carries text, each item's input (for the length slices and the
    /// shadow log). `None` when the body cannot be read.
    pub fn request(&self, body: &Bytes) -> Option<crate::protocol::RequestItems> {
        let count = self.request_items(body).ok()?;
        let message = frame::unframe_bytes(body, self.max_message_bytes).ok()?;
        Some(
            match decode::request_texts(self.protocol, message).filter(|t| t.len() == count) {
                Some(texts) => {
                    crate::protocol::RequestItems::from_texts(texts.iter().map(String::as_str))
                }
                None => crate::protocol::RequestItems::counted(count),
            },
        )
    }

    /// How many items one unary request body (framed) carries, to check the answers'
    /// item counts against.
    pub fn request_items(&self, body: &Bytes) -> Result<usize, GrpcDecodeError> {
        let message = frame::unframe_bytes(body, self.max_message_bytes)?;
        match self.protocol {
            GrpcProtocol::OipV2 => oip_v2_request_items(message),
            GrpcProtocol::Tei => tei_request_items(message),
            GrpcProtocol::TfServing => tfserving_request_items(message),
        }
    }
}
