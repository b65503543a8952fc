//! Online joins: each request id remembers, for `label_ttl`, that this pod served it and
//! (when mirrored) both shadow predictions of every item (input) of the request: item
//! `k` of a batched request is the `k`-th input, a single-input request has item 0.
//! Ground-truth labels posted later name a (request id, item) and score that item's
//! baseline and canary predictions on the same input; business events (conversions)
//! give the conversion rate of the version this pod serves, per request. Memory is
//! fixed by a cap on tracked ids (a set-associative table allocated at start, 32 bytes
//! an id, plus the predictions of mirrored requests behind a pointer, at most
//! [`MAX_ITEMS`] items each); evictions are counted.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::compare::predictions_agree;
use crate::drift::ConfidenceSequence;
use crate::ids::id_hash;

/// Independent shards so concurrent requests rarely meet on one lock.
const SHARDS: usize = 16;

/// Below this many labeled pairs the accuracy ratio bound is NaN.
pub const MIN_LABELED_PAIRS: u64 = 30;

/// Ids per set: an id can live in any of the 8 slots of its set, and a new id takes an
/// empty or expired slot, else the oldest of the 8 (an eviction).
const WAYS: usize = 8;

/// Items of one request whose predictions are kept for labels: twice the largest batch
/// the OpenAI embeddings API takes (2048). Items beyond are not kept (labels naming
/// them are `unknown`) and are counted in `shadowgate_feedback_items_not_kept_total`,
/// so one huge batch cannot hold an unbounded share of memory for `label_ttl`.
pub const MAX_ITEMS: usize = 4096;

/// What one request id remembers. Keyed by a 64-bit hash of the id, not the id itself:
/// 32 bytes per tracked request (checked below), so a set of [`WAYS`] slots is four
/// cache lines. All zeros is an empty slot.
#[derive(Debug, Default)]
struct Slot {
    /// `id_hash` of the request id, never 0 (0 marks an empty slot).
    key: u64,
    /// Milliseconds since the table's origin.
    served_ms: u64,
    /// Set once the mirror has both answers. A thin pointer: most slots are never
    /// mirrored, and the per-item data would not fit the slot anyway.
    predictions: Option<Box<Predictions>>,
    converted: bool,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);

/// The shadow predictions of one mirrored request, by item.
#[derive(Debug)]
struct Predictions {
    /// (baseline, canary) prediction of each item, at most [`MAX_ITEMS`].
    pairs: Box<[(Option<String>, Option<String>)]>,
    /// Bit `k` set: item `k` has been scored by a label; later labels for it are
    /// duplicates.
    labeled: Box<[u64]>,
}

impl Predictions {
    fn is_labeled(&self, item: usize) -> bool {
        self.labeled[item / 64] & (1 << (item % 64)) != 0
    }

    fn set_labeled(&mut self, item: usize) {
        self.labeled[item / 64] |= 1 << (item % 64);
    }
}

/// A request id's key in the table, from [`Feedback::prefetch`].
#[derive(Debug, Clone, Copy)]
pub struct IdKey(u64);

/// One lock's worth of slots: sets of `ways` slots.
struct Shard {
    slots: Vec<Slot>,
    ways: usize,
}

impl Shard {
    /// At most `capacity` slots (at least one): [`WAYS`] per set, fewer when tiny.
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let ways = WAYS.min(capacity);
        let len = capacity / ways * ways;
        let mut slots = Vec::with_capacity(len);
        slots.resize_with(len, Slot::default);
        Shard { slots, ways }
    }

    /// The slots an id with this key may occupy.
    fn set(&mut self, key: u64) -> &mut [Slot] {
        let w = self.ways;
        let i = (key as usize) % (self.slots.len() / w);
        &mut self.slots[i * w..(i + 1) * w]
    }
}

/// How one posted label or event was joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinResult {
    /// Joined with a request this pod served (and, for labels, with both shadow predictions).
    Joined,
    /// A label for a request that was served here but not mirrored: counts for nothing.
    NotMirrored,
    /// The id was never seen here, or has expired; or (labels) the mirrored request has
    /// no such item, or the item was beyond the [`MAX_ITEMS`] kept.
    Unknown,
    /// A second label for the same (id, item), or a second conversion for the same id:
    /// ignored.
    Duplicate,
}

