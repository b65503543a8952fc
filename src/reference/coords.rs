//! The per-coordinate part of the sketch: each coordinate's reference quantiles, and a
//! binned Kolmogorov–Smirnov distance of a window to them.
//!
//! A coordinate whose spread or centre moves (a client that truncates its inputs moved
//! one coordinate's spread to half and another's centre by half a deviation on
//! all-MiniLM-L6-v2) hardly moves a Gaussian kernel at the median bandwidth, which sees
//! all coordinates at once. A per-coordinate test does. The file keeps, per coordinate,
//! the reference's `k/16` quantiles (`k = 1..15`): `15 · d` floats and no vector. A
//! sample falls in one of 16 bins per coordinate; the window keeps the count per bin.
//! The statistic is the largest gap, over coordinates and edges, between the window's
//! empirical CDF at an edge and the reference's (`k/16` for a continuous coordinate; the
//! build data's own share for one with ties, [`ties`]): a Kolmogorov–Smirnov distance
//! evaluated at 15 points.
//!
//! The same byte gives a mean test ([`Levels`]): a shift of a tenth of the traffic to a
//! new topic or language moves many coordinates' centres a little, too little for any
//! one coordinate's KS gap, but the sum over coordinates of each one's squared
//! standardised mean sees it. A sample's byte per coordinate keeps its bin (low four
//! bits) and its place in the bin to a sixteenth (high four bits; in the two open outer
//! bins, quarters of a deviation, up to four past the outer edge): the value to within
//! a 256th of the reference's spread where most samples fall, and clipped about 5½
//! deviations out. The mean test's score is that value standardised by the build data's
//! mean and deviation. (It replaced the bins' normal scores: on all-MiniLM-L6-v2, one
//! look at windows of 500 with a tenth in another language, caught 0.98 against 0.93
//! at a matched 5 %, a tenth with typos 0.65 against 0.55, in the numpy prototype
//! `benches/reference/prototype_mean_test.py`: the tails carry the signal, and sixteen
//! bins cut them off.)

/// The largest window the 16-bit counts hold.
pub const MAX_WINDOW: usize = i16::MAX as usize;

/// Bins per coordinate; the file keeps the `BINS − 1` inner edges.
pub const BINS: usize = 16;
const EDGES: usize = BINS - 1;

/// The mean test's scores are fixed-point, in units of `1/SCORE_UNIT` of a deviation:
/// integers, so that a long window's running sums are exact.
pub const SCORE_UNIT: f64 = 1024.0;
/// Sub-levels per bin (the byte's high four bits).
const SUB: usize = 16;
/// The open outer bins' sub-levels, in deviations of the coordinate.
const TAIL_STEP: f32 = 0.25;
/// Scores are clipped here (64 deviations): a long window's sum of
/// [`MAX_WINDOW`] of them fits an `i32`.
const SCORE_CLIP: i32 = 65_536;

/// One bin of one coordinate: where its sub-levels start and how many there are per
/// unit of value, and the fixed-point score of its sub-level 0 and of each step.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Level {
    origin: f32,
    inv: f32,
    base: i32,
    step: i32,
}

/// Each coordinate's quantiles, and the value a sample's byte stands for, standardised
/// (module doc): bins for the KS parts and scores for the mean test, from one byte per
/// coordinate.
#[derive(Clone)]
pub struct Levels {
    /// The quantiles, bin-major (`edges[k·dim + j]`).
    edges: Vec<f32>,
    /// Coordinate-major (`levels[16·j + b]`): a coordinate's 16 bins in 256 bytes, so
    /// that the lookups of one sample's coordinate stay in a few cache lines.
    levels: Vec<Level>,
    dim: usize,
}

