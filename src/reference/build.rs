//! Building a reference from embeddings: split, bandwidth, sketch, calibration.

use ndarray::ArrayView2;
use rayon::prelude::*;

use super::coords::{self, Counts, Targets};
use super::regions::{RegionCounts, Regions, DEFAULT_REGIONS};
use super::{Checkpoint, FeatureMap, NormScale, Reference, SplitMix64, FORMAT_VERSION};

/// How a reference is built.
#[derive(Debug, Clone)]
pub struct BuildParams {
    /// `model.name` the reference is for.
    pub model: String,
    pub seed: u64,
    /// Random features `D`.
    pub features: usize,
    /// Window `w` of the statistic.
    pub window: usize,
    /// The per-coordinate part's long window; `None`: [`LONG_WINDOWS`] windows (up to
    /// the counts' limit); at most `window`: none.
    pub long_window: Option<usize>,
    /// Expected run length under no drift, in samples (per-step false-alarm rate 1/ERT).
    pub ert: f64,
    /// Where the vectors came from (kept in the file for readers).
    pub source: String,
    /// Null streams the line is calibrated on (more: a tighter estimate of the 95 %
    /// quantile; the default 2000 puts the false-alarm rate within about ±0.5 %).
    pub streams: usize,
    /// Regions fitted by k-means over the build data when `codebook` is `None`.
    pub regions: usize,
    /// Regions from the slices codebook instead (its centroids, and where it came from),
    /// so that the reference's `region:i` is the mirror's.
    pub codebook: Option<(Vec<Vec<f32>>, String)>,
    /// A test of one batch, looked at once when the long window fills (module doc, one
    /// look): the line covers the long window's parts alone. Needs a long window and
    /// `ert = 1/α`.
    pub one_look: bool,
    /// Look at the long window's tests early, while it fills ([`checkpoints`]); off:
    /// format 8's detector, the window's parts alone until the long window is full.
    pub checkpoints: bool,
}

impl BuildParams {
    /// The defaults: `D = 128`, `w = 100`, `ERT = 10 000` (a false alarm within 500
    /// samples has probability at most 5 %).
    pub fn new(model: impl Into<String>) -> Self {
        BuildParams {
            model: model.into(),
            seed: 0x5eed,
            features: 128,
            window: 100,
            long_window: None,
            ert: 10_000.0,
            source: String::new(),
            streams: STREAMS,
            regions: DEFAULT_REGIONS,
            codebook: None,
            one_look: false,
            checkpoints: true,
        }
    }
}

/// The long window is this many windows by default.
pub const LONG_WINDOWS: usize = 10;
/// Pseudo-references the null streams are scored against (stream `s` against
/// pseudo-reference `s mod 100`): each costs a pass over the build data.
const PSEUDO_REFERENCES: usize = 100;

/// The long window of `p` (0: none).
pub fn long_window(p: &BuildParams) -> usize {
    let l = p
        .long_window
        .unwrap_or(LONG_WINDOWS * p.window)
        .min(coords::MAX_WINDOW);
    if l > p.window {
        l
    } else {
        0
    }
}

/// The long window's early looks while it fills (module doc, checkpoints): at
/// `c = max(w/2, 16) · √2^k` samples (rounded), while `c` is under the long window and
/// within the first `w − 1 + H` samples the early line is calibrated over; at most
/// [`MAX_CHECKPOINTS`]. None for one look at a batch (its one look is at the end).
pub fn checkpoints(w: usize, long: usize, horizon: usize, one_look: bool) -> Vec<usize> {
    if long == 0 || one_look {
        return Vec::new();
    }
    let end = long.min(w - 1 + horizon + 1);
    let first = (w / 2).max(MIN_CHECKPOINT) as f64;
    let mut looks: Vec<usize> = (0..)
        .map(|k| (first * std::f64::consts::SQRT_2.powi(k)).round() as usize)
        .take_while(|c| *c < end)
        .take(MAX_CHECKPOINTS)
        .collect();
    looks.dedup();
    looks
}

/// The first checkpoint is at least this many samples: the mean test's statistic over
/// fewer is mostly its few samples' own noise.
const MIN_CHECKPOINT: usize = 16;
/// At most this many checkpoints (each look raises the early line a little).
pub const MAX_CHECKPOINTS: usize = 8;

