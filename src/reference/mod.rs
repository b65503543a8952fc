//! Input drift against a frozen reference: is what the model returns today still like
//! what it returned when it was validated? No canary and no labels: the primary's own
//! embeddings against a compact sketch of a reference set.
//!
//! # The sketch
//!
//! A Gaussian kernel `k(x, y) = exp(−‖x − y‖² / 2σ²)` is approximated with `D` random
//! Fourier features (Rahimi & Recht 2007): `φ(x) = √(2/D) · cos(W x + b)`, rows of `W`
//! drawn from `N(0, I/σ²)`, `b` uniform on `[0, 2π)`, so that `φ(x)·φ(y) ≈ k(x, y)`.
//! `W` and `b` come from a seeded generator ([`FeatureMap::new`]): the file carries the
//! seed, not the matrix, and every pod regenerates the same map. `σ` is the median
//! distance between reference vectors (the median heuristic). A Gaussian kernel at that
//! bandwidth hardly sees a change of scale (an upstream change that collapses norms), so
//! one coordinate is added to `φ`: the standardised L2 norm, `γ · (‖x‖ − m) / s`, with
//! `m`, `s` the reference norms' mean and deviation and `γ²` an eighth of the kernel
//! features' total variance: a collapse of norms stands out within a window, and the
//! norm's own tail (a single squared coordinate) does not raise the threshold much. The reference
//! is the mean `μ` of these `D + 1` coordinates over the build data.
//!
//! A kernel over all coordinates at once hardly sees a change confined to a few of them
//! (truncated inputs move one coordinate's spread and another's centre). So the sketch
//! has a second, per-coordinate part ([`coords`]): each coordinate's `k/16` quantiles
//! over the build data, `15 · d` floats. Beside the alarm, [`regions`] says *where*
//! traffic moved: `k` centroids (spherical k-means, default 8, or the slices codebook)
//! and each region's share of the build data. No reference vector is kept.
//!
//! # The detector and what is calibrated
//!
//! Over a sliding window of the last `w` sampled embeddings there are two statistics,
//! and two more over a long window of the last `L` (default `10 · w`):
//!
//! - `S = ‖mean_window φ − μ‖²`, the (biased) squared maximum mean discrepancy between
//!   the window and the reference in the random-feature space;
//! - `K = max_{j,k} |F_j(q_jk) − p_jk|`, the largest gap between coordinate `j`'s
//!   empirical CDF over the window and the reference's at its quantile edges (a binned
//!   Kolmogorov–Smirnov distance). `p_jk`, the build data's share at or under the edge,
//!   is `k/16` up to rounding for a continuous coordinate; one with ties (always 0, or
//!   quantised to a few levels, as int8 encoders give) keeps its own shares in the file
//!   (format 6: before, such a coordinate sat off `k/16` on every sample, and alarmed);
//! - `K_L`, the same distance over the long window: a client that truncates half of
//!   the inputs moves a coordinate's CDF by a few hundredths, under one window's noise
//!   (about `1/√w`) and over the long window's (`1/√L`);
//! - `M_L = Σ_j [(Σ_i z_ij − L·m_j)² + (Σ_i z_ij² − L·q_j)² / 2] / L`, a test of
//!   every coordinate's centre and spread at once ([`coords::ScoreSums`]): `z_ij` is
//!   sample `i`'s coordinate `j` standardised by the build data's mean and deviation,
//!   as the long window keeps it (one byte per coordinate: its bin and its place in the
//!   bin to a sixteenth, [`coords::Levels`]), `m_j` and `q_j` coordinate `j`'s mean `z`
//!   and mean `z²` over the build data. Per coordinate the term is the score test for
//!   a change of centre and of scale of a normal variable; the sum adds them over all
//!   coordinates. A tenth of the traffic on a new topic or language moves many
//!   coordinates' centres by a little, under every single coordinate's KS noise;
//!   summed over the coordinates it stands out (on all-MiniLM-L6-v2, windows of 500
//!   with a tenth in another language: caught 0.98 at 5 % false alarms against 0.35
//!   for the binned KS, in a numpy prototype on exchangeable re-splits). Typos in a
//!   tenth of the inputs widen many coordinates' spread more than they move centres:
//!   the spread term took that cell from 0.68 (centres alone) to 0.94, topic 10 % from
//!   0.32 to 0.37, at no loss elsewhere (`benches/reference/prototype_spread_test.py`,
//!   1000 null and 400 shifted re-splits). It needs no state but two sums per
//!   coordinate: the values come from the bytes the long window already keeps.
//!   (Format 6 scored the bin alone, by its normal score: 0.93 on the language cell;
//!   sixteen bins cut off the tails, where a language's signal is. Format 7 had the
//!   centres' term alone.)
//!
//! They are combined as `T = max(S / s_S, K / s_K, K_L / s_L, M_L / s_M)`, and the shift
//! score is `T / h`, so **1 is the alarm line**. The scales and `h` are set at build
//! time.
//!
//! Per region `j`, beside the alarm: `g_j = |c_j − w·p_j| / √(w·p_j·(1 − p_j))`, the
//! binomial z-score of its count `c_j` in the window against its reference share `p_j`,
//! over `s_Q` (below); the largest names the region traffic moved to or from. As a
//! third part of the alarm's statistic it cost detections on real encoders (the line
//! rose for the other two; `benches/reference/failing_loudly_v3_regions_in_score.md`:
//! truncation of every input caught in 26 % of sequential streams against 47 %, half
//! the traffic off-topic in 64 % against 70 %) and caught no shift the two parts missed.
//!
//! **The sketch's own error.** The sketch is a sample too: live traffic drawn exactly
//! like the build data still sits off its quantiles and mean by the build sample's
//! error, which over a long window is as large as the window's own noise. So the null
//! is a two-sample one, and the calibration resamples both sides (the bootstrap): 100
//! pseudo-references, each `N` rows drawn with replacement from the `N` build rows,
//! keep their own kernel mean, share at or under every edge and region shares; a null
//! stream is drawn from the build rows and scored against one of them (`K` as the gap
//! between the two CDFs at the sketch's edges, `M_L` against the resample's own mean
//! scores). Every build row goes into the sketch.
//! (An earlier format split the data: the sketch from one half, null windows from the
//! other. Honest too, but its sketch from half the data was too coarse for the long
//! window: on all-MiniLM-L6-v2 the quantiles of 375 vectors sit off the population's
//! by about as much as half the traffic truncated moves them.)
//!
//! - All of them come from one set of null streams: 2000 streams drawn from the build
//!   rows as a detector started on them sees them: the window's parts (`S`, `K`, the
//!   region gaps) from the first sample for `w − 1 + H` samples, `H = α · ERT` (α = 5 %),
//!   and the long window's `K_L` and `M_L` for `H` samples once it is full. `s_S`,
//!   `s_K`, `s_L`, `s_M` and `s_Q` are the 95 % quantiles of each stream's largest `S`,
//!   `K`, `K_L`, `M_L` and `max_j g_j`: they weigh the parts alike (a χ²-like `S` has a far longer tail than
//!   the max-of-gaps `K`; scaling by medians would leave `K` no say). `h` is the 95 %
//!   quantile of each stream's largest `T` over the `H` samples after the long window
//!   fills, all four parts taken over those same samples, as the detector meets them
//!   (the largest `T` of a stream is the largest of its parts' largest values over
//!   their scales, so one pass keeps a maximum per part and stream). Earlier builds of
//!   format 6 let the window's parts enter `h` with their largest values over the first
//!   `w − 1 + H` samples instead (valid, but conservative; rebuild for the tighter
//!   line): more looks than `h` watches, and with `H` under `w` many more, so the line
//!   sat too high (a batch of 200 tested once, `H = 1`: no false alarm in 117
//!   exchangeable re-splits at a nominal 5 %). Until the long window is full its parts
//!   are 0, and the line is `h_early`, the same quantile of `max(S / s_S, K / s_K)`
//!   alone: a line that also covered the long window's parts would sit higher for the
//!   window's parts during the first `L` samples after every start (a restart, a
//!   deploy) for no look of the long window's (on the Failing-Loudly streams of 249
//!   samples: every input truncated caught in 0.49 of streams under the common line,
//!   0.74 under its own).
//!
//! **Checkpoints** (format 9). While the long window fills, its tests are looked at a
//! few times over the samples seen so far: at `c = max(w/2, 16) · 2^k` samples after
//! start, for every `c` under `L` and within the first `w − 1 + H` samples (at most six;
//! [`build::checkpoints`]). At each, `M` over the `c` samples and, past the first window,
//! `K_L` over them, each over its own scale (the 95 % quantile of its value at that
//! sample over the null streams); the larger stands for the long window's part until the
//! next checkpoint. The early line `h_early` is then the 95 % quantile of each stream's
//! largest `max(S / s_S, K / s_K, checkpoints)`, so the looks share the early phase's α
//! with the window's parts. Why: a stream is judged from its first samples, and a shift
//! in part of the traffic is a many-coordinate move the window's parts see poorly and
//! the mean test sees well; without the looks, the long window's tests waited `L`
//! samples (10 windows) to speak at all. On the Failing-Loudly streams made exchangeable
//! (all-MiniLM-L6-v2, W = 50, 249 samples, `benches/reference/sequential_split_long.py`)
//! the looks took half the traffic off-topic from a median of 79 samples to alarm to 35,
//! and a tenth in another language from 0.13 of streams caught to 0.93, at null 0.05
//! (100 re-splits; looks at every doubling instead: 50 and 0.94;
//! `benches/reference/sequential_v9.md`).
//! `reference build --no-checkpoints` builds format 8's detector.
//!
//! What that gives, and its assumption: if live embeddings are drawn like the reference
//! (from the population the build data was sampled from), a false alarm within the first
//! `w − 1 + H` samples after start, or within any `H` consecutive samples after that, has
//! probability α = 5 %, up to the bootstrap's error (2000 streams: about ±0.5 %) (`H`
//! samples across the moment the long window fills: 2α, each line's share), so
//! within `L` samples at most `⌈L/H⌉ · α ≈ L/ERT`. Choose `ERT = L/α` for a false-alarm
//! rate `α` over a horizon of `L` samples: the default `ERT = 10 000` at `w = 100` gives
//! 5 % over 500 samples. This is tight where the earlier per-step calibration with a
//! union bound over the steps was not: successive windows share all but one sample, so
//! the union bound over-counted by a wide margin (0 of 200 null streams alarmed against
//! a budget of 10) and the line sat higher than it had to, at the cost of power. What
//! it does not give: validity over unbounded looks (an e-process would); a reference
//! whose traffic was itself drifting.
//!
//! **One look.** A batch of `N` embeddings (a day's log) can be tested once, as a
//! two-sample test (`reference build --one-look N`): a long window of `N` and
//! `ERT = 1/α` make the horizon `H = 1`, so the line is the 95 % quantile of the
//! statistic at the one sample where the long window fills, and the replay's last score
//! is the test. The statistic is then `max(K_L / s_L, M_L / s_M)`: the window's parts
//! see only the batch's last `w` samples, which the long window's parts see too, and
//! held to the same line they would only raise it (format 8; in a numpy prototype on
//! the Failing-Loudly re-splits at n = 500, topic 10 % 0.22 → 0.28 and typos 10 %
//! 0.81 → 0.88 against the four parts, at no loss elsewhere). Watching every sample of
//! the same batch is a different question (an alarm anywhere in it) and pays for `N`
//! looks out of the same budget: on the Failing-Loudly windows of 500 with half the
//! inputs truncated, caught 0.75 watching every sample against 0.93 in one look, at
//! matched false-alarm rates near 5 % (`benches/reference/failing_loudly_v6b.md`).
//!
//! **Warm start.** Before the window has filled (the first `w − 1` samples after start),
//! its empty places are taken to sit exactly on the reference: with `t` samples seen,
//! `mean − μ = (Σφ − t·μ) / w` and the CDF gaps are `(count − t·k/16) / w`. Under no
//! drift these are sums of `t` centred terms, so `S` is scaled by `w/t` and the gaps by
//! `√(w/t)` to a full window's size, and the calibration's streams start empty: the line
//! holds from the first sample, and a shift present from the start is judged with the
//! power of the `t` samples seen, as Alibi Detect's `MMDDriftOnline` does with its
//! per-step thresholds. (Unscaled, the partial statistics met a full window's line only
//! late: a new topic took 37 samples at `w = 50`, scaled 20 — `BENCHMARKS.md`.) The long
//! window counts once it is full.
//!
//! Cost per sampled embedding: `D` dot products of length `d` ([`matvec`]), `D` cosines,
//! `15 · d` comparisons, two passes over `16 · d` counts and two over `d` scores;
//! state: `W` and `b` (`D·(d + 1)` floats), the quantiles and the scores' levels
//! (`79·d` floats), the window (`w·D` floats), the long window's byte rows (`L·d`
//! bytes) and the scores' sums and sums of squares (`d` each).

