//! The reference file: a few kilobytes of JSON, small enough for a ConfigMap.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{coords, FeatureMap, NormScale};

/// Version of the file format written; a file of another version is refused, except
/// format 8, which is format 9 without `checkpoints` (read as none: its early line was
/// calibrated without them).
pub const FORMAT_VERSION: u32 = 9;
/// The oldest format read.
const OLDEST_READ: u32 = 8;

/// A frozen reference: the sketch and its calibration (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub version: u32,
    /// A test of one batch (`reference build --one-look N`): looked at once, when the
    /// long window (the batch) fills, and held to a line over the long window's parts
    /// alone. The sidecar, which watches a stream, refuses it.
    pub one_look: bool,
    /// `model.name` of the embeddings it was built from.
    pub model: String,
    /// Embedding dimension.
    pub dim: usize,
    /// Seed of the feature map and of the split and bootstrap.
    pub seed: u64,
    /// Random features `D`.
    pub features: usize,
    /// Kernel bandwidth σ (median distance between reference vectors).
    pub bandwidth: f64,
    /// Window of the statistic, in sampled embeddings.
    pub window: usize,
    /// Expected run length under no drift the threshold is set for, in samples.
    pub ert: f64,
    /// Alarm line `h` of the combined statistic
    /// `max(S / kernel_scale, K / coordinate_scale, K_L / long_scale, M_L / mean_scale)`:
    /// its largest value over a null calibration stream (see `horizon`) exceeds `h`
    /// with probability 5 %.
    pub threshold: f64,
    /// The line while the long window fills (the first `long_window − 1` samples after
    /// start), when only `S`, `K` and the checkpoints count: the 95 % quantile of the null
    /// streams' largest `max(S / kernel_scale, K / coordinate_scale)` and checkpoint
    /// statistic over its scale. Equal to `threshold` without a long window.
    pub threshold_early: f64,
    /// The 95 % quantile of the kernel statistic `S = ‖mean_window φ − μ‖²`'s largest
    /// value over a null stream of `horizon` samples.
    pub kernel_scale: f64,
    /// The same for the binned KS distance `K`.
    pub coordinate_scale: f64,
    /// The per-coordinate part's long window, in sampled embeddings (0: none).
    pub long_window: usize,
    /// The same scale for the binned KS distance `K_L` over the long window (0: none).
    pub long_scale: f64,
    /// The same for the long window's mean test `M_L` (`coords::ScoreSums::statistic`; 0:
    /// no long window).
    pub mean_scale: f64,
    /// The long window's early looks while it fills (module doc, checkpoints): at each,
    /// its tests over the samples seen so far, each over its own scale, held to
    /// `threshold_early` with the window's parts. Absent from format 8 files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<Checkpoint>,
    /// The same for the largest region gap `Q`: the regions' scores are gaps over it (0:
    /// one region holds all, no gap). Not part of the alarm.
    pub region_scale: f64,
    /// Each coordinate's `k/16` quantiles over the build data, bin-major (`15 · dim` values; see
    /// `coords`).
    pub quantiles: Vec<f32>,
    /// The coordinates with ties (always 0, or quantised to a few levels) and the build
    /// data's share at or under each of their quantiles: the window's CDF is measured
    /// against these. A coordinate without ties has share `⌈(k+1)·n/16⌉ / n` at its
    /// quantile `k` (`n` = `vectors`) and is not listed ([`Reference::edge_shares`]).
    pub ties: Vec<coords::TiedCoordinate>,
    /// Each coordinate's mean and deviation over the build data (`dim` values each):
    /// the mean test's standardisation (`coords::Levels`).
    pub coordinate_means: Vec<f32>,
    pub coordinate_sds: Vec<f32>,
    /// Each coordinate's mean score (its value as a sample's byte keeps it, standardised)
    /// over the build data (`dim` values): what the long window's mean test measures
    /// against (`coords::Levels::score_means`).
    pub score_means: Vec<f32>,
    /// Each coordinate's mean squared score over the build data (`dim` values, about 1):
    /// the mean test's spread term measures against it.
    pub score_mean_squares: Vec<f32>,
    /// `μ`: the mean of the `D` kernel features and the norm coordinate over the
    /// build data (`D + 1` values).
    pub mean_features: Vec<f64>,
    /// The regions and their shares of the build data (see `regions`).
    pub regions: super::regions::Regions,
    /// The norm coordinate's scale (from the build data).
    pub norm: NormScale,
    /// Vectors the reference was built from (both halves).
    pub vectors: u64,
    /// `H = α · ERT` with `α` = 5 %: a calibration stream looks at the window's parts
    /// over its first `window − 1 + H` samples and at the long window's over `H` once full.
    pub horizon: u64,
    /// Null streams the threshold was estimated from: the threshold is the 95 % quantile
    /// of their largest combined statistic.
    pub bootstrap_streams: u64,
    /// When it was built, seconds since the Unix epoch.
    pub built_at: u64,
    /// Where it came from, for people reading it.
    pub source: String,
    /// For the status page: the build data's density on its two main directions (not
    /// used by the detector; absent from files built before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<super::Picture>,
    /// Hash of everything above: the `reference_id` label; equal files, equal ids.
    pub id: String,
}

