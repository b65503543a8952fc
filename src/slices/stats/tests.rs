use std::time::Duration;

use super::*;
use crate::slices::{SliceSet, SplitMix};

/// The gate proposed for the templates: fail when the worst slice's low-share lower
/// bound is above 5 % or its cosine upper bound is below 0.92 (the recipe's threshold).
const LOW_BUDGET: f64 = 0.05;
const COSINE_THRESHOLD: f64 = 0.92;

fn gate_fails(w: &WorstSlice) -> bool {
    w.low_share_lower > LOW_BUDGET || w.cosine_upper < COSINE_THRESHOLD
}

fn cfg() -> DriftConfig {
    DriftConfig {
        window: Duration::from_secs(300),
        min_pairs: 50,
        floor: 0.8,
        alpha: 0.025,
    }
}

/// The default layout: 4 length slices (0..4) and 16 regions (4..20).
const K: usize = 20;
const REGION0: usize = 4;
/// 20 pairs a second, a look a minute.
const PAIRS_PER_LOOK: u64 = 1200;
const HOUR: u64 = 72_000;

fn set(len: usize, region: usize) -> SliceSet {
    let mut s = SliceSet::EMPTY;
    s.insert(len);
    s.insert(REGION0 + region);
    s
}

fn pair(cosine: f64) -> PairRef<'static> {
    PairRef {
        cosine,
        request_id: "r",
        item: 0,
        input: None,
    }
}

/// Cosine of a healthy pair: 0.99 ± 0.005, at most 1.
fn healthy(rng: &mut SplitMix, mean: f64, sd: f64) -> f64 {
    (mean + sd * rng.normal()).min(1.0)
}

/// `broken_share` of inputs (one language, say) land in region 4, which also holds its
/// 1/16 of the rest (at 3 %, a third of that region is broken, cosine ≈ 0.5); everything
/// else is at 0.99. Returns the pair at which the slice gate fails.
fn broken_run(seed: u64, broken_share: f64) -> u64 {
    let mut rng = SplitMix(seed);
    let mut stats = SliceStats::new(K, &cfg());
    for t in 1..=HOUR {
        let len = rng.below(4);
        let (region, cos) = if rng.uniform() < broken_share {
            (4, (0.5 + 0.05 * rng.normal()).clamp(-1.0, 1.0))
        } else {
            (rng.below(16), healthy(&mut rng, 0.99, 0.005))
        };
        stats.record(set(len, region), &pair(cos));
        let w = stats.worst();
        if gate_fails(&w) {
            assert_eq!(w.low_share_slice, Some(REGION0 + 4), "{w:?}");
            return t;
        }
    }
    panic!("seed {seed}: the broken slice never failed the gate in an hour");
}

#[test]
fn a_broken_slice_of_three_percent_fails_within_minutes() {
    for share in [0.03, 0.01] {
        let mut at: Vec<u64> = (0..10).map(|s| broken_run(100 + s, share)).collect();
        at.sort_unstable();
        let looks: Vec<u64> = at.iter().map(|t| t.div_ceil(PAIRS_PER_LOOK)).collect();
        eprintln!(
            "broken share {share}: gate fails after {at:?} pairs (median {}), i.e. at look {looks:?} of a minute at 20 pairs/s",
            at[at.len() / 2]
        );
        let limit = if share >= 0.03 {
            4 * PAIRS_PER_LOOK
        } else {
            12 * PAIRS_PER_LOOK
        };
        assert!(at[at.len() - 1] <= limit, "{share}: {at:?}");
    }
    // The global bounds on the same stream: the mean cosine (≈ 0.975) passes any 0.92
    // gate forever; the global low share (3 %) crosses the recipe's 2 % budget only late.
    let mut rng = SplitMix(7);
    let mut low = ConfidenceSequence::new(cfg().alpha);
    let mut cosine = ConfidenceSequence::new(cfg().alpha);
    let mut crossed = None;
    for t in 1..=HOUR {
        let cos = if rng.uniform() < 0.03 {
            0.5 + 0.05 * rng.normal()
        } else {
            healthy(&mut rng, 0.99, 0.005)
        };
        low.push(if cos < 0.8 { 1.0 } else { 0.0 });
        cosine.push((1.0 + cos) / 2.0);
        if crossed.is_none() && low.bounds().0 > 0.02 {
            crossed = Some(t);
        }
    }
    let cos_upper = 2.0 * cosine.bounds().1 - 1.0;
    eprintln!("global on the same traffic: low-share lower bound > 0.02 after {crossed:?} pairs; mean-cosine upper bound after an hour {cos_upper:.4}");
    assert!(cos_upper > COSINE_THRESHOLD);
}