mod build;
pub mod cli;
pub mod coords;
mod detector;
mod file;
mod matvec;
pub mod picture;
pub mod regions;

pub use build::{build, BuildParams};
pub use detector::{Detector, Part, RegionNow, Step};
pub use file::{Checkpoint, Reference, ReferenceError, FORMAT_VERSION};
pub use picture::Picture;

/// Fewest embeddings `reference.from_first` may name: the sketch's quantiles and the
/// calibration's resamples need a few windows' worth.
pub const MIN_FROM_FIRST: usize = 1000;

/// Random Fourier features of a Gaussian kernel: `φ(x) = √(2/D) · cos(W x + b)`.
pub struct FeatureMap {
    /// `D × d`, row-major.
    w: Vec<f32>,
    b: Vec<f32>,
    dim: usize,
    scale: f32,
}

impl FeatureMap {
    /// The map of `features` features for `dim`-dimensional inputs and bandwidth `sigma`,
    /// drawn from `seed`: the same arguments give the same map on every machine.
    pub fn new(seed: u64, dim: usize, features: usize, sigma: f64) -> Self {
        let mut rng = SplitMix64(seed ^ 0x5eed_5eed_5eed_5eed_u64);
        let inv = (1.0 / sigma) as f32;
        let w = (0..features * dim)
            .map(|_| rng.normal() as f32 * inv)
            .collect();
        let b = (0..features)
            .map(|_| (rng.uniform() * std::f64::consts::TAU) as f32)
            .collect();
        FeatureMap {
            w,
            b,
            dim,
            scale: (2.0 / features as f64).sqrt() as f32,
        }
    }

