use std::collections::BTreeMap;

use bytes::Bytes;

use super::frame::{encode, frame};
use super::pb::{oip, tei, tfs};
use super::*;

/// Output tensor of an OIP answer.
fn oip_output(
    name: &str,
    datatype: &str,
    shape: &[i64],
    fp32: Option<Vec<f32>>,
) -> oip::InferOutputTensor {
    oip::InferOutputTensor {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape: shape.to_vec(),
        contents: fp32.map(|v| oip::InferTensorContents {
            fp32_contents: v,
            ..Default::default()
        }),
    }
}

fn oip_response(outputs: Vec<oip::InferOutputTensor>, raw: Vec<Vec<u8>>) -> Bytes {
    encode(&oip::ModelInferResponse {
        model_name: "m".into(),
        outputs,
        raw_output_contents: raw.into_iter().map(Bytes::from).collect(),
        ..Default::default()
    })
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_u16(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn oip_decoder(output: Option<&str>) -> GrpcDecoder {
    GrpcDecoder::new(GrpcProtocol::OipV2, output)
}

fn err_kind(r: Result<crate::protocol::ModelOutput, GrpcDecodeError>) -> &'static str {
    r.expect_err("should fail").kind()
}

#[test]
fn protocol_names_and_paths() {
    let rows: Vec<_> = GrpcProtocol::ALL
        .iter()
        .map(|p| (p.as_str(), p.method_path()))
        .collect();
    assert_eq!(
        rows,
        [
            ("oip_v2", "/inference.GRPCInferenceService/ModelInfer"),
            ("tei", "/tei.v1.Embed/Embed"),
            ("tfserving", "/tensorflow.serving.PredictionService/Predict"),
        ]
    );
    for p in GrpcProtocol::ALL {
        assert_eq!(GrpcProtocol::from_method_path(p.method_path()), Some(p));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{p}\""));
        assert_eq!(serde_json::from_str::<GrpcProtocol>(&json).unwrap(), p);
    }
    assert_eq!(
        GrpcProtocol::from_method_path("/inference.GRPCInferenceService/ServerLive"),
        None
    );
    assert_eq!(
        GrpcProtocol::from_method_path("/tei.v1.Embed/EmbedStream"),
        None
    );
}

#[test]
fn oip_fp32_contents_round_trip() {
    let data = vec![0.25f32, -1.5, 3.0e-8, 7.0, 0.0, -0.125];
    let body = oip_response(
        vec![oip_output("embedding", "FP32", &[2, 3], Some(data.clone()))],
        vec![],
    );
    let out = oip_decoder(None).decode(&body).unwrap();
    assert_eq!(out.data, data);
    assert_eq!(out.dim, 3);
    assert_eq!(out.items(), 2);
    assert_eq!(out.embedding(1), &[7.0, 0.0, -0.125]);
    assert!(out.predictions.is_empty());
}

#[test]
fn oip_raw_fp32_round_trip_bit_exact() {
    // Values whose bits must survive: smallest subnormal, largest finite, -0.0.
    let data = vec![
        f32::from_bits(1),
        f32::MAX,
        -0.0,
        1.0 / 3.0,
        -123_456.79,
        f32::MIN_POSITIVE,
    ];
    let body = oip_response(
        vec![oip_output("out", "FP32", &[3, 2], None)],
        vec![le_f32(&data)],
    );
    let out = oip_decoder(Some("out")).decode(&body).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&out.data), bits(&data));
    assert_eq!((out.items(), out.dim), (3, 2));
}

#[test]
fn oip_output_chosen_by_name_and_raw_by_index() {
    let body = oip_response(
        vec![
            oip_output("logits", "FP32", &[1, 2], None),
            oip_output("embedding", "FP16", &[1, 3], None),
        ],
        vec![le_f32(&[9.0, 9.0]), le_u16(&[0x3C00, 0xC000, 0x3800])],
    );
    let out = oip_decoder(Some("embedding")).decode(&body).unwrap();
    assert_eq!(out.data, [1.0, -2.0, 0.5]);
    // None takes the first output.
    let out = oip_decoder(None).decode(&body).unwrap();
    assert_eq!(out.data, [9.0, 9.0]);
    let err = oip_decoder(Some("pooled")).decode(&body).unwrap_err();
    assert_eq!(
        err,
        GrpcDecodeError::MissingOutput {
            name: "pooled".into(),
            present: vec!["logits".into(), "embedding".into()]
        }
    );
    assert_eq!(
        err.to_string(),
        r#"no output named "pooled" (outputs: ["logits", "embedding"])"#
    );
}

