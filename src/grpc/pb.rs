//! The protobuf messages shadowgate reads, declared by hand with `prost` derives: only the
//! messages and fields it uses, with the field numbers of the official `.proto` files
//! (vendored under `proto/`, which names their sources). Fields left out here are skipped
//! when a message is decoded, so a full message from a real server decodes fine.
//!
//! `bytes` fields are [`Bytes`]: decoding from a `Bytes` buffer then slices the buffer
//! instead of copying (an OIP `raw_output_contents` or a TF `tensor_content` is most of
//! the message).

/// KServe / Open Inference Protocol v2, package `inference`
/// (`proto/oip/open_inference_grpc.proto`).
pub mod oip {
    use bytes::Bytes;

    /// `inference.InferTensorContents`: typed tensor data (no 16-bit float field: FP16
    /// and BF16 travel only as raw contents).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferTensorContents {
        /// BYTES tensors.
        #[prost(bytes = "bytes", repeated, tag = "8")]
        pub bytes_contents: Vec<Bytes>,
        /// FP32 tensors.
        #[prost(float, repeated, tag = "6")]
        pub fp32_contents: Vec<f32>,
        /// FP64 tensors.
        #[prost(double, repeated, tag = "7")]
        pub fp64_contents: Vec<f64>,
    }

    /// `inference.ModelInferRequest.InferInputTensor` (parameters left out).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferInputTensor {
        /// Tensor name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Data type: "BYTES", "FP32", ...
        #[prost(string, tag = "2")]
        pub datatype: String,
        /// Shape.
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        /// Typed contents (absent when the request uses `raw_input_contents`).
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }

    /// `inference.ModelInferRequest` (parameters and requested outputs left out).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferRequest {
        /// Model name.
        #[prost(string, tag = "1")]
        pub model_name: String,
        /// Model version.
        #[prost(string, tag = "2")]
        pub model_version: String,
        /// Request id.
        #[prost(string, tag = "3")]
        pub id: String,
        /// Input tensors.
        #[prost(message, repeated, tag = "5")]
        pub inputs: Vec<InferInputTensor>,
        /// Raw input data, one entry per input, in `inputs` order.
        #[prost(bytes = "bytes", repeated, tag = "7")]
        pub raw_input_contents: Vec<Bytes>,
    }

    /// `inference.ModelInferResponse.InferOutputTensor` (parameters left out).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferOutputTensor {
        /// Tensor name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Data type: "FP32", "FP16", "BF16", ...
        #[prost(string, tag = "2")]
        pub datatype: String,
        /// Shape.
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        /// Typed contents (absent when the response uses `raw_output_contents`).
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }

    /// `inference.ModelInferResponse` (parameters left out).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferResponse {
        /// Model name.
        #[prost(string, tag = "1")]
        pub model_name: String,
        /// Model version.
        #[prost(string, tag = "2")]
        pub model_version: String,
        /// The request's id.
        #[prost(string, tag = "3")]
        pub id: String,
        /// Output tensors.
        #[prost(message, repeated, tag = "5")]
        pub outputs: Vec<InferOutputTensor>,
        /// Raw output data, one entry per output, in `outputs` order: little-endian,
        /// row-major, no padding.
        #[prost(bytes = "bytes", repeated, tag = "6")]
        pub raw_output_contents: Vec<Bytes>,
    }
}

/// Hugging Face text-embeddings-inference, package `tei.v1` (`proto/tei/tei.proto`).
pub mod tei {
    /// `tei.v1.EmbedRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EmbedRequest {
        /// The text to embed (one input per request).
        #[prost(string, tag = "1")]
        pub inputs: String,
        /// Truncate inputs longer than the model's maximum.
        #[prost(bool, tag = "2")]
        pub truncate: bool,
        /// Normalise the embedding (server default when absent).
        #[prost(bool, optional, tag = "3")]
        pub normalize: Option<bool>,
        /// `tei.v1.TruncationDirection`: 0 right, 1 left.
        #[prost(int32, tag = "4")]
        pub truncation_direction: i32,
        /// Prompt name.
        #[prost(string, optional, tag = "5")]
        pub prompt_name: Option<String>,
        /// Matryoshka dimensions.
        #[prost(uint32, optional, tag = "6")]
        pub dimensions: Option<u32>,
    }

    /// `tei.v1.Metadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        /// Characters computed.
        #[prost(uint32, tag = "1")]
        pub compute_chars: u32,
        /// Tokens computed.
        #[prost(uint32, tag = "2")]
        pub compute_tokens: u32,
        /// Total time.
        #[prost(uint64, tag = "3")]
        pub total_time_ns: u64,
        /// Tokenization time.
        #[prost(uint64, tag = "4")]
        pub tokenization_time_ns: u64,
        /// Queue time.
        #[prost(uint64, tag = "5")]
        pub queue_time_ns: u64,
        /// Inference time.
        #[prost(uint64, tag = "6")]
        pub inference_time_ns: u64,
    }

    /// `tei.v1.EmbedResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EmbedResponse {
        /// The embedding of the one input.
        #[prost(float, repeated, tag = "1")]
        pub embeddings: Vec<f32>,
        /// Timings.
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<Metadata>,
    }
}

