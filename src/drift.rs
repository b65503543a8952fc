//! Drift statistics for one (model, baseline, canary) triple: the numbers behind the
//! drift gauges of DESIGN.md ("Prometheus series"). Pure code; the caller owns the clock,
//! wraps a [`DriftState`] in a `Mutex` and calls [`DriftState::snapshot`] once per scrape.
//!
//! Two horizons:
//! - the sliding window (`DriftConfig::window`, at most [`WINDOW_CAP`] pairs): mean
//!   cosine, low quantiles, share under the floor, norm ratio, prediction agreement;
//! - since the canary revision started ([`DriftState::reset`]): anytime-valid
//!   [`ConfidenceSequence`]s, which stay valid although a gate looks every minute, the
//!   noise-adjusted bounds below, and bounds on the median latency ratio canary/baseline
//!   over pairs ([`PairedLatency`], `drift/latency.rs`: construction, gate, numbers).
//!
//! # The noise-adjusted bound
//!
//! A model that samples (temperature > 0, dropout, non-deterministic kernels) does not
//! agree with itself, so its canary cannot be held to cos = 1. With C = E[cos(b, c)]
//! (baseline vs canary on the same input) and S = E[cos(b, b')] (the baseline answering
//! the same input twice, S ≤ 1, assumed > 0), the gauges bound ρ = C / S:
//! `noise_adjusted_lower` ≤ ρ ≤ `noise_adjusted_upper`, each side at the configured α
//! uniformly over time. A deterministic baseline has S = 1 and ρ = C; an unchanged
//! sampling canary has ρ = 1 whatever its noise.
//!
//! **Paired (the mirror calls [`DriftState::record_self_paired`]).** A self pair comes
//! with the cross cosine of the same input, and the bounds come from a sequential
//! Fieller interval ([`RatioSequence`], `drift/ratio.rs`): for each candidate r, one
//! empirical-Bernstein test of E[cos(b,c) − r·cos(b,b')] = 0; the bounds are the
//! smallest and largest r no test has rejected, solved in closed form. Only the test at
//! the true ρ has to hold, so α is not split between C and S. The inputs that get the
//! self call are chosen by a hash of the request id, independently of what the models
//! answer, so they are a fair sample of all pairs.
//!
//! **Unpaired.** Bounds on C from every pair and on S from the self pairs, combined by a
//! union bound: on the fail side an upper bound Cᵤ and a lower bound Sₗ, so ρ ≤ Cᵤ/Sₗ
//! (for Cᵤ ≥ 0; for Cᵤ < 0 it is Cᵤ/Sᵤ, a larger denominator making a negative ratio
//! less negative); the pass side is the mirror image, Cₗ/Sᵤ (Cₗ/Sₗ when Cₗ < 0; −∞
//! when also Sₗ ≤ 0).
//!
//! **Both.** The paired bounds run at 3α/4 per side, the unpaired ones at α/4 per side
//! (C and S at α/8 each); the exported bound on each side is the tighter of the two,
//! which holds at α by a union bound. The paired bound fails a broken canary
//! early; the unpaired one uses every pair for C and, for a deterministic baseline, Sᵤ
//! = 1, so a good canary passes as soon as the plain bound on C would let it (with the
//! paired bound alone, a canary at C = 0.95 sat at a lower bound of 0.918 after its 300
//! self pairs in `tests/it/deploy.rs`: Inconclusive).
//!
//! **Why the pairing and the self-sampling rate matter (how fast a broken canary fails).**
//! No method can prove S close to 1 from few self pairs: t self pairs that all equal 1
//! have probability ≥ α under a baseline that answers cos = −1 to a
//! share log(1/α)/t of inputs, so every valid Sₗ is ≤ 1 − 2·log(1/α_S)/t, and the
//! unpaired upper bound Cᵤ/Sₗ needs hundreds of self pairs before it can fall under a
//! gate threshold near 0.92. At the default `self_similarity_rate` of 5 % that is
//! thousands of pairs: a canary with mean cosine 0.80 was still at 0.96 after 2478 pairs,
//! while the plain bound failed it at ~100. Two changes bring it to the plain gate's pace:
//!
//! - self-similarity at every sample until `shadow.self_similarity_min_pairs` self pairs
//!   exist ([`DriftState::self_sample_rate`], [`SelfSampling`] for a lock-free read),
//!   then at `self_similarity_rate`;
//! - the paired construction: for a deterministic baseline z = cos(b,c) − r exactly, so
//!   the test at r = 0.92 is about as hard as the plain bound's test of C < 0.92 (on a
//!   range 1.92 times as wide, hence a larger bet cap, 3/4 instead of 1/2), at
//!   3α/4 instead of α/2, with no multiplicative 1/Sₗ.
//!
//! Measured (tests in this module; α = 0.025, threshold 0.92, `min_pairs` 50, means
//! over 10 streams, the bounds read at every pair): a canary with cos(b,c) uniform on
//! [0.6, 1] (mean 0.80) of a deterministic baseline fails the plain gate (cosine upper
//! bound < 0.92) after 125 pairs and the noise-adjusted gate after 171 (1.37x; 159 with
//! the paired bound alone at α); unpaired with a self call at every sample, 480;
//! unpaired at a 5 % rate, not within 2000. An unchanged canary of a sampling model
//! (cos(b,c), cos(b,b') both 1 − 0.2u: mean 0.90, which the plain gate would fail)
//! passes (lower bound ≥ 0.92) after 256–296 pairs (one stream of ten: 492); a canary
//! identical to a deterministic baseline after 255 (plain: 189). Over 200 such unchanged
//! sampling canaries at 2 pairs/s, looked at once a minute for an hour: no false
//! failure, the true ratio 1 never excluded, all passed within 6 minutes (measured with
//! the paired bound alone at α).
//! The price is extra baseline calls: up to `self_similarity_min_pairs` (default 300)
//! per canary revision and sidecar at the start, then the configured rate.

mod confseq;
mod latency;
mod ratio;

pub use confseq::ConfidenceSequence;
pub use latency::{ratio_grid, PairedLatency};
pub use ratio::RatioSequence;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Quantile levels of the windowed cosine reported by [`DriftSnapshot::quantiles`]: low
/// ones, because a canary that breaks a small share of inputs moves the tail first.
pub const QUANTILES: [f64; 4] = [0.01, 0.05, 0.1, 0.5];

