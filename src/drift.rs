//! TEMPORARY stand-in until drift statistics land (same API).
use std::collections::VecDeque;
use std::time::{Duration, Instant};
#[derive(Debug, Clone)]
pub struct DriftConfig {
    pub window: Duration,
    pub min_pairs: u64,
    pub floor: f64,
    pub alpha: f64,
}
pub const QUANTILES: [f64; 4] = [0.01, 0.05, 0.1, 0.5];
pub struct DriftState {
    cfg: DriftConfig,
    w: VecDeque<(Instant, f64, f64, Option<bool>)>,
    total: u64,
}
#[derive(Debug, Clone)]
pub struct DriftSnapshot {
    pub window_pairs: u64,
    pub mean_cosine: f64,
    pub quantiles: Vec<(f64, f64)>,
    pub low_ratio: f64,
    pub norm_ratio: f64,
    pub agreement: f64,
    pub total_pairs: u64,
    pub cosine_lower: f64,
    pub cosine_upper: f64,
    pub low_ratio_lower: f64,
    pub low_ratio_upper: f64,
    pub self_pairs: u64,
    pub self_mean_cosine: f64,
    pub noise_adjusted_lower: f64,
}
impl DriftState {
    pub fn new(cfg: DriftConfig) -> Self {
        Self {
            cfg,
            w: VecDeque::new(),
            total: 0,
        }
    }
    pub fn record(&mut self, now: Instant, c: f64, n: f64, a: Option<bool>) {
        self.w.push_back((now, c, n, a));
        self.total += 1;
    }
    pub fn record_self(&mut self, _now: Instant, _c: f64) {}
    pub fn reset(&mut self) {
        self.w.clear();
        self.total = 0;
    }
    pub fn snapshot(&mut self, now: Instant) -> DriftSnapshot {
        while let Some(f) = self.w.front() {
            if now.duration_since(f.0) > self.cfg.window {
                self.w.pop_front();
            } else {
                break;
            }
        }
        let n = self.w.len() as f64;
        let ok = self.w.len() as u64 >= self.cfg.min_pairs;
        let mean = if n > 0.0 {
            self.w.iter().map(|x| x.1).sum::<f64>() / n
        } else {
            f64::NAN
        };
        let nr = if ok {
            self.w.iter().map(|x| x.2).sum::<f64>() / n
        } else {
            f64::NAN
        };
        DriftSnapshot {
            window_pairs: self.w.len() as u64,
            mean_cosine: mean,
            quantiles: QUANTILES.iter().map(|q| (*q, f64::NAN)).collect(),
            low_ratio: f64::NAN,
            norm_ratio: nr,
            agreement: f64::NAN,
            total_pairs: self.total,
            cosine_lower: f64::NAN,
            cosine_upper: f64::NAN,
            low_ratio_lower: f64::NAN,
            low_ratio_upper: f64::NAN,
            self_pairs: 0,
            self_mean_cosine: f64::NAN,
            noise_adjusted_lower: f64::NAN,
        }
    }
}
/// TEMPORARY stand-in (same API as the real confidence sequence).
pub struct ConfidenceSequence {
    n: u64,
    sum: f64,
}
impl ConfidenceSequence {
    pub fn new(_alpha_per_side: f64) -> Self {
        Self { n: 0, sum: 0.0 }
    }
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
    }
    pub fn count(&self) -> u64 {
        self.n
    }
    pub fn bounds(&self) -> (f64, f64) {
        let m = self.sum / self.n as f64;
        (m, m)
    }
}