impl Levels {
    /// From the quantiles ([`fit`]) and each coordinate's mean and deviation over the
    /// build data (a deviation of 0: the coordinate scores 0).
    pub fn new(edges: Vec<f32>, mean: &[f32], sd: &[f32]) -> Self {
        let dim = mean.len();
        debug_assert_eq!(edges.len(), EDGES * dim);
        let mut levels = vec![Level::default(); BINS * dim];
        let fixed = |v: f64| {
            if v.is_finite() {
                (v * SCORE_UNIT)
                    .round()
                    .clamp(-f64::from(SCORE_CLIP), f64::from(SCORE_CLIP)) as i32
            } else {
                0
            }
        };
        for j in 0..dim {
            let s = f64::from(sd[j]);
            let inv_sd = if s > 0.0 && s.is_finite() {
                1.0 / s
            } else {
                0.0
            };
            let tail = f64::from(TAIL_STEP) * s;
            let inv_tail = if tail > 0.0 && tail.is_finite() {
                1.0 / tail
            } else {
                0.0
            };
            let edge = |k: usize| f64::from(edges[k * dim + j]);
            for (b, l) in levels[j * BINS..][..BINS].iter_mut().enumerate() {
                // Where the bin starts, how wide a sub-level is (signed: the lowest bin
                // counts down from its edge) and how many per unit of value.
                let (o, width, inv) = match b {
                    0 => (edge(0), -tail, -inv_tail),
                    b if b == BINS - 1 => (edge(EDGES - 1), tail, inv_tail),
                    b => {
                        let width = (edge(b) - edge(b - 1)) / SUB as f64;
                        let inv = if width > 0.0 { 1.0 / width } else { 0.0 };
                        (edge(b - 1), width, inv)
                    }
                };
                *l = Level {
                    origin: o as f32,
                    inv: if inv.is_finite() { inv as f32 } else { 0.0 },
                    base: fixed((o + 0.5 * width - f64::from(mean[j])) * inv_sd),
                    step: fixed(width * inv_sd),
                };
            }
        }
        Levels { edges, levels, dim }
    }

    /// Writes each coordinate's byte of `x`: its bin (the number of edges strictly below
    /// it, 0..16) in the low four bits, its sub-level in the high four; `scratch` (any
    /// length) is reused between calls.
    #[inline]
    pub fn bins(&self, x: &[f32], scratch: &mut Vec<u32>, out: &mut [u8]) {
        self.bytes(x, scratch);
        for (o, b) in out.iter_mut().zip(scratch.iter()) {
            *o = *b as u8;
        }
    }

    /// [`Levels::bins`] for the long window, its counts and the mean test's sums kept in
    /// the same pass: the new row counted and its scores added and, when `replace`, the
    /// row `out` held before (the sample leaving the long window, whose slot the new one
    /// takes) taken out of both. The same as [`Counts::remove`], [`ScoreSums::add`]
    /// around [`Levels::bins`], in one pass over the coordinates. With `targets` (the
    /// long window full after this row), returns [`ScoreSums::statistic`] of the
    /// updated sums, from the same pass; else 0.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn bins_into_long(
        &self,
        x: &[f32],
        scratch: &mut Vec<u32>,
        out: &mut [u8],
        counts: &mut Counts,
        sums: &mut ScoreSums,
        replace: bool,
        targets: Option<&ScoreTargets>,
    ) -> f64 {
        debug_assert_eq!(sums.first.len(), out.len());
        debug_assert_eq!(counts.dim, out.len());
        self.bytes(x, scratch);
        let ScoreSums { first, second } = sums;
        let dim = counts.dim;
        let counts = &mut counts.counts;
        for (j, ((o, b), ls)) in out
            .iter_mut()
            .zip(scratch.iter())
            .zip(self.levels.chunks_exact(BINS))
            .enumerate()
        {
            let (old, new) = (*o, *b as u8);
            *o = new;
            let z = Self::score(ls, new);
            let (mut d1, mut d2) = (z, i64::from(z) * i64::from(z));
            if replace {
                let z = Self::score(ls, old);
                d1 -= z;
                d2 -= i64::from(z) * i64::from(z);
                counts[usize::from(old & 15) * dim + j] -= 1;
            }
            counts[usize::from(new & 15) * dim + j] += 1;
            first[j] += d1;
            second[j] += d2;
        }
        match targets {
            Some(t) => t.statistic(first, second),
            None => 0.0,
        }
    }

    /// Each coordinate's byte of `x` ([`Levels::bins`]) into `scratch[j]`: first the
    /// count of edges below it, edge-major in 32-bit lanes so that the compares
    /// vectorise, then the byte in its place.
    #[inline(always)]
    fn bytes(&self, x: &[f32], scratch: &mut Vec<u32>) {
        let dim = x.len();
        scratch.clear();
        scratch.resize(dim, 0);
        for row in self.edges.chunks_exact(dim) {
            for ((b, v), e) in scratch.iter_mut().zip(x).zip(row) {
                *b += u32::from(*v > *e);
            }
        }
        for ((b, v), ls) in scratch
            .iter_mut()
            .zip(x)
            .zip(self.levels.chunks_exact(BINS))
        {
            let l = ls[*b as usize & 15];
            let s = (*v - l.origin) * l.inv;
            // NaN and negatives to 0, past the bin's end to 15.
            let s = if s >= (SUB - 1) as f32 {
                SUB as u32 - 1
            } else if s > 0.0 {
                s as u32
            } else {
                0
            };
            *b = (*b & 15) | (s << 4);
        }
    }

    /// The fixed-point score of a byte of a coordinate with levels `ls`.
    #[inline]
    fn score(ls: &[Level], byte: u8) -> i32 {
        let l = ls[usize::from(byte & 15)];
        (l.base + i32::from(byte >> 4) * l.step).clamp(-SCORE_CLIP, SCORE_CLIP)
    }

    /// Each coordinate's mean score and mean squared score over `rows` (byte rows of
    /// [`Levels::bins`]): what the mean test measures a window against.
    pub fn score_means<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> ScoreMeans {
        let mut sums = ScoreSums::new(self.dim);
        let mut n = 0u64;
        for r in rows {
            sums.add(self, r, 1);
            n += 1;
        }
        let n = n.max(1) as f64;
        ScoreMeans {
            first: (sums.first.iter())
                .map(|s| (f64::from(*s) / SCORE_UNIT / n) as f32)
                .collect(),
            second: (sums.second.iter())
                .map(|s| (*s as f64 / (SCORE_UNIT * SCORE_UNIT) / n) as f32)
                .collect(),
        }
    }

    pub fn state_bytes(&self) -> usize {
        self.edges.len() * std::mem::size_of::<f32>()
            + self.levels.len() * std::mem::size_of::<Level>()
    }
}