impl JoinResult {
    fn as_str(self) -> &'static str {
        match self {
            JoinResult::Joined => "joined",
            JoinResult::NotMirrored => "not_mirrored",
            JoinResult::Unknown => "unknown",
            JoinResult::Duplicate => "duplicate",
        }
    }
}

/// Outcome of a labeled pair (`model_shadow_labeled_pairs_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairScore {
    BothCorrect,
    BaselineOnly,
    CanaryOnly,
    BothWrong,
}

impl PairScore {
    pub const ALL: [PairScore; 4] = [
        PairScore::BothCorrect,
        PairScore::BaselineOnly,
        PairScore::CanaryOnly,
        PairScore::BothWrong,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            PairScore::BothCorrect => "both_correct",
            PairScore::BaselineOnly => "baseline_only",
            PairScore::CanaryOnly => "canary_only",
            PairScore::BothWrong => "both_wrong",
        }
    }
    pub fn new(baseline_correct: bool, canary_correct: bool) -> Self {
        match (baseline_correct, canary_correct) {
            (true, true) => PairScore::BothCorrect,
            (true, false) => PairScore::BaselineOnly,
            (false, true) => PairScore::CanaryOnly,
            (false, false) => PairScore::BothWrong,
        }
    }
}

/// Series driven by the online joins.
#[derive(Clone)]
pub struct FeedbackMetrics {
    accuracy: [Gauge; 2],
    labeled: [IntCounter; 2],
    pairs: Vec<IntCounter>,
    ratio_lower: Gauge,
    conversion: Gauge,
    joins: Vec<Vec<IntCounter>>,
    evictions: IntCounter,
    items_not_kept: IntCounter,
    tracked: prometheus::IntGauge,
}

impl FeedbackMetrics {
    pub fn register(
        r: &Registry,
        model: &str,
        version: &str,
        baseline: &str,
        canary: &str,
    ) -> Result<Self, prometheus::Error> {
        let reg = |c: Box<dyn prometheus::core::Collector>| r.register(c);
        let accuracy = GaugeVec::new(
            Opts::new("model_inference_accuracy", "Accuracy of each version on labeled shadow pairs (same inputs), since start; NaN with no labels."),
            &["model", "version"],
        )?;
        let labeled = IntCounterVec::new(
            Opts::new(
                "model_inference_labeled_total",
                "Labeled predictions scored, per version.",
            ),
            &["model", "version"],
        )?;
        let pairs = IntCounterVec::new(
            Opts::new(
                "model_shadow_labeled_pairs_total",
                "Labeled shadow pairs by which side was right: the table behind McNemar's test.",
            ),
            &["model", "outcome"],
        )?;
        let ratio = GaugeVec::new(
            Opts::new(
                "model_accuracy_ratio_lower_bound",
                "Anytime-valid lower bound on accuracy(canary)/accuracy(baseline) from labeled pairs; NaN below the minimum.",
            ),
            &["model", "baseline", "canary"],
        )?;
        let conversion = GaugeVec::new(
            Opts::new("business_metric_conversion_rate", "Conversions / requests served by this version over feedback.conversion_window; NaN with no requests."),
            &["model", "version"],
        )?;
        let joins = IntCounterVec::new(
            Opts::new(
                "shadowgate_feedback_events_total",
                "Posted labels and events by how they joined.",
            ),
            &["model", "kind", "result"],
        )?;
        let evictions = IntCounterVec::new(
            Opts::new("shadowgate_feedback_evictions_total", "Tracked request ids evicted before label_ttl because of the feedback.max_tracked cap."),
            &["model"],
        )?;
        let items_not_kept = IntCounterVec::new(
            Opts::new(
                "shadowgate_feedback_items_not_kept_total",
                "Items of mirrored batches beyond the per-request cap (4096) whose predictions were not kept for label joins.",
            ),
            &["model"],
        )?;
        let tracked = prometheus::IntGaugeVec::new(
            Opts::new(
                "shadowgate_feedback_tracked_ids",
                "Request ids remembered for online joins.",
            ),
            &["model"],
        )?;
        for c in [
            Box::new(accuracy.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(labeled.clone()),
            Box::new(pairs.clone()),
            Box::new(ratio.clone()),
            Box::new(conversion.clone()),
            Box::new(joins.clone()),
            Box::new(evictions.clone()),
            Box::new(items_not_kept.clone()),
            Box::new(tracked.clone()),
        ] {
            reg(c)?;
        }
        let nan = |g: Gauge| {
            g.set(f64::NAN);
            g
        };
        Ok(Self {
            accuracy: [
                nan(accuracy.with_label_values(&[model, baseline])),
                nan(accuracy.with_label_values(&[model, canary])),
            ],
            labeled: [
                labeled.with_label_values(&[model, baseline]),
                labeled.with_label_values(&[model, canary]),
            ],
            pairs: PairScore::ALL
                .iter()
                .map(|p| pairs.with_label_values(&[model, p.as_str()]))
                .collect(),
            ratio_lower: nan(ratio.with_label_values(&[model, baseline, canary])),
            conversion: nan(conversion.with_label_values(&[model, version])),
            joins: ["label", "feedback"]
                .iter()
                .map(|k| {
                    [
                        JoinResult::Joined,
                        JoinResult::NotMirrored,
                        JoinResult::Unknown,
                        JoinResult::Duplicate,
                    ]
                    .iter()
                    .map(|res| joins.with_label_values(&[model, k, res.as_str()]))
                    .collect()
                })
                .collect(),
            evictions: evictions.with_label_values(&[model]),
            items_not_kept: items_not_kept.with_label_values(&[model]),
            tracked: tracked.with_label_values(&[model]),
        })
    }

    fn join(&self, kind: usize, result: JoinResult) {
        let i = match result {
            JoinResult::Joined => 0,
            JoinResult::NotMirrored => 1,
            JoinResult::Unknown => 2,
            JoinResult::Duplicate => 3,
        };
        self.joins[kind][i].inc();
    }
}

/// Paired accuracy statistics since start.
struct Scores {
    counts: [u64; 4],
    baseline_cs: ConfidenceSequence,
    canary_cs: ConfidenceSequence,
}

/// Served requests and conversions in the conversion window, counted per second so
/// memory is bounded by the window's length in seconds, not by traffic.
struct Conversions {
    origin: Instant,
    /// (second since origin, served, converted), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
}

impl Conversions {
    fn add(&mut self, now: Instant, served: u64, converted: u64) {
        let sec = now.saturating_duration_since(self.origin).as_secs();
        match self.buckets.back_mut() {
            Some(b) if b.0 == sec => {
                b.1 += served;
                b.2 += converted;
            }
            _ => self.buckets.push_back((sec, served, converted)),
        }
    }