#[test]
fn oip_raw_fp16_bf16_fp64() {
    // FP16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal), -0.
    let f16 = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x8000];
    let body = oip_response(
        vec![oip_output("e", "FP16", &[6], None)],
        vec![le_u16(&f16)],
    );
    let out = oip_decoder(None).decode(&body).unwrap();
    assert_eq!(
        out.data,
        [1.0, -2.0, 65504.0, 5.960_464_5e-8, 6.103_515_6e-5, -0.0]
    );
    assert!(out.data[5].is_sign_negative());
    assert_eq!((out.items(), out.dim), (1, 6));

    // BF16: 1, -3, max finite, a subnormal, 0.15625.
    let bf16 = [0x3F80, 0xC040, 0x7F7F, 0x0001, 0x3E20];
    let body = oip_response(
        vec![oip_output("e", "BF16", &[1, 5], None)],
        vec![le_u16(&bf16)],
    );
    let out = oip_decoder(None).decode(&body).unwrap();
    assert_eq!(
        out.data,
        [
            1.0,
            -3.0,
            3.389_531_4e38,
            f32::from_bits(0x0001_0000),
            0.15625
        ]
    );

    let f64s: Vec<u8> = [0.1f64, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let body = oip_response(vec![oip_output("e", "FP64", &[1, 2], None)], vec![f64s]);
    let out = oip_decoder(None).decode(&body).unwrap();
    assert_eq!(out.data, [0.1f64 as f32, -2.0]);
}

#[test]
fn oip_non_finite_refused() {
    for (datatype, raw, index) in [
        ("FP16", le_u16(&[0x3C00, 0x7C00]), 1), // +inf
        ("FP16", le_u16(&[0xFC00, 0x3C00]), 0), // -inf
        ("FP16", le_u16(&[0x3C00, 0x7E00]), 1), // NaN
        ("BF16", le_u16(&[0x7F80, 0x3F80]), 0), // +inf
        ("BF16", le_u16(&[0x3F80, 0x7FC0]), 1), // NaN
        ("FP32", le_f32(&[1.0, f32::NAN]), 1),
        ("FP32", le_f32(&[f32::NEG_INFINITY, 1.0]), 0),
        // Finite in f64, beyond f32.
        (
            "FP64",
            [1.0f64, 1e300]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            1,
        ),
    ] {
        let body = oip_response(vec![oip_output("e", datatype, &[2], None)], vec![raw]);
        assert_eq!(
            oip_decoder(None).decode(&body),
            Err(GrpcDecodeError::NonFinite { index }),
            "{datatype}"
        );
    }
    let body = oip_response(
        vec![oip_output(
            "e",
            "FP32",
            &[3],
            Some(vec![0.0, 1.0, f32::INFINITY]),
        )],
        vec![],
    );
    assert_eq!(
        oip_decoder(None).decode(&body),
        Err(GrpcDecodeError::NonFinite { index: 2 })
    );
}

#[test]
fn oip_shapes() {
    let one = |shape: &[i64], n: usize| {
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let body = oip_response(vec![oip_output("e", "FP32", shape, Some(data))], vec![]);
        oip_decoder(None).decode(&body).map(|o| (o.items(), o.dim))
    };
    assert_eq!(one(&[4], 4), Ok((1, 4)));
    assert_eq!(one(&[1, 4], 4), Ok((1, 4)));
    assert_eq!(one(&[4, 1], 4), Ok((4, 1)));
    assert_eq!(one(&[2, 2, 3], 12), Ok((2, 6)));
    assert_eq!(one(&[1, 1, 1], 1), Ok((1, 1)));
    assert_eq!(
        one(&[2, 3], 4),
        Err(GrpcDecodeError::Shape {
            output: "e".into(),
            shape: vec![2, 3],
            len: 4
        })
    );
    // No shape at all is rank 0: one element.
    assert_eq!(one(&[], 1), Ok((1, 1)));
    assert_eq!(one(&[], 3).map_err(|e| e.kind()), Err("shape"));
    assert_eq!(one(&[-1, 4], 4).map_err(|e| e.kind()), Err("shape"));
    assert_eq!(one(&[-2, -2], 4).map_err(|e| e.kind()), Err("shape"));
    // A product that overflows u64 does not wrap onto the length.
    assert_eq!(
        one(&[1 << 62, 1 << 62, 4], 4).map_err(|e| e.kind()),
        Err("shape")
    );
    assert_eq!(
        one(&[0, 768], 0),
        Err(GrpcDecodeError::Empty { output: "e".into() })
    );
}

