//! Comparing one baseline/canary pair: cosine similarity and norms of the two embeddings
//! (simsimd kernels), and whether the two predictions agree.
//!
//! Pure code. simsimd maps NaN, ±Inf and all-zero vectors to a distance of 0 or 1, i.e.
//! to perfect or neutral agreement, which would silently bias the drift statistics; so
//! the squared norms are computed first (a NaN/Inf element makes them non-finite at no
//! extra cost) and bad inputs become a [`CompareError`] instead of a number.

use simsimd::SpatialSimilarity;

/// Result of comparing one baseline/canary embedding pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Cosine similarity in [-1, 1].
    pub cosine: f64,
    /// Euclidean norm of the baseline embedding (> 0).
    pub baseline_norm: f64,
    /// Euclidean norm of the canary embedding (> 0).
    pub canary_norm: f64,
}

/// Which side of the pair an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stable model version.
    Baseline,
    /// The new model version.
    Canary,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Baseline => "baseline",
            Side::Canary => "canary",
        })
    }
}

/// Why a pair of embeddings cannot be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// Both embeddings have no elements.
    #[error("empty embeddings (0 dimensions)")]
    Empty,
    /// The embeddings have different lengths (e.g. the canary changed its output size).
    #[error("dimension mismatch: baseline has {baseline} dimensions, canary has {canary}")]
    DimensionMismatch {
        /// Length of the baseline embedding.
        baseline: usize,
        /// Length of the canary embedding.
        canary: usize,
    },
    /// An element is NaN or infinite.
    #[error("{0} embedding has a non-finite element (NaN or infinity)")]
    NonFinite(Side),
    /// Every element is zero: the direction, hence the cosine, is undefined.
    #[error("{0} embedding is all zeros (norm 0), cosine undefined")]
    ZeroVector(Side),
}

/// Squared norms inside this range are computed accurately by simsimd's f32 accumulators;
/// outside it (overflow to Inf, or underflow towards subnormals) we recompute in f64.
const FAST_SQ_NORM_MIN: f64 = 1e-30;

/// Compares two embeddings: cosine similarity (clamped to [-1, 1]) and both norms.
///
/// Errors, checked in this order: [`CompareError::DimensionMismatch`],
/// [`CompareError::Empty`], [`CompareError::NonFinite`], [`CompareError::ZeroVector`]
/// (baseline side before canary side).
pub fn compare(baseline: &[f32], canary: &[f32]) -> Result<Comparison, CompareError> {
    if baseline.len() != canary.len() {
        return Err(CompareError::DimensionMismatch {
            baseline: baseline.len(),
            canary: canary.len(),
        });
    }
    if baseline.is_empty() {
        return Err(CompareError::Empty);
    }
    let b2 = sq_norm_fast(baseline);
    let c2 = sq_norm_fast(canary);
    if !(in_fast_range(b2) && in_fast_range(c2)) {
        return compare_slow(baseline, canary);
    }
    // Same f32 accumulation as simsimd's fused `cos` kernel, but we already hold the
    // squared norms, and an exact sqrt beats the kernel's rsqrt approximation near
    // cos = 1, where the distance histogram has its finest buckets.
    let bc = <f32 as SpatialSimilarity>::dot(baseline, canary).unwrap_or(f64::NAN);
    Ok(finish(bc, b2, c2))
}

/// Euclidean norm of `v` (0 for an empty slice; NaN/Inf propagate).
pub fn norm(v: &[f32]) -> f64 {
    let sq = sq_norm_fast(v);
    if in_fast_range(sq) || (sq == 0.0 && v.iter().all(|&x| x == 0.0)) {
        sq.sqrt()
    } else {
        sq_norm_f64(v).sqrt()
    }
}

/// Predictions agree: equal strings, or both parse as numbers that are equal (so
/// "1" == "1.0"; surrounding whitespace is ignored for the numeric comparison).
pub fn predictions_agree(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn sq_norm_fast(v: &[f32]) -> f64 {
    // `dot` only returns None for different lengths.
    <f32 as SpatialSimilarity>::dot(v, v).unwrap_or(f64::NAN)
}

fn in_fast_range(sq: f64) -> bool {
    sq.is_finite() && sq >= FAST_SQ_NORM_MIN
}

fn finish(bc: f64, b2: f64, c2: f64) -> Comparison {
    let (bn, cn) = (b2.sqrt(), c2.sqrt());
    Comparison {
        cosine: (bc / (bn * cn)).clamp(-1.0, 1.0),
        baseline_norm: bn,
        canary_norm: cn,
    }
}

/// Rare path: a non-finite element, an all-zero vector, or magnitudes that overflow or
/// underflow f32 accumulators. f64 holds any f32 product exactly in range.
#[cold]
fn compare_slow(baseline: &[f32], canary: &[f32]) -> Result<Comparison, CompareError> {
    for (v, side) in [(baseline, Side::Baseline), (canary, Side::Canary)] {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(CompareError::NonFinite(side));
        }
    }
    let b2 = sq_norm_f64(baseline);
    let c2 = sq_norm_f64(canary);
    for (sq, side) in [(b2, Side::Baseline), (c2, Side::Canary)] {
        if sq == 0.0 {
            return Err(CompareError::ZeroVector(side));
        }
    }
    // Scale by the largest magnitude so tiny (subnormal) inputs keep their precision.
    let scale = |v: &[f32]| v.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
    let (sb, sc) = (scale(baseline), scale(canary));
    let (mut bc, mut bb, mut cc) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in baseline.iter().zip(canary) {
        let (x, y) = (f64::from(x) / sb, f64::from(y) / sc);
        bc += x * y;
        bb += x * x;
        cc += y * y;
    }
    let cmp = finish(bc, bb, cc);
    Ok(Comparison {
        cosine: cmp.cosine,
        baseline_norm: b2.sqrt(),
        canary_norm: c2.sqrt(),
    })
}

