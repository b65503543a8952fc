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

    /// `max over j, k of |cum_j(k) − t · share_jk| / w`, where `cum_j(k)` counts the
    /// window's samples at or under coordinate `j`'s edge `k`, `t` is the samples counted
    /// and `share_jk` the reference's share (`targets`, for a window of `w`). With
    /// `t = w` it is the binned KS distance; with `t < w` the window's other `w − t`
    /// places are taken to sit exactly on the reference (the detector's warm start).
    /// `scratch` is reused between calls.
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
        let mut sc32 = Vec::new();
        let d = c.distance(&Targets::uniform(2, 160), 160, &mut sc32);
        // Coordinate 1 is constant: every sample sits at or under every edge.
        assert!((d - 15.0 / 16.0).abs() < 1e-6, "{d}");
        let mut only0 = Counts::new(1);
        let e0: Vec<f32> = (0..15).map(|k| edges[k * 2]).collect();
        let mut b0 = [0u8; 1];
        for r in &rows {
            bins(&e0, &r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!(only0.distance(&Targets::uniform(1, 160), 160, &mut sc32) < 1e-6);
        // Half the window empty (warm start): still 0 when what is there is balanced.
        only0.clear();
        for r in rows.iter().step_by(2) {
            bins(&e0, &r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!(only0.distance(&Targets::uniform(1, 160), 80, &mut sc32) < 0.5 / 160.0 + 1e-6);
        // The low half only: the CDF at the median edge is off by 40 of 160 = 0.25.
        only0.clear();
        for r in &rows[..80] {
            bins(&e0, &r[..1], &mut sc, &mut b0);
            only0.add(&b0);
        }
        assert!((only0.distance(&Targets::uniform(1, 160), 80, &mut sc32) - 0.25).abs() < 1e-6);
        assert_eq!(c.worst_coordinate(&Targets::uniform(2, 160), 160), 1);
        // Against the build rows' own shares, the constant coordinate is no gap.
        let rows_bins: Vec<[u8; 2]> = rows
            .iter()
            .map(|r| {
                let mut b = [0u8; 2];
                bins(&edges, r, &mut sc, &mut b);
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
}