#[test]
fn oip_max_items() {
    let raw = le_f32(&[0.5; 12]);
    let body = oip_response(vec![oip_output("e", "FP32", &[3, 4], None)], vec![raw]);
    assert_eq!(
        oip_decoder(None)
            .with_max_items(3)
            .decode(&body)
            .map(|o| o.items()),
        Ok(3)
    );
    assert_eq!(
        oip_decoder(None).with_max_items(2).decode(&body),
        Err(GrpcDecodeError::TooManyItems { max: 2 })
    );
}

#[test]
fn oip_errors() {
    let d = oip_decoder(None);
    assert_eq!(
        d.decode(&oip_response(vec![], vec![])),
        Err(GrpcDecodeError::NoOutputs)
    );
    let body = oip_response(vec![oip_output("ids", "INT64", &[2], None)], vec![]);
    assert_eq!(
        d.decode(&body),
        Err(GrpcDecodeError::Datatype {
            output: "ids".into(),
            datatype: "INT64".into()
        })
    );
    // Lower case is not the protocol's spelling.
    let body = oip_response(vec![oip_output("e", "fp32", &[1], Some(vec![1.0]))], vec![]);
    assert_eq!(err_kind(d.decode(&body)), "datatype");
    // Raw contents given for the first output only; the second is asked for.
    let body = oip_response(
        vec![
            oip_output("a", "FP32", &[1], None),
            oip_output("b", "FP32", &[1], None),
        ],
        vec![le_f32(&[1.0])],
    );
    assert_eq!(
        oip_decoder(Some("b")).decode(&body),
        Err(GrpcDecodeError::MissingRaw {
            output: "b".into(),
            index: 1,
            count: 1
        })
    );
    let body = oip_response(vec![oip_output("e", "FP32", &[1], None)], vec![vec![0; 6]]);
    assert_eq!(
        d.decode(&body),
        Err(GrpcDecodeError::RawLength {
            output: "e".into(),
            len: 6,
            width: 4
        })
    );
    let body = oip_response(vec![oip_output("e", "FP16", &[1], None)], vec![vec![0; 3]]);
    assert_eq!(err_kind(d.decode(&body)), "raw_length");
    // No contents and no raw data; FP16 cannot be typed contents.
    let body = oip_response(vec![oip_output("e", "FP32", &[0], None)], vec![]);
    assert_eq!(
        d.decode(&body),
        Err(GrpcDecodeError::Empty { output: "e".into() })
    );
    let body = oip_response(
        vec![oip_output("e", "FP16", &[2], Some(vec![1.0, 2.0]))],
        vec![],
    );
    assert_eq!(err_kind(d.decode(&body)), "empty");
    // Not protobuf: field 5 (outputs) declared as a 16-byte message with 1 byte left.
    let body = frame(&[0x2A, 0x10, 0x00]);
    let err = d.decode(&body).unwrap_err();
    assert_eq!(err.kind(), "protobuf");
    assert!(
        err.to_string().starts_with("invalid ModelInferResponse: "),
        "{err}"
    );
}

#[test]
fn framing_errors_surface_with_their_kinds() {
    let good = oip_response(vec![oip_output("e", "FP32", &[1], Some(vec![1.0]))], vec![]);
    let d = oip_decoder(None);
    let mut compressed = good.to_vec();
    compressed[0] = 1;
    let err = d.decode(&Bytes::from(compressed)).unwrap_err();
    assert_eq!(err, GrpcDecodeError::Frame(FrameError::Compressed));
    assert_eq!(
        err.to_string(),
        "gRPC framing: message is compressed; shadowgate does not decompress gRPC messages"
    );
    assert_eq!(err.kind(), "compressed");
    assert_eq!(
        err_kind(d.decode(&good.slice(..good.len() - 1))),
        "truncated"
    );
    let mut two = good.to_vec();
    two.extend_from_slice(&good);
    assert_eq!(err_kind(d.decode(&Bytes::from(two))), "trailing_bytes");
    assert_eq!(err_kind(d.decode(&good.slice(..3))), "short_header");
    let small = oip_decoder(None).with_max_message_bytes(4);
    assert_eq!(err_kind(small.decode(&good)), "too_large");
}