/// Per coordinate, the sums of a window's scores and of their squares, in fixed point
/// (`SCORE_UNIT` and its square): integers, so removing a row undoes adding it exactly.
/// A square is at most `SCORE_CLIP²` (2³²), so [`MAX_WINDOW`] of them fit an `i64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreSums {
    first: Vec<i32>,
    second: Vec<i64>,
}

impl ScoreSums {
    pub fn new(dim: usize) -> Self {
        ScoreSums {
            first: vec![0; dim],
            second: vec![0; dim],
        }
    }

    /// Adds (`sign` 1) or removes (`sign` −1) a byte row's scores.
    pub fn add(&mut self, levels: &Levels, row: &[u8], sign: i32) {
        for (((s1, s2), b), ls) in (self.first.iter_mut())
            .zip(self.second.iter_mut())
            .zip(row)
            .zip(levels.levels.chunks_exact(BINS))
        {
            let z = Levels::score(ls, *b);
            *s1 += sign * z;
            *s2 += i64::from(sign) * i64::from(z) * i64::from(z);
        }
    }

    /// Coordinate `j`'s term of [`ScoreSums::statistic`], over `n` samples.
    pub fn term(&self, means: &ScoreMeans, n: usize, j: usize) -> f64 {
        let n = n.max(1) as f64;
        let mean = f64::from(self.first[j]) / SCORE_UNIT - n * f64::from(means.first[j]);
        let square =
            self.second[j] as f64 / (SCORE_UNIT * SCORE_UNIT) - n * f64::from(means.second[j]);
        (mean * mean + 0.5 * square * square) / n
    }

    /// The mean test's statistic over `n` samples against the build data's mean scores:
    /// `Σ_j [(Σ_i z_ij − n·m_j)² + (Σ_i z_ij² − n·q_j)² / 2] / n`, per coordinate the
    /// score test for a change of centre and of spread as if `z` were normal (module
    /// doc). About 1.5 times the dimension under no drift when coordinates are
    /// independent; far more when many centres or spreads moved.
    pub fn statistic(&self, means: &ScoreMeans, n: usize) -> f64 {
        let n = n.max(1) as f64;
        let (u1, u2) = (1.0 / SCORE_UNIT, 1.0 / (SCORE_UNIT * SCORE_UNIT));
        let mut total = 0.0;
        for (((s1, s2), m1), m2) in (self.first.iter())
            .zip(&self.second)
            .zip(&means.first)
            .zip(&means.second)
        {
            let mean = f64::from(*s1) * u1 - n * f64::from(*m1);
            let square = *s2 as f64 * u2 - n * f64::from(*m2);
            total += mean * mean + 0.5 * square * square;
        }
        total / n
    }

    pub fn state_bytes(&self) -> usize {
        self.first.len() * std::mem::size_of::<i32>()
            + self.second.len() * std::mem::size_of::<i64>()
    }
}

/// [`ScoreSums::statistic`]'s expectations for a window of `n`, in the sums' fixed
/// point, so that a pass over the sums can take the statistic as it goes
/// ([`Levels::bins_into_long`]).
pub struct ScoreTargets {
    first: Vec<f64>,
    second: Vec<f64>,
    n: f64,
}

