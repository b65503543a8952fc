//! Protobuf answers to [`ModelOutput`], one function per wire protocol, with the checks
//! of the JSON path: every element finite, the shape agreeing with the element count, at
//! most `max_items` items. Also the request side: how many items a unary request carries.
//!
//! Each function takes one unframed message as [`Bytes`], so that prost slices its
//! `bytes` fields (raw tensor data) out of the body instead of copying them.

use bytes::Bytes;
use prost::Message;

use super::frame::FrameError;
use super::pb::{oip, tei, tfs};
use crate::protocol::ModelOutput;

/// Why a gRPC body gave no usable [`ModelOutput`] (or no item count).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrpcDecodeError {
    /// The body is not one uncompressed gRPC message.
    #[error("gRPC framing: {0}")]
    Frame(#[from] FrameError),
    /// The message is not valid protobuf for its type.
    #[error("invalid {message}: {reason}")]
    Protobuf {
        /// The message type expected.
        message: &'static str,
        /// prost's description.
        reason: String,
    },
    /// The answer has no output tensors.
    #[error("the answer has no outputs")]
    NoOutputs,
    /// The configured output name is not among the answer's outputs.
    #[error("no output named {name:?} (outputs: {present:?})")]
    MissingOutput {
        /// The configured name.
        name: String,
        /// The names the answer has.
        present: Vec<String>,
    },
    /// TF Serving: several outputs and no output name configured.
    #[error("{} outputs and no output name configured (outputs: {present:?})", present.len())]
    AmbiguousOutput {
        /// The names the answer has.
        present: Vec<String>,
    },
    /// The output's data type is not a float type.
    #[error("output {output:?} has data type {datatype}; embeddings are read from FP32, FP16, BF16 or FP64")]
    Datatype {
        /// Output name.
        output: String,
        /// Its data type as the protocol names it.
        datatype: String,
    },
    /// OIP v2: `raw_output_contents` is used but has no entry for the output.
    #[error("output {output:?} is output {index} but raw_output_contents has {count} entries")]
    MissingRaw {
        /// Output name.
        output: String,
        /// Its index among the outputs.
        index: usize,
        /// Entries in `raw_output_contents`.
        count: usize,
    },
    /// Raw bytes that are not a whole number of elements.
    #[error("output {output:?}: {len} raw bytes are not a whole number of {width}-byte elements")]
    RawLength {
        /// Output name.
        output: String,
        /// Byte count.
        len: usize,
        /// Bytes per element of the data type.
        width: usize,
    },
    /// The shape does not agree with the element count (or has a negative dimension).
    #[error("output {output:?}: shape {shape:?} does not match {len} elements")]
    Shape {
        /// Output name.
        output: String,
        /// The declared shape.
        shape: Vec<i64>,
        /// Elements found.
        len: usize,
    },
    /// The output holds no elements.
    #[error("output {output:?} holds no elements")]
    Empty {
        /// Output name.
        output: String,
    },
    /// An element is NaN or infinite (or an FP64 value beyond f32's range).
    #[error("embedding element {index} is not a finite f32")]
    NonFinite {
        /// Index in the flattened output.
        index: usize,
    },
    /// More items than the configured cap.
    #[error("more than {max} items in one answer")]
    TooManyItems {
        /// The cap.
        max: usize,
    },
    /// A request without input tensors.
    #[error("the request has no inputs")]
    NoInputs,
    /// A request input whose shape has a negative dimension.
    #[error("input {input:?}: shape {shape:?} has a negative dimension")]
    RequestShape {
        /// Input name.
        input: String,
        /// The declared shape.
        shape: Vec<i64>,
    },
}

impl GrpcDecodeError {
    /// Short stable name for logs and metrics (framing errors give their own kind).
    pub fn kind(&self) -> &'static str {
        match self {
            GrpcDecodeError::Frame(e) => e.kind(),
            GrpcDecodeError::Protobuf { .. } => "protobuf",
            GrpcDecodeError::NoOutputs => "no_outputs",
            GrpcDecodeError::MissingOutput { .. } => "missing_output",
            GrpcDecodeError::AmbiguousOutput { .. } => "ambiguous_output",
            GrpcDecodeError::Datatype { .. } => "datatype",
            GrpcDecodeError::MissingRaw { .. } => "missing_raw",
            GrpcDecodeError::RawLength { .. } => "raw_length",
            GrpcDecodeError::Shape { .. } => "shape",
            GrpcDecodeError::Empty { .. } => "empty",
            GrpcDecodeError::NonFinite { .. } => "non_finite",
            GrpcDecodeError::TooManyItems { .. } => "too_many_items",
            GrpcDecodeError::NoInputs => "no_inputs",
            GrpcDecodeError::RequestShape { .. } => "request_shape",
        }
    }
}