/// One early look of the long window's tests (see [`Reference::checkpoints`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Samples since start at the look (under the long window).
    pub samples: usize,
    /// The 95 % quantile of the binned KS distance over those samples under the null
    /// (`coords::Counts::distance` against the long window's targets); 0: not looked at
    /// (a look within the first window: the window's own KS part sees the same samples).
    pub coordinate_scale: f64,
    /// The same for the mean test `M` over those samples.
    pub mean_scale: f64,
}

/// Why a reference cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("cannot read the reference file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a reference file: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("the reference {path} is for {what}, but {expected}: build one for this model with `shadowgate reference build --model {model}` (or fix {key})")]
    Mismatch {
        path: PathBuf,
        what: String,
        expected: String,
        model: String,
        key: &'static str,
    },
}

impl Reference {
    /// The hash `id` is set to: FNV-1a over the JSON of every other field.
    pub fn compute_id(&self) -> String {
        let mut copy = self.clone();
        copy.id = String::new();
        let text = serde_json::to_string(&copy).expect("a reference serialises");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// Pretty JSON, as written to a file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a reference serialises") + "\n"
    }

    /// Parses and checks a reference file's text (`path` names it in errors).
    pub fn from_json(text: &str, path: &Path) -> Result<Reference, ReferenceError> {
        let invalid = |problem: String| ReferenceError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        // The version first: an older file lacks fields, and "rebuild it" is the fix.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if !(OLDEST_READ..=FORMAT_VERSION).contains(&v.version) {
            return Err(invalid(format!(
                "format version {}, this build reads {OLDEST_READ} to {FORMAT_VERSION}: rebuild it with this version's `shadowgate reference build`",
                v.version
            )));
        }
        let r: Reference = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if r.mean_features.len() != r.features + 1
            || r.features == 0
            || r.dim == 0
            || r.window == 0
            || r.window > super::coords::MAX_WINDOW
            || !(r.norm.sd > 0.0 && r.norm.weight > 0.0)
        {
            return Err(invalid(format!(
                "{} mean features for {} features (and the norm), dimension {}, window {}, norm scale {:?}",
                r.mean_features.len(),
                r.features,
                r.dim,
                r.window,
                r.norm
            )));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if ![
            r.threshold,
            r.threshold_early,
            r.bandwidth,
            r.kernel_scale,
            r.coordinate_scale,
        ]
        .into_iter()
        .all(positive)
        {
            return Err(invalid(format!(
                "thresholds {} and {}, bandwidth {} and scales {} and {} must be positive",
                r.threshold, r.threshold_early, r.bandwidth, r.kernel_scale, r.coordinate_scale
            )));
        }
        if r.one_look && (r.long_window == 0 || r.horizon != 1) {
            return Err(invalid(format!(
                "one look with long window {} and horizon {} (a long window and horizon 1)",
                r.long_window, r.horizon
            )));
        }
        let long_ok = if r.long_window == 0 {
            r.long_scale == 0.0 && r.mean_scale == 0.0
        } else {
            r.long_window > r.window
                && r.long_window <= super::coords::MAX_WINDOW
                && positive(r.long_scale)
                && positive(r.mean_scale)
        };
        if !long_ok {
            return Err(invalid(format!(
                "long window {} (0, or over the window {} and at most {}) with scales {} and {}",
                r.long_window,
                r.window,
                super::coords::MAX_WINDOW,
                r.long_scale,
                r.mean_scale
            )));
        }
        let mut last = 0;
        for c in &r.checkpoints {
            let scale_ok = |v: f64| v.is_finite() && v >= 0.0;
            if c.samples <= last
                || c.samples >= r.long_window
                || !scale_ok(c.coordinate_scale)
                || !positive(c.mean_scale)
            {
                return Err(invalid(format!(
                    "checkpoint at {} samples with scales {} and {} (increasing, under the long window {}; the mean scale positive)",
                    c.samples, c.coordinate_scale, c.mean_scale, r.long_window
                )));
            }
            last = c.samples;
        }
        if !(r.region_scale.is_finite() && r.region_scale >= 0.0) {
            return Err(invalid(format!(
                "region scale {} must be 0 or positive",
                r.region_scale
            )));
        }
        r.regions
            .check(r.dim)
            .map_err(|p| invalid(format!("its regions: {p}")))?;
        if r.quantiles.len() != (super::coords::BINS - 1) * r.dim {
            return Err(invalid(format!(
                "{} coordinate quantiles for dimension {} (15 per coordinate)",
                r.quantiles.len(),
                r.dim
            )));
        }
        if let Some(t) = r.ties.iter().find(|t| {
            t.coordinate >= r.dim
                || t.shares.len() != coords::BINS - 1
                || !t.shares.iter().all(|s| (0.0..=1.0).contains(s))
        }) {
            return Err(invalid(format!(
                "tied coordinate {} (of {}) with {} shares (15, each in [0, 1])",
                t.coordinate,
                r.dim,
                t.shares.len()
            )));
        }
        if r.coordinate_means.len() != r.dim
            || r.coordinate_sds.len() != r.dim
            || !r.coordinate_means.iter().all(|m| m.is_finite())
            || !r.coordinate_sds.iter().all(|s| s.is_finite() && *s >= 0.0)
        {
            return Err(invalid(format!(
                "{} coordinate means and {} deviations for dimension {} (one finite value per coordinate, deviations 0 or positive)",
                r.coordinate_means.len(),
                r.coordinate_sds.len(),
                r.dim
            )));
        }
        if r.score_means.len() != r.dim
            || r.score_mean_squares.len() != r.dim
            || !r.score_means.iter().all(|m| m.is_finite())
            || !r
                .score_mean_squares
                .iter()
                .all(|m| m.is_finite() && *m >= 0.0)
        {
            return Err(invalid(format!(
                "{} mean scores and {} mean squared scores for dimension {} (one finite value per coordinate, squares 0 or positive)",
                r.score_means.len(),
                r.score_mean_squares.len(),
                r.dim
            )));
        }
        if r.picture.as_ref().is_some_and(|p| !p.fits(r.dim)) {
            return Err(invalid(format!(
                "its picture is not of dimension {} on a {}×{} grid",
                r.dim,
                super::picture::GRID,
                super::picture::GRID
            )));
        }
        let id = r.compute_id();
        if id != r.id {
            return Err(invalid(format!(
                "its id {} is not the hash of its contents ({id}): it was edited or cut short",
                r.id
            )));
        }
        Ok(r)
    }

