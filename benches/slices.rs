//! Slice assignment of one pair (`Slicer::assign`: length bucket, field lookup, nearest
//! region), at typical embedding sizes with 16 and 32 codebook centroids and with the
//! default hyperplane regions; and recording one pair into the per-slice statistics.
//!
//! `cargo bench --bench slices` (add `-- assign` / `-- record` to filter).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shadowgate::drift::DriftConfig;
use shadowgate::slices::{PairRef, SliceStats, Slicer, SlicesConfig};
use std::hint::black_box;
use std::time::Duration;

const DIMS: [usize; 2] = [384, 768];
/// Embeddings cycled through, so successive pairs differ (as in traffic) and stay in L2.
const POOL: usize = 64;

/// Deterministic values in [-1, 1) (splitmix64), shifted so the data sit in a cone.
fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 + 0.05 * (i % 7) as f32
        })
        .collect()
}

fn slicer(dim: usize, k: Option<usize>) -> Slicer {
    let mut cfg = SlicesConfig::default();
    cfg.field.header = "x-tenant".into();
    cfg.field.values = vec!["a".into(), "b".into(), "c".into(), "d".into()];
    if let Some(k) = k {
        cfg.length_edges.clear();
        cfg.field = Default::default();
        cfg.centroids = (0..k).map(|j| fill(dim, 1000 + j as u64)).collect();
    }
    cfg.slicer().expect("valid slices config")
}

fn assign(c: &mut Criterion) {
    let mut g = c.benchmark_group("assign");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    let input = vec![b'x'; 300];
    for dim in DIMS {
        let pool: Vec<Vec<f32>> = (0..POOL).map(|i| fill(dim, i as u64)).collect();
        for (name, k) in [
            ("centroids16", Some(16)),
            ("centroids32", Some(32)),
            ("default", None),
        ] {
            let s = slicer(dim, k);
            let mut i = 0;
            g.bench_with_input(BenchmarkId::new(name, dim), &dim, |b, _| {
                b.iter(|| {
                    i = (i + 1) % POOL;
                    black_box(s.assign(Some(&input), Some("c"), black_box(&pool[i])))
                })
            });
        }
    }
    g.finish();
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    let s = slicer(384, None);
    let mut stats = SliceStats::new(
        s.len(),
        &DriftConfig {
            window: Duration::from_secs(300),
            min_pairs: 50,
            floor: 0.8,
            alpha: 0.025,
        },
    );
    let e = fill(384, 1);
    let set = s.assign(Some(b"hello"), Some("a"), &e);
    let mut t = 0u32;
    g.bench_function("three_slices", |b| {
        b.iter(|| {
            t = t.wrapping_add(1);
            let pair = PairRef {
                cosine: 0.97 + 0.001 * f64::from(t % 13),
                request_id: "0190b1b2-0000-7000-8000-000000000000",
                item: 0,
                input: None,
            };
            stats.record(black_box(set), &pair);
        })
    });
    g.finish();
}

criterion_group!(benches, assign, record);
criterion_main!(benches);
