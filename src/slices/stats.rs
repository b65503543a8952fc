//! Per-slice drift statistics and the worst slice, the series a gate reads.
//!
//! Per slice: the number of pairs, an anytime-valid confidence sequence for the mean
//! cosine (on x = (1 + cos)/2) and one for the low-similarity share (x = 1[cos < floor]),
//! and the few lowest-cosine pairs seen recently (for the status page).
//!
//! # Multiplicity
//!
//! The gate fails a canary when, at any look, some slice's low-share **lower** bound is
//! above the budget or some slice's cosine **upper** bound is below the threshold. Each
//! slice contributes two one-sided bounds to that decision, so with K slices (fixed by
//! the configuration before any pair is seen) there are 2K one-sided sequences, and each
//! runs at α / (2K) (`drift.alpha` = α). For a good canary (every slice's true low share
//! ≤ budget and true mean cosine ≥ threshold) a false failure needs one of them to miss
//! its true value at some time; each does so with probability ≤ α/(2K) over *all* times
//! (Ville's inequality; see [`crate::drift::ConfidenceSequence`]), so by the union bound
//! P(good canary fails, ever, however often the gate looks) ≤ 2K · α/(2K) = α. The bound
//! holds whatever the dependence between slices (a pair is in one slice per source).
//! The same split makes the other sides valid too: all 4K bounds hold at once with
//! probability ≥ 1 − 2α.
//!
//! Each sequence assumes its slice's mean does not move while the canary runs; a
//! traffic mix that shifts *within* a slice violates that as it does for the global one.

use super::SliceSet;
use crate::drift::{ConfidenceSequence, DriftConfig};

/// Lowest-cosine pairs kept per slice for the status page.
pub const EXAMPLES_PER_SLICE: usize = 5;

/// An example older than this many pairs of its slice gives way to any newer pair, so
/// the examples show what the canary does now, not its worst moment an hour ago.
pub const EXAMPLE_HORIZON: u64 = 10_000;

/// Longest input snippet kept with an example, in characters.
pub const SNIPPET_CHARS: usize = 120;

/// One compared pair, as [`SliceStats::record`] reads it (nothing is copied unless the
/// pair becomes an example).
#[derive(Debug, Clone, Copy)]
pub struct PairRef<'a> {
    /// Cosine of baseline vs canary; non-finite pairs are ignored.
    pub cosine: f64,
    /// The request's id.
    pub request_id: &'a str,
    /// Index of the item within the request's batch.
    pub item: u32,
    /// The item's input, if the caller may show it (`shadow_log.store_inputs`).
    pub input: Option<&'a [u8]>,
}

/// A low-cosine pair kept for the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceExample {
    pub request_id: String,
    pub item: u32,
    pub cosine: f64,
    /// First [`SNIPPET_CHARS`] characters of the input (lossy UTF-8), when given.
    pub input: Option<String>,
    /// The slice's pair count when it was seen.
    seen_at: u64,
}

/// One slice's numbers. Every statistic is NaN below `drift.min_pairs` pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceSummary {
    pub pairs: u64,
    pub mean_cosine: f64,
    /// Bounds on the slice's mean cosine, each at α/(2K).
    pub cosine_lower: f64,
    pub cosine_upper: f64,
    /// Share of the slice's pairs under `drift.floor`.
    pub low_share: f64,
    /// Bounds on that share, each at α/(2K).
    pub low_share_lower: f64,
    pub low_share_upper: f64,
}

/// The worst slice by each gate quantity, among slices with at least `min_pairs` pairs;
/// NaN and `None` when there is none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorstSlice {
    /// Highest low-share lower bound: fail when it is above the budget.
    pub low_share_lower: f64,
    pub low_share_slice: Option<usize>,
    /// Lowest cosine upper bound: fail when it is below the threshold.
    pub cosine_upper: f64,
    pub cosine_slice: Option<usize>,
}

#[derive(Debug, Clone)]
struct SliceState {
    cosine: ConfidenceSequence,
    low: ConfidenceSequence,
    /// Unordered; at most [`EXAMPLES_PER_SLICE`].
    examples: Vec<SliceExample>,
}

/// Statistics of every slice of one (model, baseline, canary). `Send`; not synchronised
/// (the caller holds it in a `Mutex`, as it does `DriftState`).
#[derive(Debug, Clone)]
pub struct SliceStats {
    floor: f64,
    min_pairs: u64,
    /// `drift.alpha`, the budget of the whole gate.
    alpha: f64,
    alpha_each: f64,
    slices: Vec<SliceState>,
}

