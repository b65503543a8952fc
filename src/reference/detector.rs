//! The streaming detector: a sliding window of feature vectors and coordinate bins
//! against the reference.

use super::build::{region_part, warm_start_scale};
use super::coords::{Counts, Levels, ScoreMeans, ScoreSums, ScoreTargets, Targets};
use super::regions::RegionCounts;
use super::{Checkpoint, FeatureMap, NormScale, Reference};

/// The detector's verdict after one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The combined statistic over the alarm line: 1 is the line. Before the window
    /// fills, its empty places count as sitting exactly on the reference.
    pub score: f64,
    /// `score ≥ 1`.
    pub alarm: bool,
    /// Which part of the statistic is the larger one.
    pub part: Part,
}

/// One region of the window against the reference (see [`Detector::regions`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionNow {
    pub score: f64,
    pub share: f64,
    pub reference_share: f64,
}

/// The part of the combined statistic that carries the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The random-feature kernel statistic (with the norm coordinate).
    Kernel,
    /// The binned per-coordinate KS distance; [`Detector::worst_coordinate`] names the
    /// coordinate.
    Coordinates,
    /// The same over the long window: a shift of part of the traffic, too small for
    /// one window. While the long window fills, over the samples seen at its last
    /// checkpoint.
    LongCoordinates,
    /// The long window's mean test over all coordinates: many centres or spreads moved
    /// a little (a new topic or language in part of the traffic, typos). While the long
    /// window fills, over the samples seen at its last checkpoint.
    LongMean,
}

impl Part {
    /// The parts in the order of [`Detector::parts`].
    pub const ALL: [Part; 4] = [
        Part::Kernel,
        Part::Coordinates,
        Part::LongCoordinates,
        Part::LongMean,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Kernel => "kernel",
            Part::Coordinates => "coordinates",
            Part::LongCoordinates => "coordinates_long",
            Part::LongMean => "mean_long",
        }
    }
}

/// Scores embeddings one at a time against a [`Reference`]. Bounded state: the feature
/// map, the quantiles with the mean test's levels, the window of `w` feature vectors,
/// the byte rows of the long window (of the window when there is none), and their sums
/// and counts.
pub struct Detector {
    map: FeatureMap,
    norm: NormScale,
    mean: Vec<f64>,
    /// The quantiles, and the mean test's scores of a sample's bytes.
    levels: Levels,
    threshold: f64,
    threshold_early: f64,
    kernel_scale: f64,
    coordinate_scale: f64,
    long_scale: f64,
    mean_scale: f64,
    region_scale: f64,
    regions: RegionCounts,
    /// The region of each slot of the window.
    region_ring: Vec<u8>,
    window: Vec<f32>,
    /// Bin rows of the last `ring` samples: sample `i` in row `i % ring`.
    bins: Vec<u8>,
    ring: usize,
    sum: Vec<f64>,
    counts: Counts,
    /// Counts over the long window (0 long: unused).
    long_counts: Counts,
    /// The reference's shares at or under the edges, for the window and the long window.
    targets: Targets,
    long_targets: Targets,
    gap_scratch: Vec<i32>,
    /// Per coordinate, the long window's sums of scores and of their squares, and the
    /// build data's means of both (the mean test).
    score_sums: ScoreSums,
    score_means: ScoreMeans,
    /// The same means for the long window's length, in the sums' fixed point.
    score_targets: ScoreTargets,
    /// The mean test's statistic at the last sample (0 until the long window is full).
    mean_statistic: f64,
    long: usize,
    /// The long window's early looks while it fills, and the next one due.
    checkpoints: Vec<Checkpoint>,
    next_checkpoint: usize,
    /// The last checkpoint's KS and mean tests over their scales: they stand for the
    /// long window's parts until it is full.
    held: [f64; 2],
    /// One look at a batch: once the long window is full, its parts alone carry the
    /// score.
    one_look: bool,
    /// The parts' values at the last sample, each over its scale.
    last: [f64; 4],
    features: usize,
    dim: usize,
    w: usize,
    /// Samples seen.
    seen: u64,
    next: usize,
    scratch: Vec<f32>,
    /// [`Detector::observe_many`]'s products `W x` of up to [`Detector::BATCH`] samples.
    products: Vec<f32>,
    bin_scratch: Vec<u32>,
    /// Alarms raised (steps at or over the line).
    alarms: u64,
}

/// The running sum is recomputed from the window this often (in samples), so float
/// rounding cannot accumulate over a long run.
const RESUM_EVERY: u64 = 1 << 16;

impl Detector {
    /// Samples whose feature products [`Detector::observe_many`] takes together: a
    /// caller with samples queued gains nothing from handing over more at once.
    pub const BATCH: usize = 12;

