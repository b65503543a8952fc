//! Protocol parsing against recorded responses, serde_json as the reference, and bodies
//! broken in every way we could think of.

use super::*;
use proptest::prelude::*;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/protocols/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The slow, obviously right way: a serde_json tree, then the numbers at `pointer`.
fn reference(body: &[u8], pointer: &str) -> Vec<f32> {
    let v: Value = serde_json::from_slice(body).expect("reference parse");
    v.pointer(pointer)
        .and_then(Value::as_array)
        .expect("array at pointer")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn parse(protocol: Protocol, body: &[u8]) -> Result<ModelOutput, ParseError> {
    Extractor::new(protocol, "", "").unwrap().parse(body)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const ALL: [Protocol; 5] = [
    Protocol::OpenAi,
    Protocol::Tei,
    Protocol::KServeV2,
    Protocol::TfServing,
    Protocol::Generic,
];

#[test]
fn protocol_names_match_config_spelling() {
    for p in ALL {
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{}\"", p.as_str()));
        let back: Protocol = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
    assert_eq!(Protocol::KServeV2.to_string(), "kserve_v2");
}

#[test]
fn openai_float_fixture_matches_serde_bit_for_bit() {
    let body = fixture("openai_float.json");
    let out = parse(Protocol::OpenAi, &body).unwrap();
    assert_eq!(out.embedding(0).len(), 8);
    assert!((out.embedding(0)[0] - -0.012_794_014).abs() < 1e-9);
    assert_eq!(
        bits(out.embedding(0)),
        bits(&reference(&body, "/data/0/embedding"))
    );
    assert_eq!(out.prediction(0), None);
}

#[test]
fn openai_base64_decodes_to_the_same_vector_as_float() {
    let float = parse(Protocol::OpenAi, &fixture("openai_float.json")).unwrap();
    let b64 = parse(Protocol::OpenAi, &fixture("openai_base64.json")).unwrap();
    assert_eq!(bits(b64.embedding(0)), bits(float.embedding(0)));
}

#[test]
fn openai_base64_with_escaped_slashes_or_raw_control_bytes() {
    let body = fixture("openai_base64.json");
    let plain = parse(Protocol::OpenAi, &body).unwrap();
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains('/'));
    let escaped = text.replace('/', "\\/");
    let out = parse(Protocol::OpenAi, escaped.as_bytes()).unwrap();
    assert_eq!(bits(out.embedding(0)), bits(plain.embedding(0)));
    // A raw control byte in a string is not JSON: serde_json refuses the body, and so
    // does the extractor once the base64 decoder has tripped over it.
    let raw_control = b"{\"data\":[{\"embedding\":\"AADA\x01\"}]}";
    assert_eq!(
        parse(Protocol::OpenAi, raw_control).unwrap_err().kind(),
        "malformed"
    );
}

#[test]
fn openai_keys_in_any_order() {
    let float = parse(Protocol::OpenAi, &fixture("openai_float.json")).unwrap();
    let body = fixture("openai_reordered.json");
    let out = parse(Protocol::OpenAi, &body).unwrap();
    assert_eq!(bits(out.embedding(0)), bits(float.embedding(0)));
    let ex = Extractor::new(Protocol::OpenAi, "", "/model").unwrap();
    assert_eq!(
        ex.parse(&body).unwrap().prediction(0),
        Some("bge-m\u{e9}-large")
    );
}

#[test]
fn tei_takes_the_first_row() {
    let body = fixture("tei_embed.json");
    let out = parse(Protocol::Tei, &body).unwrap();
    assert_eq!(out.embedding(0).len(), 8);
    assert_eq!(bits(out.embedding(0)), bits(&reference(&body, "/0")));
    let two = br#"[[1.5,2.5],[3.5,4.5]]"#;
    assert_eq!(
        parse(Protocol::Tei, two).unwrap().embedding(0),
        &vec![1.5, 2.5]
    );
}

#[test]
fn kserve_flat_nested_and_batched() {
    let flat = fixture("kserve_v2.json");
    let out = parse(Protocol::KServeV2, &flat).unwrap();
    assert_eq!(
        bits(out.embedding(0)),
        bits(&reference(&flat, "/outputs/0/data"))
    );

    let nested = fixture("kserve_v2_nested.json");
    let out_nested = parse(Protocol::KServeV2, &nested).unwrap();
    assert_eq!(bits(out_nested.embedding(0)), bits(out.embedding(0)));

    let batch = fixture("kserve_v2_batch.json");
    let all = reference(&batch, "/outputs/0/data");
    let first = parse(Protocol::KServeV2, &batch).unwrap();
    assert_eq!(first.embedding(0).len(), 4);
    assert_eq!(bits(first.embedding(0)), bits(&all[..4]));
    let ex = Extractor::new(Protocol::KServeV2, "", "/outputs/1/data/0").unwrap();
    assert_eq!(ex.parse(&batch).unwrap().prediction(0), Some("positive"));
}