/// Null streams the line is calibrated on, by default.
pub const STREAMS: usize = 2000;
/// The false-alarm probability within one horizon: the horizon is `α · ERT` samples, so
/// that a false alarm within `L` samples has probability about `L / ERT`.
pub const HORIZON_ALPHA: f64 = 0.05;
/// The kernel part's total variance over the norm coordinate's: the norm's own tail
/// (one coordinate, squared) would raise the threshold, and the kernel part's power with
/// it, if it weighed as much as all `D` kernel features together.
const NORM_SHARE: f64 = 8.0;
/// Pairs the median distance is taken over.
const BANDWIDTH_PAIRS: usize = 4000;

/// Builds the reference of `x` (one embedding per row); `built_at` in Unix seconds.
pub fn build(x: ArrayView2<f32>, p: &BuildParams, built_at: u64) -> Result<Reference, String> {
    let (n, dim) = x.dim();
    if p.features == 0 || p.window == 0 {
        return Err("--features and --window must be at least 1".into());
    }
    if p.window > coords::MAX_WINDOW {
        return Err(format!(
            "--window {} is over {}, the most the window's counts hold",
            p.window,
            coords::MAX_WINDOW
        ));
    }
    if !(p.ert.is_finite() && p.ert >= 2.0) {
        return Err(format!("--ert {} must be at least 2 samples", p.ert));
    }
    let need = (4 * p.window).max(100);
    if n < need {
        return Err(format!(
            "{n} embeddings; need at least {need} (4 windows of {}) for a calibrated reference",
            p.window
        ));
    }
    let row = |i: usize| row_slice(&x, i).into_owned();
    // Every vector goes into the sketch; the sketch's own sampling error is in the
    // calibration (the pseudo-references below), not paid for by halving the data.
    let mut rng = SplitMix64(p.seed);
    let mut dists: Vec<f64> = (0..BANDWIDTH_PAIRS)
        .filter_map(|_| {
            let (i, j) = (rng.below(n), rng.below(n));
            (i != j).then(|| {
                let (u, v) = (row(i), row(j));
                u.iter()
                    .zip(&v)
                    .map(|(p, q)| f64::from(p - q).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
        })
        .collect();
    dists.sort_by(f64::total_cmp);
    let sigma = dists.get(dists.len() / 2).copied().unwrap_or(0.0);
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(format!(
            "the median distance between reference embeddings is {sigma}: they are all the same vector, or not numbers"
        ));
    }
    let map = FeatureMap::new(p.seed, dim, p.features, sigma);
    let norms: Vec<f64> = (0..n)
        .map(|i| {
            row(i)
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let norm_mean = norms.iter().sum::<f64>() / n as f64;
    let norm_sd = (norms.iter().map(|v| (v - norm_mean).powi(2)).sum::<f64>() / (n - 1) as f64)
        .sqrt()
        // Unit-normalised embeddings have no spread of norms: a floor of 0.1 % of the mean
        // makes a 0.1 % change of norm one deviation, and keeps the score readable.
        .max(1e-3 * norm_mean.max(1e-12));
    let d = p.features;
    // γ² = an eighth of the kernel features' total variance (module doc).
    let mut phi = vec![0.0f32; n * d];
    phi.par_chunks_mut(d)
        .enumerate()
        .for_each(|(i, o)| map.apply(&row(i), o));
    let mut kmean = vec![0.0f64; d];
    let mut ksq = vec![0.0f64; d];
    for r in phi.chunks_exact(d) {
        for ((m, q), v) in kmean.iter_mut().zip(ksq.iter_mut()).zip(r) {
            *m += f64::from(*v);
            *q += f64::from(*v).powi(2);
        }
    }
    let nf = n as f64;
    let total_var: f64 = kmean
        .iter()
        .zip(&ksq)
        .map(|(m, q)| (q / nf - (m / nf).powi(2)).max(0.0))
        .sum();
    let norm = NormScale {
        mean: norm_mean,
        sd: norm_sd,
        weight: (total_var / NORM_SHARE).sqrt().max(1e-12),
    };
    drop(phi);
    let d = p.features + 1;
    let mut phi = vec![0.0f32; n * d];
    phi.par_chunks_mut(d)
        .enumerate()
        .for_each(|(i, o)| map.apply_with_norm(&row(i), &norm, o));
    let mut mean = vec![0.0f64; d];
    for r in phi.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= nf);
    let quantiles = coords::fit((0..n).map(|i| row_slice(&x, i)), dim);
    let (coordinate_means, coordinate_sds) = coords::moments((0..n).map(|i| row_slice(&x, i)), dim);
    let levels = coords::Levels::new(quantiles.clone(), &coordinate_means, &coordinate_sds);
    let regions = fit_regions(&x, p)?;
    let region_counts = RegionCounts::new(&regions, p.window);
    let regions_of: Vec<u8> = (0..n)
        .map(|i| region_counts.region(&row_slice(&x, i)))
        .collect();
    let mut bins = vec![0u8; n * dim];
    let mut scratch = Vec::new();
    for (i, out) in bins.chunks_exact_mut(dim).enumerate() {
        levels.bins(&row_slice(&x, i), &mut scratch, out);
    }
    let coords::ScoreMeans {
        first: score_means,
        second: score_mean_squares,
    } = levels.score_means(bins.chunks_exact(dim));
    let edge_shares = coords::edge_shares(bins.chunks_exact(dim), dim);
    let w = p.window;
    let long = long_window(p);

    // Pseudo-references: resamples of the build data of its own size, each with the
    // sketch's statistics (the kernel mean, the share at or under every edge, the region
    // shares). A null stream is drawn from the build data and scored against one of
    // them: the bootstrap's picture of live traffic (a sample of the population) scored
    // against the frozen sketch (another sample of it).
    let pseudo: Vec<Pseudo> = (0..p.streams.clamp(20, PSEUDO_REFERENCES))
        .into_par_iter()
        .map(|k| {
            let mut rng = SplitMix64(p.seed ^ crate::ids::mix64(0x5053_0000 + k as u64));
            let draws: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            let mut mean = vec![0.0f64; d];
            let mut shares = vec![0.0f64; regions.shares.len()];
            for &i in &draws {
                for (m, v) in mean.iter_mut().zip(&phi[i * d..][..d]) {
                    *m += f64::from(*v);
                }
                shares[usize::from(regions_of[i])] += 1.0 / nf;
            }
            mean.iter_mut().for_each(|m| *m /= nf);
            let rows = || draws.iter().map(|&i| &bins[i * dim..][..dim]);
            let shares_at_edges = coords::edge_shares(rows(), dim);
            let target_w = Targets::new(&shares_at_edges, w);
            let target_long = Targets::new(&shares_at_edges, long.max(1));
            let score_means = levels.score_means(rows());
            Pseudo {
                mean,
                target_w,
                target_long,
                score_means,
                shares,
            }
        })
        .collect();

    // Null streams, as a detector started on them sees them (`Simulation::stream_max`).
    // Each stream gives the largest value of each part; as the max over steps of
    // max(S/a, K/b, K_L/c, M_L/e) is max(max S / a, max K / b, ...), one pass gives both
    // the parts' scales (each part's own 95 % quantile of its stream maxima, so they weigh
    // alike) and the line (the 95 % quantile of the combined stream maxima).
    if p.one_look && (long == 0 || ((HORIZON_ALPHA * p.ert).round() as usize).max(1) != 1) {
        return Err(format!(
            "one look needs a long window over the window {w} (the batch, --one-look N) and ERT = 1/α = {}",
            1.0 / HORIZON_ALPHA
        ));
    }
    let horizon = ((HORIZON_ALPHA * p.ert).round() as usize).max(1);
    let looks = if p.checkpoints {
        checkpoints(w, long, horizon, p.one_look)
    } else {
        Vec::new()
    };
    let sim = Simulation {
        checkpoints: &looks,
        phi: &phi,
        bins: &bins,
        levels: &levels,
        regions_of: &regions_of,
        regions: &region_counts,
        dim,
        w,
        long,
    };
    let streams = p.streams.max(20);
    let maxima: Vec<[f64; PARTS]> = (0..streams)
        .into_par_iter()
        .map(|s| {
            sim.stream_max(
                &pseudo[s % pseudo.len()],
                horizon,
                p.seed ^ crate::ids::mix64(0x5743_0000 + s as u64),
            )
        })
        .collect();
    let quantile = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let k = ((1.0 - HORIZON_ALPHA) * v.len() as f64).ceil() as usize;
        v[k.clamp(1, v.len()) - 1]
    };
    // The first five: the window's parts as the early line watches them, the long
    // window's as the line watches them after it fills.
    let scales: Vec<f64> = (0..5)
        .map(|part| quantile(maxima.iter().map(|m| m[part]).collect()))
        .collect();
    let [kernel_scale, coordinate_scale, long_scale, region_scale, mean_scale] =
        [scales[0], scales[1], scales[2], scales[3], scales[4]];
    // Each checkpoint's tests over their own 95 % quantiles; the KS distance only past
    // the first window (within it the window's KS part sees the same samples).
    let checkpoints: Vec<Checkpoint> = looks
        .iter()
        .enumerate()
        .map(|(k, &samples)| Checkpoint {
            samples,
            coordinate_scale: if samples > w {
                quantile(maxima.iter().map(|m| m[CHECKPOINT_PARTS + 2 * k]).collect())
            } else {
                0.0
            },
            mean_scale: quantile(
                maxima
                    .iter()
                    .map(|m| m[CHECKPOINT_PARTS + 2 * k + 1])
                    .collect(),
            ),
        })
        .collect();
    if checkpoints
        .iter()
        .any(|c| !(c.mean_scale > 0.0 && (c.samples <= w || c.coordinate_scale > 0.0)))
    {
        return Err("the reference embeddings do not vary: the null statistics are 0".into());
    }
    if !(kernel_scale > 0.0
        && coordinate_scale > 0.0
        && (long == 0 || (long_scale > 0.0 && mean_scale > 0.0)))
    {
        return Err("the reference embeddings do not vary: the null statistics are 0".into());
    }
    // The regions name where traffic moved; they stay out of the alarm's statistic: in
    // it, a third part raised the line for the other two and cost detections on real
    // encoders for no shift it alone caught
    // (benches/reference/failing_loudly_v3_regions_in_score.md).
    // Once the long window is full, all four parts are held to this line over the same
    // `H` samples: the window's parts as they are then (a full window, `H` looks), not
    // as in the first `w − 1 + H` samples after start. With `H` under `w` (one look at a
    // batch: `H = 1`) those would be many more looks than the line watches, and the
    // line would sit too high (module doc, one look).
    // One look at a batch: the window's parts see its last `w` samples, which the long
    // window's parts see too, with the rest of the batch; held to the line they would
    // only raise it (module doc, one look).
    let threshold = quantile(
        maxima
            .iter()
            .map(|m| {
                if p.one_look {
                    (m[2] / long_scale).max(m[4] / mean_scale)
                } else if long > 0 {
                    (m[5] / kernel_scale)
                        .max(m[6] / coordinate_scale)
                        .max(m[2] / long_scale)
                        .max(m[4] / mean_scale)
                } else {
                    (m[0] / kernel_scale).max(m[1] / coordinate_scale)
                }
            })
            .collect(),
    );
    // Until the long window is full only the window's parts and the checkpoints count:
    // their own line, lower than one that also covers the long window's parts over
    // their watched samples (module doc).
    let threshold_early = quantile(
        maxima
            .iter()
            .map(|m| {
                checkpoints.iter().enumerate().fold(
                    (m[0] / kernel_scale).max(m[1] / coordinate_scale),
                    |t, (k, c)| {
                        let long = if c.coordinate_scale > 0.0 {
                            m[CHECKPOINT_PARTS + 2 * k] / c.coordinate_scale
                        } else {
                            0.0
                        };
                        t.max(long)
                            .max(m[CHECKPOINT_PARTS + 2 * k + 1] / c.mean_scale)
                    },
                )
            })
            .collect(),
    );
    if threshold.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        || threshold_early.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
    {
        return Err("the calibrated threshold is 0: the reference embeddings do not vary".into());
    }
    let mut r = Reference {
        version: FORMAT_VERSION,
        one_look: p.one_look,
        model: p.model.clone(),
        dim,
        seed: p.seed,
        features: p.features,
        bandwidth: sigma,
        window: w,
        ert: p.ert,
        threshold,
        threshold_early,
        kernel_scale,
        coordinate_scale,
        long_window: long,
        long_scale: if long > 0 { long_scale } else { 0.0 },
        mean_scale: if long > 0 { mean_scale } else { 0.0 },
        checkpoints,
        region_scale,
        quantiles,
        ties: coords::ties(&edge_shares, dim, n),
        coordinate_means,
        coordinate_sds,
        score_means,
        score_mean_squares,
        regions,
        mean_features: mean,
        norm,
        vectors: n as u64,
        horizon: horizon as u64,
        bootstrap_streams: p.streams.max(20) as u64,
        built_at,
        source: p.source.clone(),
        picture: super::Picture::build(x, p.seed),
        id: String::new(),
    };
    r.id = r.compute_id();
    Ok(r)
}

/// The regions (the codebook's centroids, or spherical k-means over `a`) and their
/// shares of `a`.
fn fit_regions(x: &ArrayView2<f32>, p: &BuildParams) -> Result<Regions, String> {
    let dim = x.ncols();
    let (centroids, source, prefix) = match &p.codebook {
        Some((c, source)) => (c.clone(), source.clone(), "region"),
        None => {
            let k = p.regions.clamp(2, crate::slices::MAX_SLICES);
            let mut unit = ndarray::Array2::<f32>::zeros((x.nrows(), dim));
            for (i, mut out) in unit.rows_mut().into_iter().enumerate() {
                let r = row_slice(x, i);
                let n = r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
                if n > 0.0 && n.is_finite() {
                    out.iter_mut()
                        .zip(r.iter())
                        .for_each(|(o, v)| *o = (f64::from(*v) / n) as f32);
                }
            }
            let fit = crate::slices::codebook::spherical_kmeans(
                unit.view(),
                crate::slices::codebook::KMeansParams {
                    k,
                    seed: p.seed,
                    max_iter: 50,
                },
            );
            let centroids = fit
                .centroids
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect();
            let source = format!("spherical k-means, k = {k}, over the build data");
            (centroids, source, "cluster")
        }
    };
    let mut regions = Regions {
        centroids,
        shares: Vec::new(),
        source,
        prefix: prefix.into(),
    };
    regions.shares = vec![0.0; regions.centroids.len()];
    let counts = RegionCounts::new(&regions, p.window);
    for i in 0..x.nrows() {
        regions.shares[usize::from(counts.region(&row_slice(x, i)))] += 1.0 / x.nrows() as f64;
    }
    regions.check(dim)?;
    Ok(regions)
}

/// A region gap over the regions' null scale `s_Q`; 0 when `s_Q` is 0 (no region gap
/// under the null: one region holds the whole reference).
pub(crate) fn region_part(q: f64, scale: f64) -> f64 {
    if scale > 0.0 {
        q / scale
    } else {
        0.0
    }
}

/// Row `i` of `x`, borrowed when it is contiguous.
fn row_slice<'a>(x: &'a ArrayView2<f32>, i: usize) -> std::borrow::Cow<'a, [f32]> {
    let r = x.row(i);
    match r.to_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(r.to_vec()),
    }
}