    /// Conversions / served over the last `window`; NaN with nothing served.
    fn rate(&mut self, now: Instant, window: Duration) -> f64 {
        let sec = now.saturating_duration_since(self.origin).as_secs();
        let oldest = sec.saturating_sub(window.as_secs());
        while self.buckets.front().is_some_and(|b| b.0 < oldest) {
            self.buckets.pop_front();
        }
        let (served, converted) = self
            .buckets
            .iter()
            .fold((0, 0), |a, b| (a.0 + b.1, a.1 + b.2));
        if served == 0 {
            f64::NAN
        } else {
            converted as f64 / served as f64
        }
    }
}

/// The online join state.
pub struct Feedback {
    shards: Vec<Mutex<Shard>>,
    /// Address, set count and ways of each shard's slots, for [`Feedback::prefetch`].
    /// The slot vectors are allocated once in `new` and never grow or move.
    slot_addrs: Vec<(usize, usize, usize)>,
    /// What `Slot::served_ms` counts from.
    origin: Instant,
    ttl_ms: u64,
    conversion_window: Duration,
    scores: Mutex<Scores>,
    conversions: Mutex<Conversions>,
    pub metrics: FeedbackMetrics,
}

impl Feedback {
    /// The online join of `[feedback]` (with `drift.alpha`), its series registered on
    /// `registry` with the config's model and version labels.
    pub fn from_config(
        cfg: &crate::config::Config,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        // The first lane's predictions feed the join (`Mirror::feeds_labels`): the
        // `[shadow]` pair, or the first route's first candidate.
        let first = &cfg.checked().routes[0];
        let model = if cfg.routes.is_empty() {
            &cfg.model.name
        } else {
            &first.model
        };
        let metrics = FeedbackMetrics::register(
            registry,
            model,
            &cfg.model.version,
            &first.baseline.version,
            &first.candidates[0].target.version,
        )?;
        Ok(Self::new(
            cfg.feedback.label_ttl,
            cfg.feedback.max_tracked,
            cfg.feedback.conversion_window,
            cfg.drift.alpha,
            metrics,
        ))
    }