#[test]
fn kserve_shape_must_match_data() {
    let cases: [(&[u8], &str); 5] = [
        (br#"{"outputs":[{"shape":[1,3],"data":[1,2]}]}"#, "shape"),
        (br#"{"outputs":[{"shape":[2,3],"data":[1,2,3]}]}"#, "shape"),
        (br#"{"outputs":[{"data":[1,2]}]}"#, "missing_field"),
        (
            br#"{"outputs":[{"shape":[1,-2],"data":[1,2]}]}"#,
            "wrong_type",
        ),
        (
            br#"{"outputs":[{"shape":[1.0,2],"data":[1,2]}]}"#,
            "wrong_type",
        ),
    ];
    for (body, kind) in cases {
        let err = parse(Protocol::KServeV2, body).unwrap_err();
        assert_eq!(err.kind(), kind, "{}: {err}", String::from_utf8_lossy(body));
    }
    // 2^64 overflow in the product is a mismatch, not a panic.
    let huge = br#"{"outputs":[{"shape":[4294967296,4294967296,2],"data":[1,2]}]}"#;
    assert_eq!(parse(Protocol::KServeV2, huge).unwrap_err().kind(), "shape");
    // Shape may come after data; a 3-D batch keeps the first row's block.
    let late = br#"{"outputs":[{"data":[[[1,2],[3,4]],[[5,6],[7,8]]],"shape":[2,2,2]}]}"#;
    assert_eq!(
        parse(Protocol::KServeV2, late).unwrap().embedding(0),
        vec![1.0, 2.0, 3.0, 4.0]
    );
    // An override that names another output checks that output's shape.
    let ex = Extractor::new(Protocol::KServeV2, "/outputs/1/data", "").unwrap();
    let two = br#"{"outputs":[{"shape":[1],"data":["x"]},{"shape":[1,2],"data":[0.5,0.25]}]}"#;
    assert_eq!(ex.parse(two).unwrap().embedding(0), &vec![0.5, 0.25]);
}

#[test]
fn tfserving_rows_or_flat() {
    let rows = fixture("tfserving_rows.json");
    let out = parse(Protocol::TfServing, &rows).unwrap();
    assert_eq!(
        bits(out.embedding(0)),
        bits(&reference(&rows, "/predictions/0"))
    );
    let flat = fixture("tfserving_flat.json");
    let out_flat = parse(Protocol::TfServing, &flat).unwrap();
    assert_eq!(bits(out_flat.embedding(0)), bits(out.embedding(0)));
    let bad_rest = br#"{"predictions":[[1,2],[3,}]}"#;
    assert_eq!(
        parse(Protocol::TfServing, bad_rest).unwrap_err().kind(),
        "malformed"
    );
    let three_d = br#"{"predictions":[[[1,2]]]}"#;
    assert_eq!(
        parse(Protocol::TfServing, three_d).unwrap_err().kind(),
        "wrong_type"
    );
}

#[test]
fn generic_pointer_and_every_prediction_kind() {
    let body = fixture("generic.json");
    let cases = [
        ("/result/label", Some("positive")),
        ("/result/score", Some("0.9312")),
        ("/result/meta", Some(r#"{"took_ms":3,"tags":["a","b"]}"#)),
        ("/result/meta/tags", Some(r#"["a","b"]"#)),
        ("/result/meta/tags/1", Some("b")),
    ];
    for (pointer, want) in cases {
        let ex = Extractor::new(Protocol::Generic, "/result/vector", pointer).unwrap();
        let out = ex.parse(&body).unwrap();
        assert_eq!(out.prediction(0), want, "{pointer}");
        assert_eq!(
            bits(out.embedding(0)),
            bits(&reference(&body, "/result/vector"))
        );
    }
    let small = br#"{"e":[1],"t":true,"n":null,"s":"a\"b\u00e9\ud83d\ude00"}"#;
    for (pointer, want) in [
        ("/t", Some("true")),
        ("/n", None),
        ("/s", Some("a\"b\u{e9}\u{1F600}")),
    ] {
        let ex = Extractor::new(Protocol::Generic, "/e", pointer).unwrap();
        assert_eq!(ex.parse(small).unwrap().prediction(0), want);
    }
    let ex = Extractor::new(Protocol::Generic, "/e", "/absent").unwrap();
    assert_eq!(ex.parse(small).unwrap_err().kind(), "missing_field");
}

#[test]
fn generic_accepts_base64_and_pointer_escapes() {
    let body = br#"{"a/b":{"m~n":["x",{"v":"AADAPwAAIEA="}]}}"#;
    let ex = Extractor::new(Protocol::Generic, "/a~1b/m~0n/1/v", "/a~1b/m~0n/0").unwrap();
    let out = ex.parse(body).unwrap();
    assert_eq!(out.embedding(0), &vec![1.5, 2.5]);
    assert_eq!(out.prediction(0), Some("x"));
    // Escaped keys in the body match too.
    let escaped = br#"{"d\u0061ta":[{"embedding":[0.5]}]}"#;
    assert_eq!(
        parse(Protocol::OpenAi, escaped).unwrap().embedding(0),
        vec![0.5]
    );
}

#[test]
fn pointer_errors() {
    assert_eq!(
        Extractor::new(Protocol::Generic, "", "").unwrap_err(),
        PointerError::MissingEmbeddingPointer
    );
    for bad in ["data/0", "/a~2", "/a~"] {
        assert!(
            matches!(
                Extractor::new(Protocol::Generic, bad, ""),
                Err(PointerError::Invalid { .. })
            ),
            "{bad}"
        );
        assert!(Extractor::new(Protocol::OpenAi, "", bad).is_err(), "{bad}");
    }
    // "01" and "-" are keys, not indices: nothing in an array matches them.
    let ex = Extractor::new(Protocol::Generic, "/01", "").unwrap();
    assert_eq!(ex.parse(b"[[1],[2]]").unwrap_err().kind(), "missing_field");
}

#[test]
fn zero_vectors_and_extreme_values_parse() {
    let out = parse(Protocol::Tei, b"[[0,0.0,-0,0e5]]").unwrap();
    assert_eq!(out.embedding(0), &vec![0.0; 4]);
    assert!(out.embedding(0)[2].is_sign_negative());
    // Subnormal in f64 and f32, f32::MAX, and an underflow to zero are all finite.
    let out = parse(Protocol::Tei, b"[[1e-40, 3.4028235e38, 1e-50, -2.5E+3]]").unwrap();
    assert_eq!(out.embedding(0), &vec![1e-40, f32::MAX, 0.0, -2500.0]);
}

#[test]
fn duplicate_keys_last_wins_like_serde() {
    let body = br#"{"data":[{"embedding":[1]}],"data":[{"embedding":[2]}]}"#;
    assert_eq!(
        parse(Protocol::OpenAi, body).unwrap().embedding(0),
        &vec![2.0]
    );
    assert_eq!(reference(body, "/data/0/embedding"), vec![2.0]);
}

/// Every bad output is an error of the expected kind.
#[test]
fn bad_outputs_are_errors_of_the_right_kind() {
    let cases: &[(Protocol, &[u8], &str)] = &[
        (Protocol::Tei, b"", "truncated"),
        (Protocol::Tei, b"   ", "truncated"),
        (Protocol::Tei, b"[[1,2]] x", "malformed"),
        (Protocol::Tei, b"[[1,2]]]", "malformed"),
        (Protocol::Tei, b"[[1,2,]]", "malformed"),
        (Protocol::Tei, b"[[1 2]]", "malformed"),
        (Protocol::Tei, b"[[01]]", "malformed"),
        (Protocol::Tei, b"[[1.]]", "malformed"),
        (Protocol::Tei, b"[[.5]]", "malformed"),
        (Protocol::Tei, b"[[+1]]", "malformed"),
        (Protocol::Tei, b"[[1e]]", "malformed"),
        (Protocol::Tei, b"[[-]]", "malformed"),
        (Protocol::Tei, b"[[inf]]", "malformed"),
        (Protocol::Tei, b"[[Nope]]", "malformed"),
        (Protocol::Tei, b"[[1],{]", "malformed"),
        (Protocol::Tei, b"[[1],\"\x01\"]", "malformed"),
        (Protocol::Tei, b"[[1],\"\\x\"]", "malformed"),
        (Protocol::Tei, b"[[1],\"\\ud800\"]", "malformed"),
        (Protocol::Tei, b"[[1],\"\xff\"]", "malformed"),
        (Protocol::Tei, b"[[1],tru]", "malformed"),
        (Protocol::Tei, b"[[1],1e999]", "malformed"),
        (Protocol::Tei, b"[[1],-1E+400]", "malformed"),
        (Protocol::Tei, b"[[1,2]", "truncated"),
        (Protocol::Tei, b"[[NaN]]", "non_finite"),
        (Protocol::Tei, b"[[1,Infinity]]", "non_finite"),
        (Protocol::Tei, b"[[1,2,-Infinity]]", "non_finite"),
        (Protocol::Tei, b"[[1e39]]", "non_finite"),
        (Protocol::Tei, b"[[1e400]]", "non_finite"),
        (Protocol::Tei, b"[[]]", "empty"),
        (Protocol::Tei, b"[]", "missing_field"),
        (Protocol::Tei, b"{}", "missing_field"),
        (Protocol::Tei, b"[[\"a\",\"b\"]]", "wrong_type"),
        (Protocol::Tei, b"[[[1],[2]]]", "wrong_type"),
        (Protocol::Tei, b"[{\"a\":1}]", "wrong_type"),
        (Protocol::Tei, b"[\"AAAAAA==\"]", "wrong_type"),
        (Protocol::Tei, b"[[1,null]]", "wrong_type"),
        (
            Protocol::OpenAi,
            br#"{"error":{"message":"overloaded"}}"#,
            "missing_field",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":{"embedding":[1]}}"#,
            "missing_field",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"embedding":"not base64!"}]}"#,
            "bad_base64",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"embedding":"AAAA"}]}"#,
            "bad_base64",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"embedding":"AADAfw=="}]}"#,
            "non_finite",
        ),
        (Protocol::OpenAi, br#"{"data":[{"embedding":""}]}"#, "empty"),
        (
            Protocol::OpenAi,
            br#"{"data":[{"embedding":1.5}]}"#,
            "wrong_type",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"embedding":{"0":1}}]}"#,
            "wrong_type",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"embedding":[1]}],}"#,
            "malformed",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"embedding":[1]}] "x":1}"#,
            "malformed",
        ),
        (
            Protocol::OpenAi,
            br#"{"data" [{"embedding":[1]}]}"#,
            "malformed",
        ),
        (
            Protocol::OpenAi,
            br#"{data:[{"embedding":[1]}]}"#,
            "malformed",
        ),
        (Protocol::TfServing, br#"{"predictions":[]}"#, "empty"),
        (Protocol::TfServing, br#"{"predictions":[[]]}"#, "empty"),
        (
            Protocol::KServeV2,
            br#"{"outputs":[{"shape":[1,0],"data":[]}]}"#,
            "empty",
        ),
        (
            Protocol::KServeV2,
            br#"{"outputs":[{"shape":[1],"data":["x"]}]}"#,
            "wrong_type",
        ),
    ];
    for (protocol, body, kind) in cases {
        let got = parse(*protocol, body);
        match got {
            Err(e) => assert_eq!(e.kind(), *kind, "{}: {e}", String::from_utf8_lossy(body)),
            Ok(o) => panic!("{}: accepted {o:?}", String::from_utf8_lossy(body)),
        }
    }
}