#[test]
fn tei_round_trip_and_errors() {
    let d = GrpcDecoder::new(GrpcProtocol::Tei, None);
    let body = encode(&tei::EmbedResponse {
        embeddings: vec![0.5, -0.25, 1e-3],
        metadata: Some(tei::Metadata {
            compute_tokens: 3,
            ..Default::default()
        }),
    });
    let out = d.decode(&body).unwrap();
    assert_eq!(out.data, [0.5, -0.25, 1e-3]);
    assert_eq!((out.items(), out.dim), (1, 3));
    let empty = encode(&tei::EmbedResponse::default());
    assert_eq!(
        d.decode(&empty),
        Err(GrpcDecodeError::Empty {
            output: "embeddings".into()
        })
    );
    let nan = encode(&tei::EmbedResponse {
        embeddings: vec![1.0, f32::NAN],
        metadata: None,
    });
    assert_eq!(d.decode(&nan), Err(GrpcDecodeError::NonFinite { index: 1 }));
    assert_eq!(err_kind(d.decode(&frame(&[0xFF]))), "protobuf");
}

fn tf_tensor(dtype: tfs::DataType, shape: &[i64]) -> tfs::TensorProto {
    tfs::TensorProto {
        dtype: dtype as i32,
        tensor_shape: Some(tfs::TensorShapeProto {
            dim: shape
                .iter()
                .map(|&size| tfs::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        ..Default::default()
    }
}

fn tf_response(outputs: Vec<(&str, tfs::TensorProto)>) -> Bytes {
    encode(&tfs::PredictResponse {
        outputs: outputs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<BTreeMap<_, _>>(),
        model_spec: None,
    })
}

fn tf_decoder(output: Option<&str>) -> GrpcDecoder {
    GrpcDecoder::new(GrpcProtocol::TfServing, output)
}

#[test]
fn tfserving_tensor_content_and_typed_values() {
    let data = [0.5f32, -1.0, 2.0, 0.25, 8.0, -0.0];
    let mut t = tf_tensor(tfs::DataType::DtFloat, &[2, 3]);
    t.tensor_content = Bytes::from(le_f32(&data));
    let out = tf_decoder(None)
        .decode(&tf_response(vec![("emb", t)]))
        .unwrap();
    assert_eq!(out.data, data);
    assert_eq!((out.items(), out.dim), (2, 3));

    let mut t = tf_tensor(tfs::DataType::DtFloat, &[1, 3]);
    t.float_val = vec![1.0, 2.0, 3.0];
    let out = tf_decoder(None)
        .decode(&tf_response(vec![("emb", t)]))
        .unwrap();
    assert_eq!(
        (out.data.as_slice(), out.items()),
        (&[1.0, 2.0, 3.0][..], 1)
    );

    let mut t = tf_tensor(tfs::DataType::DtHalf, &[3]);
    t.tensor_content = Bytes::from(le_u16(&[0x3C00, 0x0001, 0xB555]));
    let out = tf_decoder(None)
        .decode(&tf_response(vec![("emb", t)]))
        .unwrap();
    assert_eq!(out.data, [1.0, 5.960_464_5e-8, -0.333_251_95]);

    // half_val: the 16 bits in an int32 (0xB555 arrives as 46421).
    let mut t = tf_tensor(tfs::DataType::DtHalf, &[2]);
    t.half_val = vec![0x3C00, 0xB555];
    let out = tf_decoder(None)
        .decode(&tf_response(vec![("emb", t)]))
        .unwrap();
    assert_eq!(out.data, [1.0, -0.333_251_95]);

    let mut t = tf_tensor(tfs::DataType::DtBfloat16, &[2]);
    t.half_val = vec![0x3F80, 0xC040];
    let out = tf_decoder(None)
        .decode(&tf_response(vec![("emb", t)]))
        .unwrap();
    assert_eq!(out.data, [1.0, -3.0]);

    let mut t = tf_tensor(tfs::DataType::DtBfloat16, &[1, 2]);
    t.tensor_content = Bytes::from(le_u16(&[0x4040, 0xBF80]));
    let out = tf_decoder(None)
        .decode(&tf_response(vec![("emb", t)]))
        .unwrap();
    assert_eq!(out.data, [3.0, -1.0]);

    let mut t = tf_tensor(tfs::DataType::DtDouble, &[2]);
    t.double_val = vec![0.1, 4.0];
    let out = tf_decoder(None)
        .decode(&tf_response(vec![("emb", t)]))
        .unwrap();
    assert_eq!(out.data, [0.1f64 as f32, 4.0]);
}

#[test]
fn tfserving_output_choice_and_errors() {
    let float = |v: Vec<f32>| {
        let mut t = tf_tensor(tfs::DataType::DtFloat, &[v.len() as i64]);
        t.float_val = v;
        t
    };
    let two = tf_response(vec![
        ("scores", float(vec![0.9])),
        ("emb", float(vec![1.0, 2.0])),
    ]);
    assert_eq!(
        tf_decoder(Some("emb")).decode(&two).unwrap().data,
        [1.0, 2.0]
    );
    assert_eq!(
        tf_decoder(None).decode(&two),
        Err(GrpcDecodeError::AmbiguousOutput {
            present: vec!["emb".into(), "scores".into()]
        })
    );
    assert_eq!(
        tf_decoder(None).decode(&two).unwrap_err().to_string(),
        r#"2 outputs and no output name configured (outputs: ["emb", "scores"])"#
    );
    assert_eq!(
        tf_decoder(Some("pooled")).decode(&two),
        Err(GrpcDecodeError::MissingOutput {
            name: "pooled".into(),
            present: vec!["emb".into(), "scores".into()]
        })
    );
    assert_eq!(
        tf_decoder(None).decode(&tf_response(vec![])),
        Err(GrpcDecodeError::NoOutputs)
    );

    let mut ints = tf_tensor(tfs::DataType::DtInt64, &[1]);
    ints.tensor_content = Bytes::from(vec![0; 8]);
    assert_eq!(
        tf_decoder(None).decode(&tf_response(vec![("ids", ints)])),
        Err(GrpcDecodeError::Datatype {
            output: "ids".into(),
            datatype: "DT_INT64".into()
        })
    );
    let unknown = tfs::TensorProto {
        dtype: 17, // DT_UINT16, not declared here
        ..Default::default()
    };
    assert_eq!(
        tf_decoder(None)
            .decode(&tf_response(vec![("x", unknown)]))
            .unwrap_err()
            .to_string(),
        r#"output "x" has data type DataType 17; embeddings are read from FP32, FP16, BF16 or FP64"#
    );
    // One typed value does not fill a larger shape.
    let mut fill = tf_tensor(tfs::DataType::DtFloat, &[1, 4]);
    fill.float_val = vec![0.5];
    assert_eq!(
        err_kind(tf_decoder(None).decode(&tf_response(vec![("e", fill)]))),
        "shape"
    );
    // Unknown dimension.
    let mut unknown_dim = tf_tensor(tfs::DataType::DtFloat, &[-1, 2]);
    unknown_dim.float_val = vec![0.5, 0.5];
    assert_eq!(
        err_kind(tf_decoder(None).decode(&tf_response(vec![("e", unknown_dim)]))),
        "shape"
    );
    let mut odd = tf_tensor(tfs::DataType::DtFloat, &[1]);
    odd.tensor_content = Bytes::from_static(&[0, 0, 0]);
    assert_eq!(
        err_kind(tf_decoder(None).decode(&tf_response(vec![("e", odd)]))),
        "raw_length"
    );
    let mut inf = tf_tensor(tfs::DataType::DtHalf, &[2]);
    inf.half_val = vec![0x3C00, 0x7C00];
    assert_eq!(
        tf_decoder(None).decode(&tf_response(vec![("e", inf)])),
        Err(GrpcDecodeError::NonFinite { index: 1 })
    );
    let mut big = tf_tensor(tfs::DataType::DtFloat, &[3, 1]);
    big.float_val = vec![1.0, 2.0, 3.0];
    assert_eq!(
        tf_decoder(None)
            .with_max_items(2)
            .decode(&tf_response(vec![("e", big)])),
        Err(GrpcDecodeError::TooManyItems { max: 2 })
    );
}

#[test]
fn request_item_counts() {
    let oip_req = |datatype: &str, shape: &[i64]| {
        encode(&oip::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![oip::InferInputTensor {
                name: "text".into(),
                datatype: datatype.into(),
                shape: shape.to_vec(),
                contents: None,
            }],
            ..Default::default()
        })
    };
    let oip = oip_decoder(None);
    assert_eq!(oip.request_items(&oip_req("INT64", &[4, 128])), Ok(4));
    assert_eq!(oip.request_items(&oip_req("INT64", &[128])), Ok(1));
    assert_eq!(oip.request_items(&oip_req("INT64", &[])), Ok(1));
    assert_eq!(oip.request_items(&oip_req("BYTES", &[3])), Ok(3));
    assert_eq!(oip.request_items(&oip_req("BYTES", &[2, 1])), Ok(2));
    assert_eq!(oip.request_items(&oip_req("INT64", &[0, 8])), Ok(0));
    assert_eq!(
        oip.request_items(&oip_req("INT64", &[-1, 8])),
        Err(GrpcDecodeError::RequestShape {
            input: "text".into(),
            shape: vec![-1, 8]
        })
    );
    assert_eq!(
        oip.request_items(&encode(&oip::ModelInferRequest::default())),
        Err(GrpcDecodeError::NoInputs)
    );
    assert_eq!(
        oip.request_items(&frame(b"\x2a")).map_err(|e| e.kind()),
        Err("protobuf")
    );

    let tei = GrpcDecoder::new(GrpcProtocol::Tei, None);
    let req = encode(&tei::EmbedRequest {
        inputs: "hello".into(),
        ..Default::default()
    });
    assert_eq!(tei.request_items(&req), Ok(1));
    assert_eq!(
        tei.request_items(&frame(b"\x0a\x05hel"))
            .map_err(|e| e.kind()),
        Err("protobuf")
    );

    let tf_req = |inputs: Vec<(&str, tfs::TensorProto)>| {
        encode(&tfs::PredictRequest {
            model_spec: None,
            inputs: inputs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            output_filter: vec![],
        })
    };
    let tf = tf_decoder(None);
    assert_eq!(
        tf.request_items(&tf_req(vec![(
            "ids",
            tf_tensor(tfs::DataType::DtInt64, &[5, 16])
        )])),
        Ok(5)
    );
    assert_eq!(
        tf.request_items(&tf_req(vec![(
            "ids",
            tf_tensor(tfs::DataType::DtInt64, &[16])
        )])),
        Ok(1)
    );
    assert_eq!(
        tf.request_items(&tf_req(vec![(
            "text",
            tf_tensor(tfs::DataType::DtString, &[7])
        )])),
        Ok(7)
    );
    // The first input in name order.
    assert_eq!(
        tf.request_items(&tf_req(vec![
            ("mask", tf_tensor(tfs::DataType::DtInt64, &[2, 16])),
            ("ids", tf_tensor(tfs::DataType::DtInt64, &[3, 16])),
        ])),
        Ok(3)
    );
    assert_eq!(
        tf.request_items(&tf_req(vec![])),
        Err(GrpcDecodeError::NoInputs)
    );
    assert_eq!(
        tf.request_items(&frame(b"\0\0")).map_err(|e| e.kind()),
        Err("protobuf")
    );
}

/// Every FP16 bit pattern against the definition, computed independently in f64:
/// (-1)^s × 2^(e-15) × (1 + m/1024) for normals, (-1)^s × 2^-14 × m/1024 for subnormals.
#[test]
fn f16_every_bit_pattern() {
    for bits in 0..=u16::MAX {
        let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
        let e = i32::from((bits >> 10) & 0x1F);
        let m = f64::from(bits & 0x3FF);
        let got = f16_to_f32(bits);
        match e {
            0x1F if m == 0.0 => assert_eq!(got, sign as f32 * f32::INFINITY, "{bits:#06x}"),
            0x1F => assert!(got.is_nan(), "{bits:#06x}"),
            0 => {
                let want = sign * 2f64.powi(-14) * m / 1024.0;
                assert_eq!(got.to_bits(), (want as f32).to_bits(), "{bits:#06x}");
            }
            _ => {
                let want = sign * 2f64.powi(e - 15) * (1.0 + m / 1024.0);
                assert_eq!(f64::from(got), want, "{bits:#06x}");
            }
        }
    }
}

#[test]
fn bf16_known_patterns() {
    assert_eq!(bf16_to_f32(0x3F80), 1.0);
    assert_eq!(bf16_to_f32(0xC0A0), -5.0);
    assert_eq!(bf16_to_f32(0x3E20), 0.15625);
    assert_eq!(bf16_to_f32(0x7F7F), 3.389_531_4e38);
    assert_eq!(bf16_to_f32(0x0080), f32::MIN_POSITIVE);
    assert_eq!(bf16_to_f32(0x0001).to_bits(), 0x0001_0000);
    assert_eq!(bf16_to_f32(0x8000).to_bits(), 0x8000_0000);
    assert_eq!(bf16_to_f32(0x7F80), f32::INFINITY);
    assert_eq!(bf16_to_f32(0xFF80), f32::NEG_INFINITY);
    assert!(bf16_to_f32(0x7FC0).is_nan());
    // Every pattern: the top half of the f32.
    for bits in 0..=u16::MAX {
        assert_eq!(bf16_to_f32(bits).to_bits() >> 16, u32::from(bits));
    }
}

#[test]
fn error_kinds_are_distinct() {
    let all = [
        GrpcDecodeError::Frame(FrameError::Compressed),
        GrpcDecodeError::Protobuf {
            message: "M",
            reason: String::new(),
        },
        GrpcDecodeError::NoOutputs,
        GrpcDecodeError::MissingOutput {
            name: String::new(),
            present: vec![],
        },
        GrpcDecodeError::AmbiguousOutput { present: vec![] },
        GrpcDecodeError::Datatype {
            output: String::new(),
            datatype: String::new(),
        },
        GrpcDecodeError::MissingRaw {
            output: String::new(),
            index: 0,
            count: 0,
        },
        GrpcDecodeError::RawLength {
            output: String::new(),
            len: 0,
            width: 0,
        },
        GrpcDecodeError::Shape {
            output: String::new(),
            shape: vec![],
            len: 0,
        },
        GrpcDecodeError::Empty {
            output: String::new(),
        },
        GrpcDecodeError::NonFinite { index: 0 },
        GrpcDecodeError::TooManyItems { max: 0 },
        GrpcDecodeError::NoInputs,
        GrpcDecodeError::RequestShape {
            input: String::new(),
            shape: vec![],
        },
    ];
    let mut kinds: Vec<_> = all.iter().map(GrpcDecodeError::kind).collect();
    let n = kinds.len();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), n);
}