    /// `alpha` per side; the ratio bound splits it over the two accuracy sequences.
    pub fn new(
        ttl: Duration,
        max_tracked: usize,
        conversion_window: Duration,
        alpha: f64,
        metrics: FeedbackMetrics,
    ) -> Self {
        let shards: Vec<Mutex<Shard>> = (0..SHARDS)
            .map(|_| Mutex::new(Shard::new(max_tracked / SHARDS)))
            .collect();
        let slot_addrs = shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                (s.slots.as_ptr() as usize, s.slots.len() / s.ways, s.ways)
            })
            .collect();
        Self {
            shards,
            slot_addrs,
            origin: Instant::now(),
            ttl_ms: ttl.as_millis() as u64,
            conversion_window,
            scores: Mutex::new(Scores {
                counts: [0; 4],
                baseline_cs: ConfidenceSequence::new(alpha / 2.0),
                canary_cs: ConfidenceSequence::new(alpha / 2.0),
            }),
            conversions: Mutex::new(Conversions {
                origin: Instant::now(),
                buckets: VecDeque::new(),
            }),
            metrics,
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // Middle bits: the set index uses the low ones.
        &self.shards[((key >> 32) as usize) % SHARDS]
    }

    fn key(request_id: &str) -> u64 {
        id_hash(request_id.as_bytes(), 0x5e7).max(1)
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn live(&self, slot: &Slot, now_ms: u64) -> bool {
        slot.key != 0 && now_ms.saturating_sub(slot.served_ms) <= self.ttl_ms
    }

    /// Runs `f` on the live slot of `request_id`, if there is one.
    fn with_slot<R>(
        &self,
        request_id: &str,
        now: Instant,
        f: impl FnOnce(&mut Slot) -> R,
    ) -> Option<R> {
        let key = Self::key(request_id);
        let now_ms = self.ms(now);
        let mut s = self.shard(key).lock().ok()?;
        let slot = s
            .set(key)
            .iter_mut()
            .find(|x| x.key == key && self.live(x, now_ms))?;
        Some(f(slot))
    }

    /// This pod answered `request_id` successfully (the primary path calls this).
    pub fn served(&self, request_id: &str, now: Instant) {
        self.served_key(IdKey(Self::key(request_id)), now);
    }

    /// Start loading the slots `request_id` will use into the CPU cache, and return its
    /// key for [`Feedback::served_key`]. The table is tens of MiB and each id lands on a
    /// random set, so without this, recording the id when the primary answers waits for
    /// main memory (2% of the proxy's CPU time in a profile); issued when the request
    /// arrives, the load overlaps the upstream's answer.
    #[allow(unsafe_code)] // A cache hint; see the SAFETY note. Measured in BENCHMARKS.md.
    pub fn prefetch(&self, request_id: &str) -> IdKey {
        let key = Self::key(request_id);
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let (base, sets, ways) = self.slot_addrs[((key >> 32) as usize) % SHARDS];
            let set_bytes = ways * std::mem::size_of::<Slot>();
            let first = base + (key as usize % sets.max(1)) * set_bytes;
            for line in (0..set_bytes).step_by(64) {
                // SAFETY: a prefetch is only a hint to the cache: it never faults and
                // never changes memory, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>((first + line) as *const i8) };
            }
        }
        IdKey(key)
    }

    /// [`Feedback::served`] with the key from [`Feedback::prefetch`].
    pub fn served_key(&self, key: IdKey, now: Instant) {
        self.upsert_key(key.0, now, |_| {});
        if let Ok(mut c) = self.conversions.lock() {
            c.add(now, 1, 0);
        }
    }

    /// The mirror's predictions for a request: `items[k]` is item `k`'s (baseline,
    /// canary) prediction. The mirror may finish before the primary answers, so this
    /// creates the entry when it is not there yet. Items beyond [`MAX_ITEMS`] are not
    /// kept (counted). A second call for the same id (a retry mirrored again) replaces
    /// the predictions but keeps which items were labeled: an item is scored once.
    pub fn predictions(
        &self,
        request_id: &str,
        mut items: Vec<(Option<String>, Option<String>)>,
        now: Instant,
    ) {
        if items.is_empty() {
            return;
        }
        if items.len() > MAX_ITEMS {
            let left_out = items.len() - MAX_ITEMS;
            items.truncate(MAX_ITEMS);
            self.metrics.items_not_kept.inc_by(left_out as u64);
            tracing::debug!(
                request_id,
                items = MAX_ITEMS + left_out,
                kept = MAX_ITEMS,
                "batch larger than the items kept for label joins"
            );
        }
        // Allocated before the lock is taken.
        let mut new = Box::new(Predictions {
            labeled: vec![0; items.len().div_ceil(64)].into_boxed_slice(),
            pairs: items.into_boxed_slice(),
        });
        let mut old = None;
        self.upsert(request_id, now, |e| {
            if let Some(prev) = &e.predictions {
                for (w, p) in new.labeled.iter_mut().zip(prev.labeled.iter()) {
                    *w |= p;
                }
            }
            old = e.predictions.replace(new);
        });
        drop(old); // freed outside the lock
    }

