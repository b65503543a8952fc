//! Anytime-valid confidence sequence for a ratio of means ρ = E[c] / E[s] from *paired*
//! observations (c, s) in [-1, 1]² (a cross cosine and a self cosine of the same input),
//! with O(1) state and no split of α between numerator and denominator.
//!
//! # Construction (a sequential Fieller interval)
//!
//! For a candidate ratio r let z_r = c − r·s. At the true ratio E[z_ρ] = C − ρS = 0, so
//! ρ is the one candidate whose z has mean 0. Each candidate gets a one-sided test of
//! "E[z_r] = 0", and the confidence set is every r that no test has rejected: only the
//! test at the true ρ has to be right, so the set covers ρ with the test's level, however
//! many candidates are looked at (no union bound over r).
//!
//! The test is the PrPl-EB supermartingale of `confseq.rs` on z_r rescaled to [0, 1]:
//! with w = 1 + |r| (|z_r| ≤ w), x = 1/2 + z_r / (2w), and at mean 1/2
//!
//! ```text
//! up side:   log K↑_t(r) = Σ λ_i (1/2 − x_i) − Σ v_i ψ_E(λ_i)     (evidence E[z_r] < 0: ρ < r)
//! down side: log K↓_t(r) = Σ λ_i (x_i − 1/2) − Σ v_i ψ_E(λ_i)     (evidence E[z_r] > 0: ρ > r)
//! v_i = 4 (x_i − μ̂_{i−1})²,   μ̂_{i−1} = 1/2 + (Σ_{j<i} z_j) / (2w·i)
//! ```
//!
//! r is rejected on a side when that side's log K ≥ log(1/α). The bets λ_i (PrPl, capped
//! at [`LAMBDA_CAP`]) are predictable and *shared by every r*: they are computed from the
//! past variance of x at a reference ratio r̂ (the running Σc/Σs, clamped to [0, 3/2]);
//! any predictable choice is valid, and sharing them makes both log K linear in
//! Σλc, Σλs and quadratic in r through Σψa², Σψab, Σψb² (a_i = c_i − mean of c before i,
//! b_i likewise for s). Multiplied by w² > 0, "rejected" is a quadratic inequality in r
//! on each of r ≥ 0 (w = 1 + r) and r ≤ 0 (w = 1 − r), solved in closed form:
//!
//! - upper bound: the supremum of the r the up side has not rejected;
//! - lower bound: the infimum of the r the down side has not rejected;
//!
//! each valid at `alpha` uniformly over time (Ville's inequality for the one test at ρ),
//! intersected over time (a running max / min). Before any observation, or while the
//! self cosines are not yet shown to be positive, a bound is ±∞.
//!
//! Assumptions: pairs are exchangeable draws with constant means (as in `confseq.rs`) and
//! S > 0 (a ratio to a non-positive self-similarity means nothing).

/// Largest bet λ. Larger than the 1/2 of `confseq.rs`: x = 1/2 + z/(2w) spreads cosines
/// that vary by a few hundredths over a range of 2w ≈ 4, so the variance-based bet is at
/// the cap for the first hundreds of pairs and the cap sets how fast the bound closes
/// (Waudby-Smith & Ramdas suggest 1/2 or 3/4; see the drift module doc for the numbers).
pub const LAMBDA_CAP: f64 = 0.75;

/// Candidate ratios used for the bets' variance are clamped to this range.
const REFERENCE_MAX: f64 = 1.5;

/// Anytime-valid bounds on E[c] / E[s] from paired (c, s) observations (module doc).
/// `Send`, 16 words of state, O(1) per observation.
#[derive(Debug, Clone)]
pub struct RatioSequence {
    log_inv_alpha: f64,
    count: u64,
    sum_c: f64,
    sum_s: f64,
    /// Σ (a'_i)², Σ a'_i b'_i, Σ (b'_i)² with deviations from the mean *including* i:
    /// the variance estimate behind the bets.
    dev_cc: f64,
    dev_cs: f64,
    dev_ss: f64,
    /// Σ λ_i c_i, Σ λ_i s_i.
    bet_c: f64,
    bet_s: f64,
    /// Σ ψ_E(λ_i) a_i², Σ ψ_E(λ_i) a_i b_i, Σ ψ_E(λ_i) b_i² (deviations from the past mean).
    pen_cc: f64,
    pen_cs: f64,
    pen_ss: f64,
    lower: f64,
    upper: f64,
}