/// A 32×768 answer in both encodings gives the same `ModelOutput`, and the same as the
/// JSON path would (same values, same item split).
#[test]
fn raw_and_typed_contents_agree() {
    let data: Vec<f32> = (0..32 * 768)
        .map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5)
        .collect();
    let raw = oip_response(
        vec![oip_output("e", "FP32", &[32, 768], None)],
        vec![le_f32(&data)],
    );
    let typed = oip_response(
        vec![oip_output("e", "FP32", &[32, 768], Some(data.clone()))],
        vec![],
    );
    let a = oip_decoder(None).decode(&raw).unwrap();
    let b = oip_decoder(None).decode(&typed).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.items(), a.dim, a.data), (32, 768, data));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes, framed or not: every decoder answers (value or error), never panics.
        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200), framed: bool) {
            let body = if framed { frame(&body) } else { Bytes::from(body) };
            for p in GrpcProtocol::ALL {
                let d = GrpcDecoder::new(p, None);
                let _ = d.decode(&body);
                let _ = d.request_items(&body);
            }
        }

        /// Raw FP32 and FP16 answers of any shape [n, d] give back their values and split.
        #[test]
        fn raw_round_trip(n in 1usize..6, d in 1usize..40, fp16: bool, seed: u32) {
            let mut state = u64::from(seed) | 1;
            let bits: Vec<u16> = (0..n * d)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    // Finite FP16 patterns only: exponent field below 0x1F.
                    let b = (state >> 48) as u16;
                    if b & 0x7C00 == 0x7C00 { b & !0x4000 } else { b }
                })
                .collect();
            let (datatype, raw, want): (&str, Vec<u8>, Vec<f32>) = if fp16 {
                ("FP16", le_u16(&bits), bits.iter().map(|&b| f16_to_f32(b)).collect())
            } else {
                let v: Vec<f32> = bits.iter().map(|&b| f16_to_f32(b) * 3.0).collect();
                ("FP32", le_f32(&v), v)
            };
            let body = oip_response(
                vec![oip_output("e", datatype, &[n as i64, d as i64], None)],
                vec![raw],
            );
            let out = oip_decoder(None).decode(&body).unwrap();
            prop_assert_eq!((out.items(), out.dim), (n, d));
            let got: Vec<u32> = out.data.iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(got, want);
        }
    }
}

