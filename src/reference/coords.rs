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
//! empirical CDF at an edge and the reference's, `k/16`: a Kolmogorov–Smirnov distance
//! evaluated at 15 points.
//!
//! The same bins give a mean test ([`SCORES`]): a shift of a tenth of the traffic to a
//! new topic or language moves many coordinates' centres a little, too little for any
//! one coordinate's KS gap, but the sum over coordinates of the squared mean of each
//! bin's normal score sees it (van der Waerden's scores: the rank test of a shift in
//! location; on all-MiniLM-L6-v2 as strong as the raw values' standardised means).

/// The largest window the 16-bit counts hold.
pub const MAX_WINDOW: usize = i16::MAX as usize;

/// Bins per coordinate; the file keeps the `BINS − 1` inner edges.
pub const BINS: usize = 16;
const EDGES: usize = BINS - 1;

/// Bin `k`'s normal score `Φ⁻¹((k + ½)/16)`, standardised to variance 1 over the 16
/// bins and times 1024, rounded: integers, so that a long window's running sums are
/// exact, and symmetric, so that a sample spread evenly over the bins sums to 0.
pub const SCORES: [i32; BINS] = [
    -1985, -1404, -1076, -827, -617, -429, -253, -84, 84, 253, 429, 617, 827, 1076, 1404, 1985,
];
/// The scores' unit: `SCORES[k] / SCORE_UNIT` is the standardised score.
pub const SCORE_UNIT: f64 = 1024.0;

/// Adds (`sign` 1) or removes (`sign` −1) a bin row's scores to per-coordinate sums.
pub fn add_scores(sums: &mut [i32], bins: &[u8], sign: i32) {
    for (s, b) in sums.iter_mut().zip(bins) {
        *s += sign * SCORES[usize::from(*b & 15)];
    }
}

/// The mean test's statistic `Σ_j (s_j / 1024 − n·m_j)² / n` for score sums `s_j` over
/// `n` samples and expected scores `m_j` (the build data's mean score per coordinate):
/// about the dimension under no drift when coordinates are independent, far more when
/// many centres moved the same way.
pub fn mean_statistic(sums: &[i32], means: &[f32], n: usize) -> f64 {
    let n = n.max(1) as f64;
    sums.iter()
        .zip(means)
        .map(|(s, m)| (f64::from(*s) / SCORE_UNIT - n * f64::from(*m)).powi(2))
        .sum::<f64>()
        / n
}