#[test]
fn errors_carry_useful_context() {
    let err = parse(Protocol::Tei, b"[[1,2,]]").unwrap_err();
    assert_eq!(
        err,
        ParseError::Malformed {
            offset: 6,
            reason: "expected a JSON value"
        }
    );
    assert_eq!(
        parse(Protocol::Tei, b"[[1,2,NaN]]").unwrap_err(),
        ParseError::NonFinite { index: 2 }
    );
    let err = parse(
        Protocol::KServeV2,
        br#"{"outputs":[{"shape":[3],"data":[[1],[2]]}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ParseError::Shape {
            shape: vec![3],
            len: 2
        }
    );
    let err = parse(Protocol::OpenAi, b"{}").unwrap_err();
    assert_eq!(err.to_string(), "no value at /data/*/embedding");
    let err = parse(Protocol::Tei, b"[[1,2]").unwrap_err();
    assert_eq!(err, ParseError::Truncated { offset: 6 });
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut body = b"[[1],".to_vec();
    body.extend(vec![b'['; 100_000]);
    body.extend(vec![b']'; 100_000]);
    assert_eq!(parse(Protocol::Tei, &body).unwrap_err().kind(), "malformed");
    let mut obj = br#"{"a":"#.repeat(10_000);
    obj.extend(b"1");
    obj.extend(vec![b'}'; 10_000]);
    assert_eq!(
        parse(Protocol::OpenAi, &obj).unwrap_err().kind(),
        "malformed"
    );
    let ex = Extractor::new(Protocol::KServeV2, "", "").unwrap();
    let mut data = br#"{"outputs":[{"data":"#.to_vec();
    data.extend(vec![b'['; 1000]);
    assert_eq!(ex.parse(&data).unwrap_err().kind(), "malformed");
}