impl ScoreTargets {
    pub fn new(means: &ScoreMeans, n: usize) -> Self {
        let n = n.max(1) as f64;
        ScoreTargets {
            first: (means.first.iter())
                .map(|m| n * f64::from(*m) * SCORE_UNIT)
                .collect(),
            second: (means.second.iter())
                .map(|m| n * f64::from(*m) * SCORE_UNIT * SCORE_UNIT)
                .collect(),
            n,
        }
    }

    /// [`ScoreSums::statistic`] of the sums `first`, `second` (of a window of `n`).
    /// Four running sums of each term (coordinates `j mod 4`), added at the end, so that
    /// no sum waits on the one before it.
    #[inline(always)]
    fn statistic(&self, first: &[i32], second: &[i64]) -> f64 {
        const LANES: usize = 4;
        let (mut a2, mut b2) = ([0.0f64; LANES], [0.0f64; LANES]);
        let lane = |j: usize| {
            let a = f64::from(first[j]) - self.first[j];
            let b = second[j] as f64 - self.second[j];
            (a * a, b * b)
        };
        let dim = first.len();
        for base in (0..dim / LANES * LANES).step_by(LANES) {
            for k in 0..LANES {
                let (a, b) = lane(base + k);
                a2[k] += a;
                b2[k] += b;
            }
        }
        for j in dim / LANES * LANES..dim {
            let (a, b) = lane(j);
            a2[0] += a;
            b2[0] += b;
        }
        let (a2, b2) = (
            (a2[0] + a2[1]) + (a2[2] + a2[3]),
            (b2[0] + b2[1]) + (b2[2] + b2[3]),
        );
        let u2 = SCORE_UNIT * SCORE_UNIT;
        (a2 / u2 + 0.5 * b2 / (u2 * u2)) / self.n
    }

    pub fn state_bytes(&self) -> usize {
        (self.first.len() + self.second.len()) * std::mem::size_of::<f64>()
    }
}

/// Each coordinate's mean score `m_j` and mean squared score `q_j` over the build data
/// (or a resample of it): the mean test's expectations.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreMeans {
    pub first: Vec<f32>,
    pub second: Vec<f32>,
}

/// Each coordinate's mean and deviation over `rows` (all of dimension `dim`).
pub fn moments(rows: impl Iterator<Item = impl AsRef<[f32]>>, dim: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut s, mut q) = (vec![0.0f64; dim], vec![0.0f64; dim]);
    let mut n = 0usize;
    for r in rows {
        for ((s, q), v) in s.iter_mut().zip(q.iter_mut()).zip(r.as_ref()) {
            let v = f64::from(*v);
            *s += v;
            *q += v * v;
        }
        n += 1;
    }
    let nf = n.max(1) as f64;
    let mean: Vec<f32> = s.iter().map(|s| (s / nf) as f32).collect();
    let sd = s
        .iter()
        .zip(&q)
        .map(|(s, q)| (q / nf - (s / nf).powi(2)).max(0.0).sqrt() as f32)
        .collect();
    (mean, sd)
}

/// Each coordinate's `k/16` quantiles over `rows` (all of dimension `dim`), bin-major:
/// `edges[k·dim + j]` is coordinate `j`'s `(k + 1)/16` quantile.
pub fn fit(rows: impl Iterator<Item = impl AsRef<[f32]>>, dim: usize) -> Vec<f32> {
    let mut by_coord: Vec<Vec<f32>> = vec![Vec::new(); dim];
    for r in rows {
        for (c, v) in by_coord.iter_mut().zip(r.as_ref()) {
            c.push(*v);
        }
    }
    let mut edges = vec![0.0f32; EDGES * dim];
    for (j, c) in by_coord.iter_mut().enumerate() {
        c.sort_by(f32::total_cmp);
        let n = c.len();
        for k in 0..EDGES {
            // The value at rank ⌈(k+1)·n/16⌉: at least that share of the rows is ≤ it.
            let rank = ((k + 1) * n).div_ceil(BINS).clamp(1, n.max(1));
            edges[k * dim + j] = c.get(rank - 1).copied().unwrap_or(0.0);
        }
    }
    edges
}

/// Each edge's share of `rows` (bin rows of `dim` coordinates) at or under it,
/// bin-major (`15 · dim` values): `k/16` for a continuous coordinate, far from it for
/// one with ties (a coordinate that is always 0, or quantised to a few levels).
pub fn edge_shares<'a>(rows: impl Iterator<Item = &'a [u8]>, dim: usize) -> Vec<f32> {
    let mut counts = vec![0u32; BINS * dim];
    let mut n = 0u64;
    for r in rows {
        for (j, b) in r.iter().enumerate() {
            counts[usize::from(*b & 15) * dim + j] += 1;
        }
        n += 1;
    }
    let mut cum = vec![0u64; dim];
    let mut out = vec![0.0f32; EDGES * dim];
    for k in 0..EDGES {
        for (j, c) in cum.iter_mut().enumerate() {
            *c += u64::from(counts[k * dim + j]);
            out[k * dim + j] = (*c as f64 / n.max(1) as f64) as f32;
        }
    }
    out
}