    pub fn new(reference: &Reference) -> Self {
        let edge_shares = reference.edge_shares();
        let map = reference.feature_map();
        let features = map.features() + 1;
        let dim = reference.dim;
        let long = reference.long_window;
        let ring = long.max(reference.window);
        Detector {
            map,
            norm: reference.norm,
            mean: reference.mean_features.clone(),
            levels: reference.levels(),
            threshold: reference.threshold,
            threshold_early: reference.threshold_early,
            kernel_scale: reference.kernel_scale,
            coordinate_scale: reference.coordinate_scale,
            long_scale: reference.long_scale,
            mean_scale: reference.mean_scale,
            region_scale: reference.region_scale,
            regions: RegionCounts::new(&reference.regions, reference.window),
            region_ring: vec![0; reference.window],
            window: vec![0.0; reference.window * features],
            bins: vec![0; ring * dim],
            ring,
            sum: vec![0.0; features],
            counts: Counts::new(dim),
            long_counts: Counts::new(if long > 0 { dim } else { 0 }),
            targets: Targets::new(&edge_shares, reference.window),
            long_targets: Targets::new(if long > 0 { &edge_shares } else { &[] }, long.max(1)),
            gap_scratch: Vec::with_capacity(dim),
            score_sums: ScoreSums::new(if long > 0 { dim } else { 0 }),
            score_means: reference.score_means(),
            score_targets: ScoreTargets::new(&reference.score_means(), long),
            mean_statistic: 0.0,
            long,
            checkpoints: reference.checkpoints.clone(),
            next_checkpoint: 0,
            held: [0.0; 2],
            one_look: reference.one_look,
            last: [0.0; 4],
            features,
            dim,
            w: reference.window,
            seen: 0,
            next: 0,
            scratch: vec![0.0; features],
            products: vec![0.0; Self::BATCH * (features - 1)],
            bin_scratch: Vec::with_capacity(dim),
            alarms: 0,
        }
    }

