//! `out = W x` for the random-feature map: `D` rows of length `d`, one sampled embedding.
//!
//! One simsimd dot product per row paid a call, a dispatch and a horizontal sum per row
//! (128 a sample), and loaded `x` again for each. Eight rows at a time share every load
//! of `x` and keep eight independent FMA chains in flight; with AVX2 and FMA (detected at
//! run time) that is a quarter of the per-row calls' time at d = 384
//! (`cargo bench --bench reference`, BENCHMARKS.md). The portable path is the same loop
//! for other machines.

/// Rows taken together.
const ROWS: usize = 8;

/// `out[r] = W[r] · x` for the `out.len()` rows of `w` (row-major, rows of `x.len()`).
pub fn matvec(w: &[f32], x: &[f32], out: &mut [f32]) {
    debug_assert_eq!(w.len(), out.len() * x.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has the features the function is compiled for (just detected);
        // it reads only within the slices' lengths (checked in it).
        unsafe {
            return avx2::matvec(w, x, out);
        }
    }
    portable(w, x, out);
}

/// Any machine: the same grouping in plain arithmetic.
fn portable(w: &[f32], x: &[f32], out: &mut [f32]) {
    let d = x.len();
    for (o, row) in out.iter_mut().zip(w.chunks_exact(d.max(1))) {
        *o = row.iter().zip(x).map(|(a, b)| a * b).sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::ROWS;

    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matvec(w: &[f32], x: &[f32], out: &mut [f32]) {
        let d = x.len();
        assert_eq!(w.len(), out.len() * d, "W is out.len() rows of x.len()");
        let lanes = d / 8 * 8;
        let (full, rest) = out.split_at_mut(out.len() / ROWS * ROWS);
        for (block, outs) in full.chunks_exact_mut(ROWS).enumerate() {
            let base = block * ROWS * d;
            let mut acc = [_mm256_setzero_ps(); ROWS];
            let mut j = 0;
            while j < lanes {
                // SAFETY: j + 8 ≤ d, and row r's j-th value is at base + r·d + j, inside
                // the ROWS·d values of this block (asserted above).
                let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(j)) };
                for (r, a) in acc.iter_mut().enumerate() {
                    let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add(base + r * d + j)) };
                    *a = _mm256_fmadd_ps(wv, xv, *a);
                }
                j += 8;
            }
            for (r, (o, a)) in outs.iter_mut().zip(acc).enumerate() {
                let row = &w[base + r * d..][..d];
                *o = unsafe { hsum(a) }
                    + row[lanes..]
                        .iter()
                        .zip(&x[lanes..])
                        .map(|(p, q)| p * q)
                        .sum::<f32>();
            }
        }
        let start = full.len() * d;
        super::portable(&w[start..], x, rest);
    }

    /// # Safety
    ///
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
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
}