/// A coordinate with ties and its shares at or under its 15 quantiles.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TiedCoordinate {
    pub coordinate: usize,
    pub shares: Vec<f32>,
}

/// The share of `n` distinct values at or under their `(k+1)/16` quantile as [`fit`]
/// places it (the value at rank `⌈(k+1)·n/16⌉`).
fn untied_share(k: usize, n: usize) -> f32 {
    let n = n.max(1);
    (((k + 1) * n).div_ceil(BINS).clamp(1, n) as f64 / n as f64) as f32
}

/// The coordinates of `shares` ([`edge_shares`] of `n` rows) whose shares are not those
/// of distinct values.
pub fn ties(shares: &[f32], dim: usize, n: usize) -> Vec<TiedCoordinate> {
    (0..dim)
        .filter_map(|j| {
            let s: Vec<f32> = (0..EDGES).map(|k| shares[k * dim + j]).collect();
            let tied = s
                .iter()
                .enumerate()
                .any(|(k, v)| (v - untied_share(k, n)).abs() > 0.5 / n.max(1) as f32);
            tied.then_some(TiedCoordinate {
                coordinate: j,
                shares: s,
            })
        })
        .collect()
}

/// Every coordinate's shares (bin-major): the untied ones' from `n`, the tied ones'
/// from `ties`.
pub fn expand_ties(ties: &[TiedCoordinate], dim: usize, n: usize) -> Vec<f32> {
    let mut out: Vec<f32> = (0..EDGES * dim)
        .map(|i| untied_share(i / dim.max(1), n))
        .collect();
    for t in ties {
        for (k, s) in t.shares.iter().enumerate().take(EDGES) {
            out[k * dim + t.coordinate] = *s;
        }
    }
    out
}

/// What a window of `w` samples is measured against: `w` times the reference's share at
/// or under each edge, in two fixed-point forms.
#[derive(Clone)]
pub struct Targets {
    /// `16 · w · share`, rounded: scaled by `t/w` while `t < w` samples are counted.
    sixteenths: Vec<i32>,
    /// `p · w · share`, rounded, with `p = min(16, 32767 / w)`: a full window's gap in
    /// 16-bit lanes (`p · count` fits, as a window holds at most `w` samples).
    fixed: Vec<i16>,
    p: i16,
    w: usize,
}

impl Targets {
    /// The targets of a window of `w` samples (1..=[`MAX_WINDOW`]) from [`edge_shares`].
    pub fn new(shares: &[f32], w: usize) -> Self {
        let w = w.clamp(1, MAX_WINDOW);
        let p = (MAX_WINDOW / w).min(BINS) as i16;
        Targets {
            sixteenths: shares
                .iter()
                .map(|s| ((BINS * w) as f64 * f64::from(*s)).round() as i32)
                .collect(),
            fixed: shares
                .iter()
                .map(|s| (f64::from(p) * w as f64 * f64::from(*s)).round() as i16)
                .collect(),
            p,
            w,
        }
    }

    /// `k/16` at every edge: a continuous coordinate's shares.
    pub fn uniform(dim: usize, w: usize) -> Self {
        let shares: Vec<f32> = (0..EDGES * dim)
            .map(|i| ((i / dim.max(1)) + 1) as f32 / BINS as f32)
            .collect();
        Targets::new(&shares, w)
    }

    pub fn state_bytes(&self) -> usize {
        self.sixteenths.len() * std::mem::size_of::<i32>()
            + self.fixed.len() * std::mem::size_of::<i16>()
    }
}

/// Counts per (bin, coordinate) over a window, and the distance to the reference.
#[derive(Clone)]
pub struct Counts {
    /// `counts[k·dim + j]`: samples in the window whose coordinate `j` is in bin `k`.
    /// 16-bit, so that the distance's loop takes 8 coordinates per SSE2 instruction
    /// (a window holds at most [`MAX_WINDOW`] samples).
    counts: Vec<i16>,
    cum: Vec<i16>,
    dim: usize,
}

impl Counts {
    pub fn new(dim: usize) -> Self {
        Counts {
            counts: vec![0; BINS * dim],
            cum: vec![0; dim],
            dim,
        }
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
    }

    /// Counts a byte row ([`Levels::bins`]: the bin is the low four bits).
    #[inline]
    pub fn add(&mut self, bins: &[u8]) {
        for (j, b) in bins.iter().enumerate() {
            self.counts[usize::from(*b & 15) * self.dim + j] += 1;
        }
    }