const FIXTURES: [(&str, Protocol); 10] = [
    ("openai_float.json", Protocol::OpenAi),
    ("openai_base64.json", Protocol::OpenAi),
    ("openai_reordered.json", Protocol::OpenAi),
    ("tei_embed.json", Protocol::Tei),
    ("kserve_v2.json", Protocol::KServeV2),
    ("kserve_v2_nested.json", Protocol::KServeV2),
    ("kserve_v2_batch.json", Protocol::KServeV2),
    ("tfserving_rows.json", Protocol::TfServing),
    ("tfserving_flat.json", Protocol::TfServing),
    ("generic.json", Protocol::Generic),
];

fn extractor_for(protocol: Protocol) -> Extractor {
    let pointer = if protocol == Protocol::Generic {
        "/result/vector"
    } else {
        ""
    };
    Extractor::new(protocol, pointer, "").unwrap()
}

#[test]
fn every_truncation_of_every_fixture_is_truncated() {
    for (name, protocol) in FIXTURES {
        let body = fixture(name);
        let ex = extractor_for(protocol);
        assert!(ex.parse(&body).is_ok(), "{name}");
        let content = body.trim_ascii_end().len();
        for cut in 0..content {
            match ex.parse(&body[..cut]) {
                Err(ParseError::Truncated { offset }) => assert_eq!(offset, cut),
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn rewrite_wraps_the_input_for_each_protocol() {
    let body = fixture("chat_request.json");
    let rw = Rewrite {
        path: "/v1/embeddings".into(),
        input_pointer: "/messages/0/content".into(),
    };
    rw.validate().unwrap();
    let text = "Caf\u{e9} \"bar\"\nline\u{2028}two \u{1F600}";
    let expect = [
        (
            Protocol::OpenAi,
            serde_json::json!({"input": text, "model": "gpt-4o-mini"}),
        ),
        (Protocol::Tei, serde_json::json!({"inputs": text})),
        (
            Protocol::KServeV2,
            serde_json::json!({"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","data":[text]}]}),
        ),
        (
            Protocol::TfServing,
            serde_json::json!({"instances": [text]}),
        ),
        (Protocol::Generic, serde_json::json!({"input": text})),
    ];
    for (protocol, want) in expect {
        let out = rewrite_request(protocol, &rw, &body).unwrap();
        let got: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(got, want, "{protocol}");
    }
    // No "model" in the request: none in the rewrite.
    let out = rewrite_request(
        Protocol::OpenAi,
        &rw,
        br#"{"messages":[{"content":"\u0001x"}]}"#,
    )
    .unwrap();
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(got, serde_json::json!({"input": "\u{1}x"}));
}

#[test]
fn rewrite_errors() {
    let rw = Rewrite {
        path: "/embed".into(),
        input_pointer: "/prompt".into(),
    };
    let cases: [(&[u8], &str); 4] = [
        (br#"{"prompt":["a"]}"#, "not_a_string"),
        (br#"{"other":"a"}"#, "missing_input"),
        (br#"{"prompt":"a""#, "malformed_body"),
        (b"not json", "malformed_body"),
    ];
    for (body, kind) in cases {
        let err = rewrite_request(Protocol::Tei, &rw, body).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
    }
    let bad_path = Rewrite {
        path: "embed".into(),
        input_pointer: "/prompt".into(),
    };
    assert_eq!(bad_path.validate().unwrap_err().kind(), "bad_path");
    let bad_pointer = Rewrite {
        path: "/embed".into(),
        input_pointer: "prompt".into(),
    };
    assert_eq!(bad_pointer.validate().unwrap_err().kind(), "bad_pointer");
    assert_eq!(
        rewrite_request(Protocol::Tei, &bad_pointer, b"{}")
            .unwrap_err()
            .kind(),
        "bad_pointer"
    );
    let toml_rw: Rewrite =
        toml::from_str("path = \"/v1/embeddings\"\ninput_pointer = \"/input\"").unwrap();
    assert_eq!(toml_rw.input_pointer, "/input");
    assert!(toml::from_str::<Rewrite>("path = \"/a\"\ninput_pointer = \"/b\"\nx = 1").is_err());
}

#[test]
fn extractor_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Extractor>();
}

fn openai_body(values: &[f32], widen: bool, pretty: bool) -> Vec<u8> {
    let embedding: Vec<Value> = values
        .iter()
        .map(|&x| {
            if widen {
                // What Python does with a float32: its f64 repr (up to 17 digits).
                serde_json::json!(x as f64)
            } else {
                serde_json::json!(x)
            }
        })
        .collect();
    let doc = serde_json::json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
        "model": "m",
        "usage": {"prompt_tokens": 1, "total_tokens": 1}
    });
    if pretty {
        serde_json::to_vec_pretty(&doc).unwrap()
    } else {
        serde_json::to_vec(&doc).unwrap()
    }
}

/// One element of a generated array, written in one of the ways servers write numbers.
fn element_text(v: f32, style: u8) -> String {
    match style % 6 {
        0 => serde_json::to_string(&f64::from(v)).unwrap(), // Python / OpenAI
        1 => serde_json::to_string(&v).unwrap(),            // ryu f32 (TEI)
        2 => format!("{v:e}"),
        3 => format!(" {} ", (v * 1000.0).round() as i32), // integers, spaces
        4 => format!("{:.3}", f64::from(v) * 1e-6),
        _ => format!("{v:.30}"),
    }
}

/// A defect put in place of one element, and the error kind it must give.
const DEFECTS: [(&str, &str); 14] = [
    ("NaN", "non_finite"),
    ("Infinity", "non_finite"),
    ("-Infinity", "non_finite"),
    ("1e999", "non_finite"),
    ("-4e38", "non_finite"),
    ("\"x,y\"", "wrong_type"),
    ("[1]", "wrong_type"),
    ("null", "wrong_type"),
    ("{}", "wrong_type"),
    ("", "malformed"),
    ("01", "malformed"),
    ("1.", "malformed"),
    ("-", "malformed"),
    ("1.5e", "malformed"),
];

/// Whitespace put before an element: pretty-printers' indents and the odd ones.
const INDENTS: [&str; 10] = [
    "\n        ",
    "\n  ",
    "\n\t\t",
    "\r\n        ",
    "\n                      ",
    "\n         ",
    "\n       ",
    "",
    " ",
    "\n    \t \r\n ",
];

/// An OpenAI body parses to what serde_json reads, or, with a defect at element `i`,
/// fails with that defect's kind (and index, for non-finite values).
fn matches_serde_or_fails_as_told(
    body: &str,
    want_err: Option<(usize, &str)>,
) -> Result<(), TestCaseError> {
    match (want_err, parse(Protocol::OpenAi, body.as_bytes())) {
        (None, Ok(out)) => {
            let want = reference(body.as_bytes(), "/data/0/embedding");
            prop_assert_eq!(bits(out.embedding(0)), bits(&want));
        }
        (Some((i, kind)), Err(e)) => {
            prop_assert_eq!(e.kind(), kind, "{}", e);
            if let ParseError::NonFinite { index } = e {
                prop_assert_eq!(index, i);
            }
        }
        (want, got) => prop_assert!(false, "want {:?}, got {:?}", want, got),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Long arrays take the split, interleaved fast path: what it accepts equals serde_json's
    /// reading, and a defect anywhere gives the same error as the careful path.
    #[test]
    fn long_arrays_match_serde_and_fail_alike(
        values in prop::collection::vec(-1.0f32..1.0, 30..500),
        styles in prop::collection::vec(0..6u8, 1..4),
        layout in 0..4usize,
        defect in prop::option::of((any::<prop::sample::Index>(), 0..DEFECTS.len())),
    ) {
        let mut items: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| element_text(v, styles[i % styles.len()]))
            .collect();
        let mut want_err = None;
        if let Some((at, d)) = defect {
            let i = at.index(items.len());
            items[i] = DEFECTS[d].0.to_owned();
            want_err = Some((i, DEFECTS[d].1));
        }
        let sep = [",", ",\n        ", ",\r\n\t\t\t", " ,  \n \t "][layout];
        let body = format!(
            "{{\"object\":\"list\",\"data\":[{{\"embedding\":[{}],\"index\":0}}],\"model\":\"m\"}}",
            items.join(sep)
        );
        matches_serde_or_fails_as_told(&body, want_err)?;
    }

    /// Pretty-printed arrays whose indent is learned once and then broken here and there
    /// (other widths, tabs, CRLF, none, whitespace before the comma) read as serde_json
    /// reads them, and a defect still gives the careful path's error.
    #[test]
    fn broken_indents_match_serde(
        values in prop::collection::vec(-1.0f32..1.0, 20..400),
        main in 0..INDENTS.len(),
        breaks in prop::collection::vec((any::<prop::sample::Index>(), 0..INDENTS.len()), 0..12),
        before_comma in prop::option::of(any::<prop::sample::Index>()),
        defect in prop::option::of((any::<prop::sample::Index>(), 0..DEFECTS.len())),
    ) {
        let n = values.len();
        let mut indents = vec![INDENTS[main]; n];
        for (at, which) in &breaks {
            indents[at.index(n)] = INDENTS[*which];
        }
        let mut items: Vec<String> = values
            .iter()
            .zip(&indents)
            .map(|(&v, indent)| format!("{indent}{}", element_text(v, 0)))
            .collect();
        if let Some(at) = before_comma {
            items[at.index(n)].push_str(" \t");
        }
        let mut want_err = None;
        if let Some((at, d)) = defect {
            let i = at.index(n);
            items[i] = format!("{}{}", indents[i], DEFECTS[d].0);
            want_err = Some((i, DEFECTS[d].1));
        }
        let body = format!(
            "{{\n  \"data\": [\n    {{\n      \"embedding\": [{}\n      ]\n    }}\n  ]\n}}",
            items.join(",")
        );
        matches_serde_or_fails_as_told(&body, want_err)?;
    }

    /// Vectors written by serde_json come back bit-for-bit, as serde_json reads them.
    #[test]
    fn round_trips_serde_json_vectors(
        values in prop::collection::vec(
            prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO, 1..300),
        widen: bool,
        pretty: bool,
    ) {
        let body = openai_body(&values, widen, pretty);
        let out = parse(Protocol::OpenAi, &body).unwrap();
        prop_assert_eq!(bits(out.embedding(0)), bits(&reference(&body, "/data/0/embedding")));
        prop_assert_eq!(bits(out.embedding(0)), bits(&values));
    }

    /// Any JSON number text converts exactly as serde_json's f64, narrowed to f32.
    #[test]
    fn numbers_convert_like_serde_json(
        nums in prop::collection::vec(
            "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?", 1..20)
    ) {
        let body = format!("[[{}]]", nums.join(","));
        let ours = parse(Protocol::Tei, body.as_bytes());
        let theirs: Result<Vec<f64>, _> = nums.iter().map(|n| n.parse::<f64>()).collect();
        let theirs = theirs.unwrap();
        let serde_ok = serde_json::from_str::<Value>(&body).is_ok();
        match ours {
            Ok(out) => {
                prop_assert!(serde_ok);
                let want: Vec<f32> = reference(body.as_bytes(), "/0");
                prop_assert_eq!(bits(out.embedding(0)), bits(&want));
                let std_want: Vec<f32> = theirs.iter().map(|&x| x as f32).collect();
                prop_assert_eq!(bits(out.embedding(0)), bits(&std_want));
            }
            Err(ParseError::NonFinite { index }) => {
                prop_assert!(!(theirs[index] as f32).is_finite());
            }
            Err(e) => prop_assert!(false, "{}: {}", body, e),
        }
    }

    /// Decimals at and around f32 rounding midpoints (where narrowing an approximate f64
    /// could go the wrong way) still match serde_json bit for bit.
    #[test]
    fn near_f32_midpoints_round_like_serde(
        x in prop::num::f32::POSITIVE | prop::num::f32::NEGATIVE,
        digits in 6usize..22,
        nudge in -40i64..=40,
        fixed: bool,
    ) {
        let next = f32::from_bits(x.to_bits() + 1);
        prop_assume!(next.is_finite());
        let mid = (f64::from(x) + f64::from(next)) / 2.0; // exact in f64
        let m = f64::from_bits(mid.to_bits().wrapping_add_signed(nudge));
        let text = if fixed && m.abs() > 1e-30 && m.abs() < 1e30 {
            format!("{m:.digits$}")
        } else {
            format!("{m:.digits$e}")
        };
        let body = format!("[[{text},{m:e},{m}]]");
        let want: Vec<f32> = reference(body.as_bytes(), "/0");
        match parse(Protocol::Tei, body.as_bytes()) {
            Ok(out) => prop_assert_eq!(bits(out.embedding(0)), bits(&want), "{}", body),
            Err(ParseError::NonFinite { index }) => prop_assert!(!want[index].is_finite()),
            Err(e) => prop_assert!(false, "{}: {}", body, e),
        }
    }

    /// Arbitrary bytes never panic, and nothing serde_json rejects is accepted.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        for protocol in ALL {
            if let Ok(out) = extractor_for(protocol).parse(&body) {
                prop_assert!(serde_json::from_slice::<Value>(&body).is_ok());
                prop_assert!(!out.data.is_empty());
            }
        }
    }

    /// JSON-ish noise (the bytes JSON is made of) never panics either.
    #[test]
    fn json_alphabet_noise_never_panics(body in "[\\[\\]{}\",:0-9eE.+\\- a-zNIT\\\\]{0,120}") {
        for protocol in ALL {
            if extractor_for(protocol).parse(body.as_bytes()).is_ok() {
                prop_assert!(serde_json::from_slice::<Value>(body.as_bytes()).is_ok());
            }
        }
    }

    /// One byte of a valid fixture changed, dropped or duplicated: an error or an output
    /// that serde_json agrees with, never a panic.
    #[test]
    fn mutated_fixtures_never_panic(
        which in 0..FIXTURES.len(),
        at in any::<prop::sample::Index>(),
        byte: u8,
        op in 0..3u8,
    ) {
        let (name, protocol) = FIXTURES[which];
        let mut body = fixture(name);
        let i = at.index(body.len());
        match op {
            0 => body[i] = byte,
            1 => { body.remove(i); }
            _ => body.insert(i, byte),
        }
        let ex = extractor_for(protocol);
        if let Ok(out) = ex.parse(&body) {
            prop_assert!(serde_json::from_slice::<Value>(&body).is_ok());
            prop_assert!(out.data.iter().all(|x| x.is_finite()));
        }
    }
}