impl RatioSequence {
    /// A new sequence with miscoverage `alpha_per_side` for each bound (clamped to
    /// [0, 0.5]; 0 or NaN give the trivial bounds (−∞, +∞) forever).
    pub fn new(alpha_per_side: f64) -> Self {
        Self {
            log_inv_alpha: super::confseq::log_inv_alpha(alpha_per_side),
            count: 0,
            sum_c: 0.0,
            sum_s: 0.0,
            dev_cc: 0.0,
            dev_cs: 0.0,
            dev_ss: 0.0,
            bet_c: 0.0,
            bet_s: 0.0,
            pen_cc: 0.0,
            pen_cs: 0.0,
            pen_ss: 0.0,
            lower: f64::NEG_INFINITY,
            upper: f64::INFINITY,
        }
    }

    /// One pair: `c` the cross cosine, `s` the self cosine of the same input (each
    /// clamped to [-1, 1]; a pair with a non-finite member is ignored).
    pub fn push(&mut self, c: f64, s: f64) {
        if !c.is_finite() || !s.is_finite() {
            return;
        }
        let (c, s) = (c.clamp(-1.0, 1.0), s.clamp(-1.0, 1.0));
        let t = (self.count + 1) as f64;

        // The bet uses only the past: the variance of x at the reference ratio.
        let lambda = (2.0 * self.log_inv_alpha / (self.var_hat() * t * t.ln_1p()))
            .sqrt()
            .min(LAMBDA_CAP);
        let psi = (-(-lambda).ln_1p() - lambda) / 4.0;
        let a = c - self.sum_c / t;
        let b = s - self.sum_s / t;
        self.bet_c += lambda * c;
        self.bet_s += lambda * s;
        self.pen_cc += psi * a * a;
        self.pen_cs += psi * a * b;
        self.pen_ss += psi * b * b;

        self.count += 1;
        self.sum_c += c;
        self.sum_s += s;
        let a_now = c - self.sum_c / (t + 1.0);
        let b_now = s - self.sum_s / (t + 1.0);
        self.dev_cc += a_now * a_now;
        self.dev_cs += a_now * b_now;
        self.dev_ss += b_now * b_now;

        if self.log_inv_alpha.is_finite() {
            let (lower, upper) = self.current();
            self.lower = self.lower.max(lower);
            self.upper = self.upper.min(upper);
        }
    }

    /// Pairs pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// (lower, upper) bound on E[c] / E[s], each valid at `alpha_per_side` uniformly over
    /// time; (−∞, +∞) before any pair.
    pub fn bounds(&self) -> (f64, f64) {
        (self.lower, self.upper)
    }

    /// Running ratio estimate, clamped: where the bets are tuned.
    fn reference(&self) -> f64 {
        if self.sum_s > 0.0 {
            (self.sum_c / self.sum_s).clamp(0.0, REFERENCE_MAX)
        } else {
            1.0
        }
    }

    /// σ̂² of x at the reference ratio (WSR's plug-in with a prior 1/4 of weight 1).
    fn var_hat(&self) -> f64 {
        let r = self.reference();
        let w = 1.0 + r;
        let dev = (self.dev_cc - 2.0 * r * self.dev_cs + r * r * self.dev_ss).max(0.0);
        (0.25 + dev / (4.0 * w * w)) / (self.count as f64 + 1.0)
    }