fn sq_norm_f64(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: plain f64 loop.
    fn cos_f64(a: &[f32], b: &[f32]) -> f64 {
        let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa.sqrt() * bb.sqrt())
    }

    /// Deterministic pseudo-random vector in [-1, 1)^dim (splitmix64).
    fn vector(seed: u64, dim: usize) -> Vec<f32> {
        let mut s = seed;
        (0..dim)
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

    fn cos(a: &[f32], b: &[f32]) -> f64 {
        compare(a, b).map(|c| c.cosine).unwrap_or(f64::NAN)
    }

    #[test]
    fn identical_vector_has_cosine_one() {
        for dim in [1, 3, 16, 17, 384, 1536] {
            let v = vector(dim as u64, dim);
            let c = compare(&v, &v).unwrap();
            assert!((c.cosine - 1.0).abs() < 1e-6, "dim {dim}: {}", c.cosine);
            assert!((c.baseline_norm - c.canary_norm).abs() < 1e-12);
        }
    }

    #[test]
    fn opposite_vector_has_cosine_minus_one() {
        for dim in [1, 5, 768, 4096] {
            let v = vector(dim as u64 + 7, dim);
            let w: Vec<f32> = v.iter().map(|x| -x).collect();
            assert!((cos(&v, &w) + 1.0).abs() < 1e-6, "dim {dim}");
        }
    }

    #[test]
    fn agrees_with_f64_loop_at_every_size_up_to_4096() {
        for dim in (1..=64).chain((65..=4096).step_by(61)).chain([4096]) {
            let a = vector(2 * dim as u64, dim);
            let b = vector(2 * dim as u64 + 1, dim);
            let (got, want) = (compare(&a, &b).unwrap(), cos_f64(&a, &b));
            assert!(
                (got.cosine - want).abs() < 1e-5,
                "dim {dim}: {} vs {want}",
                got.cosine
            );
            let want_norm = sq_norm_f64(&a).sqrt();
            assert!(
                (got.baseline_norm - want_norm).abs() < 1e-5 * want_norm,
                "dim {dim}"
            );
            assert!((norm(&a) - want_norm).abs() < 1e-5 * want_norm, "dim {dim}");
        }
    }

    /// b = c·u + sqrt(1 − c²)·n with u, n orthonormal has cosine c with u (and with a, for
    /// a = k·u).
    #[test]
    fn constructed_vector_has_requested_cosine() {
        let dim = 768;
        let a = vector(11, dim);
        let an = sq_norm_f64(&a).sqrt();
        let u: Vec<f64> = a.iter().map(|&x| f64::from(x) / an).collect();
        // Gram-Schmidt a second random vector against u.
        let r = vector(12, dim);
        let proj: f64 = r.iter().zip(&u).map(|(&x, y)| f64::from(x) * y).sum();
        let n: Vec<f64> = r
            .iter()
            .zip(&u)
            .map(|(&x, y)| f64::from(x) - proj * y)
            .collect();
        let nn = n.iter().map(|x| x * x).sum::<f64>().sqrt();
        for c in [-0.9, -0.3, 0.0, 0.5, 0.8, 0.92, 0.99, 0.999] {
            let s = (1.0f64 - c * c).sqrt();
            let b: Vec<f32> = u
                .iter()
                .zip(&n)
                .map(|(ui, ni)| (c * ui + s * ni / nn) as f32)
                .collect();
            let got = cos(&a, &b);
            assert!((got - c).abs() < 1e-5, "c {c}: got {got}");
        }
    }

    #[test]
    fn error_cases() {
        assert_eq!(compare(&[], &[]), Err(CompareError::Empty));
        assert_eq!(
            compare(&[1.0, 2.0], &[1.0]),
            Err(CompareError::DimensionMismatch {
                baseline: 2,
                canary: 1
            })
        );
        let nan = [1.0, f32::NAN, 0.5];
        let inf = [1.0, 0.5, f32::INFINITY];
        let ok = [1.0, 2.0, 3.0];
        let zero = [0.0, -0.0, 0.0];
        assert_eq!(
            compare(&nan, &ok),
            Err(CompareError::NonFinite(Side::Baseline))
        );
        assert_eq!(
            compare(&ok, &inf),
            Err(CompareError::NonFinite(Side::Canary))
        );
        assert_eq!(
            compare(&ok, &[f32::NEG_INFINITY, 0.0, 0.0]),
            Err(CompareError::NonFinite(Side::Canary))
        );
        assert_eq!(
            compare(&zero, &ok),
            Err(CompareError::ZeroVector(Side::Baseline))
        );
        assert_eq!(
            compare(&ok, &zero),
            Err(CompareError::ZeroVector(Side::Canary))
        );
        // Non-finite wins over zero on the other side, baseline side first.
        assert_eq!(
            compare(&zero, &nan),
            Err(CompareError::NonFinite(Side::Canary))
        );
        assert_eq!(
            compare(&nan, &nan),
            Err(CompareError::NonFinite(Side::Baseline))
        );
        // Error messages carry the numbers and the side.
        let msg = compare(&[1.0; 3], &[1.0; 4]).unwrap_err().to_string();
        assert_eq!(
            msg,
            "dimension mismatch: baseline has 3 dimensions, canary has 4"
        );
        assert!(CompareError::NonFinite(Side::Canary)
            .to_string()
            .starts_with("canary "));
        assert!(CompareError::ZeroVector(Side::Baseline)
            .to_string()
            .starts_with("baseline "));
    }

    /// Magnitudes whose squares overflow or underflow f32 still compare correctly.
    #[test]
    fn extreme_magnitudes_take_the_exact_path() {
        let a = [3.0e30f32, 4.0e30, 0.0];
        let b = [4.0e30f32, 3.0e30, 0.0];
        let c = compare(&a, &b).unwrap();
        // 3e30 is not exact in f32: compare with the f64 reference tightly, 24/25 loosely.
        assert!((c.cosine - cos_f64(&a, &b)).abs() < 1e-12, "{}", c.cosine);
        assert!((c.cosine - 24.0 / 25.0).abs() < 1e-7, "{}", c.cosine);
        assert!((c.baseline_norm - 5.0e30).abs() < 1e-6 * 5.0e30);
        let tiny = [3.0e-30f32, 4.0e-30, 0.0];
        let c = compare(&tiny, &b).unwrap();
        assert!((c.cosine - 24.0 / 25.0).abs() < 1e-6, "{}", c.cosine);
        assert!((c.baseline_norm / 5.0e-30 - 1.0).abs() < 1e-6);
        let sub = [1.0e-44f32, 0.0];
        let c = compare(&sub, &[1.0, 0.0]).unwrap();
        assert!((c.cosine - 1.0).abs() < 1e-12);
        assert!((norm(&a) - 5.0e30).abs() < 1e-6 * 5.0e30);
        assert_eq!(norm(&[0.0, 0.0]), 0.0);
        assert!(norm(&[f32::NAN]).is_nan());
    }

    #[test]
    fn predictions_agree_cases() {
        assert!(predictions_agree("cat", "cat"));
        assert!(!predictions_agree("cat", "Cat"));
        assert!(predictions_agree("1", "1.0"));
        assert!(predictions_agree("0.5", " 5e-1"));
        assert!(predictions_agree("-0", "0"));
        assert!(!predictions_agree("1", "1.0001"));
        assert!(!predictions_agree("1", "one"));
        assert!(!predictions_agree("", "0"));
        assert!(predictions_agree("", ""));
    }

    fn vec_pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (1usize..300).prop_flat_map(|n| {
            (
                proptest::collection::vec(-100.0f32..100.0, n),
                proptest::collection::vec(-100.0f32..100.0, n),
            )
        })
    }

    proptest! {
        #[test]
        fn prop_matches_reference_symmetric_scale_invariant(
            (a, b) in vec_pair(),
            k in 0.001f32..1000.0,
        ) {
            // Random vectors can be all-zero only with negligible probability; skip them.
            prop_assume!(a.iter().any(|&x| x != 0.0) && b.iter().any(|&x| x != 0.0));
            let ab = cos(&a, &b);
            prop_assert!((-1.0..=1.0).contains(&ab));
            prop_assert!((ab - cos_f64(&a, &b)).abs() < 1e-5);
            prop_assert!((ab - cos(&b, &a)).abs() < 1e-6);
            let kb: Vec<f32> = b.iter().map(|x| x * k).collect();
            prop_assert!((ab - cos(&a, &kb)).abs() < 1e-5);
            prop_assert!((cos(&a, &a) - 1.0).abs() < 1e-6);
            let neg: Vec<f32> = a.iter().map(|x| -x).collect();
            prop_assert!((cos(&a, &neg) + 1.0).abs() < 1e-6);
        }
    }
}
