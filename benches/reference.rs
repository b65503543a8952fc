//! The reference drift detector's cost per sampled embedding (`Detector::observe`: the
//! random-feature map, the norm, the window update and the score) at d = 384, 768, 1536
//! with the default D = 128 features and window 100, one sample at a time and a batch
//! at a time (`together/d`: `Detector::observe_many`, per sample); its state size is
//! printed.
//!
//! `cargo bench --bench reference`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use shadowgate::reference::{build, BuildParams, Detector};
use std::hint::black_box;
use std::time::Duration;

const DIMS: [usize; 3] = [384, 768, 1536];
/// Embeddings cycled through, so successive samples differ as in traffic.
const POOL: usize = 256;

/// Deterministic values in [-1, 1) (splitmix64).
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

fn observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference_observe");
    g.measurement_time(Duration::from_secs(3));
    for dim in DIMS {
        let x = Array2::from_shape_vec((2000, dim), fill(2000 * dim, 1)).unwrap();
        let r = build(
            x.view(),
            &BuildParams {
                ert: 100.0,
                ..BuildParams::new("bench")
            },
            0,
        )
        .unwrap();
        let mut det = Detector::new(&r);
        eprintln!(
            "reference d = {dim}: D = {}, window {}, detector state {} bytes ({:.3} MiB)",
            r.features,
            r.window,
            det.state_bytes(),
            det.state_bytes() as f64 / (1 << 20) as f64
        );
        let pool = fill(POOL * dim, 2);
        let mut i = 0;
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(dim), &dim, |b, &dim| {
            b.iter(|| {
                let v = &pool[(i % POOL) * dim..][..dim];
                i += 1;
                black_box(det.observe(black_box(v)))
            })
        });
        // What the scoring thread does with a drain of its queue: a batch at a time.
        let n = Detector::BATCH;
        let mut steps = Vec::with_capacity(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("together", dim), &dim, |b, &dim| {
            b.iter(|| {
                let start = i % (POOL - n);
                i += n;
                steps.clear();
                det.observe_many(black_box(&pool[start * dim..][..n * dim]), &mut steps);
                black_box(steps.last().copied())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