/// Most pairs the sliding window keeps (oldest dropped first): 4 MiB at 16 bytes a pair
/// (plus 1 MiB of quantile scratch), and still every pair of a 5-minute window at ~870
/// compared pairs per second.
pub const WINDOW_CAP: usize = 262_144;

/// Settings of the drift statistics (validated by the configuration layer).
#[derive(Debug, Clone)]
pub struct DriftConfig {
    /// Sliding window for the mean, quantile, ratio and agreement statistics.
    pub window: Duration,
    /// Below this many pairs a statistic is NaN: windowed ones count pairs in the window,
    /// bounds count pairs since the last reset.
    pub min_pairs: u64,
    /// Cosine under which a pair counts as "low".
    pub floor: f64,
    /// Miscoverage per side of every confidence sequence, in (0, 0.5].
    pub alpha: f64,
}

/// One compared pair in the window: 16 bytes, because the window is the sidecar's largest
/// structure (issue 7's memory budget). Gauges of means and quantiles need no more than
/// f32 precision; whether the pair is under the floor is decided in f64 when recorded.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Milliseconds since the state's `origin`.
    at_ms: u32,
    cosine: f32,
    norm_ratio: f32,
    /// `HAS_AGREE`, `AGREE`, `LOW` bits.
    flags: u8,
}

const HAS_AGREE: u8 = 1;
const AGREE: u8 = 2;
const LOW: u8 = 4;

/// When the clock offset nears u32's range (~24 days), entries are re-based.
const REBASE_MS: u64 = 1 << 31;

/// Drift statistics of one (model, baseline, canary) triple. `Send`; not synchronised.
#[derive(Debug, Clone)]
pub struct DriftState {
    cfg: DriftConfig,
    /// Ordered by insertion time (callers pass a monotonic clock; small reorderings from
    /// concurrent callers only delay an eviction slightly).
    window: VecDeque<Entry>,
    /// What `Entry::at_ms` counts from.
    origin: Instant,
    /// Reused buffer for quantile selection.
    scratch: Vec<f32>,
    /// (1 + cos)/2 at α per side: the exported cosine bounds.
    cosine_cs: ConfidenceSequence,
    /// 1[cos < floor] at α per side.
    low_cs: ConfidenceSequence,
    /// (1 + cos)/2 at α/4: numerator of the unpaired noise-adjusted bound.
    ratio_num_cs: ConfidenceSequence,
    /// (1 + self cos)/2 at α/4 per side: denominator of the unpaired noise-adjusted bound.
    self_cs: ConfidenceSequence,
    /// (cross cos, self cos) of the same input at α/2 per side: the paired bound.
    paired: RatioSequence,
    /// Per-pair latency ratio canary/baseline at α per side.
    latency: PairedLatency,
    /// Self pairs since the last reset, readable without the lock ([`SelfSampling`]).
    /// Shared by clones and kept across [`DriftState::reset`].
    self_count: Arc<AtomicU64>,
}

/// Everything the drift gauges show, computed by [`DriftState::snapshot`]. Cosine-valued
/// fields are in cosine space [-1, 1]; NaN means "not enough pairs".
#[derive(Debug, Clone)]
pub struct DriftSnapshot {
    /// Pairs in the sliding window.
    pub window_pairs: u64,
    /// Mean cosine of the window's pairs.
    pub mean_cosine: f64,
    /// `(q, value)` for each q in [`QUANTILES`], linear interpolation between order
    /// statistics (the "type 7" definition of R and numpy).
    pub quantiles: Vec<(f64, f64)>,
    /// Share of the window's pairs with cosine < floor.
    pub low_ratio: f64,
    /// Mean canary/baseline norm ratio over the window (non-finite ratios skipped).
    pub norm_ratio: f64,
    /// Share agreeing among the window's pairs that have both predictions; NaN if fewer
    /// than `min_pairs` such pairs.
    pub agreement: f64,
    /// Pairs since the last reset.
    pub total_pairs: u64,
    /// Anytime-valid lower bound on the mean cosine since the last reset.
    pub cosine_lower: f64,
    /// Anytime-valid upper bound on the mean cosine since the last reset.
    pub cosine_upper: f64,
    /// Anytime-valid lower bound on P(cos < floor) since the last reset.
    pub low_ratio_lower: f64,
    /// Anytime-valid upper bound on P(cos < floor) since the last reset.
    pub low_ratio_upper: f64,
    /// Self-similarity pairs since the last reset.
    pub self_pairs: u64,
    /// Mean self cosine since the last reset (NaN below `min_pairs`).
    pub self_mean_cosine: f64,
    /// Self pairs that came with their cross cosine ([`DriftState::record_self_paired`]).
    pub self_paired_pairs: u64,
    /// Lower bound on E[cos(b,c)] / E[cos(b,b')] (module doc); NaN unless both the pairs
    /// and the self pairs (the paired ones, when there are any) number at least
    /// `min_pairs`.
    pub noise_adjusted_lower: f64,
    /// Upper bound on the same ratio (same construction, the other side): a gate fails a
    /// canary when even this is under its threshold.
    pub noise_adjusted_upper: f64,
    /// Pairs with both latencies since the last reset ([`DriftState::record_latency`]).
    pub latency_pairs: u64,
    /// Anytime-valid lower bound on the median of canary latency / baseline latency over
    /// pairs (the median is above it; `drift/latency.rs`); NaN below `min_pairs`, 0 when
    /// nothing is proven yet. Suggested gate: fail when > 1.1.
    pub latency_ratio_median_lower: f64,
    /// Anytime-valid upper bound on the same median (the median is at most it); NaN below
    /// `min_pairs`, +∞ when nothing is proven yet. Suggested gate: pass when ≤ 1.1.
    pub latency_ratio_median_upper: f64,
}

