//! Paired latency: how much slower the canary answers than the baseline *on the same
//! inputs at the same moment*, as anytime-valid bounds on the median of the per-pair
//! ratio canary latency / baseline latency.
//!
//! An absolute latency gate (`p99 < 0.5 s`) judges the node as much as the model: an
//! identical canary on a busy node fails it. The sidecar calls baseline and canary
//! concurrently with the same input, so whatever slows both (node load, input length,
//! a cold cache upstream) multiplies both latencies and cancels in their ratio; the
//! median of the ratio ignores the rare call that one side alone loses to a pause.
//!
//! # Construction
//!
//! Let q be the p-quantile (p = 1/2: the median) of the ratio R, q = inf{t : F(t) ≥ p}.
//! Two facts about a single Bernoulli process each, after Howard & Ramdas, "Sequential
//! estimation of quantiles with applications to A/B-testing and best-arm
//! identification", Bernoulli 2022 (Theorem 1's argument):
//!
//! - 1[Rᵢ < q] has mean F(q⁻) ≤ p, so Aₙ = Σ (1[Rᵢ < q] − p) is a supermartingale;
//! - 1[Rᵢ ≤ q] has mean F(q) ≥ p, so Bₙ = Σ (p − 1[Rᵢ ≤ q]) is one too.
//!
//! Their increments are 1/4-sub-Gaussian (Hoeffding), so for a one-sided boundary uₙ with
//! P(∃n: Aₙ ≥ uₙ) ≤ α (likewise for B) both hold for all n at once with probability
//! ≥ 1 − α per side. With Nₙ(t) = #{i ≤ n : Rᵢ ≤ t}:
//!
//! - if Nₙ(t) − pn ≥ uₙ then t ≥ q (for t < q, Nₙ(t) ≤ #{Rᵢ < q} = Aₙ + pn < pn + uₙ):
//!   the smallest such t is an **upper bound** on q;
//! - if pn − Nₙ(t) ≥ uₙ then t < q (for t ≥ q, Nₙ(t) ≥ #{Rᵢ ≤ q}): the largest such t is
//!   a **lower bound** (strict: q > t).
//!
//! The boundary is about the one process at the unknown q, not about any particular t,
//! so checking every t of a grid needs no union bound over the grid. Nₙ(t) is kept only
//! at fixed grid points ([`ratio_grid`]: 1.1^(k/10), 0.96 % apart, from 0.063 to 15.9,
//! with 1.0 and 1.1 exactly on it), so memory is [`GRID_POINTS`] counters whatever the
//! traffic, and a bound is rounded outwards to the grid (0 and +∞ beyond its ends).
//!
//! uₙ is the one-sided normal-mixture boundary (Howard, Ramdas, McAuliffe & Sekhon,
//! "Time-uniform, nonparametric, nonasymptotic confidence sequences", AoS 2021): with
//! Vₙ = n/4 and a half-normal mixing density of precision ρ over λ ≥ 0,
//!
//! ```text
//! Mₙ(s) = ∫₀^∞ exp(λs − λ²Vₙ/2) dF(λ) = 2 √(ρ/(Vₙ+ρ)) · exp(z²/2) · Φ(z),   z = s / √(Vₙ+ρ)
//! ```
//!
//! is a nonnegative supermartingale in s = Aₙ (or Bₙ), so by Ville's inequality a
//! crossing Mₙ ≥ 1/α happens with probability ≤ α. Φ is bounded below
//! (Φ(z) ≥ max(1/2, 1 − φ(z)/z) for z > 0), so a crossing is declared only where the
//! exact mixture has crossed. ρ = [`MIXTURE_PRECISION`] makes the boundary tightest
//! around 50–250 pairs.
//!
//! Assumption: pairs are exchangeable (the canary's speed relative to the baseline does
//! not drift during the revision); the load may change arbitrarily as long as it hits
//! both sides of a pair alike.
//!
//! # Gate
//!
//! Threshold 1.1 (a canary whose median call is more than 10 % slower than the
//! baseline's on the same input fails): Successful when the upper bound ≤ 1.1, Failed
//! when the lower bound > 1.1, Inconclusive otherwise and on NaN (below `min_pairs`).
//! 1.1 sits halfway between "identical" and the 20 % slowdown that must fail, and is a
//! grid point, so neither side is rounded past it.
//!
//! Measured (tests below; α = 0.025, the gate looking at every pair from 50 on; each
//! call 40 ms × its own log-normal jitter (σ = 0.2) × a load factor common to the pair
//! (Pareto, shape 1.5), one call in 30 paused 2–10x on its own): an identical canary
//! passes after 113 pairs on average (at most 181 in 10 streams), although its absolute
//! p99 is 1.2 s; a canary 20 % slower fails after 263 (at most 664), 30 % slower after 83
//! (at most 170). 200 identical canaries at 2 pairs/s, looked at once a minute for an
//! hour: none failed, all passed by minute 5, and the true median 1 was excluded in 2
//! (1 %); 200 canaries 20 % slower all failed, by minute 10.