    #[inline]
    pub fn remove(&mut self, bins: &[u8]) {
        for (j, b) in bins.iter().enumerate() {
            self.counts[usize::from(*b & 15) * self.dim + j] -= 1;
        }
    }

    /// [`Counts::remove`] of `old` and [`Counts::add`] of `new`, in one pass.
    #[inline(always)]
    pub fn replace(&mut self, old: &[u8], new: &[u8]) {
        for (j, (o, n)) in old.iter().zip(new).enumerate() {
            self.counts[usize::from(*o & 15) * self.dim + j] -= 1;
            self.counts[usize::from(*n & 15) * self.dim + j] += 1;
        }
    }

    /// `max over j, k of |cum_j(k) − t · share_jk| / w`, where `cum_j(k)` counts the
    /// window's samples at or under coordinate `j`'s edge `k`, `t` is the samples counted
    /// and `share_jk` the reference's share (`targets`, for a window of `w`). With
    /// `t = w` it is the binned KS distance; with `t < w` the window's other `w − t`
    /// places are taken to sit exactly on the reference (the detector's warm start).
    /// `scratch` is reused between calls.
    #[inline(always)]
    pub fn distance(&mut self, targets: &Targets, t: usize, scratch: &mut Vec<i32>) -> f64 {
        debug_assert_eq!(targets.fixed.len(), EDGES * self.dim);
        let w = targets.w;
        if t < w {
            return self.gap_scaled(&targets.sixteenths, t as f32 / w as f32, scratch) / w as f64;
        }
        // A full window: in 16-bit lanes, `p · cum − target` per entry and its largest
        // and smallest value, which vectorise.
        let p = targets.p;
        self.cum.iter_mut().for_each(|c| *c = 0);
        let (mut hi, mut lo) = (0i16, 0i16);
        for (row, tgt) in self
            .counts
            .chunks_exact(self.dim)
            .zip(targets.fixed.chunks_exact(self.dim))
        {
            for ((c, n), t) in self.cum.iter_mut().zip(row).zip(tgt) {
                *c += n;
                let v = *c * p - t;
                // Selects, not `Ord::max`: the same vector max in a release build, and
                // no call per element in a debug one (the demo builds a reference).
                hi = if v > hi { v } else { hi };
                lo = if v < lo { v } else { lo };
            }
        }
        f64::from(i32::from(hi).max(-i32::from(lo))) / f64::from(p) / w as f64
    }

    /// `max over j, k of |cum_j(k) − scale · target[k·dim + j] / 16|`, in samples
    /// (`target` in sixteenths of a sample; `scale = t / w` for `t` samples counted).
    #[inline(always)]
    fn gap_scaled(&self, target: &[i32], scale: f32, cum: &mut Vec<i32>) -> f64 {
        cum.clear();
        cum.resize(self.dim, 0);
        let mut worst = 0.0f32;
        for (row, tgt) in self
            .counts
            .chunks_exact(self.dim)
            .zip(target.chunks_exact(self.dim))
        {
            for ((c, n), t) in cum.iter_mut().zip(row).zip(tgt) {
                *c += i32::from(*n);
                let g = ((*c * BINS as i32) as f32 - *t as f32 * scale).abs();
                worst = if g > worst { g } else { worst };
            }
        }
        f64::from(worst) / BINS as f64
    }

    /// The coordinate with the largest gap (as in [`Counts::distance`]): what drifted.
    pub fn worst_coordinate(&self, targets: &Targets, t: usize) -> usize {
        let mut best = (0.0f32, 0);
        // `t · share` from the window's target in sixteenths of a sample.
        let per = t as f32 / (BINS * targets.w) as f32;
        for j in 0..self.dim {
            let mut cum = 0i32;
            for k in 0..EDGES {
                cum += i32::from(self.counts[k * self.dim + j]);
                let gap = (cum as f32 - per * targets.sixteenths[k * self.dim + j] as f32).abs();
                if gap > best.0 {
                    best = (gap, j);
                }
            }
        }
        best.1
    }

