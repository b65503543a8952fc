//! `out = W x` for the random-feature map and the regions' centroids: `D` rows of length
//! `d`, for one sampled embedding or several at once.
//!
//! One simsimd dot product per row paid a call, a dispatch and a horizontal sum per row
//! (128 a sample), and loaded `x` again for each. Rows taken together share every load
//! of `x` and keep independent FMA chains in flight; with AVX2 and FMA (detected at run
//! time) that is a quarter of the per-row calls' time at d = 384. At d = 384 the
//! 128 rows (192 kB) do not fit the L1 cache, so one sample's product waits on the L2
//! cache for `W`: [`matmul`] takes three samples per load of a row into registers, and
//! every sample of the call per load of a block of rows into the L1 cache (the scoring
//! thread scores the answers of one drain of its queue together; `cargo bench --bench
//! reference`, BENCHMARKS.md).
//!
//! Every entry is summed the same way whatever the grouping (eight lanes of FMAs in the
//! order of `j`, the lanes added pairwise, then the `d mod 8` tail in order), so a
//! sample's features do not depend on which others it was scored with. The portable
//! path sums in the same order for other machines.

/// Rows taken together for one sample, and for a group of [`SAMPLES`].
const ROWS_ONE: usize = 8;
const ROWS_GROUP: usize = 4;
/// Samples taken together: 4 rows × 3 samples are 12 accumulators, with the three
/// samples' loads and a row's in the 16 AVX registers.
const SAMPLES: usize = 3;

/// `out[r] = W[r] · x` for the `out.len()` rows of `w` (row-major, rows of `x.len()`).
pub fn matvec(w: &[f32], x: &[f32], out: &mut [f32]) {
    matmul(w, x, x.len(), out);
}

/// `out[s·D + r] = W[r] · x_s` for the samples `x_s = xs[s·d..][..d]` and the `D` rows
/// of `w` (row-major, rows of `d`): `out.len() = n · D` for the `n = xs.len() / d`
/// samples. Each entry has the bits [`matvec`] gives it.
pub fn matmul(w: &[f32], xs: &[f32], d: usize, out: &mut [f32]) {
    let n = xs.len().checked_div(d).unwrap_or(0);
    if n == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    debug_assert_eq!(xs.len(), n * d);
    debug_assert_eq!(out.len() % n, 0);
    debug_assert_eq!(w.len(), out.len() / n * d);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has the features the function is compiled for (just detected);
        // it reads only within the slices' lengths (asserted in it).
        unsafe {
            return avx2::matmul(w, xs, d, out);
        }
    }
    portable(w, xs, d, out);
}

/// Any machine: each entry summed in eight lanes in the AVX2 path's order (without
/// fused multiply-adds: other bits), which vectorises.
fn portable(w: &[f32], xs: &[f32], d: usize, out: &mut [f32]) {
    let rows = out.len() / (xs.len() / d);
    let lanes = d / 8 * 8;
    for (x, outs) in xs.chunks_exact(d).zip(out.chunks_exact_mut(rows)) {
        for (o, row) in outs.iter_mut().zip(w.chunks_exact(d)) {
            let mut acc = [0.0f32; 8];
            for (wc, xc) in row[..lanes].chunks_exact(8).zip(x[..lanes].chunks_exact(8)) {
                for k in 0..8 {
                    acc[k] += wc[k] * xc[k];
                }
            }
            let even = (acc[0] + acc[4]) + (acc[2] + acc[6]);
            let odd = (acc[1] + acc[5]) + (acc[3] + acc[7]);
            *o = (even + odd) + tail(&row[lanes..], &x[lanes..]);
        }
    }
}