use std::f64::consts::PI;
use std::sync::LazyLock;
use std::time::Duration;

/// Grid points: 1.1^(k/10) for k in −[`GRID_HALF`]..=[`GRID_HALF`].
pub const GRID_POINTS: usize = 2 * GRID_HALF + 1;
/// 1.1^29 ≈ 15.9: a canary 16 times slower than its baseline needs no finer bound.
const GRID_HALF: usize = 290;

/// ρ of the normal mixture: prior precision of the bet, in units of Vₙ = n/4. With
/// α = 0.025 and a share 0.13 of pairs on the far side of a grid point, ρ = 1, 4, 16
/// decide after 147, 137, 152 pairs; with 0.2 after 59, 60, 78; with 0.1 after 259, 234,
/// 240.
pub const MIXTURE_PRECISION: f64 = 4.0;

static GRID: LazyLock<Vec<f64>> = LazyLock::new(|| {
    (0..GRID_POINTS)
        .map(|i| 1.1f64.powf((i as f64 - GRID_HALF as f64) / 10.0))
        .collect()
});

/// The ratios at which counts are kept, ascending (1.0 at index 290, 1.1 at 300).
pub fn ratio_grid() -> &'static [f64] {
    &GRID
}

/// Counts of per-pair latency ratios on a fixed grid (module doc). `Send`, fixed size.
#[derive(Debug, Clone)]
pub struct PairedLatency {
    log_inv_alpha: f64,
    /// counts[k]: pairs with ratio in (grid[k−1], grid[k]] (k = 0: ≤ grid[0]).
    counts: Box<[u64]>,
    /// Pairs with ratio > the last grid point.
    above: u64,
    total: u64,
}

impl PairedLatency {
    /// Empty counts; each bound is valid at `alpha_per_side` (clamped to [0, 0.5]; 0 or
    /// NaN give the trivial bounds (0, +∞)).
    pub fn new(alpha_per_side: f64) -> Self {
        Self {
            log_inv_alpha: super::confseq::log_inv_alpha(alpha_per_side),
            counts: vec![0; GRID_POINTS].into_boxed_slice(),
            above: 0,
            total: 0,
        }
    }

    /// One pair: both sides' latency for the same input. A zero latency (a clock too
    /// coarse) counts as ratio 0 or +∞, both zero as ratio 1.
    pub fn record(&mut self, baseline: Duration, canary: Duration) {
        // Integer nanoseconds, exact in f64 up to 104 days: one correctly rounded division.
        let (b, c) = (baseline.as_nanos() as f64, canary.as_nanos() as f64);
        let ratio = if b == c { 1.0 } else { c / b };
        let k = GRID.partition_point(|&g| g < ratio);
        match self.counts.get_mut(k) {
            Some(n) => *n += 1,
            None => self.above += 1,
        }
        self.total += 1;
    }

    /// Pairs recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// (lower, upper) bounds on the median ratio canary/baseline: the median is > lower
    /// and ≤ upper, each side at α uniformly over time.
    pub fn median_bounds(&self) -> (f64, f64) {
        self.quantile_bounds(0.5)
    }