/// TensorFlow Serving, packages `tensorflow.serving` and `tensorflow`
/// (`proto/tensorflow_serving/apis/predict.proto`, `proto/tensorflow/core/framework/`).
pub mod tfs {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    /// `tensorflow.DataType`, the values shadowgate reads (others decode as unknown
    /// numbers and are refused by name).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum DataType {
        /// Not set.
        DtInvalid = 0,
        /// f32.
        DtFloat = 1,
        /// f64.
        DtDouble = 2,
        /// i32.
        DtInt32 = 3,
        /// Strings.
        DtString = 7,
        /// i64.
        DtInt64 = 9,
        /// bfloat16.
        DtBfloat16 = 14,
        /// IEEE half.
        DtHalf = 19,
    }

    /// `tensorflow.TensorShapeProto.Dim`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        /// Size; -1 for unknown.
        #[prost(int64, tag = "1")]
        pub size: i64,
        /// Optional name.
        #[prost(string, tag = "2")]
        pub name: String,
    }

    /// `tensorflow.TensorShapeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        /// Dimensions, outermost first.
        #[prost(message, repeated, tag = "2")]
        pub dim: Vec<Dim>,
        /// The rank is unknown.
        #[prost(bool, tag = "3")]
        pub unknown_rank: bool,
    }

    /// `tensorflow.TensorProto` (the fields of the float types and strings).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// `tensorflow.DataType`.
        #[prost(enumeration = "DataType", tag = "1")]
        pub dtype: i32,
        /// Shape.
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<TensorShapeProto>,
        /// Little-endian element bytes, row-major (any dtype).
        #[prost(bytes = "bytes", tag = "4")]
        pub tensor_content: Bytes,
        /// DT_FLOAT values.
        #[prost(float, repeated, tag = "5")]
        pub float_val: Vec<f32>,
        /// DT_DOUBLE values.
        #[prost(double, repeated, tag = "6")]
        pub double_val: Vec<f64>,
        /// DT_STRING values.
        #[prost(bytes = "bytes", repeated, tag = "8")]
        pub string_val: Vec<Bytes>,
        /// DT_HALF and DT_BFLOAT16 values: the 16 bits in the low half of each int32.
        #[prost(int32, repeated, tag = "13")]
        pub half_val: Vec<i32>,
    }

    /// `tensorflow.serving.ModelSpec` (the `version` Int64Value of the oneof left out).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelSpec {
        /// Servable name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Signature name.
        #[prost(string, tag = "3")]
        pub signature_name: String,
        /// Version label.
        #[prost(string, optional, tag = "4")]
        pub version_label: Option<String>,
    }

    /// `tensorflow.serving.PredictRequest` (streamed and request options left out).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PredictRequest {
        /// Which model.
        #[prost(message, optional, tag = "1")]
        pub model_spec: Option<ModelSpec>,
        /// Input tensors by alias.
        #[prost(btree_map = "string, message", tag = "2")]
        pub inputs: BTreeMap<String, TensorProto>,
        /// Outputs to return.
        #[prost(string, repeated, tag = "3")]
        pub output_filter: Vec<String>,
    }

    /// `tensorflow.serving.PredictResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PredictResponse {
        /// Output tensors by alias.
        #[prost(btree_map = "string, message", tag = "1")]
        pub outputs: BTreeMap<String, TensorProto>,
        /// The model that answered.
        #[prost(message, optional, tag = "2")]
        pub model_spec: Option<ModelSpec>,
    }
}