/// Every item of a batch, in input order, for each protocol's batch form.
#[test]
fn batches_give_one_item_per_input_in_every_protocol() {
    let rows = |o: &ModelOutput| -> Vec<Vec<f32>> {
        (0..o.items()).map(|i| o.embedding(i).to_vec()).collect()
    };
    let want = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]];
    let openai = br#"{"object":"list","data":[
        {"object":"embedding","index":0,"embedding":[1,2]},
        {"object":"embedding","index":1,"embedding":[3,4e0]},
        {"object":"embedding","index":2,"embedding":[5,6]}],"model":"m"}"#;
    assert_eq!(rows(&parse(Protocol::OpenAi, openai).unwrap()), want);

    // `index` out of order: items are put back in input order.
    let shuffled = br#"{"data":[{"index":2,"embedding":[5,6]},{"embedding":[1,2],"index":0},{"index":1,"embedding":[3,4]}]}"#;
    assert_eq!(rows(&parse(Protocol::OpenAi, shuffled).unwrap()), want);

    // base64 items (little-endian f32).
    let b64 = |v: &[f32]| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let body = format!(
        r#"{{"data":[{{"index":1,"embedding":"{}"}},{{"index":0,"embedding":"{}"}},{{"index":2,"embedding":"{}"}}]}}"#,
        b64(&want[1]),
        b64(&want[0]),
        b64(&want[2])
    );
    assert_eq!(
        rows(&parse(Protocol::OpenAi, body.as_bytes()).unwrap()),
        want
    );

    let tei = br#"[[1,2],[3,4],[5,6]]"#;
    assert_eq!(rows(&parse(Protocol::Tei, tei).unwrap()), want);

    let kserve =
        br#"{"outputs":[{"name":"e","shape":[3,2],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#;
    assert_eq!(rows(&parse(Protocol::KServeV2, kserve).unwrap()), want);
    let kserve_nested = br#"{"outputs":[{"shape":[3,2],"data":[[1,2],[3,4],[5,6]]}]}"#;
    assert_eq!(
        rows(&parse(Protocol::KServeV2, kserve_nested).unwrap()),
        want
    );

    let tf = br#"{"predictions":[[1,2],[3,4],[5,6]]}"#;
    assert_eq!(rows(&parse(Protocol::TfServing, tf).unwrap()), want);

    // Generic: a `*` pointer, or a pointer at a 2-D array.
    let star = Extractor::new(Protocol::Generic, "/results/*/vec", "/results/*/label").unwrap();
    let body = br#"{"results":[{"vec":[1,2],"label":"a"},{"vec":[3,4],"label":null},{"label":"c","vec":[5,6]}]}"#;
    let out = star.parse(body).unwrap();
    assert_eq!(rows(&out), want);
    assert_eq!(
        (out.prediction(0), out.prediction(1), out.prediction(2)),
        (Some("a"), None, Some("c"))
    );
    let matrix = Extractor::new(Protocol::Generic, "/vectors", "").unwrap();
    assert_eq!(
        rows(&matrix.parse(br#"{"vectors":[[1,2],[3,4],[5,6]]}"#).unwrap()),
        want
    );
    assert_eq!(
        rows(&matrix.parse(br#"{"vectors":[1,2]}"#).unwrap()),
        vec![vec![1.0, 2.0]]
    );
}

/// Per-item predictions follow `index` like the embeddings; a prediction pointer without
/// `*` belongs to item 0.
#[test]
fn batch_predictions_follow_their_items() {
    let ex = Extractor::new(Protocol::OpenAi, "", "/data/*/label").unwrap();
    let body = br#"{"data":[{"index":1,"embedding":[3],"label":"b"},{"index":0,"embedding":[1],"label":"a"}]}"#;
    let out = ex.parse(body).unwrap();
    assert_eq!(out.embedding(0), &[1.0]);
    assert_eq!(
        (out.prediction(0), out.prediction(1)),
        (Some("a"), Some("b"))
    );
    let one = Extractor::new(Protocol::OpenAi, "", "/model").unwrap();
    let out = one
        .parse(br#"{"data":[{"index":0,"embedding":[1]},{"index":1,"embedding":[3]}],"model":"m"}"#)
        .unwrap();
    assert_eq!((out.prediction(0), out.prediction(1)), (Some("m"), None));
    let missing =
        br#"{"data":[{"index":0,"embedding":[1],"label":"a"},{"index":1,"embedding":[3]}]}"#;
    assert_eq!(ex.parse(missing).unwrap_err().kind(), "item_count");
}

/// Batches that cannot be items: each is an error of its own kind.
#[test]
fn broken_batches_are_errors() {
    let cases: &[(Protocol, &[u8], &str)] = &[
        (Protocol::Tei, b"[[1,2],[3]]", "ragged"),
        (
            Protocol::OpenAi,
            br#"{"data":[{"index":0,"embedding":[1,2]},{"index":1,"embedding":[3]}]}"#,
            "ragged",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[3]}]}"#,
            "bad_index",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"index":0,"embedding":[1]},{"index":5,"embedding":[3]}]}"#,
            "bad_index",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"index":0,"embedding":[1]},{"embedding":[3]}]}"#,
            "bad_index",
        ),
        (
            Protocol::OpenAi,
            br#"{"data":[{"index":-1,"embedding":[1]}]}"#,
            "wrong_type",
        ),
        (Protocol::OpenAi, br#"{"data":[]}"#, "missing_field"),
        (Protocol::Tei, b"[]", "missing_field"),
        (Protocol::TfServing, br#"{"predictions":[[1],[]]}"#, "empty"),
        (
            Protocol::KServeV2,
            br#"{"outputs":[{"shape":[2,3],"data":[1,2,3,4,5]}]}"#,
            "shape",
        ),
    ];
    for (p, body, kind) in cases {
        let got = parse(*p, body).map(|o| o.items());
        assert_eq!(
            got.as_ref().map_err(ParseError::kind),
            Err(*kind),
            "{p}: {}",
            String::from_utf8_lossy(body)
        );
    }
}