    /// (lower, upper) bounds on the p-quantile of the ratio, p in (0, 1): > lower, ≤
    /// upper. Valid for any p, but the boundary assumes the worst-case variance 1/4 of a
    /// Bernoulli, so away from the median it needs many pairs (p = 0.95: ~1000 before
    /// the upper bound is finite).
    pub fn quantile_bounds(&self, p: f64) -> (f64, f64) {
        let (mut lower, mut upper) = (0.0, f64::INFINITY);
        let valid = p > 0.0 && p < 1.0 && self.log_inv_alpha.is_finite();
        if !valid {
            return (lower, upper);
        }
        let n = self.total as f64;
        let mut below = 0u64;
        for (&count, &g) in self.counts.iter().zip(GRID.iter()) {
            below += count;
            let excess = below as f64 - p * n;
            if self.crosses(-excess) {
                lower = g; // Nₙ(g) far under pn: the quantile is above g.
            }
            if self.crosses(excess) {
                upper = g; // Nₙ(g) far over pn: the quantile is at most g.
                break;
            }
        }
        (lower, upper)
    }

    /// Has the one-sided normal mixture crossed 1/α at deviation `s` (module doc)?
    fn crosses(&self, s: f64) -> bool {
        if s <= 0.0 {
            return false;
        }
        let scale = self.total as f64 / 4.0 + MIXTURE_PRECISION;
        let z = s / scale.sqrt();
        let half_z2 = z * z / 2.0;
        let shrink = (MIXTURE_PRECISION / scale).sqrt();
        // log of a lower bound on Mₙ: Φ(z) ≥ 1/2, and Φ(z) ≥ 1 − φ(z)/z, which gives
        // 2 √(ρ/(V+ρ)) (exp(z²/2) − 1/(z √(2π))).
        let with_half = shrink.ln() + half_z2;
        let mills = 2.0 * shrink * (half_z2.exp() - 1.0 / (z * (2.0 * PI).sqrt()));
        let with_mills = if mills > 0.0 {
            mills.ln()
        } else {
            f64::NEG_INFINITY
        };
        with_half.max(with_mills) >= self.log_inv_alpha
    }
}

#[cfg(test)]
mod tests {
    use super::super::confseq::tests::SplitMix;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grid_holds_one_and_the_threshold_exactly() {
        let g = ratio_grid();
        assert_eq!(g.len(), GRID_POINTS);
        assert_eq!((g[GRID_HALF], g[GRID_HALF + 10]), (1.0, 1.1));
        assert!(g.windows(2).all(|w| w[0] < w[1]));
        assert!(g[0] < 0.064 && g[GRID_POINTS - 1] > 15.8);
    }

    #[test]
    fn empty_trivial_and_extreme_ratios() {
        let ms = Duration::from_millis;
        let mut lat = PairedLatency::new(0.025);
        assert_eq!(lat.median_bounds(), (0.0, f64::INFINITY));
        for _ in 0..200 {
            lat.record(ms(10), ms(1000)); // 100x slower: above the grid
        }
        let (lo, hi) = lat.median_bounds();
        assert_eq!((lo, hi), (ratio_grid()[GRID_POINTS - 1], f64::INFINITY));
        let mut lat = PairedLatency::new(0.025);
        for _ in 0..200 {
            lat.record(ms(0), ms(0));
        }
        let (lo, hi) = lat.median_bounds();
        assert!(lo < 1.0 && lo > 0.9 && hi == 1.0, "{lo} {hi}");
        let mut lat = PairedLatency::new(0.0);
        for _ in 0..200 {
            lat.record(ms(10), ms(20));
        }
        assert_eq!(lat.median_bounds(), (0.0, f64::INFINITY));
        assert_eq!(lat.count(), 200);
    }

