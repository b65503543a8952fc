//! Anytime-valid confidence sequence for the mean of observations in [0, 1], with O(1)
//! state: the predictable plug-in empirical-Bernstein CS (PrPl-EB) of Waudby-Smith &
//! Ramdas, "Estimating means of bounded random variables by betting", JRSS-B 2023,
//! Theorem 2 (arXiv:2010.09686), one-sided at `alpha` per side, with running intersection.
//!
//! # Construction
//!
//! For x₁, x₂, … in [0, 1] with constant conditional mean μ, t = 1, 2, …:
//!
//! ```text
//! μ̂_t  = (1/2 + Σ_{i≤t} x_i) / (t + 1)                        (μ̂_0 = 1/2)
//! σ̂²_t = (1/4 + Σ_{i≤t} (x_i − μ̂_i)²) / (t + 1)                (σ̂²_0 = 1/4)
//! λ_t  = min( sqrt(2 log(1/α) / (σ̂²_{t−1} · t · log(1 + t))), c ),   c = 1/2
//! v_t  = 4 (x_t − μ̂_{t−1})²
//! ψ_E(λ) = (−log(1 − λ) − λ) / 4
//! L_t, U_t = ( Σ λ_i x_i ∓ (log(1/α) + Σ v_i ψ_E(λ_i)) ) / Σ λ_i
//! lower_t = max(0, max_{s≤t} L_s),   upper_t = min(1, min_{s≤t} U_s)
//! ```
//!
//! λ_t and μ̂_{t−1} only use x₁…x_{t−1} (predictable), which is what makes
//! `exp(Σ λ_i (x_i − μ) − Σ v_i ψ_E(λ_i))` a nonnegative supermartingale (Fan et al.'s
//! inequality), hence by Ville's inequality P(∃t: μ < L_t) ≤ α; the mirror argument on
//! 1 − x gives P(∃t: μ > U_t) ≤ α. The paper's two-sided CS at level α uses log(2/α);
//! this type takes the per-side α directly (two-sided miscoverage ≤ 2α). Because each
//! one-sided bound is uniform over time, the running max/min is still valid.
//!
//! Assumption: the conditional mean is the same at every step (a canary that changes
//! behaviour over time, or a traffic mix that changes what "the mean" is, violates it;
//! the running intersection then can make the bounds cross, lower > upper, which is
//! itself evidence that the mean moved). Observations are clamped to [0, 1]; non-finite
//! ones are ignored.

/// Largest bet λ. The paper suggests 1/2 or 3/4; 1/2 keeps ψ_E(λ) ≤ 0.05, so a single
/// surprising observation can move the bound only a little.
const LAMBDA_CAP: f64 = 0.5;

/// Anytime-valid confidence sequence for the mean of [0, 1]-valued observations (PrPl-EB,
/// see the module doc). `Send`, 11 words of state, O(1) per observation.
#[derive(Debug, Clone)]
pub struct ConfidenceSequence {
    /// log(1/α) for the per-side α.
    log_inv_alpha: f64,
    count: u64,
    sum_x: f64,
    /// μ̂_{t} after t observations.
    mean_hat: f64,
    /// Σ (x_i − μ̂_i)², for σ̂².
    sum_sq_dev: f64,
    /// σ̂²_{t} after t observations.
    var_hat: f64,
    sum_lambda: f64,
    sum_lambda_x: f64,
    /// Σ v_i ψ_E(λ_i).
    sum_penalty: f64,
    lower: f64,
    upper: f64,
}

/// ln(1/α) for a bound at miscoverage `alpha_per_side`, clamped to [0, 0.5]; 0 or NaN
/// give +∞ (1/0 = +inf: every margin is infinite and the bounds stay trivial forever).
/// Shared by every sequence of the drift statistics.
pub(crate) fn log_inv_alpha(alpha_per_side: f64) -> f64 {
    let alpha = if alpha_per_side.is_nan() {
        0.0
    } else {
        alpha_per_side.clamp(0.0, 0.5)
    };
    (1.0 / alpha).ln()
}

impl ConfidenceSequence {
    /// A new sequence with miscoverage `alpha_per_side` for each of the two bounds.
    ///
    /// `alpha_per_side` is clamped to [0, 0.5]; 0 or NaN give the trivial bounds (0, 1)
    /// forever. Configuration validation should reject such values before this point.
    pub fn new(alpha_per_side: f64) -> Self {
        Self {
            log_inv_alpha: log_inv_alpha(alpha_per_side),
            count: 0,
            sum_x: 0.0,
            mean_hat: 0.5,
            sum_sq_dev: 0.0,
            var_hat: 0.25,
            sum_lambda: 0.0,
            sum_lambda_x: 0.0,
            sum_penalty: 0.0,
            lower: 0.0,
            upper: 1.0,
        }
    }