/// Messages encoded by the official protobuf runtime from the vendored .proto files
/// (tests/py/grpc/make_golden.py): the hand-written field numbers read them right, and
/// fields left out of pb.rs (parameters maps) are skipped.
mod golden {
    use bytes::Bytes;
    use prost::Message;

    use super::super::pb::{oip, tei, tfs};
    use super::*;

    macro_rules! golden {
        ($name:literal) => {
            Bytes::from_static(include_bytes!(concat!(
                "../../tests/py/grpc/golden/",
                $name,
                ".binpb"
            )))
        };
    }

    #[test]
    fn oip_response_fp32_contents() {
        let msg = golden!("oip_response_fp32_contents");
        let r = oip::ModelInferResponse::decode(msg.clone()).unwrap();
        assert_eq!(
            (
                r.model_name.as_str(),
                r.model_version.as_str(),
                r.id.as_str()
            ),
            ("embedder", "3", "req-7")
        );
        assert_eq!(r.outputs[1].shape, [2, 3]);
        let out = decode_oip_v2(msg.clone(), Some("embedding"), 8).unwrap();
        assert_eq!(out.data, [0.5, -0.25, 1.0, 2.0, -3.5, 0.125]);
        assert_eq!((out.items(), out.dim), (2, 3));
        // The first output is INT64 logits.
        assert_eq!(
            decode_oip_v2(msg, None, 8),
            Err(GrpcDecodeError::Datatype {
                output: "logits".into(),
                datatype: "INT64".into()
            })
        );
    }