/// A batch over the cap is refused, whatever its protocol's shape.
#[test]
fn too_many_items_is_refused() {
    let tei = format!("[{}]", ["[1]"; 11].join(","));
    let ex = Extractor::new(Protocol::Tei, "", "")
        .unwrap()
        .with_max_items(10);
    assert_eq!(
        ex.parse(tei.as_bytes()).unwrap_err().kind(),
        "too_many_items"
    );
    let ok = format!("[{}]", ["[1]"; 10].join(","));
    assert_eq!(ex.parse(ok.as_bytes()).unwrap().items(), 10);
    let kserve = Extractor::new(Protocol::KServeV2, "", "")
        .unwrap()
        .with_max_items(10);
    let body = format!(
        r#"{{"outputs":[{{"shape":[11,1],"data":[{}]}}]}}"#,
        ["1"; 11].join(",")
    );
    assert_eq!(
        kserve.parse(body.as_bytes()).unwrap_err().kind(),
        "too_many_items"
    );
}

/// A batch of 10 000 tiny items parses within the default cap's refusal, and one of
/// 2048 (the default cap) parses whole.
#[test]
fn ten_thousand_tiny_items() {
    let items: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"index":{i},"embedding":[{i}]}}"#))
        .collect();
    let body = format!(r#"{{"data":[{}]}}"#, items.join(","));
    let err = parse(Protocol::OpenAi, body.as_bytes()).unwrap_err();
    assert_eq!(err.kind(), "too_many_items");
    let body = format!(r#"{{"data":[{}]}}"#, items[..DEFAULT_MAX_ITEMS].join(","));
    let out = parse(Protocol::OpenAi, body.as_bytes()).unwrap();
    assert_eq!(out.items(), DEFAULT_MAX_ITEMS);
    assert_eq!(out.embedding(2047), &[2047.0]);
}
