//! Embedding extraction throughput: shadowgate's scanner against the generic route
//! (`serde_json::Value`, then collect or base64-decode) and simd-json's, on OpenAI-shaped
//! bodies.

use std::hint::black_box;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use shadowgate::compare::compare;
use shadowgate::protocol::{Extractor, Protocol};
use simd_json::prelude::*;

const DIMS: [usize; 4] = [384, 768, 1536, 3072];

/// Deterministic embedding-like values (roughly N(0, 0.05) via a sum of uniforms).
fn values(dim: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ dim as u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..dim)
        .map(|_| ((uniform() + uniform() + uniform() - 1.5) * 0.1) as f32)
        .collect()
}

/// An OpenAI `/v1/embeddings` body. Float values are written as Python writes a float32
/// widened to float64 (up to 17 significant digits), as the OpenAI API does; compact as
/// most OpenAI-compatible servers send it, or indented as api.openai.com does.
fn openai_body(values: &[f32], base64: bool, pretty: bool) -> Vec<u8> {
    openai_batch_body(&[values.to_vec()], base64, pretty)
}

/// An OpenAI body with one `data` element per item, as a batched request gets.
fn openai_batch_body(items: &[Vec<f32>], base64: bool, pretty: bool) -> Vec<u8> {
    let embedding = |values: &[f32]| {
        if base64 {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            Value::from(values.iter().map(|&v| v as f64).collect::<Vec<_>>())
        }
    };
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": embedding(v)}))
        .collect();
    let doc = serde_json::json!({
        "object": "list",
        "data": data,
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8}
    });
    if pretty {
        serde_json::to_vec_pretty(&doc).expect("serialize bench body")
    } else {
        serde_json::to_vec(&doc).expect("serialize bench body")
    }
}

/// The generic route the scanner replaces.
fn via_value(body: &[u8]) -> Vec<f32> {
    let v: Value = serde_json::from_slice(body).expect("valid body");
    match &v["data"][0]["embedding"] {
        Value::Array(items) => items
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect(),
        Value::String(s) => decode_base64(s),
        other => panic!("unexpected {other}"),
    }
}

/// The f32s of a base64 embedding (little-endian), or panics.
fn decode_base64(s: &str) -> Vec<f32> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// simd-json's route: parse to its tape, then walk it (measured faster than
/// `to_borrowed_value`, which builds a DOM from the same tape: 44.8 vs 63.4 µs compact at
/// 768 dims, 104 vs 129 µs pretty at 1536). simd-json parses in place, so the copy of the
/// body into `scratch` is part of the cost.
fn via_simd_json(body: &[u8], scratch: &mut Vec<u8>) -> Vec<f32> {
    scratch.clear();
    scratch.extend_from_slice(body);
    let tape = simd_json::to_tape(scratch).expect("valid body");
    let v = tape.as_value();
    let e = v
        .get("data")
        .and_then(|d| d.as_array().and_then(|a| a.get(0)))
        .and_then(|d| d.get("embedding"))
        .expect("data[0].embedding");
    if let Some(items) = e.as_array() {
        items
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect()
    } else {
        decode_base64(e.as_str().expect("array or string"))
    }
}

fn bench(c: &mut Criterion) {
    let extractor = Extractor::new(Protocol::OpenAi, "", "").expect("extractor");
    let groups = [
        ("openai_float", false, false, &DIMS[..]),
        ("openai_base64", true, false, &DIMS[..]),
        ("openai_float_pretty", false, true, &DIMS[1..3]),
    ];
    for (name, base64, pretty, dims) in groups {
        let mut group = c.benchmark_group(name);
        for &dim in dims {
            let body = openai_body(&values(dim), base64, pretty);
            assert_eq!(
                extractor.parse(&body).expect("parse").embedding(0),
                via_value(&body)
            );
            let mut scratch = Vec::with_capacity(body.len());
            assert_eq!(via_simd_json(&body, &mut scratch), via_value(&body));
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::new("shadowgate", dim), &body, |b, body| {
                b.iter(|| extractor.parse(black_box(body)).expect("parse"))
            });
            group.bench_with_input(BenchmarkId::new("serde_value", dim), &body, |b, body| {
                b.iter(|| via_value(black_box(body)))
            });
            group.bench_with_input(BenchmarkId::new("simd_json", dim), &body, |b, body| {
                b.iter(|| via_simd_json(black_box(body), &mut scratch))
            });
        }
        group.finish();
    }
}

/// Per-item cost of a batch: N items in one answer against N single answers, with
/// throughput in elements (items), so the report reads as items per second.
fn bench_batches(c: &mut Criterion) {
    let extractor = Extractor::new(Protocol::OpenAi, "", "").expect("extractor");
    for dim in [384usize, 768] {
        let mut group = c.benchmark_group(format!("openai_batch_{dim}"));
        for n in [1usize, 8, 32] {
            let items: Vec<Vec<f32>> = (0..n).map(|i| values(dim + i)[..dim].to_vec()).collect();
            let batch = openai_batch_body(&items, false, false);
            let singles: Vec<Vec<u8>> =
                items.iter().map(|v| openai_body(v, false, false)).collect();
            let out = extractor.parse(&batch).expect("parse");
            assert_eq!(out.items(), n);
            for (i, single) in singles.iter().enumerate() {
                let one = extractor.parse(single).expect("parse");
                assert_eq!(out.embedding(i), one.embedding(0));
            }
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new("batch", n), &batch, |b, body| {
                b.iter(|| extractor.parse(black_box(body)).expect("parse"))
            });
            group.bench_with_input(BenchmarkId::new("singles", n), &singles, |b, bodies| {
                b.iter(|| {
                    for body in bodies {
                        black_box(extractor.parse(black_box(body)).expect("parse"));
                    }
                })
            });
            // The whole comparison of one mirrored request: both answers parsed, every
            // item's cosine (what the mirror does per request, minus I/O).
            let canary: Vec<Vec<f32>> = (0..n)
                .map(|i| values(dim + 100 + i)[..dim].to_vec())
                .collect();
            let canary_batch = openai_batch_body(&canary, false, false);
            let canary_singles: Vec<Vec<u8>> = canary
                .iter()
                .map(|v| openai_body(v, false, false))
                .collect();
            group.bench_function(BenchmarkId::new("pair_batch", n), |b| {
                b.iter(|| {
                    let bo = extractor.parse(black_box(&batch)).expect("parse");
                    let co = extractor.parse(black_box(&canary_batch)).expect("parse");
                    for i in 0..bo.items() {
                        black_box(compare(bo.embedding(i), co.embedding(i)).expect("compare"));
                    }
                })
            });
            group.bench_function(BenchmarkId::new("pair_singles", n), |b| {
                b.iter(|| {
                    for (bb, cb) in singles.iter().zip(&canary_singles) {
                        let bo = extractor.parse(black_box(bb)).expect("parse");
                        let co = extractor.parse(black_box(cb)).expect("parse");
                        black_box(compare(bo.embedding(0), co.embedding(0)).expect("compare"));
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench, bench_batches);
criterion_main!(benches);