    #[test]
    fn oip_response_raw_bf16() {
        let msg = golden!("oip_response_raw_bf16");
        let out = decode_oip_v2(msg.clone(), None, 8).unwrap();
        assert_eq!(out.data, [1.0, -2.0, 0.5, 3.0]);
        assert_eq!((out.items(), out.dim), (1, 4));
        let norm = decode_oip_v2(msg, Some("norm"), 8).unwrap();
        assert_eq!(norm.data, [1.5]);
    }

    #[test]
    fn oip_request() {
        let msg = golden!("oip_request_bytes3");
        let q = oip::ModelInferRequest::decode(msg.clone()).unwrap();
        let texts: Vec<&[u8]> = q.inputs[0]
            .contents
            .as_ref()
            .unwrap()
            .bytes_contents
            .iter()
            .map(|b| &b[..])
            .collect();
        assert_eq!(texts, [&b"a"[..], b"bb", b"ccc"]);
        assert_eq!(oip_v2_request_items(msg), Ok(3));
    }

    #[test]
    fn tei_messages() {
        let out = decode_tei(golden!("tei_response")).unwrap();
        assert_eq!(out.data, [0.1, 0.2, -0.3]);
        let r = tei::EmbedResponse::decode(golden!("tei_response")).unwrap();
        let m = r.metadata.unwrap();
        assert_eq!(
            (m.compute_chars, m.compute_tokens, m.total_time_ns),
            (5, 3, 1234)
        );
        let q = tei::EmbedRequest::decode(golden!("tei_request")).unwrap();
        assert_eq!(
            (q.inputs.as_str(), q.truncate, q.normalize, q.dimensions),
            ("hello", true, Some(true), Some(3))
        );
        assert_eq!(tei_request_items(golden!("tei_request")), Ok(1));
    }