/// Runs one canary for an hour with a look a minute; whether the gate ever fails.
fn unchanged_canary(seed: u64, edge_region: Option<usize>) -> bool {
    let mut rng = SplitMix(seed);
    let mut stats = SliceStats::new(K, &cfg());
    for t in 1..=HOUR {
        let region = rng.below(16);
        let cos = if Some(region) == edge_region {
            // Exactly at both thresholds: 5 % of pairs at 0.7 (under the floor), the rest
            // at 0.9316 ± 0.01, so the mean is 0.92.
            if rng.uniform() < LOW_BUDGET {
                0.7
            } else {
                (0.92 - LOW_BUDGET * 0.7) / (1.0 - LOW_BUDGET) + 0.01 * (2.0 * rng.uniform() - 1.0)
            }
        } else {
            // Per-region level between 0.96 and 0.98, small noise.
            healthy(&mut rng, 0.96 + 0.00125 * region as f64, 0.01)
        };
        stats.record(set(rng.below(4), region), &pair(cos));
        if t % PAIRS_PER_LOOK == 0 && gate_fails(&stats.worst()) {
            return true;
        }
    }
    false
}

#[test]
fn unchanged_canaries_fail_at_most_alpha_of_the_time() {
    let failed = (0..20)
        .filter(|&s| unchanged_canary(1000 + s, None))
        .count();
    eprintln!("20 unchanged canaries (cosine ≈ 0.97 ± 0.01), 60 looks each: {failed} failed");
    assert_eq!(failed, 0);
    // Harder: one region sits exactly on both thresholds (true low share 5 %, true mean
    // 0.92), so every look is a chance to fail it wrongly. α = 0.025 bounds the rate.
    let n = 60;
    let failed = (0..n)
        .filter(|&s| unchanged_canary(5000 + s, Some(3)))
        .count();
    eprintln!("{n} canaries with a region exactly at the thresholds: {failed} failed");
    // Binomial(60, 0.025): P(X ≥ 6) < 0.005.
    assert!(failed <= 5, "{failed} of {n}");
}

#[test]
fn statistics_are_nan_below_min_pairs_and_worst_skips_thin_slices() {
    let mut stats = SliceStats::new(K, &cfg());
    assert!((stats.alpha_per_bound() - 0.025 / 40.0).abs() < 1e-12);
    for _ in 0..49 {
        stats.record(set(0, 0), &pair(0.1));
    }
    let s = stats.summary(REGION0);
    assert_eq!(s.pairs, 49);
    assert!(s.cosine_lower.is_nan() && s.low_share_lower.is_nan() && s.mean_cosine.is_nan());
    let w = stats.worst();
    assert!(w.low_share_lower.is_nan() && w.low_share_slice.is_none());
    stats.record(set(0, 0), &pair(0.1));
    stats.record(set(0, 0), &pair(f64::NAN)); // ignored
    let s = stats.summary(REGION0);
    assert_eq!(s.pairs, 50);
    assert!((s.mean_cosine - 0.1).abs() < 1e-9 && s.low_share == 1.0);
    assert!(s.low_share_lower > 0.5 && s.cosine_upper < 0.8, "{s:?}");
    assert_eq!(
        stats.worst().low_share_slice,
        Some(0),
        "first index on ties"
    );
    assert!(stats.summary(99).pairs == 0 && stats.summary(99).mean_cosine.is_nan());
    stats.reset();
    assert_eq!(stats.summary(REGION0).pairs, 0);
    assert!((stats.alpha_per_bound() - 0.025 / 40.0).abs() < 1e-12);
}

#[test]
fn examples_keep_the_lowest_recent_cosines() {
    let mut stats = SliceStats::new(2, &cfg());
    let mut one = SliceSet::EMPTY;
    one.insert(1);
    let cosines = [0.9, 0.5, 0.95, 0.3, 0.99, 0.7, 0.2, 0.8];
    for (i, &c) in cosines.iter().enumerate() {
        let id = format!("req-{i}");
        let input = "é".repeat(200);
        stats.record(
            one,
            &PairRef {
                cosine: c,
                request_id: &id,
                item: i as u32,
                input: Some(input.as_bytes()),
            },
        );
    }
    let ex = stats.examples(1);
    let got: Vec<f64> = ex.iter().map(|e| e.cosine).collect();
    assert_eq!(got, vec![0.2, 0.3, 0.5, 0.7, 0.8]);
    assert_eq!(ex[0].request_id, "req-6");
    let snip = ex[0].input.as_deref().unwrap();
    assert_eq!(
        snip.chars().count(),
        SNIPPET_CHARS + 1,
        "cut on a char boundary, with …"
    );
    assert!(stats.examples(0).is_empty());
    // After the horizon, old lows give way to what the canary does now.
    for _ in 0..EXAMPLE_HORIZON + 5 {
        stats.record(one, &pair(0.99));
    }
    assert!(stats.examples(1).iter().all(|e| e.cosine == 0.99));
}