    /// The unrejected sets of this step: (inf of the down side's, sup of the up side's).
    fn current(&self) -> (f64, f64) {
        let mut lower = f64::INFINITY;
        let mut upper = f64::NEG_INFINITY;
        for (sign, lo, hi) in [(1.0, 0.0, f64::INFINITY), (-1.0, f64::NEG_INFINITY, 0.0)] {
            if let Some(u) = sup_negative(self.rejection(1.0, sign), lo, hi) {
                upper = upper.max(u);
            }
            if let Some(l) = inf_negative(self.rejection(-1.0, sign), lo, hi) {
                lower = lower.min(l);
            }
        }
        // Root finding is exact up to rounding; widen by far less than any gate resolves.
        (
            lower - 1e-9 * (1.0 + lower.abs()),
            upper + 1e-9 * (1.0 + upper.abs()),
        )
    }

    /// w² (log K − log(1/α)) as a quadratic in r on the piece where w = 1 + sign·r:
    /// r is rejected where it is ≥ 0. `side` +1: the up side, −1: the down side.
    fn rejection(&self, side: f64, sign: f64) -> Quad {
        let l = self.log_inv_alpha;
        let (lc, ls) = (self.bet_c, self.bet_s);
        Quad {
            a: side * sign * ls / 2.0 - self.pen_ss - l,
            b: side * (ls - sign * lc) / 2.0 + 2.0 * self.pen_cs - 2.0 * sign * l,
            c: -side * lc / 2.0 - self.pen_cc - l,
        }
    }
}

/// a r² + b r + c.
#[derive(Debug, Clone, Copy)]
struct Quad {
    a: f64,
    b: f64,
    c: f64,
}

impl Quad {
    fn at(self, r: f64) -> f64 {
        (self.a * r + self.b) * r + self.c
    }

    /// Real roots, unordered (0, 1 or 2 of them).
    fn roots(self) -> ([f64; 2], usize) {
        let Quad { a, b, c } = self;
        if a == 0.0 {
            return if b == 0.0 {
                ([0.0; 2], 0)
            } else {
                ([-c / b, 0.0], 1)
            };
        }
        let disc = b * b - 4.0 * a * c;
        if disc.is_nan() || disc < 0.0 {
            return ([0.0; 2], 0);
        }
        // Numerically stable form: no cancellation between −b and √disc.
        let q = -0.5 * (b + b.signum() * disc.sqrt());
        if q == 0.0 {
            return ([0.0; 2], 1); // b = 0 and c = 0: a double root at 0.
        }
        ([q / a, c / q], 2)
    }
}

/// sup { r ∈ [lo, hi] : q(r) < 0 }, None if the set is empty. lo/hi may be infinite.
fn sup_negative(q: Quad, lo: f64, hi: f64) -> Option<f64> {
    let (roots, n) = q.roots();
    let mut points = [lo, hi, hi, hi];
    let mut len = 1;
    for &r in &roots[..n] {
        if r > lo && r < hi {
            points[len] = r;
            len += 1;
        }
    }
    points[len] = hi;
    len += 1;
    let points = &mut points[..len];
    points.sort_by(f64::total_cmp);
    // q keeps its sign between consecutive points: test one inside each, rightmost first.
    points
        .windows(2)
        .rev()
        .find(|w| q.at(inside(w[0], w[1])) < 0.0)
        .map(|w| w[1])
}

/// inf { r ∈ [lo, hi] : q(r) < 0 }: the mirror image of [`sup_negative`].
fn inf_negative(q: Quad, lo: f64, hi: f64) -> Option<f64> {
    let mirrored = Quad { b: -q.b, ..q };
    sup_negative(mirrored, -hi, -lo).map(|r| -r)
}