    #[test]
    fn tfserving_messages() {
        let msg = golden!("tfs_response_half_content");
        let out = decode_tfserving(msg.clone(), Some("embedding"), 8).unwrap();
        assert_eq!(out.data, [1.0, -2.0, 0.5, 65504.0]);
        assert_eq!((out.items(), out.dim), (2, 2));
        assert_eq!(
            decode_tfserving(msg.clone(), Some("scores"), 8)
                .unwrap()
                .data,
            [0.25, 0.75]
        );
        assert_eq!(
            decode_tfserving(msg.clone(), None, 8).map_err(|e| e.kind()),
            Err("ambiguous_output")
        );
        let spec = tfs::PredictResponse::decode(msg)
            .unwrap()
            .model_spec
            .unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.signature_name.as_str()),
            ("use", "serving_default")
        );

        let out = decode_tfserving(golden!("tfs_response_half_val"), None, 8).unwrap();
        assert_eq!(out.data, [1.0, -0.333_251_95]);

        assert_eq!(
            tfserving_request_items(golden!("tfs_request_ids5x16")),
            Ok(5)
        );
    }
}

#[test]
fn request_items_carry_each_input_text_where_the_protocol_has_text() {
    let texts = ["first input", "второй", ""];
    let oip_request = encode(&oip::ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![oip::InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![3, 1],
            contents: Some(oip::InferTensorContents {
                bytes_contents: texts.iter().map(|t| Bytes::from(t.to_string())).collect(),
                ..Default::default()
            }),
        }],
        ..Default::default()
    });
    let items = oip_decoder(None).request(&oip_request).unwrap();
    assert_eq!(items.count, Some(3));
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(items.input(i), Some(*t));
    }

    // Numbers, not text: the count alone.
    let numeric = encode(&oip::ModelInferRequest {
        inputs: vec![oip::InferInputTensor {
            name: "ids".into(),
            datatype: "INT64".into(),
            shape: vec![2, 8],
            contents: None,
        }],
        ..Default::default()
    });
    let items = oip_decoder(None).request(&numeric).unwrap();
    assert_eq!((items.count, items.input(0)), (Some(2), None));

    let tei_request = encode(&tei::EmbedRequest {
        inputs: "one text".into(),
        ..Default::default()
    });
    let items = GrpcDecoder::new(GrpcProtocol::Tei, None)
        .request(&tei_request)
        .unwrap();
    assert_eq!((items.count, items.input(0)), (Some(1), Some("one text")));

    assert!(oip_decoder(None)
        .request(&Bytes::from_static(b"\0\0"))
        .is_none());
}