    fn upsert(&self, request_id: &str, now: Instant, update: impl FnOnce(&mut Slot)) {
        self.upsert_key(Self::key(request_id), now, update)
    }

    fn upsert_key(&self, key: u64, now: Instant, update: impl FnOnce(&mut Slot)) {
        let now_ms = self.ms(now);
        let Ok(mut s) = self.shard(key).lock() else {
            return;
        };
        let set = s.set(key);
        if let Some(slot) = set
            .iter_mut()
            .find(|x| x.key == key && self.live(x, now_ms))
        {
            update(slot);
            return;
        }
        let i = match set.iter().position(|x| !self.live(x, now_ms)) {
            Some(i) => i,
            None => {
                self.metrics.evictions.inc();
                (0..set.len())
                    .min_by_key(|&i| set[i].served_ms)
                    .unwrap_or(0)
            }
        };
        set[i] = Slot {
            key,
            served_ms: now_ms,
            ..Slot::default()
        };
        update(&mut set[i]);
    }

    /// Score a ground-truth label against both shadow predictions of `item` of the
    /// request (0 for a single-input request).
    pub fn label(&self, request_id: &str, item: u32, label: &str, now: Instant) -> JoinResult {
        let item = item as usize;
        let scored = self.with_slot(request_id, now, |e| {
            let Some(p) = e.predictions.as_mut() else {
                return Err(JoinResult::NotMirrored);
            };
            let Some((b, c)) = p.pairs.get(item) else {
                return Err(JoinResult::Unknown);
            };
            // A missing prediction is a wrong answer: the model gave nothing usable.
            let b_ok = b.as_deref().is_some_and(|p| predictions_agree(p, label));
            let c_ok = c.as_deref().is_some_and(|p| predictions_agree(p, label));
            if p.is_labeled(item) {
                return Err(JoinResult::Duplicate);
            }
            p.set_labeled(item);
            Ok((b_ok, c_ok))
        });
        let result = match scored {
            None => JoinResult::Unknown,
            Some(Err(r)) => r,
            Some(Ok((b_ok, c_ok))) => {
                self.score(PairScore::new(b_ok, c_ok), b_ok, c_ok);
                JoinResult::Joined
            }
        };
        self.metrics.join(0, result);
        result
    }

    fn score(&self, pair: PairScore, b_ok: bool, c_ok: bool) {
        let m = &self.metrics;
        m.pairs[pair as usize].inc();
        m.labeled[0].inc();
        m.labeled[1].inc();
        let Ok(mut s) = self.scores.lock() else {
            return;
        };
        s.counts[pair as usize] += 1;
        s.baseline_cs.push(f64::from(u8::from(b_ok)));
        s.canary_cs.push(f64::from(u8::from(c_ok)));
        let n: u64 = s.counts.iter().sum();
        let acc_b = (s.counts[0] + s.counts[1]) as f64 / n as f64;
        let acc_c = (s.counts[0] + s.counts[2]) as f64 / n as f64;
        m.accuracy[0].set(acc_b);
        m.accuracy[1].set(acc_c);
        let ratio = if n >= MIN_LABELED_PAIRS {
            let (c_lo, _) = s.canary_cs.bounds();
            let (_, b_hi) = s.baseline_cs.bounds();
            if b_hi > 0.0 {
                c_lo / b_hi
            } else {
                f64::NAN
            }
        } else {
            f64::NAN
        };
        m.ratio_lower.set(ratio);
    }