/// The `d mod 8` products past the last full lane group, summed in order.
#[inline(always)]
fn tail(row: &[f32], x: &[f32]) -> f32 {
    row.iter().zip(x).map(|(p, q)| p * q).sum()
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{tail, ROWS_GROUP, ROWS_ONE, SAMPLES};

    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul(w: &[f32], xs: &[f32], d: usize, out: &mut [f32]) {
        let n = xs.len() / d;
        let rows = out.len() / n;
        assert!(
            xs.len() == n * d && out.len() == n * rows && w.len() == rows * d,
            "W is rows of d, xs samples of d, out a row's entry per sample"
        );
        // Row blocks outermost: a block of `W` (4 rows, 6 kB at d = 384) stays in the L1
        // cache while every group of samples takes it, so `W` streams in once per call
        // whether it was evicted since the last call or not.
        let groups = n / SAMPLES * SAMPLES;
        let mut r0 = 0;
        while r0 + ROWS_GROUP <= rows {
            for s0 in (0..groups).step_by(SAMPLES) {
                // SAFETY: rows r0..r0 + ROWS_GROUP and samples s0..s0 + SAMPLES exist.
                unsafe { block::<ROWS_GROUP, SAMPLES>(w, xs, d, rows, s0, r0, out) };
            }
            r0 += ROWS_GROUP;
        }
        for r in r0..rows {
            for s0 in (0..groups).step_by(SAMPLES) {
                unsafe { block::<1, SAMPLES>(w, xs, d, rows, s0, r, out) };
            }
        }
        // The samples over the last group of three, one at a time.
        for s0 in groups..n {
            let mut r0 = 0;
            while r0 + ROWS_ONE <= rows {
                unsafe { block::<ROWS_ONE, 1>(w, xs, d, rows, s0, r0, out) };
                r0 += ROWS_ONE;
            }
            for r in r0..rows {
                unsafe { block::<1, 1>(w, xs, d, rows, s0, r, out) };
            }
        }
    }

    /// Rows `r0..r0 + R` for samples `s0..s0 + S`.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA; `r0 + R ≤ rows`, `s0 + S ≤ n`, and the slices'
    /// lengths as asserted in [`matmul`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const R: usize, const S: usize>(
        w: &[f32],
        xs: &[f32],
        d: usize,
        rows: usize,
        s0: usize,
        r0: usize,
        out: &mut [f32],
    ) {
        debug_assert!(r0 + R <= rows && (s0 + S) * d <= xs.len());
        let lanes = d / 8 * 8;
        let mut acc = [[_mm256_setzero_ps(); S]; R];
        let mut j = 0;
        while j < lanes {
            let mut xv = [_mm256_setzero_ps(); S];
            for (s, v) in xv.iter_mut().enumerate() {
                // SAFETY: j + 8 ≤ d, sample s0 + s < n: inside xs.
                *v = unsafe { _mm256_loadu_ps(xs.as_ptr().add((s0 + s) * d + j)) };
            }
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: j + 8 ≤ d, row r0 + r < rows: inside w.
                let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add((r0 + r) * d + j)) };
                for (a, x) in a.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(wv, *x, *a);
                }
            }
            j += 8;
        }
        for (r, a) in acc.iter().enumerate() {
            let row = &w[(r0 + r) * d..][..d];
            for (s, a) in a.iter().enumerate() {
                let x = &xs[(s0 + s) * d..][..d];
                out[(s0 + s) * rows + r0 + r] =
                    unsafe { hsum(*a) } + tail(&row[lanes..], &x[lanes..]);
            }
        }
    }

    /// The eight lanes added as the portable path adds them: `(0+4) + (2+6)` and
    /// `(1+5) + (3+7)`, then those two.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi); // [0+4, 1+5, 2+6, 3+7]
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s)); // [(0+4)+(2+6), (1+5)+(3+7), ..]
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_plain_dot_products_for_any_shape() {
        for (rows, d) in [(128, 384), (13, 7), (9, 33), (1, 1), (8, 16), (0, 5)] {
            let w: Vec<f32> = (0..rows * d)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0)
                .collect();
            let x: Vec<f32> = (0..d)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
                .collect();
            let mut out = vec![f32::NAN; rows];
            matvec(&w, &x, &mut out);
            for (r, o) in out.iter().enumerate() {
                let want: f64 = w[r * d..][..d]
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                assert!(
                    (f64::from(*o) - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{rows}×{d}, row {r}: {o} vs {want}"
                );
            }
        }
    }

    #[test]
    fn several_samples_at_once_give_each_sample_the_bits_of_one_at_a_time() {
        // Groups of three samples and single ones; rows in blocks of 4 and 8 and left
        // over; d with and without a tail.
        for (rows, d, n) in [(128, 384, 7), (13, 45, 5), (9, 8, 4), (3, 7, 3), (8, 16, 1)] {
            let w: Vec<f32> = (0..rows * d)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0)
                .collect();
            let xs: Vec<f32> = (0..n * d)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
                .collect();
            let mut together = vec![f32::NAN; n * rows];
            matmul(&w, &xs, d, &mut together);
            for (s, x) in xs.chunks_exact(d).enumerate() {
                let mut one = vec![f32::NAN; rows];
                matvec(&w, x, &mut one);
                for (r, (a, b)) in together[s * rows..][..rows].iter().zip(&one).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{rows}×{d}, sample {s}, row {r}");
                }
            }
        }
    }
}