fn decode_message<M: Message + Default>(
    message: Bytes,
    name: &'static str,
) -> Result<M, GrpcDecodeError> {
    M::decode(message).map_err(|e| GrpcDecodeError::Protobuf {
        message: name,
        reason: e.to_string(),
    })
}

/// An IEEE 754 half (binary16) to f32: exact, subnormals included; infinities and NaN
/// stay infinite and NaN (and are then refused as non-finite).
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// A bfloat16 (the top 16 bits of an f32) to f32: exact.
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// The float element types an embedding is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    F32,
    F16,
    Bf16,
    F64,
}

impl Element {
    fn width(self) -> usize {
        match self {
            Element::F16 | Element::Bf16 => 2,
            Element::F32 => 4,
            Element::F64 => 8,
        }
    }

    /// OIP v2 `datatype` names (upper case, as the protocol spells them).
    fn from_oip(datatype: &str) -> Option<Self> {
        match datatype {
            "FP32" => Some(Element::F32),
            "FP16" => Some(Element::F16),
            "BF16" => Some(Element::Bf16),
            "FP64" => Some(Element::F64),
            _ => None,
        }
    }

    fn from_tf(dtype: i32) -> Option<Self> {
        match tfs::DataType::try_from(dtype).ok()? {
            tfs::DataType::DtFloat => Some(Element::F32),
            tfs::DataType::DtHalf => Some(Element::F16),
            tfs::DataType::DtBfloat16 => Some(Element::Bf16),
            tfs::DataType::DtDouble => Some(Element::F64),
            _ => None,
        }
    }

    /// Little-endian elements to f32; `bytes.len()` is a multiple of the width.
    fn convert_le(self, bytes: &[u8]) -> Vec<f32> {
        let mut out = Vec::with_capacity(bytes.len() / self.width());
        match self {
            Element::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            Element::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
            ),
            Element::Bf16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
            ),
            Element::F64 => out.extend(bytes.chunks_exact(8).map(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            })),
        }
        out
    }
}

/// TF `DataType` numbers as TF names them, for errors.
fn tf_dtype_name(dtype: i32) -> String {
    let name = match tfs::DataType::try_from(dtype) {
        Ok(tfs::DataType::DtInvalid) => "DT_INVALID",
        Ok(tfs::DataType::DtInt32) => "DT_INT32",
        Ok(tfs::DataType::DtString) => "DT_STRING",
        Ok(tfs::DataType::DtInt64) => "DT_INT64",
        _ => return format!("DataType {dtype}"),
    };
    name.to_owned()
}

/// Checks `shape` against `len` elements and gives the floats per item: shape `[N, ...]`
/// of rank 2 or more is N items, rank 0 or 1 is one item (as the JSON `kserve_v2` path).
fn item_dim(
    output: &str,
    shape: &[i64],
    len: usize,
    max_items: usize,
) -> Result<usize, GrpcDecodeError> {
    if len == 0 {
        return Err(GrpcDecodeError::Empty {
            output: output.to_owned(),
        });
    }
    let product = shape.iter().try_fold(1u64, |acc, &d| {
        u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    });
    if product != Some(len as u64) {
        return Err(GrpcDecodeError::Shape {
            output: output.to_owned(),
            shape: shape.to_vec(),
            len,
        });
    }
    // The product is len > 0, so every dimension, shape[0] included, is at least 1.
    let rows = if shape.len() >= 2 {
        shape[0] as usize
    } else {
        1
    };
    if rows > max_items {
        return Err(GrpcDecodeError::TooManyItems { max: max_items });
    }
    Ok(len / rows)
}

/// Refuses NaN and infinities, naming the first.
fn check_finite(data: &[f32]) -> Result<(), GrpcDecodeError> {
    // A branch-free pass (vectorised) first; the position only when something is wrong.
    if data.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return Ok(());
    }
    let index = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
    Err(GrpcDecodeError::NonFinite { index })
}