    /// One pair's latencies in seconds. Each call takes 40 ms × a log-normal of its own
    /// (σ = 0.2, the model's own jitter) × a load factor common to the pair (Pareto with
    /// shape 1.5, heavy-tailed: the node's load when the pair ran), and one call in 30
    /// alone hits a pause of 2–10x; the canary's own time is `slowdown` times longer.
    fn loaded_pair(rng: &mut SplitMix, slowdown: f64) -> (Duration, Duration) {
        let load = (1.0 - rng.uniform()).powf(-1.0 / 1.5);
        let call = |rng: &mut SplitMix| {
            // Box-Muller.
            let (u, v) = (1.0 - rng.uniform(), rng.uniform());
            let normal = (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos();
            let pause = if rng.uniform() < 1.0 / 30.0 {
                2.0 + 8.0 * rng.uniform()
            } else {
                1.0
            };
            0.040 * (0.2 * normal).exp() * pause * load
        };
        let b = call(rng);
        let c = call(rng) * slowdown;
        (Duration::from_secs_f64(b), Duration::from_secs_f64(c))
    }

    /// Pairs until the gate decides: fail when the lower bound > 1.1, pass when the upper
    /// bound ≤ 1.1 (looking at every pair from 50 on).
    fn pairs_to_decide(seed: u64, slowdown: f64) -> (u64, bool) {
        let mut rng = SplitMix(seed);
        let mut lat = PairedLatency::new(0.025);
        for n in 1..=100_000 {
            let (b, c) = loaded_pair(&mut rng, slowdown);
            lat.record(b, c);
            if n >= 50 {
                let (lo, hi) = lat.median_bounds();
                if lo > 1.1 || hi <= 1.1 {
                    return (n, lo > 1.1);
                }
            }
        }
        (u64::MAX, false)
    }

    /// Issue 15 point 4: on a loaded node an identical canary passes and a canary 20 %
    /// slower fails, 10 streams each; an absolute p99 gate could do neither.
    #[test]
    fn identical_canary_passes_and_slower_one_fails_on_a_loaded_node() {
        let p99 = {
            let mut rng = SplitMix(1);
            let mut xs: Vec<f64> = (0..10_000)
                .map(|_| loaded_pair(&mut rng, 1.0).1.as_secs_f64())
                .collect();
            xs.sort_by(f64::total_cmp);
            (xs[9_899] * 1000.0).round() / 1000.0
        };
        for (slowdown, want_fail) in [(1.0, false), (1.2, true), (1.3, true)] {
            let runs: Vec<(u64, bool)> = (0..10).map(|k| pairs_to_decide(k, slowdown)).collect();
            let mean = runs.iter().map(|r| r.0 as f64).sum::<f64>() / runs.len() as f64;
            let max = runs.iter().map(|r| r.0).max().unwrap_or(0);
            eprintln!(
                "slowdown {slowdown}: decided after {mean:.0} pairs on average (max {max}), \
                 failed {}/10",
                runs.iter().filter(|r| r.1).count()
            );
            assert!(
                runs.iter().all(|r| r.1 == want_fail),
                "{slowdown}: {runs:?}"
            );
            assert!(mean <= 400.0 && max <= 1000, "{slowdown}: {runs:?}");
        }
        eprintln!("the identical canary's absolute p99: {p99} s");
        assert!(p99 > 0.5, "the load alone breaks an absolute gate: {p99}");
    }

    /// 200 identical canaries on a loaded node, 2 pairs per second, the gate looking once
    /// a minute for an hour: none fails, and the bounds exclude the true median ratio 1 in
    /// at most α (+ Monte-Carlo slack) of them. 200 canaries 20 % slower: all fail.
    #[test]
    fn false_alarms_over_an_hour_of_looks() {
        let (canaries, per_minute, minutes) = (200u64, 120, 60);
        for slowdown in [1.0, 1.2] {
            let (mut failed, mut missed, mut passed, mut last) = (0u32, 0u32, 0u32, 0u32);
            for k in 0..canaries {
                let mut rng = SplitMix(0x1A7E + k * 7_919);
                let mut lat = PairedLatency::new(0.025);
                let (mut fail, mut miss, mut pass) = (false, false, false);
                for minute in 1..=minutes {
                    for _ in 0..per_minute {
                        let (b, c) = loaded_pair(&mut rng, slowdown);
                        lat.record(b, c);
                    }
                    let (lo, hi) = lat.median_bounds();
                    // The bounds claim median > lo and median ≤ hi; the median is `slowdown`.
                    miss |= lo >= slowdown || hi < slowdown;
                    if !(fail || pass) && (lo > 1.1 || hi <= 1.1) {
                        last = last.max(minute);
                    }
                    fail |= lo > 1.1;
                    pass |= hi <= 1.1;
                }
                failed += u32::from(fail);
                missed += u32::from(miss);
                passed += u32::from(pass);
            }
            eprintln!(
                "slowdown {slowdown}: {canaries} canaries x {minutes} looks: failed {failed}, \
                 passed {passed}, true median excluded {missed}, all decided by minute {last}"
            );
            assert!(
                f64::from(missed) / canaries as f64 <= 0.025 + 0.02,
                "{missed}"
            );
            if slowdown == 1.0 {
                assert_eq!((failed, passed), (0, canaries as u32));
            } else {
                assert_eq!((failed, passed), (canaries as u32, 0));
            }
        }
    }

    /// Coverage of the median and of other quantiles on skewed, discrete and tied
    /// ratios at α = 0.1 per side: 300 streams × 3000 pairs, checked every 25 pairs.
    #[test]
    fn quantile_coverage_holds_uniformly_over_time() {
        let alpha = 0.1;
        let ms = Duration::from_secs_f64;
        // (name, p, true quantile, sampler of the ratio)
        type Ratios = fn(&mut SplitMix) -> f64;
        let cases: [(&str, f64, f64, Ratios); 4] = [
            // Log-uniform on [1/2, 2]: median 1.
            ("log-uniform", 0.5, 1.0, |r| {
                2f64.powf(2.0 * r.uniform() - 1.0)
            }),
            // Exponential-ish ratio (skewed): median ln 2.
            ("exponential", 0.5, std::f64::consts::LN_2, |r| {
                -(1.0 - r.uniform()).ln()
            }),
            // Ties: half the pairs exactly 1, others 1.2 — the median is 1 (F(1) = 1/2).
            (
                "ties",
                0.5,
                1.0,
                |r| if r.uniform() < 0.5 { 1.0 } else { 1.2 },
            ),
            // The 0.8-quantile of log-uniform on [1/2, 2]: 2^(0.6).
            ("q0.8", 0.8, 2f64.powf(0.6), |r| {
                2f64.powf(2.0 * r.uniform() - 1.0)
            }),
        ];
        for (name, p, q, sample) in cases {
            let (mut low, mut high) = (0u32, 0u32);
            for k in 0..300u64 {
                let mut rng = SplitMix(0xC0DE + k * 31);
                let mut lat = PairedLatency::new(alpha);
                let (mut lm, mut hm) = (false, false);
                for n in 1..=3000 {
                    lat.record(ms(1.0), ms(sample(&mut rng)));
                    if n % 25 == 0 {
                        let (lo, hi) = lat.quantile_bounds(p);
                        lm |= lo >= q;
                        hm |= hi < q;
                    }
                }
                low += u32::from(lm);
                high += u32::from(hm);
            }
            let (lo, hi) = (f64::from(low) / 300.0, f64::from(high) / 300.0);
            eprintln!("{name:>12}: lower misses {lo:.3}, upper misses {hi:.3}");
            assert!(
                lo <= alpha + 0.04 && hi <= alpha + 0.04,
                "{name}: {lo} {hi}"
            );
        }
    }

    #[test]
    fn memory_is_fixed() {
        let mut lat = PairedLatency::new(0.025);
        let mut rng = SplitMix(9);
        for _ in 0..100_000 {
            let (b, c) = loaded_pair(&mut rng, 1.0);
            lat.record(b, c);
        }
        assert_eq!(lat.counts.len(), GRID_POINTS);
        assert_eq!(lat.count(), 100_000);
    }

    proptest! {
        /// Whatever the latencies, the bounds bracket the sample median on the grid:
        /// lower < the ⌈n/2⌉-th smallest ratio ≤ upper.
        #[test]
        fn bounds_bracket_the_sample_median(
            pairs in proptest::collection::vec((1u64..5_000, 1u64..5_000), 1..400),
            alpha in 0.001f64..0.5,
        ) {
            let mut lat = PairedLatency::new(alpha);
            let mut ratios = Vec::new();
            for &(b, c) in &pairs {
                lat.record(Duration::from_micros(b), Duration::from_micros(c));
                ratios.push(c as f64 / b as f64);
            }
            ratios.sort_by(f64::total_cmp);
            let median = ratios[ratios.len().div_ceil(2) - 1];
            let (lo, hi) = lat.median_bounds();
            prop_assert!(lo < median && median <= hi, "{lo} {median} {hi}");
            prop_assert!(lo == 0.0 || ratio_grid().contains(&lo));
            prop_assert!(hi == f64::INFINITY || ratio_grid().contains(&hi));
        }
    }
}