impl DriftState {
    /// Empty statistics.
    pub fn new(cfg: DriftConfig) -> Self {
        let alpha = cfg.alpha;
        Self {
            cfg,
            window: VecDeque::new(),
            origin: Instant::now(),
            scratch: Vec::new(),
            cosine_cs: ConfidenceSequence::new(alpha),
            low_cs: ConfidenceSequence::new(alpha),
            ratio_num_cs: ConfidenceSequence::new(alpha / 8.0),
            self_cs: ConfidenceSequence::new(alpha / 8.0),
            paired: RatioSequence::new(alpha * 0.75),
            latency: PairedLatency::new(alpha),
            self_count: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One compared pair. `agree` is None when either prediction is missing.
    ///
    /// A non-finite `cosine` is ignored (`compare` never produces one); finite ones are
    /// clamped to [-1, 1].
    pub fn record(&mut self, now: Instant, cosine: f64, norm_ratio: f64, agree: Option<bool>) {
        if !cosine.is_finite() {
            return;
        }
        let cosine = cosine.clamp(-1.0, 1.0);
        self.evict(now);
        if self.window.len() >= WINDOW_CAP {
            self.window.pop_front();
        }
        let flags = match agree {
            None => 0,
            Some(false) => HAS_AGREE,
            Some(true) => HAS_AGREE | AGREE,
        } | if cosine < self.cfg.floor { LOW } else { 0 };
        let at_ms = self.ticks(now);
        self.window.push_back(Entry {
            at_ms,
            cosine: cosine as f32,
            norm_ratio: norm_ratio as f32,
            flags,
        });
        let x = (1.0 + cosine) / 2.0;
        self.cosine_cs.push(x);
        self.ratio_num_cs.push(x);
        self.low_cs
            .push(if cosine < self.cfg.floor { 1.0 } else { 0.0 });
    }

    /// One self-similarity pair (baseline called twice on the same input): the noise
    /// floor. Kept since the last reset, like the bounds it feeds; `_now` is accepted for
    /// symmetry with [`DriftState::record`]. Non-finite cosines are ignored.
    pub fn record_self(&mut self, _now: Instant, cosine: f64) {
        if cosine.is_finite() {
            self.self_cs.push((1.0 + cosine.clamp(-1.0, 1.0)) / 2.0);
            self.self_count
                .store(self.self_cs.count(), Ordering::Relaxed);
        }
    }

    /// One self-similarity pair with the cross cosine (baseline vs canary) of the same
    /// input, already passed to [`DriftState::record`]: what the paired noise-adjusted
    /// bound needs (module doc). Also counts as [`DriftState::record_self`]. A pair with
    /// a non-finite cosine is ignored.
    pub fn record_self_paired(&mut self, now: Instant, cross_cosine: f64, self_cosine: f64) {
        if cross_cosine.is_finite() && self_cosine.is_finite() {
            self.paired.push(cross_cosine, self_cosine);
            self.record_self(now, self_cosine);
        }
    }

    /// Baseline and canary latency of one pair (the two calls for the same input): feeds
    /// the paired latency bounds. `_now` is accepted for symmetry.
    pub fn record_latency(&mut self, _now: Instant, baseline: Duration, canary: Duration) {
        self.latency.record(baseline, canary);
    }

    /// Share of samples that should also get the self-similarity call now: 1 until
    /// `min_self_pairs` self pairs exist since the last reset, then `rate` (module doc).
    /// Pure and O(1); [`DriftState::self_sampling`] gives the same answer without the
    /// lock.
    pub fn self_sample_rate(&self, rate: f64, min_self_pairs: u64) -> f64 {
        self_sample_rate(self.self_cs.count(), rate, min_self_pairs)
    }

    /// A lock-free handle on [`DriftState::self_sample_rate`] for the sampler. It follows
    /// this state through [`DriftState::reset`].
    pub fn self_sampling(&self, rate: f64, min_self_pairs: u64) -> SelfSampling {
        SelfSampling {
            self_pairs: Arc::clone(&self.self_count),
            rate,
            min_self_pairs,
        }
    }

    /// Drop window entries older than `window`, compute everything. Below `min_pairs`
    /// (pairs in the window for windowed stats; pairs since reset for the bounds)
    /// ratios/quantiles/bounds are NaN.
    pub fn snapshot(&mut self, now: Instant) -> DriftSnapshot {
        self.evict(now);
        // Zero pairs is never enough, whatever min_pairs says.
        let need = self.cfg.min_pairs.max(1);
        let window_pairs = self.window.len() as u64;
        let windowed = window_pairs >= need;

        let nan = f64::NAN;
        let (mut mean_cosine, mut low_ratio, mut norm_ratio) = (nan, nan, nan);
        let mut quantiles: Vec<(f64, f64)> = QUANTILES.iter().map(|&q| (q, nan)).collect();
        if windowed {
            let n = self.window.len() as f64;
            let (mut sum, mut low, mut ratio_sum, mut ratio_n) = (0.0, 0u64, 0.0, 0u64);
            for e in &self.window {
                sum += f64::from(e.cosine);
                low += u64::from(e.flags & LOW != 0);
                if e.norm_ratio.is_finite() {
                    ratio_sum += f64::from(e.norm_ratio);
                    ratio_n += 1;
                }
            }
            mean_cosine = sum / n;
            low_ratio = low as f64 / n;
            if ratio_n > 0 {
                norm_ratio = ratio_sum / ratio_n as f64;
            }
            self.scratch.clear();
            self.scratch.extend(self.window.iter().map(|e| e.cosine));
            quantiles = quantiles_in_place(&mut self.scratch, &QUANTILES);
        }

        let (with_both, agreeing) = self.window.iter().fold((0u64, 0u64), |(w, a), e| {
            if e.flags & HAS_AGREE != 0 {
                (w + 1, a + u64::from(e.flags & AGREE != 0))
            } else {
                (w, a)
            }
        });
        let agreement = if with_both >= need {
            agreeing as f64 / with_both as f64
        } else {
            nan
        };

        let total_pairs = self.cosine_cs.count();
        let bounded = total_pairs >= need;
        let to_cos = |x: f64| 2.0 * x - 1.0;
        let (cosine_lower, cosine_upper, low_ratio_lower, low_ratio_upper) = if bounded {
            let (cl, cu) = self.cosine_cs.bounds();
            let (ll, lu) = self.low_cs.bounds();
            (to_cos(cl), to_cos(cu), ll, lu)
        } else {
            (nan, nan, nan, nan)
        };

        let self_pairs = self.self_cs.count();
        let self_enough = self_pairs >= need;
        let self_mean_cosine = if self_enough {
            to_cos(self.self_cs.mean())
        } else {
            nan
        };
        let self_paired_pairs = self.paired.count();
        // Both constructions at α/2 per side; the tighter bound of the two on each side
        // holds at α (union bound). The paired one decides a broken canary early; the
        // unpaired one uses every pair for C and, for a deterministic baseline, an upper
        // bound on S of 1, so it passes a good canary sooner.
        let paired = (bounded && self_paired_pairs >= need).then(|| self.paired.bounds());
        let unpaired = (bounded && self_enough).then(|| {
            let (lower, upper) = self.ratio_num_cs.bounds();
            let (self_lo, self_hi) = self.self_cs.bounds();
            let (self_lo, self_hi) = (to_cos(self_lo), to_cos(self_hi));
            (
                noise_adjusted(to_cos(lower), self_lo, self_hi),
                noise_adjusted_upper(to_cos(upper), self_lo, self_hi),
            )
        });
        let (noise_adjusted_lower, noise_adjusted_upper) = match (paired, unpaired) {
            (Some((pl, pu)), Some((ul, uu))) => (pl.max(ul), pu.min(uu)),
            (Some(b), None) | (None, Some(b)) => b,
            (None, None) => (nan, nan),
        };

        let latency_pairs = self.latency.count();
        let (latency_ratio_median_lower, latency_ratio_median_upper) = if latency_pairs >= need {
            self.latency.median_bounds()
        } else {
            (nan, nan)
        };

        DriftSnapshot {
            window_pairs,
            mean_cosine,
            quantiles,
            low_ratio,
            norm_ratio,
            agreement,
            total_pairs,
            cosine_lower,
            cosine_upper,
            low_ratio_lower,
            low_ratio_upper,
            self_pairs,
            self_mean_cosine,
            self_paired_pairs,
            noise_adjusted_lower,
            noise_adjusted_upper,
            latency_pairs,
            latency_ratio_median_lower,
            latency_ratio_median_upper,
        }
    }

    /// Canary version changed: forget everything (window and confidence sequences).
    pub fn reset(&mut self) {
        let cfg = self.cfg.clone();
        let scratch = std::mem::take(&mut self.scratch);
        let self_count = Arc::clone(&self.self_count);
        *self = Self::new(cfg);
        // Keep the allocation; the next snapshot needs a buffer of the same size.
        self.scratch = scratch;
        // Handed out to the sampler: the same counter, back at zero.
        self_count.store(0, Ordering::Relaxed);
        self.self_count = self_count;
    }

    fn evict(&mut self, now: Instant) {
        let Some(cutoff) = now.checked_sub(self.cfg.window) else {
            return; // The window reaches back before the clock's origin: nothing is old.
        };
        if cutoff <= self.origin {
            return;
        }
        let cutoff_ms = self.ticks(cutoff);
        while self.window.front().is_some_and(|e| e.at_ms < cutoff_ms) {
            self.window.pop_front();
        }
    }

    /// `at` in milliseconds since `origin`; moves `origin` (and every entry) forward
    /// when the offset would outgrow u32, so a sidecar may run for years.
    fn ticks(&mut self, at: Instant) -> u32 {
        let mut ms = at.saturating_duration_since(self.origin).as_millis() as u64;
        if ms >= REBASE_MS {
            let shift = ms - REBASE_MS / 2;
            self.origin += Duration::from_millis(shift);
            for e in &mut self.window {
                e.at_ms = (u64::from(e.at_ms).saturating_sub(shift)) as u32;
            }
            ms -= shift;
        }
        ms as u32
    }
}

/// `rate` once `self_pairs` reached `min_self_pairs`, 1 before (module doc); a `rate` of
/// 0 turns self-similarity off, warm-up included.
pub fn self_sample_rate(self_pairs: u64, rate: f64, min_self_pairs: u64) -> f64 {
    if self_pairs < min_self_pairs && rate > 0.0 {
        1.0
    } else {
        rate
    }
}

/// Lock-free view of a [`DriftState`]'s self-pair count, for deciding per sample whether
/// to make the self-similarity call: [`SelfSampling::rate`] is one relaxed atomic load.
#[derive(Debug, Clone)]
pub struct SelfSampling {
    self_pairs: Arc<AtomicU64>,
    rate: f64,
    min_self_pairs: u64,
}

impl SelfSampling {
    /// The share of samples that should get the self-similarity call now.
    pub fn rate(&self) -> f64 {
        self_sample_rate(
            self.self_pairs.load(Ordering::Relaxed),
            self.rate,
            self.min_self_pairs,
        )
    }
}

/// Lower bound on C/S from a lower bound on C and two-sided bounds on S > 0 (module doc).
fn noise_adjusted(cross_lower: f64, self_lower: f64, self_upper: f64) -> f64 {
    if cross_lower >= 0.0 {
        if self_upper > 0.0 {
            cross_lower / self_upper
        } else {
            // S ≤ Sᵤ ≤ 0 contradicts the assumption S > 0: the ratio is meaningless.
            f64::NAN
        }
    } else if self_lower > 0.0 {
        cross_lower / self_lower
    } else {
        f64::NEG_INFINITY
    }
}

/// Upper bound on C/S from an upper bound on C and two-sided bounds on S > 0: the
/// mirror image of [`noise_adjusted`].
fn noise_adjusted_upper(cross_upper: f64, self_lower: f64, self_upper: f64) -> f64 {
    if cross_upper >= 0.0 {
        if self_lower > 0.0 {
            cross_upper / self_lower
        } else {
            f64::INFINITY
        }
    } else if self_upper > 0.0 {
        cross_upper / self_upper
    } else {
        f64::NAN
    }
}

/// Type-7 quantiles (linear interpolation between the order statistics at (n−1)q) of a
/// non-empty slice without NaNs, reordering it. `qs` must be ascending. O(n · |qs|).
fn quantiles_in_place(xs: &mut [f32], qs: &[f64]) -> Vec<(f64, f64)> {
    let n = xs.len();
    if n == 0 {
        return qs.iter().map(|&q| (q, f64::NAN)).collect();
    }
    // Invariant: xs[..start] holds the `start` smallest values, each ≤ all of xs[start..].
    let mut start = 0;
    qs.iter()
        .map(|&q| {
            let h = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = (h.floor() as usize).min(n - 1);
            let frac = h - lo as f64;
            if lo >= start {
                xs[start..].select_nth_unstable_by(lo - start, f32::total_cmp);
                start = lo + 1;
            }
            let below = f64::from(xs[lo]);
            let value = if frac > 0.0 && lo + 1 < n {
                // The next order statistic is the smallest of what lies above.
                let above = xs[lo + 1..]
                    .iter()
                    .map(|&x| f64::from(x))
                    .fold(f64::INFINITY, f64::min);
                below + frac * (above - below)
            } else {
                below
            };
            (q, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::confseq::tests::SplitMix;
    use super::*;

    fn cfg(window_secs: u64, min_pairs: u64) -> DriftConfig {
        DriftConfig {
            window: Duration::from_secs(window_secs),
            min_pairs,
            floor: 0.8,
            alpha: 0.025,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Type-7 quantile on a sorted copy.
    fn reference_quantile(xs: &[f64], q: f64) -> f64 {
        let mut s = xs.to_vec();
        s.sort_by(f64::total_cmp);
        let h = q * (s.len() - 1) as f64;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(s.len() - 1);
        s[lo] + (h - lo as f64) * (s[hi] - s[lo])
    }

    #[test]
    fn state_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<DriftState>();
        assert_send::<ConfidenceSequence>();
    }

    #[test]
    fn nan_below_min_pairs() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(300, 50));
        st.record_self(t0, 0.99);
        for i in 0..49 {
            st.record(t0, 0.95, 1.0, Some(true));
            st.record_self(t0 + secs(f64::from(i)), 0.99);
        }
        let s = st.snapshot(t0 + secs(1.0));
        assert_eq!((s.window_pairs, s.total_pairs, s.self_pairs), (49, 49, 50));
        for (name, v) in [
            ("mean", s.mean_cosine),
            ("low", s.low_ratio),
            ("norm", s.norm_ratio),
            ("agree", s.agreement),
            ("cl", s.cosine_lower),
            ("cu", s.cosine_upper),
            ("ll", s.low_ratio_lower),
            ("lu", s.low_ratio_upper),
            ("noise", s.noise_adjusted_lower),
        ] {
            assert!(v.is_nan(), "{name} = {v}");
        }
        assert_eq!(s.quantiles.len(), QUANTILES.len());
        assert!(s.quantiles.iter().all(|&(_, v)| v.is_nan()));
        assert!((s.self_mean_cosine - 0.99).abs() < 1e-7);

        st.record(t0, 0.95, 1.0, None);
        let s = st.snapshot(t0 + secs(1.0));
        assert_eq!(s.window_pairs, 50);
        // Windowed statistics come from f32 entries: exact to f32 precision.
        assert!((s.mean_cosine - 0.95).abs() < 1e-7);
        assert!(s.quantiles.iter().all(|&(_, v)| (v - 0.95).abs() < 1e-7));
        assert_eq!(s.low_ratio, 0.0);
        assert_eq!(s.norm_ratio, 1.0);
        // Only 49 pairs carry both predictions.
        assert!(s.agreement.is_nan());
        assert!(s.cosine_lower < 0.95 && s.cosine_upper >= 0.95);
        assert!(s.noise_adjusted_lower.is_finite());
    }

    #[test]
    fn entries_are_16_bytes_and_the_clock_rebases_after_weeks() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 1));
        st.record(t0, 0.5, 1.0, None);
        // 30 days on: past u32 milliseconds' half range, so the origin moves.
        let later = t0 + Duration::from_secs(30 * 86_400);
        for i in 0..10 {
            st.record(later + secs(f64::from(i)), 0.9, 1.0, Some(true));
        }
        let s = st.snapshot(later + secs(10.0));
        assert_eq!(s.window_pairs, 10);
        assert!((s.mean_cosine - 0.9).abs() < 1e-7);
        // Time still orders entries after the rebase: 5 of 10 leave the window.
        let s = st.snapshot(later + secs(64.5));
        assert_eq!(s.window_pairs, 5);
    }

    #[test]
    fn window_evicts_by_time_but_bounds_do_not() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 10));
        for _ in 0..100 {
            st.record(t0, 0.5, 2.0, Some(false));
        }
        for _ in 0..100 {
            st.record(t0 + secs(30.0), 0.9, 1.0, Some(true));
        }
        let s = st.snapshot(t0 + secs(60.0));
        // Age exactly = window is kept.
        assert_eq!(s.window_pairs, 200);
        assert!((s.mean_cosine - 0.7).abs() < 1e-7);
        let s = st.snapshot(t0 + secs(60.5));
        assert_eq!((s.window_pairs, s.total_pairs), (100, 200));
        assert!((s.mean_cosine - 0.9).abs() < 1e-7);
        assert_eq!((s.agreement, s.norm_ratio, s.low_ratio), (1.0, 1.0, 0.0));
        // The since-reset bounds still see the 0.5s: the upper bound is below 0.9.
        assert!(s.cosine_upper < 0.9, "{}", s.cosine_upper);
        assert!(s.low_ratio_lower > 0.2, "{}", s.low_ratio_lower);
        let s = st.snapshot(t0 + secs(91.0));
        assert_eq!(s.window_pairs, 0);
        assert!(s.mean_cosine.is_nan() && s.agreement.is_nan());
        assert!(s.cosine_lower.is_finite());
    }

    #[test]
    fn window_is_capped_oldest_first() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(3600, 1));
        for _ in 0..10 {
            st.record(t0, -1.0, 1.0, None);
        }
        for _ in 0..WINDOW_CAP {
            st.record(t0, 1.0, 1.0, None);
        }
        let s = st.snapshot(t0);
        assert_eq!(s.window_pairs, WINDOW_CAP as u64);
        assert_eq!(s.total_pairs, WINDOW_CAP as u64 + 10);
        assert_eq!(s.mean_cosine, 1.0);
    }

    #[test]
    fn quantiles_match_sorted_reference() {
        let mut rng = SplitMix(42);
        for n in [1usize, 2, 3, 7, 10, 101, 1000, 4099] {
            // The window stores f32: values it can hold exactly give exact quantiles.
            let xs: Vec<f64> = (0..n)
                .map(|_| f64::from((1.0 - rng.uniform().powi(3) * 0.6) as f32))
                .collect();
            let t0 = Instant::now();
            let mut st = DriftState::new(cfg(60, 1));
            for &x in &xs {
                st.record(t0, x, 1.0, None);
            }
            let s = st.snapshot(t0);
            for &(q, v) in &s.quantiles {
                let want = reference_quantile(&xs, q);
                assert!((v - want).abs() < 1e-12, "n {n} q {q}: {v} vs {want}");
            }
            // Arbitrary, unsorted and repeated levels through the helper directly.
            let qs = [0.0, 0.0, 0.25, 0.25, 0.3333, 0.9, 0.999, 1.0];
            let mut scratch: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
            for (q, v) in quantiles_in_place(&mut scratch, &qs) {
                let want = reference_quantile(&xs, q);
                assert!((v - want).abs() < 1e-12, "n {n} q {q}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn low_ratio_norm_ratio_and_agreement_are_exact() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 5));
        // Floor 0.8: 0.5 and 0.79 are low; 0.8 itself is not.
        let pairs = [
            (0.5, 0.5, Some(false)),
            (0.79, 1.0, Some(true)),
            (0.8, 1.5, None),
            (0.81, f64::NAN, Some(true)),
            (0.95, 1.0, Some(true)),
            (1.0, 1.0, Some(true)),
        ];
        for (c, r, a) in pairs {
            st.record(t0, c, r, a);
        }
        let s = st.snapshot(t0);
        assert_eq!(s.window_pairs, 6);
        assert_eq!(s.low_ratio, 2.0 / 6.0);
        assert!((s.mean_cosine - 4.85 / 6.0).abs() < 1e-7);
        assert!((s.norm_ratio - 5.0 / 5.0).abs() < 1e-6, "{}", s.norm_ratio);
        assert_eq!(s.agreement, 4.0 / 5.0);
        // Non-finite cosines are ignored entirely.
        st.record(t0, f64::NAN, 1.0, Some(false));
        st.record_self(t0, f64::INFINITY);
        let s = st.snapshot(t0);
        assert_eq!((s.window_pairs, s.total_pairs, s.self_pairs), (6, 6, 0));
    }

    #[test]
    fn reset_forgets_everything() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 5));
        for _ in 0..100 {
            st.record(t0, 0.3, 1.0, Some(true));
            st.record_self(t0, 0.99);
        }
        st.reset();
        let s = st.snapshot(t0);
        assert_eq!((s.window_pairs, s.total_pairs, s.self_pairs), (0, 0, 0));
        assert!(s.mean_cosine.is_nan() && s.cosine_lower.is_nan() && s.self_mean_cosine.is_nan());
        for _ in 0..100 {
            st.record(t0, 0.9, 1.0, Some(true));
        }
        let s = st.snapshot(t0);
        assert!((s.mean_cosine - 0.9).abs() < 1e-7);
        // The old 0.3s no longer drag the bound down.
        assert!(s.cosine_lower > 0.6, "{}", s.cosine_lower);
    }

    /// Cosines c = 1 − d with d spread on [0, 2·(1 − mean)], self cosines likewise.
    fn sample_cos(rng: &mut SplitMix, mean: f64) -> f64 {
        1.0 - 2.0 * (1.0 - mean) * rng.uniform()
    }

    #[test]
    fn bounds_bracket_truth_and_tighten() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(300, 50));
        let mut rng = SplitMix(5);
        let mut prev_width = f64::INFINITY;
        for round in 0..5 {
            for i in 0..2000 {
                let at = t0 + secs(f64::from(round * 2000 + i) * 0.01);
                st.record(at, sample_cos(&mut rng, 0.9), 1.0, Some(true));
                if i % 4 == 0 {
                    st.record_self(at, sample_cos(&mut rng, 0.96));
                }
            }
            let s = st.snapshot(t0 + secs(f64::from(round + 1) * 20.0));
            assert!(s.cosine_lower < 0.9 && 0.9 < s.cosine_upper, "{s:?}");
            // cos = 1 − 0.2u is never under the floor 0.8: the share is 0.
            assert!(
                s.low_ratio_lower == 0.0 && s.low_ratio_upper < 0.01,
                "{s:?}"
            );
            let true_ratio = 0.9 / 0.96;
            assert!(s.noise_adjusted_lower < true_ratio, "{s:?}");
            let width = s.cosine_upper - s.cosine_lower;
            assert!(width < prev_width);
            prev_width = width;
        }
        let s = st.snapshot(t0 + secs(100.0));
        eprintln!("{s:?}");
        assert!(prev_width < 0.01, "{prev_width}");
        assert!(s.noise_adjusted_lower > 0.9, "{}", s.noise_adjusted_lower);
        assert!((s.self_mean_cosine - 0.96).abs() < 0.005);
    }

    /// The noise-adjusted bound misses the true ratio in at most α of the streams.
    #[test]
    fn noise_adjusted_bound_coverage() {
        let alpha = 0.05;
        let (streams, len) = (200u64, 2000);
        let (cross, own) = (0.85, 0.95);
        let mut misses = 0;
        for s in 0..streams {
            let mut rng = SplitMix(0xD21F7 + s * 7919);
            let t0 = Instant::now();
            let mut st = DriftState::new(DriftConfig {
                alpha,
                ..cfg(60, 20)
            });
            let mut missed = false;
            for i in 0..len {
                st.record(t0, sample_cos(&mut rng, cross), 1.0, None);
                st.record_self(t0, sample_cos(&mut rng, own));
                // With L ≥ 0 the bound L/Sᵤ only rises (L is a running max, Sᵤ a running
                // min), so a few looks see every excursion; each look costs a full snapshot.
                if i % 500 == 499 {
                    missed |= st.snapshot(t0).noise_adjusted_lower > cross / own;
                }
            }
            misses += u32::from(missed);
        }
        let rate = f64::from(misses) / streams as f64;
        eprintln!("noise-adjusted miss rate {rate:.4}");
        assert!(rate <= alpha + 0.02, "{rate}");
    }

    /// How a simulated sidecar reports self pairs to the drift state.
    #[derive(Clone, Copy, PartialEq)]
    enum SelfCalls {
        Paired,
        Unpaired,
    }

    /// A stream of pairs as a sidecar sees them (10 per second), self calls made at
    /// [`DriftState::self_sample_rate`]; returns the first pair count from `min_pairs`
    /// on at which `decided` holds for the snapshot, or None within `max_pairs`.
    #[allow(clippy::too_many_arguments)]
    fn pairs_until(
        seed: u64,
        calls: SelfCalls,
        rate: f64,
        min_self: u64,
        max_pairs: u64,
        sample: impl Fn(&mut SplitMix) -> (f64, f64),
        decided: impl Fn(&DriftSnapshot) -> bool,
    ) -> Option<u64> {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 50));
        let mut rng = SplitMix(seed);
        for n in 1..=max_pairs {
            let at = t0 + Duration::from_millis(100 * n);
            let (cross, own) = sample(&mut rng);
            st.record(at, cross, 1.0, None);
            if rng.uniform() < st.self_sample_rate(rate, min_self) {
                match calls {
                    SelfCalls::Paired => st.record_self_paired(at, cross, own),
                    SelfCalls::Unpaired => st.record_self(at, own),
                }
            }
            if n >= 50 && decided(&st.snapshot(at)) {
                return Some(n);
            }
        }
        None
    }

    fn mean_of(xs: &[Option<u64>]) -> f64 {
        xs.iter()
            .map(|x| x.map_or(f64::NAN, |n| n as f64))
            .sum::<f64>()
            / xs.len() as f64
    }

    /// Issue 15 point 3: a clearly broken canary of a deterministic baseline (cos(b,c)
    /// uniform on [0.6, 1], mean 0.80; cos(b,b') = 1) fails the noise-adjusted gate
    /// (upper bound < 0.92) within 1.5x the pairs the plain gate (cosine upper bound
    /// < 0.92) needs. Means over 10 streams; the bounds are checked at every pair.
    #[test]
    fn broken_canary_fails_noise_adjusted_gate_as_fast_as_plain() {
        let broken = |r: &mut SplitMix| (1.0 - 0.4 * r.uniform(), 1.0);
        let fails = |s: &DriftSnapshot| s.noise_adjusted_upper < 0.92;
        let run = |calls, rate, min_self, max| -> Vec<Option<u64>> {
            (0..10)
                .map(|k| pairs_until(k, calls, rate, min_self, max, broken, fails))
                .collect()
        };
        let plain: Vec<Option<u64>> = (0..10)
            .map(|k| {
                pairs_until(k, SelfCalls::Paired, 0.0, 0, 1000, broken, |s| {
                    s.cosine_upper < 0.92
                })
            })
            .collect();
        let paired = run(SelfCalls::Paired, 0.05, 300, 1000);
        let unpaired_warm = run(SelfCalls::Unpaired, 0.05, 300, 3000);
        let unpaired_5 = run(SelfCalls::Unpaired, 0.05, 0, 2000);
        let (p, q) = (mean_of(&plain), mean_of(&paired));
        eprintln!(
            "pairs to fail: plain {p:.0}, paired {q:.0} (ratio {:.2}), unpaired with warm-up {:.0}, \
             unpaired at 5% {:?}",
            q / p,
            mean_of(&unpaired_warm),
            unpaired_5
        );
        assert!(plain.iter().chain(&paired).all(Option::is_some));
        assert!(q <= 1.5 * p, "{q} vs {p}");
        // Before this change: α/4 for S and 5 % self pairs. Still hopeless within 2000.
        assert!(unpaired_5.iter().all(Option::is_none));
    }

    /// An unchanged canary of a sampling model (cos(b,c) and cos(b,b') both 1 − 0.2u,
    /// independent; mean 0.90, ratio 1) passes the noise-adjusted gate (lower bound
    /// ≥ 0.92), which the plain gate (mean cosine ≥ 0.92) would never do; and a canary
    /// identical to a deterministic baseline passes both at once.
    #[test]
    fn unchanged_sampling_canary_passes_noise_adjusted_gate() {
        let noisy = |r: &mut SplitMix| (1.0 - 0.2 * r.uniform(), 1.0 - 0.2 * r.uniform());
        let passes = |s: &DriftSnapshot| s.noise_adjusted_lower >= 0.92;
        let noisy_runs: Vec<Option<u64>> = (0..10)
            .map(|k| pairs_until(k, SelfCalls::Paired, 0.05, 300, 3000, noisy, passes))
            .collect();
        let same = |_: &mut SplitMix| (1.0, 1.0);
        let identical = pairs_until(0, SelfCalls::Paired, 0.05, 300, 3000, same, passes);
        let plain = pairs_until(0, SelfCalls::Paired, 0.05, 300, 3000, same, |s| {
            s.cosine_lower >= 0.92
        });
        eprintln!(
            "pairs to pass: sampling canary {:.0} {noisy_runs:?}; identical deterministic \
             {identical:?}, plain gate {plain:?}",
            mean_of(&noisy_runs)
        );
        assert!(noisy_runs.iter().all(|n| n.is_some_and(|n| n <= 600)));
        let (identical, plain) = (identical.unwrap_or(u64::MAX), plain.unwrap_or(0));
        assert!(
            identical as f64 <= 1.5 * plain as f64,
            "{identical} vs {plain}"
        );
    }

    /// 200 unchanged sampling canaries (cos(b,c), cos(b,b') both 1 − 0.2u), 2 pairs per
    /// second, self calls at every sample for the first 300 then at 5 %, the gate looking
    /// once a minute for an hour: no false failure, and the bounds exclude the true
    /// ratio 1 in at most α (plus Monte-Carlo slack) of the canaries.
    #[test]
    fn noise_adjusted_false_alarms_over_an_hour_of_looks() {
        let (canaries, per_minute, minutes) = (200u64, 120u64, 60u64);
        let (mut false_fail, mut missed, mut passed, mut last_pass) = (0u32, 0u32, 0u32, 0u64);
        for k in 0..canaries {
            let t0 = Instant::now();
            let mut st = DriftState::new(cfg(60, 50));
            let mut rng = SplitMix(0xFA15E + k * 104_729);
            let (mut failed, mut miss, mut pass) = (false, false, false);
            for minute in 0..minutes {
                for i in 0..per_minute {
                    let at = t0 + Duration::from_millis((minute * per_minute + i) * 500);
                    let (cross, own) = (1.0 - 0.2 * rng.uniform(), 1.0 - 0.2 * rng.uniform());
                    st.record(at, cross, 1.0, None);
                    if rng.uniform() < st.self_sample_rate(0.05, 300) {
                        st.record_self_paired(at, cross, own);
                    }
                }
                let s = st.snapshot(t0 + Duration::from_secs(60 * (minute + 1)));
                failed |= s.noise_adjusted_upper < 0.92;
                miss |= s.noise_adjusted_lower > 1.0 || s.noise_adjusted_upper < 1.0;
                if !pass && s.noise_adjusted_lower >= 0.92 {
                    pass = true;
                    last_pass = last_pass.max(minute + 1);
                }
            }
            false_fail += u32::from(failed);
            missed += u32::from(miss);
            passed += u32::from(pass);
        }
        let rate = |n: u32| f64::from(n) / canaries as f64;
        eprintln!(
            "{canaries} unchanged canaries, {minutes} looks: false fails {}, ratio 1 excluded {}, \
             passed {}, the last after {last_pass} minutes",
            rate(false_fail),
            rate(missed),
            rate(passed)
        );
        assert_eq!(false_fail, 0);
        assert!(rate(missed) <= 0.025 + 0.02, "{}", rate(missed));
        assert_eq!(passed, canaries as u32);
    }

    #[test]
    fn self_sampling_rate_warms_up_and_follows_resets() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 50));
        let handle = st.self_sampling(0.05, 3);
        assert_eq!((st.self_sample_rate(0.05, 3), handle.rate()), (1.0, 1.0));
        st.record_self(t0, 0.99);
        st.record_self_paired(t0, 0.9, 0.99);
        st.record_self(t0, f64::NAN); // ignored: not a self pair
        assert_eq!(handle.rate(), 1.0);
        st.record_self_paired(t0, f64::NAN, 0.99); // ignored too
        assert_eq!(handle.rate(), 1.0);
        st.record_self(t0, 0.98);
        assert_eq!((st.self_sample_rate(0.05, 3), handle.rate()), (0.05, 0.05));
        // No warm-up: the configured rate from the start.
        assert_eq!(st.self_sampling(0.05, 0).rate(), 0.05);
        st.reset();
        assert_eq!(handle.rate(), 1.0);
        assert_eq!(st.snapshot(t0).self_pairs, 0);
        assert_eq!(self_sample_rate(10, 0.2, 10), 0.2);
        assert_eq!(self_sample_rate(9, 0.2, 10), 1.0);
        assert_eq!(self_sample_rate(0, 0.0, 10), 0.0);
    }

    /// Paired and unpaired self pairs: each construction needs `min_pairs` of its own,
    /// and with both the exported bounds are the tighter of the two on each side.
    #[test]
    fn paired_and_unpaired_bounds_combine() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 50));
        for _ in 0..60 {
            st.record(t0, 0.9, 1.0, None);
            st.record_self(t0, 1.0);
        }
        let unpaired = st.snapshot(t0);
        assert!(unpaired.noise_adjusted_lower.is_finite());
        assert_eq!(unpaired.self_paired_pairs, 0);
        st.record_self_paired(t0, 0.9, 1.0);
        let s = st.snapshot(t0);
        assert_eq!((s.self_pairs, s.self_paired_pairs), (61, 1));
        // One paired self pair is not enough for the paired bounds: the unpaired stand.
        assert!(s.noise_adjusted_lower.is_finite() && s.noise_adjusted_upper.is_finite());
        for _ in 0..49 {
            st.record(t0, 0.9, 1.0, None);
            st.record_self_paired(t0, 0.9, 1.0);
        }
        let s = st.snapshot(t0);
        assert_eq!(s.self_paired_pairs, 50);
        assert!(
            s.noise_adjusted_lower < 0.9 && s.noise_adjusted_upper > 0.9,
            "{s:?}"
        );
        let paired_only = st.paired.bounds();
        assert!(s.noise_adjusted_lower >= paired_only.0 && s.noise_adjusted_upper <= paired_only.1);
    }

    #[test]
    fn latency_bounds_need_min_pairs_and_reset() {
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 50));
        let (b, c) = (Duration::from_millis(40), Duration::from_millis(60));
        for _ in 0..49 {
            st.record_latency(t0, b, c);
        }
        let s = st.snapshot(t0);
        assert_eq!(s.latency_pairs, 49);
        assert!(s.latency_ratio_median_lower.is_nan() && s.latency_ratio_median_upper.is_nan());
        st.record_latency(t0, b, c);
        let s = st.snapshot(t0);
        // 50 pairs at exactly 1.5: the median is pinned to the grid points around it.
        assert!(s.latency_ratio_median_lower > 1.4 && s.latency_ratio_median_lower < 1.5);
        assert!(s.latency_ratio_median_upper >= 1.5 && s.latency_ratio_median_upper < 1.52);
        st.reset();
        let s = st.snapshot(t0);
        assert_eq!(s.latency_pairs, 0);
        assert!(s.latency_ratio_median_lower.is_nan());
    }

    #[test]
    fn noise_adjusted_handles_signs() {
        assert_eq!(noise_adjusted(0.9, 0.8, 1.0), 0.9);
        assert_eq!(noise_adjusted(0.45, 0.8, 0.9), 0.5);
        assert_eq!(noise_adjusted(-0.4, 0.8, 0.9), -0.5);
        assert_eq!(noise_adjusted(-0.4, 0.0, 0.9), f64::NEG_INFINITY);
        assert_eq!(noise_adjusted_upper(0.45, 0.9, 1.0), 0.5);
        assert_eq!(noise_adjusted_upper(0.45, 0.0, 1.0), f64::INFINITY);
        assert_eq!(noise_adjusted_upper(-0.45, 0.8, 0.9), -0.5);
        assert!(noise_adjusted(0.4, -0.2, 0.0).is_nan());

        // A canary that inverts embeddings gets a negative, finite bound.
        let t0 = Instant::now();
        let mut st = DriftState::new(cfg(60, 50));
        for _ in 0..500 {
            st.record(t0, -0.9, 1.0, None);
            st.record_self(t0, 0.99);
        }
        let s = st.snapshot(t0);
        assert!(
            s.noise_adjusted_lower < -0.9 && s.noise_adjusted_lower > -1.5,
            "{s:?}"
        );
    }
}
