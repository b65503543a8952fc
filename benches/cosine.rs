//! Cosine of one baseline/canary pair: `shadowgate::compare::compare` (simsimd dot
//! kernels + validity checks) against a plain scalar loop and the bare simsimd `cos`
//! kernel (no checks, no norms), in cache at typical embedding sizes and streamed from
//! DRAM over 256 MiB of pairs.
//!
//! `cargo bench --bench cosine` (add `-- pairs` / `-- bytes` / `-- stream` to filter).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shadowgate::compare::compare;
use simsimd::SpatialSimilarity;
use std::hint::black_box;
use std::time::Duration;

const DIMS: [usize; 4] = [384, 768, 1536, 3072];
/// In-cache pool of pairs per dimension: ~256 KiB, so successive pairs differ (no single
/// pair pinned in L1) and the pool stays in L2.
const POOL_BYTES: usize = 256 << 10;
/// Streamed case: enough pairs that each pass reads from DRAM, not cache.
const STREAM_BYTES: usize = 256 << 20;
const STREAM_DIM: usize = 768;

/// Deterministic values in [-1, 1) (splitmix64); the bench needs data, not randomness.
fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// What a first version would write: one pass, f32 accumulators, scalar code.
fn scalar_cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (&x, &y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    f64::from(ab) / (f64::from(aa).sqrt() * f64::from(bb).sqrt())
}

fn simsimd_compare(a: &[f32], b: &[f32]) -> f64 {
    compare(a, b).map_or(f64::NAN, |c| c.cosine)
}

/// Lower bound on cost: the fused kernel alone (cosine distance, no checks, no norms).
fn simsimd_kernel(a: &[f32], b: &[f32]) -> f64 {
    1.0 - <f32 as SpatialSimilarity>::cos(a, b).unwrap_or(f64::NAN)
}

type Cosine = fn(&[f32], &[f32]) -> f64;
const IMPLS: [(&str, Cosine); 3] = [
    ("compare", simsimd_compare),
    ("scalar_loop", scalar_cosine),
    ("simsimd_cos_kernel", simsimd_kernel),
];

/// Sum of cosines over all pairs of two flat arrays (the sum keeps the work observable).
fn run(f: Cosine, base: &[f32], canary: &[f32], dim: usize) -> f64 {
    base.chunks_exact(dim)
        .zip(canary.chunks_exact(dim))
        .map(|(a, b)| f(a, b))
        .sum()
}

fn in_cache(c: &mut Criterion, unit: &str) {
    let mut group = c.benchmark_group(format!("cosine_{unit}"));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for dim in DIMS {
        let pairs = (POOL_BYTES / (2 * 4 * dim)).max(1);
        let base = fill(pairs * dim, dim as u64);
        let canary = fill(pairs * dim, dim as u64 + 1);
        group.throughput(if unit == "pairs" {
            Throughput::Elements(pairs as u64)
        } else {
            Throughput::Bytes((2 * 4 * dim * pairs) as u64)
        });
        for (name, f) in IMPLS {
            group.bench_with_input(BenchmarkId::new(name, dim), &dim, |b, &dim| {
                b.iter(|| run(f, black_box(&base), black_box(&canary), dim))
            });
        }
    }
    group.finish();
}

fn pairs(c: &mut Criterion) {
    in_cache(c, "pairs");
}

fn bytes(c: &mut Criterion) {
    in_cache(c, "bytes");
}

fn stream(c: &mut Criterion) {
    let pairs = STREAM_BYTES / (2 * 4 * STREAM_DIM);
    let base = fill(pairs * STREAM_DIM, 1);
    let canary = fill(pairs * STREAM_DIM, 2);
    let mut group = c.benchmark_group("cosine_stream_256MiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::BytesDecimal(
            (2 * 4 * STREAM_DIM * pairs) as u64,
        ));
    for (name, f) in IMPLS {
        group.bench_function(BenchmarkId::new(name, STREAM_DIM), |b| {
            b.iter(|| run(f, black_box(&base), black_box(&canary), STREAM_DIM))
        });
    }
    group.finish();
}

criterion_group!(benches, pairs, bytes, stream);
criterion_main!(benches);