impl SliceStats {
    /// Statistics for `slices` slices (the [`super::Slicer::len`] of the configuration;
    /// the Bonferroni split uses it, so it must not grow later).
    pub fn new(slices: usize, cfg: &DriftConfig) -> Self {
        let alpha_each = cfg.alpha / (2 * slices.max(1)) as f64;
        let state = SliceState {
            cosine: ConfidenceSequence::new(alpha_each),
            low: ConfidenceSequence::new(alpha_each),
            examples: Vec::new(),
        };
        SliceStats {
            floor: cfg.floor,
            min_pairs: cfg.min_pairs,
            alpha: cfg.alpha,
            alpha_each,
            slices: vec![state; slices],
        }
    }

    /// Miscoverage of each one-sided bound: α / (2K).
    pub fn alpha_per_bound(&self) -> f64 {
        self.alpha_each
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    /// Whether there are no slices.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// Forgets everything (the canary version changed).
    pub fn reset(&mut self) {
        *self = SliceStats::new(
            self.slices.len(),
            &DriftConfig {
                window: std::time::Duration::ZERO,
                min_pairs: self.min_pairs,
                floor: self.floor,
                alpha: self.alpha,
            },
        );
    }

    /// Adds one pair to each of its slices.
    pub fn record(&mut self, set: SliceSet, pair: &PairRef<'_>) {
        if !pair.cosine.is_finite() {
            return;
        }
        let cos = pair.cosine.clamp(-1.0, 1.0);
        let low = if cos < self.floor { 1.0 } else { 0.0 };
        for i in set.iter() {
            let Some(s) = self.slices.get_mut(i) else {
                continue;
            };
            s.cosine.push((1.0 + cos) / 2.0);
            s.low.push(low);
            s.offer_example(pair, cos);
        }
    }

    /// The numbers of slice `i` (all NaN for an unknown index).
    pub fn summary(&self, i: usize) -> SliceSummary {
        let nan = f64::NAN;
        let Some(s) = self.slices.get(i) else {
            return SliceSummary {
                pairs: 0,
                mean_cosine: nan,
                cosine_lower: nan,
                cosine_upper: nan,
                low_share: nan,
                low_share_lower: nan,
                low_share_upper: nan,
            };
        };
        let pairs = s.cosine.count();
        if pairs < self.min_pairs.max(1) {
            return SliceSummary {
                pairs,
                ..self.summary(usize::MAX)
            };
        }
        let (cl, cu) = s.cosine.bounds();
        let (ll, lu) = s.low.bounds();
        SliceSummary {
            pairs,
            mean_cosine: 2.0 * s.cosine.mean() - 1.0,
            cosine_lower: 2.0 * cl - 1.0,
            cosine_upper: 2.0 * cu - 1.0,
            low_share: s.low.mean(),
            low_share_lower: ll,
            low_share_upper: lu,
        }
    }

    /// The worst slice for each gate quantity (first index on ties).
    pub fn worst(&self) -> WorstSlice {
        let mut w = WorstSlice {
            low_share_lower: f64::NAN,
            low_share_slice: None,
            cosine_upper: f64::NAN,
            cosine_slice: None,
        };
        for i in 0..self.slices.len() {
            let s = self.summary(i);
            if s.pairs < self.min_pairs.max(1) {
                continue;
            }
            if w.low_share_slice.is_none() || s.low_share_lower > w.low_share_lower {
                (w.low_share_lower, w.low_share_slice) = (s.low_share_lower, Some(i));
            }
            if w.cosine_slice.is_none() || s.cosine_upper < w.cosine_upper {
                (w.cosine_upper, w.cosine_slice) = (s.cosine_upper, Some(i));
            }
        }
        w
    }

    /// The lowest-cosine recent pairs of slice `i`, lowest first.
    pub fn examples(&self, i: usize) -> Vec<SliceExample> {
        let mut v = self
            .slices
            .get(i)
            .map(|s| s.examples.clone())
            .unwrap_or_default();
        v.sort_by(|a, b| a.cosine.total_cmp(&b.cosine));
        v
    }
}

impl SliceState {
    /// Keeps the pair if it is among the lowest recent cosines; allocates only then.
    fn offer_example(&mut self, pair: &PairRef<'_>, cos: f64) {
        let now = self.cosine.count();
        self.examples
            .retain(|e| now.saturating_sub(e.seen_at) <= EXAMPLE_HORIZON);
        let slot = if self.examples.len() < EXAMPLES_PER_SLICE {
            None
        } else {
            // The highest cosine kept, replaced if the new pair is lower.
            let (j, worst_kept) = self
                .examples
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.cosine.total_cmp(&b.1.cosine))
                .map(|(j, e)| (j, e.cosine))
                .unwrap_or((0, f64::NEG_INFINITY));
            if cos >= worst_kept {
                return;
            }
            Some(j)
        };
        let example = SliceExample {
            request_id: pair.request_id.to_string(),
            item: pair.item,
            cosine: cos,
            input: pair.input.map(snippet),
            seen_at: now,
        };
        match slot {
            Some(j) => self.examples[j] = example,
            None => self.examples.push(example),
        }
    }
}

fn snippet(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(&input[..input.len().min(4 * SNIPPET_CHARS)]);
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests;