    /// Number of features `D`.
    pub fn features(&self) -> usize {
        self.b.len()
    }

    /// Writes `φ(x)` into `out` (length `D`); `x` has the map's dimension.
    #[inline(always)]
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len(), self.dim);
        matvec::matvec(&self.w, x, out);
        self.cosines(out);
    }

    /// `W x_s` for the samples `xs` (rows of the map's dimension) into `out` (`D` per
    /// sample): the products of [`FeatureMap::apply`], several samples per pass over `W`.
    pub fn products(&self, xs: &[f32], out: &mut [f32]) {
        matvec::matmul(&self.w, xs, self.dim, out);
    }

    /// `W x` in `out` to `φ(x)`: a separate pass, so that the cosines vectorise.
    #[inline(always)]
    fn cosines(&self, out: &mut [f32]) {
        for (o, b) in out.iter_mut().zip(&self.b) {
            *o = self.scale * cos(*o + b);
        }
    }

    /// Writes `φ(x)` and the norm coordinate into `out` (length `D + 1`).
    #[inline(always)]
    pub fn apply_with_norm(&self, x: &[f32], norm: &NormScale, out: &mut [f32]) {
        matvec::matvec(&self.w, x, &mut out[..self.features()]);
        self.finish_with_norm(x, norm, out);
    }

    /// [`FeatureMap::apply_with_norm`] when `out[..D]` already holds `W x`
    /// ([`FeatureMap::products`]).
    #[inline(always)]
    pub fn finish_with_norm(&self, x: &[f32], norm: &NormScale, out: &mut [f32]) {
        let (kernel, last) = out.split_at_mut(self.features());
        self.cosines(kernel);
        let n = <f32 as simsimd::SpatialSimilarity>::dot(x, x)
            .unwrap_or(0.0)
            .sqrt();
        last[0] = norm.coordinate(n);
    }

    /// Bytes the map holds.
    pub fn state_bytes(&self) -> usize {
        (self.w.len() + self.b.len()) * std::mem::size_of::<f32>()
    }
}