/// Each coordinate's mean score over `rows` (bin rows of `dim` coordinates).
pub fn score_means<'a>(rows: impl Iterator<Item = &'a [u8]>, dim: usize) -> Vec<f32> {
    let mut sums = vec![0i64; dim];
    let mut n = 0u64;
    for r in rows {
        for (s, b) in sums.iter_mut().zip(r) {
            *s += i64::from(SCORES[usize::from(*b & 15)]);
        }
        n += 1;
    }
    sums.iter()
        .map(|s| (*s as f64 / SCORE_UNIT / n.max(1) as f64) as f32)
        .collect()
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

/// Writes each coordinate's bin (the number of edges strictly below it, 0..16) of `x`;
/// `scratch` (any length) is reused between calls.
pub fn bins(edges: &[f32], x: &[f32], scratch: &mut Vec<u32>, out: &mut [u8]) {
    let dim = x.len();
    scratch.clear();
    scratch.resize(dim, 0);
    // Edge-major, 32-bit lanes: the compare-and-add loop vectorises.
    for row in edges.chunks_exact(dim) {
        for ((b, v), e) in scratch.iter_mut().zip(x).zip(row) {
            *b += u32::from(*v > *e);
        }
    }
    for (o, b) in out.iter_mut().zip(scratch.iter()) {
        *o = *b as u8;
    }
}

/// `16 · w` times the share of `rows` (bin rows of `dim` coordinates) at or under each
/// edge, bin-major and rounded: the target of [`Counts::gap_to`] for a window of
/// `w`, one per entry of `ws`.
pub fn cdf_targets<'a>(
    rows: impl Iterator<Item = &'a [u8]>,
    dim: usize,
    ws: &[usize],
) -> Vec<Vec<i32>> {
    let mut counts = vec![0u32; BINS * dim];
    let mut n = 0u64;
    for r in rows {
        for (j, b) in r.iter().enumerate() {
            counts[usize::from(*b) * dim + j] += 1;
        }
        n += 1;
    }
    let mut cum = vec![0u64; dim];
    let mut out: Vec<Vec<i32>> = ws.iter().map(|_| vec![0; EDGES * dim]).collect();
    for k in 0..EDGES {
        for (j, c) in cum.iter_mut().enumerate() {
            *c += u64::from(counts[k * dim + j]);
            for (o, w) in out.iter_mut().zip(ws) {
                o[k * dim + j] = ((BINS * w) as f64 * *c as f64 / n.max(1) as f64).round() as i32;
            }
        }
    }
    out
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

    pub fn add(&mut self, bins: &[u8]) {
        for (j, b) in bins.iter().enumerate() {
            self.counts[usize::from(*b) * self.dim + j] += 1;
        }
    }

    pub fn remove(&mut self, bins: &[u8]) {
        for (j, b) in bins.iter().enumerate() {
            self.counts[usize::from(*b) * self.dim + j] -= 1;
        }
    }

    /// `max over j, k of |cum_j(k) − t·k/16| / w`, where `cum_j(k)` counts the window's
    /// samples at or under coordinate `j`'s edge `k` and `t` is the samples counted. With
    /// `t = w` it is the binned KS distance; with `t < w` the window's other `w − t`
    /// places are taken to sit exactly on the reference (the detector's warm start).
    pub fn distance(&mut self, t: usize, w: usize) -> f64 {
        // The largest gap at edge k is at the coordinate with the largest or the smallest
        // count at or under it: a 16-bit max and min per edge, which vectorise.
        self.cum.iter_mut().for_each(|c| *c = 0);
        let mut worst = 0i64;
        for k in 0..EDGES {
            let row = &self.counts[k * self.dim..(k + 1) * self.dim];
            let (mut hi, mut lo) = (i16::MIN, i16::MAX);
            for (c, n) in self.cum.iter_mut().zip(row) {
                *c += n;
                // Selects, not `Ord::max`: the same vector max in a release build, and
                // no call per element in a debug one (the demo builds a reference).
                hi = if *c > hi { *c } else { hi };
                lo = if *c < lo { *c } else { lo };
            }
            // In sixteenths of a sample: |16·cum − t·(k + 1)|.
            let target = (t * (k + 1)) as i64;
            let (hi, lo) = (i64::from(hi) * BINS as i64, i64::from(lo) * BINS as i64);
            worst = worst.max(hi - target).max(target - lo);
        }
        worst as f64 / (BINS * w) as f64
    }

    /// `max over j, k of |cum_j(k) − scale · target[k·dim + j] / 16|`, in samples: the
    /// gap of the window's CDF to another sample's rather than to the quantiles' `k/16`
    /// (the calibration's pseudo-references; `target` is `16 · w` times that sample's
    /// share at or under each edge, rounded, and `scale = t / w` for `t` samples
    /// counted). `cum` is scratch of any length.
    pub fn gap_to(&self, target: &[i32], scale: f32, cum: &mut Vec<i32>) -> f64 {
        debug_assert_eq!(target.len(), EDGES * self.dim);
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
    pub fn worst_coordinate(&self, t: usize) -> usize {
        let mut best = (0.0f32, 0);
        for j in 0..self.dim {
            let mut cum = 0i32;
            for k in 0..EDGES {
                cum += i32::from(self.counts[k * self.dim + j]);
                let gap = (cum as f32 - (t * (k + 1)) as f32 / BINS as f32).abs();
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
        let mut b = [0u8; 2];
        let mut sc = Vec::new();
        bins(&edges, &[9.0, 1.0], &mut sc, &mut b);
        assert_eq!(b, [0, 0]);
        bins(&edges, &[9.5, 2.0], &mut sc, &mut b);
        assert_eq!(b, [1, 15]);
        // A window like the reference: distance 0. All in the lowest bin: 15/16.
        let mut c = Counts::new(2);
        for r in &rows {
            bins(&edges, r, &mut sc, &mut b);
            c.add(&b);
        }
        let d = c.distance(160, 160);
        // Coordinate 1 is constant: every sample sits at or under every edge.
        assert!((d - 15.0 / 16.0).abs() < 1e-6, "{d}");
        let mut only0 = Counts::new(1);
        let e0: Vec<f32> = (0..15).map(|k| edges[k * 2]).collect();
        let mut b0 = [0u8; 1];
        for r in &rows {
            bins(&e0, &r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!(only0.distance(160, 160) < 1e-6);
        // Half the window empty (warm start): still 0 when what is there is balanced.
        only0.clear();
        for r in rows.iter().step_by(2) {
            bins(&e0, &r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!(only0.distance(80, 160) < 0.5 / 160.0 + 1e-6);
        // The low half only: the CDF at the median edge is off by 40 of 160 = 0.25.
        only0.clear();
        for r in &rows[..80] {
            bins(&e0, &r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!((only0.distance(80, 160) - 0.25).abs() < 1e-6);
        assert_eq!(c.worst_coordinate(160), 1);
    }
}