    /// Scores one embedding (of the reference's dimension).
    ///
    /// The same code is compiled twice: for the machine's AVX2 when it has it (detected
    /// at run time; the KS counts take 16 coordinates per instruction instead of 8, the
    /// quantile compares and cosines 8 instead of 4) and for any x86-64 or other target.
    /// Both give the same steps bit for bit: the loops that widen are integer ones or
    /// element-wise float ones, and no float sum changes its order (Rust fuses no
    /// multiply-add it is not told to), which a test checks.
    pub fn observe(&mut self, x: &[f32]) -> Step {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX2 (just detected), the only feature the copy is
            // compiled for.
            unsafe {
                return self.observe_avx2(x);
            }
        }
        self.observe_portable(x)
    }

    /// [`Detector::observe`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx2")]
    unsafe fn observe_avx2(&mut self, x: &[f32]) -> Step {
        self.observe_inline(x)
    }

    /// [`Detector::observe`] for any target (also what the AVX2 copy is checked against).
    pub(crate) fn observe_portable(&mut self, x: &[f32]) -> Step {
        self.observe_inline(x)
    }

    /// Scores the samples `xs` (rows of the reference's dimension) in order and appends
    /// their steps to `steps`: the steps of as many calls of [`Detector::observe`], bit
    /// for bit, with the random-feature products of [`Detector::BATCH`] samples taken
    /// together (three samples per load of a row of `W`, which at d = 384 does not fit
    /// the L1 cache).
    pub fn observe_many(&mut self, xs: &[f32], steps: &mut Vec<Step>) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            #[allow(unsafe_code)]
            // SAFETY: as in `observe`.
            unsafe {
                return self.observe_many_avx2(xs, steps);
            }
        }
        self.observe_many_inline(xs, steps)
    }

    /// [`Detector::observe_many`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx2")]
    unsafe fn observe_many_avx2(&mut self, xs: &[f32], steps: &mut Vec<Step>) {
        self.observe_many_inline(xs, steps)
    }

    #[inline(always)]
    fn observe_many_inline(&mut self, xs: &[f32], steps: &mut Vec<Step>) {
        let (dim, kernel) = (self.dim, self.features - 1);
        let mut products = std::mem::take(&mut self.products);
        for chunk in xs.chunks(Self::BATCH * dim) {
            let n = chunk.len() / dim;
            self.map
                .products(&chunk[..n * dim], &mut products[..n * kernel]);
            for (x, p) in chunk.chunks_exact(dim).zip(products.chunks_exact(kernel)) {
                self.scratch[..kernel].copy_from_slice(p);
                self.map.finish_with_norm(x, &self.norm, &mut self.scratch);
                steps.push(self.step_inline(x));
            }
        }
        self.products = products;
    }

    #[inline(always)]
    fn observe_inline(&mut self, x: &[f32]) -> Step {
        self.map.apply_with_norm(x, &self.norm, &mut self.scratch);
        self.step_inline(x)
    }

    /// The window, counts and score after a sample whose features are in `scratch`.
    #[inline(always)]
    fn step_inline(&mut self, x: &[f32]) -> Step {
        let full = self.seen >= self.w as u64;
        let slot = &mut self.window[self.next * self.features..][..self.features];
        for ((s, old), new) in self.sum.iter_mut().zip(slot.iter_mut()).zip(&self.scratch) {
            if full {
                *s -= f64::from(*old);
            }
            *s += f64::from(*new);
            *old = *new;
        }
        let seen = self.seen as usize;
        let dim = self.dim;
        let slot = seen % self.ring;
        if self.long > 0 {
            // The sample leaving the long window had this slot: its counts and scores
            // out and the new sample's in, in the bins' pass. The sample leaving the
            // window (`w` back, another slot: the ring is the long window) out of the
            // window's counts and the new one in, in one more.
            // The long window is full after this sample: the mean test's statistic
            // comes from the same pass.
            let full_after = seen + 1 >= self.long;
            self.mean_statistic = self.levels.bins_into_long(
                x,
                &mut self.bin_scratch,
                &mut self.bins[slot * dim..][..dim],
                &mut self.long_counts,
                &mut self.score_sums,
                seen >= self.long,
                full_after.then_some(&self.score_targets),
            );
            let row = &self.bins[slot * dim..][..dim];
            if full {
                let old = (seen - self.w) % self.ring;
                self.counts.replace(&self.bins[old * dim..][..dim], row);
            } else {
                self.counts.add(row);
            }
        } else {
            // The ring is the window: the leaving sample's row is this slot.
            let row = &mut self.bins[slot * dim..][..dim];
            if full {
                self.counts.remove(row);
            }
            self.levels.bins(x, &mut self.bin_scratch, row);
            self.counts.add(row);
        }
        if full {
            self.regions.remove(self.region_ring[self.next]);
        }
        let region = self.regions.region(x);
        self.region_ring[self.next] = region;
        self.regions.add(region);
        self.next = (self.next + 1) % self.w;
        self.seen += 1;
        if self.seen % RESUM_EVERY == 0 {
            self.resum();
        }
        self.look_at_checkpoint();
        self.last = self.compute_parts();
        // The first of the largest, in that order (of the long window's parts alone in
        // one look once it is full).
        let from = if self.one_look && self.long_full() {
            2
        } else {
            0
        };
        let (score, part) = self.last[from..].iter().zip(&Part::ALL[from..]).fold(
            (f64::NEG_INFINITY, Part::Kernel),
            |best, (v, p)| {
                if *v > best.0 {
                    (*v, *p)
                } else {
                    best
                }
            },
        );
        // Until the long window is full, its parts are its last checkpoint's (0 before the
        // first) and the early line holds.
        let score = score / self.line();
        let alarm = score >= 1.0;
        if alarm {
            self.alarms += 1;
        }
        Step { score, alarm, part }
    }

    /// The four parts at the last sample, each over its null scale (kernel, coordinates,
    /// coordinates over the long window, the long window's mean test), and the line the
    /// largest of them was held to: `score = max(parts) / line`.
    pub fn parts(&self) -> ([f64; 4], f64) {
        (self.last, self.line())
    }

    /// The line in force: the common one once the long window is full, the window's
    /// own before.
    fn line(&self) -> f64 {
        if self.long_full() {
            self.threshold
        } else {
            self.threshold_early
        }
    }

    /// Whether there is a long window and it is full: its parts count from then on.
    fn long_full(&self) -> bool {
        self.long > 0 && self.seen >= self.long as u64
    }

    /// Samples in the window (fewer than `w` while it fills).
    fn counted(&self) -> usize {
        self.seen.min(self.w as u64) as usize
    }

    /// The four statistics of the alarm, each over its own null scale (the long ones 0
    /// without a long window). The windows' empty places (while they fill) sit exactly
    /// on the reference: `mean − μ = (Σφ − t·μ) / w`.
    #[inline(always)]
    fn compute_parts(&mut self) -> [f64; 4] {
        let t = self.counted();
        let inv = 1.0 / self.w as f64;
        let s: f64 = self
            .sum
            .iter()
            .zip(&self.mean)
            .map(|(s, m)| ((s - t as f64 * m) * inv).powi(2))
            .sum();
        let k = self
            .counts
            .distance(&self.targets, t, &mut self.gap_scratch);
        // While the window fills, each statistic is scaled to a full window's size under
        // no drift: `S` by `w/t`, the gaps by `√(w/t)` (module doc, warm start).
        let grow = warm_start_scale(t, self.w);
        // The long window counts once it is full; before, its last checkpoint's tests.
        let (long, mean) = if self.long_full() {
            (
                self.long_counts
                    .distance(&self.long_targets, self.long, &mut self.gap_scratch)
                    / self.long_scale,
                self.mean_statistic / self.mean_scale,
            )
        } else {
            (self.held[0], self.held[1])
        };
        [
            s * grow / self.kernel_scale,
            k * grow.sqrt() / self.coordinate_scale,
            long,
            mean,
        ]
    }

    /// At a checkpoint, the long window's tests over the samples seen so far, each over
    /// its scale; held until the next one, or until the long window is full.
    fn look_at_checkpoint(&mut self) {
        let Some(c) = self.checkpoints.get(self.next_checkpoint) else {
            return;
        };
        if self.seen != c.samples as u64 {
            return;
        }
        let n = c.samples;
        let long = if c.coordinate_scale > 0.0 {
            self.long_counts
                .distance(&self.long_targets, n, &mut self.gap_scratch)
                / c.coordinate_scale
        } else {
            0.0
        };
        let mean = self.score_sums.statistic(&self.score_means, n) / c.mean_scale;
        self.held = [long, mean];
        self.next_checkpoint += 1;
    }

    fn resum(&mut self) {
        self.sum.iter_mut().for_each(|s| *s = 0.0);
        for row in self.window.chunks_exact(self.features) {
            for (s, v) in self.sum.iter_mut().zip(row) {
                *s += f64::from(*v);
            }
        }
    }

    /// The coordinate that moved most: its CDF furthest from the reference's over the
    /// window or the long window, or its scores' centre and spread over the long
    /// window, whichever part is the largest.
    pub fn worst_coordinate(&self) -> usize {
        if self.long > 0 && self.last[3] > self.last[1].max(self.last[2]) {
            // The mean test: the coordinate with the largest term.
            let n = self.seen.min(self.long as u64) as usize;
            let gap = |j: usize| self.score_sums.term(&self.score_means, n, j);
            (0..self.dim)
                .max_by(|a, b| gap(*a).total_cmp(&gap(*b)))
                .unwrap_or(0)
        } else if self.long > 0 && self.last[2] > self.last[1] {
            let t = self.seen.min(self.long as u64) as usize;
            self.long_counts.worst_coordinate(&self.long_targets, t)
        } else {
            self.counts.worst_coordinate(&self.targets, self.counted())
        }
    }

    /// The region whose count in the window is furthest from its reference share now.
    pub fn worst_region(&self) -> usize {
        self.regions.distance(self.counted()).1
    }

    /// Per region: its score (its gap over the regions' null scale: 1 is what the largest
    /// gap of a null stream of `horizon` samples stays under with probability 95 %), its
    /// share of the window and its reference share. Not part of the alarm: it names
    /// where traffic moved.
    pub fn regions(&self) -> Vec<RegionNow> {
        let t = self.counted();
        (0..self.regions.len())
            .map(|j| RegionNow {
                score: region_part(
                    self.regions.gap(j, t) * warm_start_scale(t, self.w).sqrt(),
                    self.region_scale,
                ),
                share: f64::from(self.regions.counts()[j]) / t.max(1) as f64,
                reference_share: self.regions.shares()[j],
            })
            .collect()
    }

    /// Samples seen since the start.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Steps at or over the alarm line since the start.
    pub fn alarms(&self) -> u64 {
        self.alarms
    }

    /// Bytes of state: the feature map, the quantiles, the windows, the sums and the
    /// reference mean.
    pub fn state_bytes(&self) -> usize {
        self.map.state_bytes()
            + (self.window.len() + self.scratch.len() + self.products.len())
                * std::mem::size_of::<f32>()
            + self.levels.state_bytes()
            + self.bins.len()
            + self.bin_scratch.capacity() * std::mem::size_of::<u32>()
            + self.counts.state_bytes()
            + self.long_counts.state_bytes()
            + self.targets.state_bytes()
            + self.long_targets.state_bytes()
            + self.gap_scratch.capacity() * std::mem::size_of::<i32>()
            + self.regions.state_bytes()
            + self.region_ring.len()
            + self.score_sums.state_bytes()
            + self.score_targets.state_bytes()
            + (self.score_means.first.len() + self.score_means.second.len())
                * std::mem::size_of::<f32>()
            + (self.sum.len() + self.mean.len()) * std::mem::size_of::<f64>()
            + self.checkpoints.len() * std::mem::size_of::<Checkpoint>()
    }
}