/// `cos x` within 5e-6 for `|x|` up to 10⁴ (the features' arguments are a few units),
/// in plain arithmetic so that a loop of it vectorises (libm's `cosf` is a call per
/// value: a fifth of the detector's time at d = 384). Reduced to `[−π, π]` with the
/// round-to-nearest of the 1.5·2²³ trick, then Taylor to the 14th power (the next term
/// is `π¹⁶/16! ≈ 4·10⁻⁶` at the ends).
#[inline]
fn cos(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    let k = (x * std::f32::consts::FRAC_1_PI * 0.5 + MAGIC) - MAGIC;
    // 2π in three parts (Cody–Waite): the first has 8 significant bits, so `k·C1` is
    // exact for |k| < 2¹⁶ and the reduction loses nothing to rounding.
    let r = ((x - k * 6.281_25) - k * 0.001_935_307_2) - k * 1.025_313_2e-11;
    let r2 = r * r;
    let mut p = -1.0 / 87_178_291_200.0; // −1/14!
    p = p * r2 + 1.0 / 479_001_600.0;
    p = p * r2 - 1.0 / 3_628_800.0;
    p = p * r2 + 1.0 / 40_320.0;
    p = p * r2 - 1.0 / 720.0;
    p = p * r2 + 1.0 / 24.0;
    p = p * r2 - 0.5;
    p * r2 + 1.0
}

/// The norm coordinate: `weight · (‖x‖ − mean) / sd`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NormScale {
    pub mean: f64,
    pub sd: f64,
    pub weight: f64,
}

impl NormScale {
    fn coordinate(&self, norm: f64) -> f32 {
        (self.weight * (norm - self.mean) / self.sd) as f32
    }
}

/// A small seeded generator (SplitMix64): stable across platforms and crate versions,
/// which the reference's reproducibility needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::ids::mix64(self.0)
    }

    /// Uniform on [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller, one of the pair).
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform on 0..n.
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests;