/// A point strictly inside (x, y), x < y, either possibly infinite.
fn inside(x: f64, y: f64) -> f64 {
    match (x.is_finite(), y.is_finite()) {
        (true, true) => x + (y - x) / 2.0,
        (true, false) => x + 1.0 + x.abs(),
        (false, true) => y - 1.0 - y.abs(),
        (false, false) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::confseq::tests::SplitMix;
    use super::*;
    use proptest::prelude::*;

    /// log K of one side at r, straight from the definition (module doc).
    fn log_k(seq: &RatioSequence, side: f64, r: f64) -> f64 {
        let w = 1.0 + r.abs();
        side * (r * seq.bet_s - seq.bet_c) / (2.0 * w)
            - (seq.pen_cc - 2.0 * r * seq.pen_cs + r * r * seq.pen_ss) / (w * w)
    }

    /// The closed form agrees with rejecting candidates one by one on a fine grid.
    #[test]
    fn closed_form_matches_grid_inversion() {
        let mut rng = SplitMix(11);
        for case in 0..40u64 {
            let mut seq = RatioSequence::new(0.05);
            let (cross, own) = (0.3 + 0.7 * rng.uniform(), 0.5 + 0.5 * rng.uniform());
            let n = 5 + (case * 37) % 400;
            for _ in 0..n {
                let c = cross - 0.2 * rng.uniform();
                let s = own - 0.1 * rng.uniform();
                seq.push(c, s);
            }
            let (lower, upper) = seq.current();
            let l = seq.log_inv_alpha;
            let grid = (-4000..=4000).map(|k| f64::from(k) / 1000.0);
            let kept_up: Vec<f64> = grid.clone().filter(|&r| log_k(&seq, 1.0, r) < l).collect();
            let kept_down: Vec<f64> = grid.filter(|&r| log_k(&seq, -1.0, r) < l).collect();
            let grid_upper = kept_up.last().copied().unwrap_or(f64::NEG_INFINITY);
            let grid_lower = kept_down.first().copied().unwrap_or(f64::INFINITY);
            // Within one grid step, or both beyond the grid.
            let close = |exact: f64, grid: f64| {
                (exact - grid).abs() <= 1.001e-3 || (exact.abs() > 3.99 && grid.abs() >= 3.99)
            };
            assert!(
                close(upper, grid_upper),
                "case {case}: {upper} vs {grid_upper}"
            );
            assert!(
                close(lower, grid_lower),
                "case {case}: {lower} vs {grid_lower}"
            );
        }
    }

    #[test]
    fn empty_degenerate_and_trivial_alpha() {
        let seq = RatioSequence::new(0.025);
        assert_eq!(seq.bounds(), (f64::NEG_INFINITY, f64::INFINITY));
        let mut seq = RatioSequence::new(0.025);
        seq.push(f64::NAN, 1.0);
        seq.push(0.5, f64::INFINITY);
        assert_eq!(seq.count(), 0);
        // A canary equal to a deterministic baseline: the ratio is 1.
        for _ in 0..300 {
            seq.push(1.0, 1.0);
        }
        let (lo, hi) = seq.bounds();
        assert!(lo < 1.0 && lo > 0.9 && hi > 1.0, "{lo} {hi}");
        for a in [0.0, f64::NAN] {
            let mut seq = RatioSequence::new(a);
            for _ in 0..100 {
                seq.push(0.5, 1.0);
            }
            assert_eq!(seq.bounds(), (f64::NEG_INFINITY, f64::INFINITY));
        }
    }

    #[test]
    fn handles_negative_ratios() {
        // An inverting canary: c = −0.9, s = 0.95, ρ ≈ −0.947.
        let mut seq = RatioSequence::new(0.025);
        let mut rng = SplitMix(4);
        for _ in 0..1000 {
            seq.push(-0.9 + 0.05 * (rng.uniform() - 0.5), 0.95);
        }
        let (lo, hi) = seq.bounds();
        let rho = -0.9 / 0.95;
        assert!(
            lo < rho && rho < hi && hi < -0.85 && lo > -1.05,
            "{lo} {hi}"
        );
    }

    /// Share of streams in which a bound ever excludes the true ratio, per side.
    fn miscoverage(
        sample: impl Fn(&mut SplitMix) -> (f64, f64),
        rho: f64,
        alpha: f64,
        streams: u64,
        len: u64,
    ) -> (f64, f64) {
        let (mut low, mut high) = (0u32, 0u32);
        for k in 0..streams {
            let mut rng = SplitMix(0xF1E1 ^ k.wrapping_mul(0x9E37_79B9));
            let mut seq = RatioSequence::new(alpha);
            for _ in 0..len {
                let (c, s) = sample(&mut rng);
                seq.push(c, s);
            }
            // Running intersection: the final bounds are the tightest ever shown.
            let (lo, hi) = seq.bounds();
            low += u32::from(lo > rho);
            high += u32::from(hi < rho);
        }
        (
            f64::from(low) / streams as f64,
            f64::from(high) / streams as f64,
        )
    }

    /// At α = 0.1 per side, on four kinds of pairs, 300 streams × 1500 pairs: each side
    /// misses the true ratio in at most α + 0.04 (~2.3 sd at 300) of the streams.
    #[test]
    fn coverage_holds_uniformly_over_time() {
        let alpha = 0.1;
        type Pairs = fn(&mut SplitMix) -> (f64, f64);
        let cases: [(&str, f64, Pairs); 4] = [
            // Deterministic baseline, changed canary: cos(b,c) = 1 − 0.4u, self = 1.
            ("deterministic", 0.8, |r| (1.0 - 0.4 * r.uniform(), 1.0)),
            // Sampling model, unchanged canary: both ~ 1 − 0.1u, independent.
            ("noisy equal", 1.0, |r| {
                (1.0 - 0.1 * r.uniform(), 1.0 - 0.1 * r.uniform())
            }),
            // Hard inputs are hard for both: c and s share a per-input difficulty.
            ("correlated", 0.9 / 0.95, |r| {
                let d = r.uniform();
                (1.0 - 0.2 * d, 1.0 - 0.1 * d)
            }),
            // Rare outliers in the self pairs.
            ("outliers", 0.9 / (0.99 * 0.97 + 0.03 * 0.2), |r| {
                let s = if r.uniform() < 0.03 { 0.2 } else { 0.99 };
                (0.9 + 0.05 * (r.uniform() - 0.5), s)
            }),
        ];
        for (name, rho, sample) in cases {
            let (lo, hi) = miscoverage(sample, rho, alpha, 300, 1500);
            eprintln!("{name:>13}: ratio {rho:.4}, lower misses {lo:.3}, upper misses {hi:.3}");
            assert!(
                lo <= alpha + 0.04 && hi <= alpha + 0.04,
                "{name}: {lo} {hi}"
            );
        }
    }

    proptest! {
        /// sup/inf of {q < 0} on an interval agree with a dense scan.
        #[test]
        fn negative_set_ends_match_a_scan(
            a in -3.0f64..3.0, b in -3.0f64..3.0, c in -3.0f64..3.0,
            lo in -5.0f64..0.0, width in 0.1f64..10.0,
        ) {
            let q = Quad { a, b, c };
            let hi = lo + width;
            let steps = 20_000;
            let xs: Vec<f64> = (0..=steps)
                .map(|i| lo + width * f64::from(i) / f64::from(steps))
                .collect();
            let negative: Vec<f64> = xs.iter().copied().filter(|&x| q.at(x) < 0.0).collect();
            let step = width / f64::from(steps);
            match (sup_negative(q, lo, hi), negative.last()) {
                (Some(s), Some(&g)) => prop_assert!((s - g).abs() <= 1.01 * step, "{s} vs {g}"),
                (None, None) => {}
                // A sliver narrower than the scan's step may be seen by one side only.
                (s, g) => prop_assert!(
                    q.roots().1 == 2 && {
                        let (r, _) = q.roots();
                        (r[0] - r[1]).abs() < 2.0 * step
                    },
                    "{s:?} vs {g:?}"
                ),
            }
            match (inf_negative(q, lo, hi), negative.first()) {
                (Some(s), Some(&g)) => prop_assert!((s - g).abs() <= 1.01 * step, "{s} vs {g}"),
                (None, None) => {}
                (s, g) => prop_assert!(
                    q.roots().1 == 2 && {
                        let (r, _) = q.roots();
                        (r[0] - r[1]).abs() < 2.0 * step
                    },
                    "{s:?} vs {g:?}"
                ),
            }
        }
    }
}
