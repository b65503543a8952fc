//! Cost per item of reading a batched embedding answer: an OIP v2 gRPC answer with the
//! batch in `raw_output_contents` (framed body to `ModelOutput`) against the same
//! embeddings as an OpenAI JSON answer through the JSON scanner (`Extractor`).
//!
//! Throughput is set in items, so criterion prints items/s; time per item is the
//! reported time divided by the batch size (32).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use shadowgate::grpc::frame::encode;
use shadowgate::grpc::pb::oip;
use shadowgate::grpc::{GrpcDecoder, GrpcProtocol};
use shadowgate::protocol::{Extractor, Protocol};

const ITEMS: usize = 32;
const DIM: usize = 768;

/// Deterministic embedding-like values (roughly N(0, 0.05) via a sum of uniforms), as
/// benches/parse.rs makes them.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((uniform() + uniform() + uniform() - 1.5) * 0.1) as f32)
        .collect()
}

/// The framed `ModelInferResponse` body, FP32 `[ITEMS, DIM]` in raw contents.
fn oip_raw_body(data: &[f32]) -> Bytes {
    encode(&oip::ModelInferResponse {
        model_name: "embedder".into(),
        id: "bench".into(),
        outputs: vec![oip::InferOutputTensor {
            name: "embedding".into(),
            datatype: "FP32".into(),
            shape: vec![ITEMS as i64, DIM as i64],
            contents: None,
        }],
        raw_output_contents: vec![Bytes::from(
            data.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )],
        ..Default::default()
    })
}

/// The same batch as an OpenAI `/v1/embeddings` answer, floats written as Python writes
/// a float32 widened to float64 (as benches/parse.rs does).
fn openai_body(data: &[f32]) -> Vec<u8> {
    let items: Vec<Value> = data
        .chunks(DIM)
        .enumerate()
        .map(|(i, v)| {
            let embedding: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "object": "list",
        "data": items,
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8}
    }))
    .expect("serialize bench body")
}

fn bench(c: &mut Criterion) {
    let data = values(ITEMS * DIM, 7);
    let grpc_body = oip_raw_body(&data);
    let json_body = openai_body(&data);
    let decoder = GrpcDecoder::new(GrpcProtocol::OipV2, Some("embedding"));
    let extractor = Extractor::new(Protocol::OpenAi, "", "").expect("extractor");

    // Both paths give the same numbers before they are timed.
    let from_grpc = decoder.decode(&grpc_body).expect("grpc body");
    let from_json = extractor.parse(&json_body).expect("json body");
    assert_eq!(from_grpc.data, data);
    assert_eq!(from_json.data, data);
    assert_eq!((from_grpc.items(), from_json.items()), (ITEMS, ITEMS));

    let mut group = c.benchmark_group(format!("embeddings_{ITEMS}x{DIM}"));
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.bench_with_input(
        BenchmarkId::new("oip_v2_grpc_raw", grpc_body.len()),
        &grpc_body,
        |b, body| b.iter(|| decoder.decode(black_box(body)).expect("decode")),
    );
    group.bench_with_input(
        BenchmarkId::new("openai_json", json_body.len()),
        &json_body,
        |b, body| b.iter(|| extractor.parse(black_box(body)).expect("parse")),
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