    /// Reads a reference file.
    pub fn load(path: &Path) -> Result<Reference, ReferenceError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReferenceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Reference::from_json(&text, path)
    }

    /// Whether this reference can score `model`'s embeddings of dimension `dim`.
    pub fn check(&self, path: &Path, model: &str, dim: usize) -> Result<(), ReferenceError> {
        if self.model != model {
            return Err(ReferenceError::Mismatch {
                path: path.to_path_buf(),
                what: format!("model {:?}", self.model),
                expected: format!("model.name is {model:?}"),
                model: model.to_string(),
                key: "model.name",
            });
        }
        if self.dim != dim {
            return Err(ReferenceError::Mismatch {
                path: path.to_path_buf(),
                what: format!("embeddings of dimension {}", self.dim),
                expected: format!("the model answers dimension {dim}"),
                model: model.to_string(),
                key: "the reference path",
            });
        }
        Ok(())
    }

    /// The build data's share at or under each quantile, bin-major (`15 · dim`).
    pub fn edge_shares(&self) -> Vec<f32> {
        coords::expand_ties(&self.ties, self.dim, self.vectors as usize)
    }

    /// The quantiles with the mean test's standardisation (`coords::Levels`).
    pub fn levels(&self) -> coords::Levels {
        coords::Levels::new(
            self.quantiles.clone(),
            &self.coordinate_means,
            &self.coordinate_sds,
        )
    }

    /// What the long window's mean test measures against (`coords::ScoreSums`).
    pub fn score_means(&self) -> coords::ScoreMeans {
        coords::ScoreMeans {
            first: self.score_means.clone(),
            second: self.score_mean_squares.clone(),
        }
    }

    /// The feature map this reference was built with.
    pub fn feature_map(&self) -> FeatureMap {
        FeatureMap::new(self.seed, self.dim, self.features, self.bandwidth)
    }
}