    /// A business event. Only `conversion` events move the conversion rate. Events are
    /// per request, not per item: the conversion rate is converted requests over
    /// requests served, and a user converts (or not) once on the answer to the whole
    /// request, whichever of its inputs the event names. So a second conversion for
    /// the same id is a duplicate even when it names another item, and the admin
    /// handler validates an event's `item` but does not pass it here.
    pub fn event(&self, request_id: &str, event: &str, now: Instant) -> JoinResult {
        let conversion = event == "conversion";
        let result = self
            .with_slot(request_id, now, |e| {
                if conversion && e.converted {
                    JoinResult::Duplicate
                } else {
                    e.converted |= conversion;
                    JoinResult::Joined
                }
            })
            .unwrap_or(JoinResult::Unknown);
        if result == JoinResult::Joined && event == "conversion" {
            if let Ok(mut c) = self.conversions.lock() {
                c.add(now, 0, 1);
            }
        }
        self.metrics.join(1, result);
        result
    }

    /// Bring the conversion-rate and tracked-ids gauges up to date (once per scrape).
    pub fn refresh(&self, now: Instant) {
        if let Ok(mut c) = self.conversions.lock() {
            let rate = c.rate(now, self.conversion_window);
            self.metrics.conversion.set(rate);
        }
        let now_ms = self.ms(now);
        let mut tracked = 0;
        for s in &self.shards {
            if let Ok(mut s) = s.lock() {
                for slot in s.slots.iter_mut() {
                    if self.live(slot, now_ms) {
                        tracked += 1;
                    } else if slot.key != 0 {
                        *slot = Slot::default(); // frees an expired id's predictions
                    }
                }
            }
        }
        self.metrics.tracked.set(tracked as i64);
    }
}