    pub fn state_bytes(&self) -> usize {
        (self.counts.len() + self.cum.len()) * std::mem::size_of::<i16>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_split_a_coordinate_in_sixteenths_and_the_distance_is_ks() {
        // Coordinate 0: 0..160; coordinate 1: constant.
        let rows: Vec<[f32; 2]> = (0..160).map(|i| [i as f32, 1.0]).collect();
        let edges = fit(rows.iter().map(|r| &r[..]), 2);
        assert_eq!(edges.len(), 15 * 2);
        assert_eq!(edges[0], 9.0, "10 of 160 are ≤ 9");
        assert_eq!(edges[14 * 2], 149.0);
        let lv = Levels::new(edges.clone(), &[80.0, 1.0], &[46.0, 0.0]);
        let mut b = [0u8; 2];
        let mut sc = Vec::new();
        lv.bins(&[9.0, 1.0], &mut sc, &mut b);
        assert_eq!(b, [0, 0]);
        lv.bins(&[9.5, 2.0], &mut sc, &mut b);
        assert_eq!(b.map(|v| v & 15), [1, 15]);
        // A window like the reference: distance 0. All in the lowest bin: 15/16.
        let mut c = Counts::new(2);
        for r in &rows {
            lv.bins(r, &mut sc, &mut b);
            c.add(&b);
        }
        let mut sc32 = Vec::new();
        let d = c.distance(&Targets::uniform(2, 160), 160, &mut sc32);
        // Coordinate 1 is constant: every sample sits at or under every edge.
        assert!((d - 15.0 / 16.0).abs() < 1e-6, "{d}");
        let mut only0 = Counts::new(1);
        let e0: Vec<f32> = (0..15).map(|k| edges[k * 2]).collect();
        let lv0 = Levels::new(e0, &[80.0], &[46.0]);
        let mut b0 = [0u8; 1];
        for r in &rows {
            lv0.bins(&r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!(only0.distance(&Targets::uniform(1, 160), 160, &mut sc32) < 1e-6);
        // Half the window empty (warm start): still 0 when what is there is balanced.
        only0.clear();
        for r in rows.iter().step_by(2) {
            lv0.bins(&r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!(only0.distance(&Targets::uniform(1, 160), 80, &mut sc32) < 0.5 / 160.0 + 1e-6);
        // The low half only: the CDF at the median edge is off by 40 of 160 = 0.25.
        only0.clear();
        for r in &rows[..80] {
            lv0.bins(&r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!((only0.distance(&Targets::uniform(1, 160), 80, &mut sc32) - 0.25).abs() < 1e-6);
        assert_eq!(c.worst_coordinate(&Targets::uniform(2, 160), 160), 1);
        // Against the build rows' own shares, the constant coordinate is no gap.
        let rows_bins: Vec<[u8; 2]> = rows
            .iter()
            .map(|r| {
                let mut b = [0u8; 2];
                lv.bins(r, &mut sc, &mut b);
                b
            })
            .collect();
        let shares = edge_shares(rows_bins.iter().map(|b| &b[..]), 2);
        assert!((shares[0] - 10.0 / 160.0).abs() < 1e-6);
        assert_eq!(
            shares[1], 1.0,
            "the constant coordinate: all at or under edge 0"
        );
        assert!(c.distance(&Targets::new(&shares, 160), 160, &mut sc32) < 1e-6);
        // The fixed-point and the scaled paths agree (a window of 161: t = 160 < w).
        let full = c.distance(&Targets::uniform(2, 160), 160, &mut sc32);
        let scaled = c.distance(&Targets::uniform(2, 161), 160, &mut sc32) * 161.0 / 160.0;
        assert!((full - scaled).abs() < 0.01, "{full} vs {scaled}");
    }

    #[test]
    fn a_byte_keeps_the_value_to_a_sixteenth_of_its_bin_and_scores_it_standardised() {
        // One coordinate, 0..1600 in steps of 1: edges every 100, mean 800, sd 462.
        let rows: Vec<[f32; 1]> = (0..1600).map(|i| [i as f32]).collect();
        let edges = fit(rows.iter().map(|r| &r[..]), 1);
        let (mean, sd) = moments(rows.iter().map(|r| &r[..]), 1);
        assert!((mean[0] - 799.5).abs() < 1e-3 && (sd[0] - 461.88).abs() < 0.01);
        let lv = Levels::new(edges, &mean, &sd);
        let (mut sc, mut b) = (Vec::new(), [0u8; 1]);
        let score = |lv: &Levels, v: f32, sc: &mut Vec<u32>, b: &mut [u8; 1]| {
            lv.bins(&[v], sc, b);
            let mut sums = ScoreSums::new(1);
            sums.add(lv, b, 1);
            let z = f64::from(sums.first[0]) / SCORE_UNIT;
            // The square's sum holds the square of the same fixed-point score.
            assert_eq!(sums.second[0], i64::from(sums.first[0]).pow(2));
            z
        };
        // Inner bins: within a sixteenth of a bin (100 / 16 = 6.25) of the value.
        for v in [150.0f32, 777.7, 1234.0, 1450.0] {
            let z = score(&lv, v, &mut sc, &mut b);
            let want = (f64::from(v) - 799.5) / 461.88;
            assert!(
                (z - want).abs() < 6.25 / 461.88 + 2e-3,
                "{v}: {z} vs {want}"
            );
        }
        // Outer bins count quarters of a deviation from their edge, up to 4.
        let hi = score(&lv, 1499.0 + 2.1 * 461.88, &mut sc, &mut b);
        assert_eq!(b[0] & 15, 15);
        assert!(
            (hi - (1499.0 - 799.5 + 2.125 * 461.88) / 461.88).abs() < 2e-3,
            "{hi}"
        );
        let clipped = score(&lv, 1e9, &mut sc, &mut b);
        assert!((clipped - (1499.0 - 799.5 + 3.875 * 461.88) / 461.88).abs() < 2e-3);
        let lo = score(&lv, 99.0 - 0.3 * 461.88, &mut sc, &mut b);
        assert_eq!(b[0], 1 << 4, "bin 0, sub-level 1");
        assert!(
            (lo - (99.0 - 799.5 - 0.375 * 461.88) / 461.88).abs() < 2e-3,
            "{lo}"
        );
        let nan = score(&lv, f32::NAN, &mut sc, &mut b);
        assert!(
            (nan - (99.0 - 799.5 - 0.125 * 461.88) / 461.88).abs() < 2e-3,
            "{nan}"
        );
        // Adding and removing a row leaves the sums exactly as they were.
        let mut sums = ScoreSums::new(1);
        for v in [3.0f32, 900.0, 5000.0] {
            lv.bins(&[v], &mut sc, &mut b);
            sums.add(&lv, &b, 1);
            sums.add(&lv, &b, -1);
        }
        assert_eq!(sums, ScoreSums::new(1));
        // The fused pass: the old row's counts and scores out, the new one's in.
        let (mut fused, mut apart) = (ScoreSums::new(1), ScoreSums::new(1));
        let (mut fused_counts, mut apart_counts) = (Counts::new(1), Counts::new(1));
        let means = ScoreMeans {
            first: vec![0.1],
            second: vec![1.2],
        };
        let targets = ScoreTargets::new(&means, 1);
        let (mut row_f, mut row_a) = ([0u8], [0u8]);
        for (i, v) in [3.0f32, 900.0, 5000.0, -40.0, 1450.0]
            .into_iter()
            .enumerate()
        {
            let stat = lv.bins_into_long(
                &[v],
                &mut sc,
                &mut row_f,
                &mut fused_counts,
                &mut fused,
                i > 0,
                Some(&targets),
            );
            let want = fused.statistic(&means, 1);
            assert!(
                (stat - want).abs() <= 1e-9 * want.max(1.0),
                "{stat} vs {want}"
            );
            if i > 0 {
                apart.add(&lv, &row_a, -1);
                apart_counts.remove(&row_a);
            }
            lv.bins(&[v], &mut sc, &mut row_a);
            apart.add(&lv, &row_a, 1);
            apart_counts.add(&row_a);
            assert_eq!((&fused, row_f), (&apart, row_a), "{v}");
            assert_eq!(fused_counts.counts, apart_counts.counts, "{v}");
        }
        // The build data's own mean score: about 0.
        let bytes: Vec<[u8; 1]> = rows
            .iter()
            .map(|r| {
                let mut b = [0u8; 1];
                lv.bins(r, &mut sc, &mut b);
                b
            })
            .collect();
        // The build data's own mean score and mean square: about 0 and 1 (a uniform
        // coordinate, standardised); the statistic against them, about 0.
        let m = lv.score_means(bytes.iter().map(|b| &b[..]));
        assert!(m.first[0].abs() < 0.01, "{m:?}");
        assert!((m.second[0] - 1.0).abs() < 0.01, "{m:?}");
        let mut all = ScoreSums::new(1);
        bytes.iter().for_each(|b| all.add(&lv, b, 1));
        let stat = all.statistic(&m, bytes.len());
        assert!(stat < 1e-3, "{stat}");
        assert!((stat - all.term(&m, bytes.len(), 0)).abs() < 1e-12);
        // A window with its spread halved moves the second term: the values 400..1200
        // have mean 0 and about a quarter of the spread's square.
        let mut half = ScoreSums::new(1);
        bytes[400..1200].iter().for_each(|b| half.add(&lv, b, 1));
        let stat = half.statistic(&m, 800);
        let want = 800.0 * 0.5 * (0.75f64).powi(2);
        assert!((stat - want).abs() < 0.05 * want, "{stat} vs {want}");
    }
}