/// Raw little-endian tensor bytes to items: length, shape and item cap checked before
/// anything is converted.
fn from_raw(
    output: &str,
    element: Element,
    raw: &[u8],
    shape: &[i64],
    max_items: usize,
) -> Result<ModelOutput, GrpcDecodeError> {
    let width = element.width();
    if raw.len() % width != 0 {
        return Err(GrpcDecodeError::RawLength {
            output: output.to_owned(),
            len: raw.len(),
            width,
        });
    }
    let dim = item_dim(output, shape, raw.len() / width, max_items)?;
    let data = element.convert_le(raw);
    check_finite(&data)?;
    Ok(ModelOutput {
        data,
        dim,
        predictions: Vec::new(),
    })
}

/// Typed values (already f32) to items.
fn from_values(
    output: &str,
    data: Vec<f32>,
    shape: &[i64],
    max_items: usize,
) -> Result<ModelOutput, GrpcDecodeError> {
    let dim = item_dim(output, shape, data.len(), max_items)?;
    check_finite(&data)?;
    Ok(ModelOutput {
        data,
        dim,
        predictions: Vec::new(),
    })
}

/// An OIP v2 `ModelInferResponse`: the output named `output` (`None`: the first), read
/// from `raw_output_contents` at the output's index when the answer uses raw contents,
/// else from `contents` (`fp32_contents`, `fp64_contents`; FP16 and BF16 have no typed
/// field). `shape` `[N, d]` is N items, `[d]` or `[1, d]` one.
pub fn decode_oip_v2(
    message: Bytes,
    output: Option<&str>,
    max_items: usize,
) -> Result<ModelOutput, GrpcDecodeError> {
    let mut response: oip::ModelInferResponse = decode_message(message, "ModelInferResponse")?;
    let index = match output {
        None if response.outputs.is_empty() => return Err(GrpcDecodeError::NoOutputs),
        None => 0,
        Some(name) => response
            .outputs
            .iter()
            .position(|o| o.name == name)
            .ok_or_else(|| GrpcDecodeError::MissingOutput {
                name: name.to_owned(),
                present: response.outputs.iter().map(|o| o.name.clone()).collect(),
            })?,
    };
    let tensor = &mut response.outputs[index];
    let element = Element::from_oip(&tensor.datatype).ok_or_else(|| GrpcDecodeError::Datatype {
        output: tensor.name.clone(),
        datatype: tensor.datatype.clone(),
    })?;
    if !response.raw_output_contents.is_empty() {
        let raw =
            response
                .raw_output_contents
                .get(index)
                .ok_or_else(|| GrpcDecodeError::MissingRaw {
                    output: tensor.name.clone(),
                    index,
                    count: response.raw_output_contents.len(),
                })?;
        return from_raw(&tensor.name, element, raw, &tensor.shape, max_items);
    }
    let contents = tensor.contents.take().unwrap_or_default();
    let data = match element {
        Element::F32 => contents.fp32_contents,
        Element::F64 => contents.fp64_contents.iter().map(|&v| v as f32).collect(),
        Element::F16 | Element::Bf16 => Vec::new(),
    };
    from_values(&tensor.name, data, &tensor.shape, max_items)
}

/// A TEI `EmbedResponse`: `embeddings` is the one input's embedding.
pub fn decode_tei(message: Bytes) -> Result<ModelOutput, GrpcDecodeError> {
    let response: tei::EmbedResponse = decode_message(message, "EmbedResponse")?;
    let len = response.embeddings.len();
    from_values("embeddings", response.embeddings, &[len as i64], 1)
}