/// `‖(sum − t·μ) / w‖²`: the kernel statistic with `t` of the window's `w` places counted
/// (the others on the reference).
fn kernel_stat(sum: &[f64], mean: &[f64], t: usize, w: usize) -> f64 {
    sum.iter()
        .zip(mean)
        .map(|(s, m)| ((s - t as f64 * m) / w as f64).powi(2))
        .sum()
}

/// While `t` of a window's `w` places are counted (the rest sit on the reference), the
/// kernel statistic is multiplied by `w / t` and the gaps by its square root: under no
/// drift their size is then a full window's, so one line serves from the first sample.
pub(crate) fn warm_start_scale(t: usize, w: usize) -> f64 {
    w as f64 / t.max(1) as f64
}

/// A resample of the build data and the sketch's statistics over it (see [`build`]).
struct Pseudo {
    /// The kernel features' mean.
    mean: Vec<f64>,
    /// Its shares at or under the edges, for the window and the long window.
    target_w: Targets,
    target_long: Targets,
    /// Each coordinate's mean score and mean squared score
    /// (`coords::Levels::score_means`).
    score_means: coords::ScoreMeans,
    /// Share per region.
    shares: Vec<f64>,
}

/// The calibrated statistics, in [`Simulation::stream_max`]'s order: the kernel
/// statistic, the KS gap, the long window's KS gap, the region gap, the long window's
/// mean test, the kernel statistic and KS gap again over the samples the long window's
/// parts are watched on, and then at each checkpoint the KS gap and the mean test over
/// the samples seen.
const PARTS: usize = CHECKPOINT_PARTS + 2 * MAX_CHECKPOINTS;
/// Where the checkpoints' statistics start in [`PARTS`].
const CHECKPOINT_PARTS: usize = 7;