/// Compare a presented bearer token with the configured one in time independent of
/// where they differ.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = presented.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= usize::from(p ^ e);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feedback(max: usize) -> (Feedback, Registry) {
        let r = Registry::new();
        let m = FeedbackMetrics::register(&r, "m", "v2", "v1", "v2").unwrap();
        (
            Feedback::new(
                Duration::from_secs(60),
                max,
                Duration::from_secs(60),
                0.025,
                m,
            ),
            r,
        )
    }

    #[test]
    fn labels_score_both_versions_on_the_same_inputs() {
        let (f, _r) = feedback(1000);
        let now = Instant::now();
        // 10 requests: baseline right on 8, canary right on 6; 5 both right.
        for i in 0..10 {
            let id = format!("r{i}");
            f.served(&id, now);
            let b = if i < 8 { "cat" } else { "dog" };
            let c = if i < 5 || (8..9).contains(&i) {
                "cat"
            } else {
                "dog"
            };
            f.predictions(&id, vec![(Some(b.into()), Some(c.into()))], now);
        }
        for i in 0..10 {
            assert_eq!(f.label(&format!("r{i}"), 0, "cat", now), JoinResult::Joined);
        }
        assert_eq!(f.label("r0", 0, "cat", now), JoinResult::Duplicate);
        assert_eq!(f.label("r0", 1, "cat", now), JoinResult::Unknown);
        assert_eq!(f.label("nope", 0, "cat", now), JoinResult::Unknown);
        let s = f.scores.lock().unwrap();
        // both: 0..5 -> 5; baseline only: 5,6,7 -> 3; canary only: 8 -> 1; both wrong: 9 -> 1.
        assert_eq!(s.counts, [5, 3, 1, 1]);
        assert_eq!(f.metrics.accuracy[0].get(), 0.8);
        assert_eq!(f.metrics.accuracy[1].get(), 0.6);
        assert!(
            f.metrics.ratio_lower.get().is_nan(),
            "below the minimum number of pairs"
        );
    }

    #[test]
    fn each_item_of_a_batch_is_its_own_labeled_pair() {
        let (f, _r) = feedback(1000);
        let now = Instant::now();
        let p = |b: &str, c: &str| (Some(b.to_string()), Some(c.to_string()));
        f.served("batch", now);
        // Item 3: the canary gave no prediction (wrong whatever the label).
        f.predictions(
            "batch",
            vec![
                p("cat", "cat"),
                p("cat", "dog"),
                p("dog", "cat"),
                (Some("bird".into()), None),
            ],
            now,
        );
        f.served("single", now);
        f.predictions("single", vec![p("1.0", "2")], now);
        f.served("not-mirrored", now);
        let label = |id: &str, item, l: &str| f.label(id, item, l, now);
        assert_eq!(label("batch", 0, "cat"), JoinResult::Joined); // both correct
        assert_eq!(label("batch", 1, "cat"), JoinResult::Joined); // baseline only
        assert_eq!(label("batch", 2, "cat"), JoinResult::Joined); // canary only
        assert_eq!(label("batch", 3, "bird"), JoinResult::Joined); // baseline only
        assert_eq!(label("batch", 1, "dog"), JoinResult::Duplicate);
        assert_eq!(label("batch", 4, "cat"), JoinResult::Unknown); // no such item
        assert_eq!(label("single", 0, "1"), JoinResult::Joined); // baseline only
        assert_eq!(label("single", 1, "1"), JoinResult::Unknown);
        assert_eq!(label("not-mirrored", 0, "1"), JoinResult::NotMirrored);
        assert_eq!(label("not-mirrored", 2, "1"), JoinResult::NotMirrored);
        // A retry mirrored again replaces the predictions, not what was labeled.
        f.predictions("batch", vec![p("x", "x"), p("x", "x")], now);
        assert_eq!(label("batch", 0, "x"), JoinResult::Duplicate);
        assert_eq!(label("batch", 2, "x"), JoinResult::Unknown);
        assert_eq!(f.scores.lock().unwrap().counts, [1, 3, 1, 0]);
        assert_eq!(f.metrics.accuracy[0].get(), 4.0 / 5.0);
        assert_eq!(f.metrics.accuracy[1].get(), 2.0 / 5.0);
        assert_eq!(f.metrics.labeled[0].get(), 5);
        assert_eq!(f.metrics.items_not_kept.get(), 0);

        // A conversion is per request, whatever item it names.
        assert_eq!(f.event("batch", "conversion", now), JoinResult::Joined);
        assert_eq!(f.event("batch", "conversion", now), JoinResult::Duplicate);
        f.refresh(now);
        assert_eq!(f.metrics.conversion.get(), 1.0 / 3.0);
    }

    #[test]
    fn items_beyond_the_cap_are_not_kept_and_counted() {
        let (f, _r) = feedback(1000);
        let now = Instant::now();
        let items: Vec<_> = (0..MAX_ITEMS + 10)
            .map(|i| (Some(i.to_string()), Some("x".to_string())))
            .collect();
        f.predictions("big", items, now);
        assert_eq!(f.metrics.items_not_kept.get(), 10);
        let last = (MAX_ITEMS - 1) as u32;
        assert_eq!(
            f.label("big", last, &last.to_string(), now),
            JoinResult::Joined
        );
        assert_eq!(
            f.label("big", MAX_ITEMS as u32, "4096", now),
            JoinResult::Unknown
        );
        assert_eq!(f.label("big", last, "x", now), JoinResult::Duplicate);
        assert_eq!(f.scores.lock().unwrap().counts, [0, 1, 0, 0]);
        // An empty batch records nothing.
        f.predictions("empty", vec![], now);
        assert_eq!(f.label("empty", 0, "x", now), JoinResult::Unknown);
    }

    #[test]
    fn ids_expire_after_ttl_and_the_cap_evicts_oldest() {
        let (f, _r) = feedback(SHARDS * 2);
        let t0 = Instant::now();
        f.served("old", t0);
        assert_eq!(
            f.event("old", "conversion", t0 + Duration::from_secs(61)),
            JoinResult::Unknown
        );
        for i in 0..1000 {
            f.served(&format!("x{i}"), t0);
        }
        f.refresh(t0);
        assert!(f.metrics.tracked.get() <= (SHARDS * 2) as i64);
        assert!(f.metrics.evictions.get() >= 1000 - (SHARDS * 2) as u64);
    }

    #[test]
    fn conversion_rate_is_conversions_over_served_in_window() {
        let (f, _r) = feedback(1000);
        let now = Instant::now();
        for i in 0..20 {
            f.served(&format!("c{i}"), now);
        }
        for i in 0..5 {
            assert_eq!(
                f.event(&format!("c{i}"), "conversion", now),
                JoinResult::Joined
            );
        }
        assert_eq!(f.event("c0", "conversion", now), JoinResult::Duplicate);
        f.refresh(now);
        assert_eq!(f.metrics.conversion.get(), 0.25);
        f.refresh(now + Duration::from_secs(120));
        assert!(f.metrics.conversion.get().is_nan());
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secreT", b"secret"));
        assert!(!token_matches(b"secret-longer", b"secret"));
        assert!(!token_matches(b"", b"secret"));
    }
}