    /// Adds one observation (clamped to [0, 1]; NaN and ±Inf are ignored).
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        let x = x.clamp(0.0, 1.0);
        let t = (self.count + 1) as f64;

        // The bet uses only the past: σ̂²_{t−1} and μ̂_{t−1}.
        let lambda = (2.0 * self.log_inv_alpha / (self.var_hat * t * t.ln_1p()))
            .sqrt()
            .min(LAMBDA_CAP);
        let dev = x - self.mean_hat;
        let psi = (-(-lambda).ln_1p() - lambda) / 4.0;
        self.sum_penalty += 4.0 * dev * dev * psi;
        self.sum_lambda += lambda;
        self.sum_lambda_x += lambda * x;

        self.count += 1;
        self.sum_x += x;
        self.mean_hat = (0.5 + self.sum_x) / (t + 1.0);
        let dev_now = x - self.mean_hat;
        self.sum_sq_dev += dev_now * dev_now;
        self.var_hat = (0.25 + self.sum_sq_dev) / (t + 1.0);

        let center = self.sum_lambda_x / self.sum_lambda;
        let margin = (self.log_inv_alpha + self.sum_penalty) / self.sum_lambda;
        self.lower = self.lower.max(center - margin);
        self.upper = self.upper.min(center + margin);
    }

    /// Observations pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Plain mean of the observations so far (NaN before the first one).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum_x / self.count as f64
        }
    }

    /// (lower, upper) bound on the mean, each valid at `alpha_per_side` simultaneously
    /// over all times; (0, 1) before any observation.
    pub fn bounds(&self) -> (f64, f64) {
        (self.lower, self.upper)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// splitmix64: tiny, seedable, good enough for Monte Carlo here.
    pub(crate) struct SplitMix(pub(crate) u64);

    impl SplitMix {
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub(crate) fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    struct Dist {
        name: &'static str,
        mean: f64,
        sample: fn(&mut SplitMix) -> f64,
    }

    const DISTS: [Dist; 5] = [
        // Beta(8, 1) = U^(1/8): skewed towards 1, like (1 + cos)/2 of a decent canary.
        Dist {
            name: "beta(8,1)",
            mean: 8.0 / 9.0,
            sample: |r| r.uniform().powf(1.0 / 8.0),
        },
        // Beta(1, 3) = 1 − U^(1/3).
        Dist {
            name: "beta(1,3)",
            mean: 0.25,
            sample: |r| 1.0 - r.uniform().powf(1.0 / 3.0),
        },
        // Near-degenerate, close to the upper edge (identical-ish models).
        Dist {
            name: "u[.995,.999]",
            mean: 0.997,
            sample: |r| 0.995 + 0.004 * r.uniform(),
        },
        // Rare events: the low-similarity indicator.
        Dist {
            name: "bernoulli(.05)",
            mean: 0.05,
            sample: |r| if r.uniform() < 0.05 { 1.0 } else { 0.0 },
        },
        // Maximal variance.
        Dist {
            name: "bernoulli(.5)",
            mean: 0.5,
            sample: |r| if r.uniform() < 0.5 { 1.0 } else { 0.0 },
        },
    ];

    /// Share of streams whose lower (resp. upper) bound ever excludes the true mean.
    fn miscoverage(d: &Dist, alpha: f64, streams: u64, len: u64, seed: u64) -> (f64, f64) {
        let (mut low_miss, mut high_miss) = (0u32, 0u32);
        for s in 0..streams {
            let mut rng = SplitMix(seed ^ s.wrapping_mul(0xA076_1D64_78BD_642F));
            let mut cs = ConfidenceSequence::new(alpha);
            let (mut lm, mut hm) = (false, false);
            for _ in 0..len {
                cs.push((d.sample)(&mut rng));
                let (lo, hi) = cs.bounds();
                lm |= lo > d.mean;
                hm |= hi < d.mean;
            }
            low_miss += u32::from(lm);
            high_miss += u32::from(hm);
        }
        (
            f64::from(low_miss) / streams as f64,
            f64::from(high_miss) / streams as f64,
        )
    }

    /// 400 streams × 3000 observations per distribution; each side must be missed by at
    /// most α = 0.05 of the streams, with 0.02 of Monte-Carlo slack (~2 sd at 400).
    #[test]
    fn coverage_holds_uniformly_over_time() {
        let alpha = 0.05;
        for (k, d) in DISTS.iter().enumerate() {
            let (lo, hi) = miscoverage(d, alpha, 400, 3000, 0x5EED + k as u64);
            eprintln!("{:>15}: lower misses {lo:.4}, upper misses {hi:.4}", d.name);
            assert!(lo <= alpha + 0.02, "{}: lower bound missed in {lo}", d.name);
            assert!(hi <= alpha + 0.02, "{}: upper bound missed in {hi}", d.name);
        }
    }

    /// At a larger α the test has more power to catch an invalid (too narrow) bound.
    #[test]
    fn coverage_at_large_alpha() {
        let alpha = 0.2;
        for (k, d) in DISTS.iter().enumerate() {
            let (lo, hi) = miscoverage(d, alpha, 300, 2000, 0xC0FFEE + k as u64);
            eprintln!("{:>15}: lower misses {lo:.4}, upper misses {hi:.4}", d.name);
            assert!(
                lo <= alpha + 0.04 && hi <= alpha + 0.04,
                "{}: {lo} {hi}",
                d.name
            );
        }
    }

    fn width_at(d: &Dist, checkpoints: &[u64], seed: u64) -> Vec<f64> {
        let mut rng = SplitMix(seed);
        let mut cs = ConfidenceSequence::new(0.025);
        let mut out = Vec::new();
        let last = checkpoints.iter().copied().max().unwrap_or(0);
        for t in 1..=last {
            cs.push((d.sample)(&mut rng));
            if checkpoints.contains(&t) {
                let (lo, hi) = cs.bounds();
                out.push(hi - lo);
            }
        }
        out
    }

    #[test]
    fn width_shrinks_like_inverse_sqrt_t() {
        for d in &DISTS[..2] {
            let w = width_at(d, &[100, 10_000], 7);
            eprintln!(
                "{}: width at 100 = {:.4}, at 10000 = {:.5}",
                d.name, w[0], w[1]
            );
            assert!(w[1] < 0.1 * w[0], "{}: {w:?}", d.name);
        }
    }

    /// Low variance data get a much narrower interval than maximal-variance data (the
    /// empirical-Bernstein part), and the interval contains the sample mean.
    #[test]
    fn width_adapts_to_variance() {
        let narrow = width_at(&DISTS[2], &[2000], 1)[0];
        let wide = width_at(&DISTS[4], &[2000], 1)[0];
        eprintln!("width at 2000: low variance {narrow:.5}, bernoulli(.5) {wide:.5}");
        assert!(narrow < 0.25 * wide, "{narrow} vs {wide}");
        let mut cs = ConfidenceSequence::new(0.025);
        let mut rng = SplitMix(3);
        for _ in 0..2000 {
            cs.push((DISTS[0].sample)(&mut rng));
        }
        let (lo, hi) = cs.bounds();
        assert!(lo < cs.mean() && cs.mean() < hi, "{lo} {} {hi}", cs.mean());
    }

    #[test]
    fn empty_and_degenerate_inputs() {
        let cs = ConfidenceSequence::new(0.05);
        assert_eq!(cs.bounds(), (0.0, 1.0));
        assert_eq!(cs.count(), 0);
        assert!(cs.mean().is_nan());

        let mut cs = ConfidenceSequence::new(0.05);
        cs.push(f64::NAN);
        cs.push(f64::INFINITY);
        assert_eq!(cs.count(), 0);
        cs.push(2.0); // clamped to 1
        cs.push(-1.0); // clamped to 0
        assert_eq!(cs.count(), 2);
        assert_eq!(cs.mean(), 0.5);

        // Constant data: the bounds close in on the constant and stay inside [0, 1].
        let mut cs = ConfidenceSequence::new(0.025);
        for _ in 0..5000 {
            cs.push(1.0);
        }
        let (lo, hi) = cs.bounds();
        assert_eq!(hi, 1.0);
        assert!(lo > 0.99 && lo < 1.0, "{lo}");

        // alpha = 0 (or NaN): trivial bounds.
        for a in [0.0, f64::NAN] {
            let mut cs = ConfidenceSequence::new(a);
            for _ in 0..100 {
                cs.push(0.3);
            }
            assert_eq!(cs.bounds(), (0.0, 1.0));
        }
    }

    /// The bounds are a running intersection: lower never decreases, upper never increases.
    #[test]
    fn bounds_are_monotone() {
        let mut rng = SplitMix(99);
        let mut cs = ConfidenceSequence::new(0.05);
        let (mut plo, mut phi) = cs.bounds();
        for _ in 0..3000 {
            cs.push(rng.uniform());
            let (lo, hi) = cs.bounds();
            assert!(lo >= plo && hi <= phi);
            (plo, phi) = (lo, hi);
        }
    }
}
