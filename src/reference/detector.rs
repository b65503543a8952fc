//! The streaming detector: a sliding window of feature vectors against the reference.

use super::{FeatureMap, NormScale, Reference};

/// The detector's verdict after one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// `S / h`: 1 is the alarm line. `None` until the window is full.
    pub score: Option<f64>,
    /// `score ≥ 1`.
    pub alarm: bool,
}

/// Scores embeddings one at a time against a [`Reference`]. Bounded state: the feature
/// map, the window of `w` feature vectors and their running sum.
pub struct Detector {
    map: FeatureMap,
    norm: NormScale,
    mean: Vec<f64>,
    threshold: f64,
    window: Vec<f32>,
    sum: Vec<f64>,
    features: usize,
    w: usize,
    /// Samples seen.
    seen: u64,
    next: usize,
    scratch: Vec<f32>,
    /// Alarms raised (steps at or over the line).
    alarms: u64,
}

/// The running sum is recomputed from the window this often (in samples), so float
/// rounding cannot accumulate over a long run.
const RESUM_EVERY: u64 = 1 << 16;

impl Detector {
    pub fn new(reference: &Reference) -> Self {
        let map = reference.feature_map();
        let features = map.features() + 1;
        Detector {
            map,
            norm: reference.norm,
            mean: reference.mean_features.clone(),
            threshold: reference.threshold,
            window: vec![0.0; reference.window * features],
            sum: vec![0.0; features],
            features,
            w: reference.window,
            seen: 0,
            next: 0,
            scratch: vec![0.0; features],
            alarms: 0,
        }
    }

    /// Scores one embedding (of the reference's dimension).
    pub fn observe(&mut self, x: &[f32]) -> Step {
        self.map.apply_with_norm(x, &self.norm, &mut self.scratch);
        let slot = &mut self.window[self.next * self.features..(self.next + 1) * self.features];
        let full = self.seen >= self.w as u64;
        for ((s, old), new) in self.sum.iter_mut().zip(slot.iter_mut()).zip(&self.scratch) {
            if full {
                *s -= f64::from(*old);
            }
            *s += f64::from(*new);
            *old = *new;
        }
        self.next = (self.next + 1) % self.w;
        self.seen += 1;
        if self.seen % RESUM_EVERY == 0 {
            self.resum();
        }
        if self.seen < self.w as u64 {
            return Step {
                score: None,
                alarm: false,
            };
        }
        let inv = 1.0 / self.w as f64;
        let s: f64 = self
            .sum
            .iter()
            .zip(&self.mean)
            .map(|(s, m)| (s * inv - m).powi(2))
            .sum();
        let score = s / self.threshold;
        let alarm = score >= 1.0;
        if alarm {
            self.alarms += 1;
        }
        Step {
            score: Some(score),
            alarm,
        }
    }

    fn resum(&mut self) {
        self.sum.iter_mut().for_each(|s| *s = 0.0);
        for row in self.window.chunks_exact(self.features) {
            for (s, v) in self.sum.iter_mut().zip(row) {
                *s += f64::from(*v);
            }
        }
    }

    /// Samples seen since the start.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Steps at or over the alarm line since the start.
    pub fn alarms(&self) -> u64 {
        self.alarms
    }

    /// Bytes of state: the feature map, the window, the sums and the reference mean.
    pub fn state_bytes(&self) -> usize {
        self.map.state_bytes()
            + (self.window.len() + self.scratch.len()) * std::mem::size_of::<f32>()
            + (self.sum.len() + self.mean.len()) * std::mem::size_of::<f64>()
    }
}