/// Null streams through the sliding windows, as the detector sees them.
struct Simulation<'a> {
    /// The long window's early looks, in samples since start (ascending).
    checkpoints: &'a [usize],
    phi: &'a [f32],
    bins: &'a [u8],
    levels: &'a coords::Levels,
    regions_of: &'a [u8],
    regions: &'a RegionCounts,
    dim: usize,
    w: usize,
    /// The long window (0: none).
    long: usize,
}

impl Simulation<'_> {
    /// The largest kernel statistic, KS gap, long-window KS gap, region gap and
    /// long-window mean test against `pseudo` over one stream drawn from the build data
    /// with replacement, as a detector started on it sees them: the window's parts from
    /// the first sample (the warm start's scaled statistics) for `w − 1 + horizon`
    /// samples, the long window's once it is full, for `horizon` samples; and the
    /// window's parts again over those same `horizon` samples, where all four parts are
    /// held to the one line; and the long window's tests at each checkpoint.
    fn stream_max(&self, pseudo: &Pseudo, horizon: usize, seed: u64) -> [f64; PARTS] {
        let (d, dim, w, long) = (pseudo.mean.len(), self.dim, self.w, self.long);
        let n = self.regions_of.len();
        let ring_len = long.max(w);
        let short_rows = w - 1 + horizon;
        // The rows where the long window is full and watched (none without one).
        let watched = if long > 0 {
            long - 1..long - 1 + horizon
        } else {
            0..0
        };
        let rows = short_rows.max(watched.end);
        let mut rng = SplitMix64(seed);
        // Row `i` of the stream sits in slot `i % ring_len`; the window holds the last
        // `w` rows, the long window the last `long`.
        let mut ring = vec![0usize; ring_len];
        let mut acc = vec![0.0f64; d];
        let mut counts = Counts::new(dim);
        let mut long_counts = Counts::new(if long > 0 { dim } else { 0 });
        let mut score_sums = coords::ScoreSums::new(if long > 0 { dim } else { 0 });
        let mut regions = self.regions.clone();
        regions.recentre(&pseudo.shares);
        let phi = |r: usize| &self.phi[r * d..][..d];
        let bins = |r: usize| &self.bins[r * dim..][..dim];
        let mut cum = Vec::with_capacity(dim);
        let mut worst = [0.0f64; PARTS];
        for row in 0..rows {
            let new = rng.below(n);
            let slot = row % ring_len;
            if long > 0 {
                if row >= long {
                    long_counts.remove(bins(ring[slot]));
                    score_sums.add(self.levels, bins(ring[slot]), -1);
                }
                long_counts.add(bins(new));
                score_sums.add(self.levels, bins(new), 1);
                if let Some(k) = self.checkpoints.iter().position(|c| *c == row + 1) {
                    let at = CHECKPOINT_PARTS + 2 * k;
                    worst[at] = long_counts.distance(&pseudo.target_long, row + 1, &mut cum);
                    worst[at + 1] = score_sums.statistic(&pseudo.score_means, row + 1);
                }
                if row + 1 >= long {
                    worst[2] =
                        worst[2].max(long_counts.distance(&pseudo.target_long, long, &mut cum));
                    worst[4] = worst[4].max(score_sums.statistic(&pseudo.score_means, long));
                }
            }
            // The window slides over every row; its statistics are taken where a line
            // watches them.
            if row >= w {
                let old = ring[(row - w) % ring_len];
                for (s, o) in acc.iter_mut().zip(phi(old)) {
                    *s -= f64::from(*o);
                }
                counts.remove(bins(old));
                regions.remove(self.regions_of[old]);
            }
            for (s, v) in acc.iter_mut().zip(phi(new)) {
                *s += f64::from(*v);
            }
            counts.add(bins(new));
            regions.add(self.regions_of[new]);
            let (early, late) = (row < short_rows, watched.contains(&row));
            if early || late {
                let t = (row + 1).min(w);
                let grow = warm_start_scale(t, w);
                let kernel = kernel_stat(&acc, &pseudo.mean, t, w) * grow;
                let gap = counts.distance(&pseudo.target_w, t, &mut cum) * grow.sqrt();
                if early {
                    worst[0] = worst[0].max(kernel);
                    worst[1] = worst[1].max(gap);
                    worst[3] = worst[3].max(regions.distance(t).0 * grow.sqrt());
                }
                if late {
                    worst[5] = worst[5].max(kernel);
                    worst[6] = worst[6].max(gap);
                }
            }
            ring[slot] = new;
        }
        worst
    }
}