/// A TF Serving `PredictResponse`: `outputs[output]` (`None`: the only output), read
/// from `tensor_content` when set, else from the dtype's typed field (`float_val`,
/// `half_val`, `double_val`). `tensor_shape` `[N, d]` is N items. TF's shorthand of one
/// typed value repeated to fill the shape is refused as a shape mismatch: no embedding
/// is a constant.
pub fn decode_tfserving(
    message: Bytes,
    output: Option<&str>,
    max_items: usize,
) -> Result<ModelOutput, GrpcDecodeError> {
    let mut response: tfs::PredictResponse = decode_message(message, "PredictResponse")?;
    let names = |outputs: &std::collections::BTreeMap<String, tfs::TensorProto>| {
        outputs.keys().cloned().collect::<Vec<_>>()
    };
    let (name, tensor) = match output {
        Some(name) => match response.outputs.remove_entry(name) {
            Some(entry) => entry,
            None => {
                return Err(GrpcDecodeError::MissingOutput {
                    name: name.to_owned(),
                    present: names(&response.outputs),
                })
            }
        },
        None if response.outputs.len() > 1 => {
            return Err(GrpcDecodeError::AmbiguousOutput {
                present: names(&response.outputs),
            })
        }
        None => response
            .outputs
            .pop_first()
            .ok_or(GrpcDecodeError::NoOutputs)?,
    };
    let element = Element::from_tf(tensor.dtype).ok_or_else(|| GrpcDecodeError::Datatype {
        output: name.clone(),
        datatype: tf_dtype_name(tensor.dtype),
    })?;
    let shape = tf_shape(&tensor);
    if !tensor.tensor_content.is_empty() {
        return from_raw(&name, element, &tensor.tensor_content, &shape, max_items);
    }
    // proto3 int32 carries the 16 bits in its low half; the cast keeps exactly those.
    let data = match element {
        Element::F32 => tensor.float_val,
        Element::F64 => tensor.double_val.iter().map(|&v| v as f32).collect(),
        Element::F16 => tensor
            .half_val
            .iter()
            .map(|&v| f16_to_f32(v as u16))
            .collect(),
        Element::Bf16 => tensor
            .half_val
            .iter()
            .map(|&v| bf16_to_f32(v as u16))
            .collect(),
    };
    from_values(&name, data, &shape, max_items)
}

fn tf_shape(tensor: &tfs::TensorProto) -> Vec<i64> {
    tensor
        .tensor_shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| d.size).collect())
        .unwrap_or_default()
}

/// Items of a request input with this shape: `shape[0]` at rank 2 or more, and at rank 1
/// for string tensors (one text per element, as the JSON `kserve_v2` path counts a BYTES
/// `data` array); else one.
fn request_count(input: &str, shape: &[i64], strings: bool) -> Result<usize, GrpcDecodeError> {
    let bad = || GrpcDecodeError::RequestShape {
        input: input.to_owned(),
        shape: shape.to_vec(),
    };
    match shape {
        [] => Ok(1),
        [_] if !strings => Ok(1),
        [first, ..] => usize::try_from(*first).map_err(|_| bad()),
    }
}

/// How many items an OIP v2 `ModelInferRequest` carries: from `inputs[0]`.
pub fn oip_v2_request_items(message: Bytes) -> Result<usize, GrpcDecodeError> {
    let request: oip::ModelInferRequest = decode_message(message, "ModelInferRequest")?;
    let input = request.inputs.first().ok_or(GrpcDecodeError::NoInputs)?;
    request_count(&input.name, &input.shape, input.datatype == "BYTES")
}

/// How many items a TEI `EmbedRequest` carries: always one (checked to be one).
pub fn tei_request_items(message: Bytes) -> Result<usize, GrpcDecodeError> {
    let _: tei::EmbedRequest = decode_message(message, "EmbedRequest")?;
    Ok(1)
}

/// How many items a TF Serving `PredictRequest` carries: from its first input in name
/// order (a batched signature's inputs share the batch dimension).
pub fn tfserving_request_items(message: Bytes) -> Result<usize, GrpcDecodeError> {
    let request: tfs::PredictRequest = decode_message(message, "PredictRequest")?;
    let (name, tensor) = request
        .inputs
        .first_key_value()
        .ok_or(GrpcDecodeError::NoInputs)?;
    let strings = tensor.dtype == tfs::DataType::DtString as i32;
    request_count(name, &tf_shape(tensor), strings)
}

/// The text of each input of a unary request, when the protocol carries text: OIP v2's
/// first input as a `BYTES` tensor (`contents.bytes_contents`, each element UTF-8), TEI's
/// `inputs`. `None` for other requests (tensors of numbers, TF Serving) or text that is
/// not UTF-8; the pairs are then compared without per-item inputs.
pub fn request_texts(protocol: super::GrpcProtocol, message: Bytes) -> Option<Vec<String>> {
    match protocol {
        super::GrpcProtocol::OipV2 => {
            let request: oip::ModelInferRequest =
                decode_message(message, "ModelInferRequest").ok()?;
            let input = request.inputs.first()?;
            if input.datatype != "BYTES" {
                return None;
            }
            input
                .contents
                .as_ref()?
                .bytes_contents
                .iter()
                .map(|b| String::from_utf8(b.to_vec()).ok())
                .collect()
        }
        super::GrpcProtocol::Tei => {
            let request: tei::EmbedRequest = decode_message(message, "EmbedRequest").ok()?;
            Some(vec![request.inputs])
        }
        super::GrpcProtocol::TfServing => None,
    }
}
