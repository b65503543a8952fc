//! Every Prometheus series the sidecar exports, registered once and handed around as one
//! struct. Label values come from config (model, versions) and fixed sets, never from
//! request data, so cardinality is bounded. Handles are bound to their labels up front so
//! the hot path does no label lookups.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    exponential_buckets, Counter, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::drift::{DriftSnapshot, QUANTILES};
use crate::shadow_log::TargetOutcome;
use crate::slices::SliceStats;

/// Edges of `model_embedding_cosine_distance` (d = 1 − cos): fine near 0, where a good
/// canary lives, coarse above 0.2, where any pair is bad. From DESIGN.md.
pub const COSINE_DISTANCE_BUCKETS: [f64; 16] = [
    1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0,
];

/// Edges of request latency histograms, 5 ms to ~82 s: embeddings answer in
/// milliseconds, generations in seconds.
pub fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.005, 2.0, 15).unwrap_or_default()
}

/// The outcome of one baseline/canary pair (`model_embedding_pairs_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairOutcome {
    Compared,
    BaselineError,
    CanaryError,
    Timeout,
    Invalid,
}

impl PairOutcome {
    pub const ALL: [PairOutcome; 5] = [
        PairOutcome::Compared,
        PairOutcome::BaselineError,
        PairOutcome::CanaryError,
        PairOutcome::Timeout,
        PairOutcome::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PairOutcome::Compared => "compared",
            PairOutcome::BaselineError => "baseline_error",
            PairOutcome::CanaryError => "canary_error",
            PairOutcome::Timeout => "timeout",
            PairOutcome::Invalid => "invalid",
        }
    }
}

/// Why a pair counts as `invalid` (`model_embedding_invalid_pairs_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// Baseline and canary answered with different numbers of items.
    ItemCount,
    /// An answer's item count differs from the request's input count.
    InputCount,
    /// The two embeddings of an item have different lengths.
    Dimension,
    /// An embedding holds NaN or an infinity.
    NonFinite,
    /// An embedding is all zeros (cosine undefined).
    ZeroVector,
    /// An answer was 2xx but held no readable embeddings.
    BadAnswer,
    /// The request rewrite could not read the incoming request.
    Rewrite,
    /// The request carries no inputs.
    EmptyBatch,
    /// More inputs than `shadow.max_batch_items`.
    TooManyItems,
}

impl InvalidReason {
    pub const ALL: [InvalidReason; 9] = [
        InvalidReason::ItemCount,
        InvalidReason::InputCount,
        InvalidReason::Dimension,
        InvalidReason::NonFinite,
        InvalidReason::ZeroVector,
        InvalidReason::BadAnswer,
        InvalidReason::Rewrite,
        InvalidReason::EmptyBatch,
        InvalidReason::TooManyItems,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::ItemCount => "item_count",
            InvalidReason::InputCount => "input_count",
            InvalidReason::Dimension => "dimension",
            InvalidReason::NonFinite => "non_finite",
            InvalidReason::ZeroVector => "zero_vector",
            InvalidReason::BadAnswer => "bad_answer",
            InvalidReason::Rewrite => "rewrite",
            InvalidReason::EmptyBatch => "empty_batch",
            InvalidReason::TooManyItems => "too_many_items",
        }
    }
}

/// Edges of `shadowgate_shadow_batch_items`: powers of two up to OpenAI's 2048 cap.
pub const BATCH_ITEMS_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// Which shadow target (`target` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Baseline,
    Canary,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Baseline => "baseline",
            Target::Canary => "canary",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// `outcome` label values of `shadowgate_shadow_requests_total`.
const SHADOW_OUTCOMES: [&str; 5] = ["ok", "error", "timeout", "invalid_embedding", "dropped"];

fn outcome_index(o: TargetOutcome) -> usize {
    match o {
        TargetOutcome::Ok => 0,
        TargetOutcome::Error => 1,
        TargetOutcome::Timeout => 2,
        TargetOutcome::InvalidEmbedding => 3,
    }
}

/// Why a request was or was not mirrored (`shadowgate_mirror_decisions_total{decision}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorDecision {
    Mirrored,
    NotSampled,
    RateLimited,
    /// Over `max_in_flight`.
    Dropped,
    /// The request body was over the limit or failed to arrive.
    BodyUnavailable,
    /// Sampled, but its model matched no route (`model="other"`): not mirrored. Counted
    /// by the router only, never on a lane's series.
    Unrouted,
}

impl MirrorDecision {
    pub const ALL: [MirrorDecision; 5] = [
        MirrorDecision::Mirrored,
        MirrorDecision::NotSampled,
        MirrorDecision::RateLimited,
        MirrorDecision::Dropped,
        MirrorDecision::BodyUnavailable,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorDecision::Mirrored => "mirrored",
            MirrorDecision::NotSampled => "not_sampled",
            MirrorDecision::RateLimited => "rate_limited",
            MirrorDecision::Dropped => "dropped",
            MirrorDecision::BodyUnavailable => "body_unavailable",
            MirrorDecision::Unrouted => "unrouted",
        }
    }
}

/// Primary-path series, from this pod's point of view.
#[derive(Clone)]
pub struct PrimaryMetrics {
    pub requests: IntCounter,
    pub errors: IntCounter,
    /// One histogram per `tokens_generated_bucket` value, in `bucket_labels` order.
    duration: Vec<Histogram>,
    /// Upper edges of the token buckets; the histogram after the last is `+Inf`, then `unknown`.
    token_edges: Vec<u64>,
}

impl PrimaryMetrics {
    /// The duration histogram for a response that generated `tokens` (None: unknown).
    pub fn duration_for(&self, tokens: Option<u64>) -> &Histogram {
        let i = match tokens {
            None => self.token_edges.len() + 1,
            Some(t) => self
                .token_edges
                .iter()
                .position(|&edge| t <= edge)
                .unwrap_or(self.token_edges.len()),
        };
        &self.duration[i]
    }
}

/// Drift series for the one (model, baseline, canary) triple this sidecar compares.
#[derive(Clone)]
pub struct DriftMetrics {
    /// Per item of each mirrored request, by [`PairOutcome`].
    pairs: Vec<IntCounter>,
    /// By [`InvalidReason`].
    invalid: Vec<IntCounter>,
    pub distance: Histogram,
    pub distance_squared: Counter,
    pub self_distance: Histogram,
    mean: Gauge,
    window_pairs: Gauge,
    quantiles: Vec<Gauge>,
    low_ratio: Gauge,
    lower: Gauge,
    upper: Gauge,
    low_lower: Gauge,
    low_upper: Gauge,
    noise_adjusted_lower: Gauge,
    noise_adjusted_upper: Gauge,
    self_mean: Gauge,
    latency_lower: Gauge,
    latency_upper: Gauge,
    norm_ratio: Gauge,
    agreement: Gauge,
}

impl DriftMetrics {
    pub fn pair(&self, outcome: PairOutcome) -> &IntCounter {
        &self.pairs[outcome as usize]
    }

    /// `n` pairs that are `invalid` for `reason`: counted under both series.
    pub fn invalid(&self, reason: InvalidReason, n: u64) {
        self.pairs[PairOutcome::Invalid as usize].inc_by(n);
        self.invalid[reason as usize].inc_by(n);
    }

    /// Record one compared pair's cosine.
    pub fn observe_cosine(&self, cosine: f64) {
        let d = (1.0 - cosine).max(0.0);
        self.distance.observe(d);
        self.distance_squared.inc_by(d * d);
    }

    /// Copy a snapshot into the gauges (done just before each scrape).
    pub fn set(&self, s: &DriftSnapshot) {
        self.mean.set(s.mean_cosine);
        self.window_pairs.set(s.window_pairs as f64);
        for (g, (_, v)) in self.quantiles.iter().zip(&s.quantiles) {
            g.set(*v);
        }
        self.low_ratio.set(s.low_ratio);
        self.lower.set(s.cosine_lower);
        self.upper.set(s.cosine_upper);
        self.low_lower.set(s.low_ratio_lower);
        self.low_upper.set(s.low_ratio_upper);
        self.noise_adjusted_lower.set(s.noise_adjusted_lower);
        self.noise_adjusted_upper.set(s.noise_adjusted_upper);
        self.self_mean.set(s.self_mean_cosine);
        self.latency_lower.set(s.latency_ratio_median_lower);
        self.latency_upper.set(s.latency_ratio_median_upper);
        self.norm_ratio.set(s.norm_ratio);
        self.agreement.set(s.agreement);
    }
}

/// Per-slice drift series and the worst slice (`slices` config), set once per scrape
/// from [`SliceStats`].
#[derive(Clone)]
pub struct SliceMetrics {
    pairs: Vec<Gauge>,
    cosine_lower: Vec<Gauge>,
    cosine_upper: Vec<Gauge>,
    low_lower: Vec<Gauge>,
    low_upper: Vec<Gauge>,
    worst_low_lower: Gauge,
    worst_cosine_upper: Gauge,
}

impl SliceMetrics {
    /// Copy every slice's numbers and the worst slice into the gauges.
    pub fn set(&self, stats: &SliceStats) {
        for i in 0..stats.len().min(self.pairs.len()) {
            let s = stats.summary(i);
            self.pairs[i].set(s.pairs as f64);
            self.cosine_lower[i].set(s.cosine_lower);
            self.cosine_upper[i].set(s.cosine_upper);
            self.low_lower[i].set(s.low_share_lower);
            self.low_upper[i].set(s.low_share_upper);
        }
        let w = stats.worst();
        self.worst_low_lower.set(w.low_share_lower);
        self.worst_cosine_upper.set(w.cosine_upper);
    }
}

/// Shadow-path health.
#[derive(Clone)]
pub struct ShadowMetrics {
    /// [protocol][target][outcome], protocols in `MetricLabels::protocols` order,
    /// outcomes in `SHADOW_OUTCOMES` order.
    requests: Vec<Vec<Vec<IntCounter>>>,
    /// [protocol][target].
    duration: Vec<Vec<Histogram>>,
    decisions: Vec<IntCounter>,
    pub in_flight: IntGauge,
    /// Inputs per mirrored request (1 for single-input requests).
    pub batch_items: Histogram,
}

impl ShadowMetrics {
    /// The call counter of `target` for `outcome`, for the wire protocol at index
    /// `protocol` of `MetricLabels::protocols`.
    pub fn outcome(&self, protocol: usize, target: Target, outcome: TargetOutcome) -> &IntCounter {
        &self.requests[protocol.min(self.requests.len() - 1)][target.index()]
            [outcome_index(outcome)]
    }
    /// A sample that could not be admitted counts as dropped on both targets.
    pub fn dropped(&self, protocol: usize) {
        let p = &self.requests[protocol.min(self.requests.len() - 1)];
        p[0][4].inc();
        p[1][4].inc();
    }
    pub fn duration(&self, protocol: usize, target: Target) -> &Histogram {
        &self.duration[protocol.min(self.duration.len() - 1)][target.index()]
    }
    pub fn decision(&self, d: MirrorDecision) -> &IntCounter {
        &self.decisions[d as usize]
    }
}

/// All handles, plus the registry `/metrics` gathers.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Every family registered, so another lane binds its own label values to them.
    families: Families,
    pub primary: PrimaryMetrics,
    pub drift: DriftMetrics,
    pub slices: SliceMetrics,
    pub shadow: ShadowMetrics,
}

/// Labels that identify this sidecar's series.
pub struct MetricLabels<'a> {
    /// The `model` label of the primary series: `model.name`.
    pub model: &'a str,
    /// The `model` label of the comparison series: the lane's route (`model.name`
    /// without `[[routes]]`).
    pub route_model: &'a str,
    pub version: &'a str,
    pub baseline: &'a str,
    pub canary: &'a str,
    pub floor: f64,
    pub token_buckets: &'a [u64],
    /// Slice names (`Slicer::names`); empty when slices are off.
    pub slices: &'a [String],
    /// Values of the `protocol` label of the shadow-call series: the HTTP/1.1 protocol
    /// (`shadow.protocol`) first, then each mirrored gRPC protocol (`grpc_oip_v2`, ...).
    /// Empty is read as `["unknown"]`.
    pub protocols: &'a [String],
}

impl Metrics {
    /// Build and register every series on a fresh registry (plus process metrics).
    pub fn new(l: &MetricLabels<'_>) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let families = Families {
            registry: registry.clone(),
            known: Arc::default(),
        };
        let r = &families;

        let requests = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "model_inference_requests_total",
                    "Requests the primary model answered or failed, from this pod.",
                ),
                &["model", "version"],
            )?,
        )?;
        let errors = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "model_inference_errors_total",
                    "Primary requests that failed: 5xx answers and transport errors.",
                ),
                &["model", "version"],
            )?,
        )?;
        let duration = reg(r, HistogramVec::new(
            HistogramOpts::new(
                "model_inference_duration_seconds",
                "Primary request duration, first byte in to last byte out, by generated-token bucket.",
            )
            .buckets(latency_buckets()),
            &["model", "version", "tokens_generated_bucket"],
        )?)?;
        let mut bucket_labels: Vec<String> =
            l.token_buckets.iter().map(|b| b.to_string()).collect();
        bucket_labels.push("+Inf".into());
        bucket_labels.push("unknown".into());
        let primary = PrimaryMetrics {
            requests: requests.with_label_values(&[l.model, l.version]),
            errors: errors.with_label_values(&[l.model, l.version]),
            duration: bucket_labels
                .iter()
                .map(|b| duration.with_label_values(&[l.model, l.version, b]))
                .collect(),
            token_edges: l.token_buckets.to_vec(),
        };
        let (drift, slices, shadow) = lane_handles(&families, l)?;
        Ok(Self {
            registry,
            families,
            primary,
            drift,
            slices,
            shadow,
        })
    }

    /// These metrics with the comparison series (drift, slices, shadow calls) bound to
    /// another lane's labels: a route's model, its baseline and one candidate. The
    /// families and the primary series are shared.
    pub fn lane(&self, l: &MetricLabels<'_>) -> Result<Self, prometheus::Error> {
        let (drift, slices, shadow) = lane_handles(&self.families, l)?;
        Ok(Self {
            drift,
            slices,
            shadow,
            ..self.clone()
        })
    }

    /// Requests routed to no lane, counted under `model="other"` (or a route's model
    /// with no candidate drawn): `shadowgate_mirror_decisions_total` with `canary=""`.
    pub fn route_decision(
        &self,
        model: &str,
        decision: MirrorDecision,
    ) -> Result<IntCounter, prometheus::Error> {
        Ok(decisions_family(&self.families)?.with_label_values(&[model, "", decision.as_str()]))
    }

    /// The text exposition of everything registered.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            out.push_str(&format!("# encoding error: {e}\n"));
        }
        out
    }
}

/// The comparison series of one lane (model, baseline, canary).
fn lane_handles(
    r: &Families,
    l: &MetricLabels<'_>,
) -> Result<(DriftMetrics, SliceMetrics, ShadowMetrics), prometheus::Error> {
    {
        let mbc = ["model", "baseline", "canary"];
        let triple = [l.route_model, l.baseline, l.canary];
        let gauge = |name: &str, help: &str| -> Result<Gauge, prometheus::Error> {
            let g = reg(r, GaugeVec::new(Opts::new(name, help), &mbc)?)?;
            let g = g.with_label_values(&triple);
            g.set(f64::NAN);
            Ok(g)
        };
        let pairs_vec = reg(r, IntCounterVec::new(
            Opts::new("model_embedding_pairs_total", "Mirrored baseline/canary pairs (one per input of a batch) by outcome; only `compared` pairs enter the drift statistics."),
            &["model", "baseline", "canary", "outcome"],
        )?)?;
        let invalid_vec = reg(r, IntCounterVec::new(
            Opts::new("model_embedding_invalid_pairs_total", "Pairs counted as outcome=\"invalid\" in model_embedding_pairs_total, by reason."),
            &["model", "baseline", "canary", "reason"],
        )?)?;
        let distance = reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "model_embedding_cosine_distance",
                    "Cosine distance 1 - cos(baseline, canary) per compared pair.",
                )
                .buckets(COSINE_DISTANCE_BUCKETS.to_vec()),
                &mbc,
            )?,
        )?;
        let distance_sq = reg(r, prometheus::CounterVec::new(
            Opts::new("model_embedding_cosine_distance_squared_total", "Sum of squared cosine distances, for the variance across replicas and windows."),
            &mbc,
        )?)?;
        let self_distance = reg(r, HistogramVec::new(
            HistogramOpts::new("model_embedding_self_cosine_distance", "Cosine distance of the baseline answering the same input twice: the model's own noise floor.")
                .buckets(COSINE_DISTANCE_BUCKETS.to_vec()),
            &["model", "version"],
        )?)?;
        let quantile_vec = reg(r, GaugeVec::new(
            Opts::new("model_embedding_cosine_similarity_quantile", "Low quantiles (label q) of cosine(baseline, canary) over the drift window; NaN below min_pairs."),
            &["model", "baseline", "canary", "q"],
        )?)?;
        let floor = format!("{}", l.floor);
        let low_ratio_vec = reg(
            r,
            GaugeVec::new(
                Opts::new(
                    "model_embedding_low_similarity_ratio",
                    "Share of window pairs with cosine under the floor; NaN below min_pairs.",
                ),
                &["model", "baseline", "canary", "floor"],
            )?,
        )?;
        let low_bound = |name: &str, help: &str| -> Result<Gauge, prometheus::Error> {
            let g = reg(
                r,
                GaugeVec::new(
                    Opts::new(name, help),
                    &["model", "baseline", "canary", "floor"],
                )?,
            )?;
            let g = g.with_label_values(&[l.route_model, l.baseline, l.canary, &floor]);
            g.set(f64::NAN);
            Ok(g)
        };
        let drift = DriftMetrics {
            pairs: PairOutcome::ALL
                .iter()
                .map(|o| pairs_vec.with_label_values(&[l.route_model, l.baseline, l.canary, o.as_str()]))
                .collect(),
            invalid: InvalidReason::ALL
                .iter()
                .map(|o| invalid_vec.with_label_values(&[l.route_model, l.baseline, l.canary, o.as_str()]))
                .collect(),
            distance: distance.with_label_values(&triple),
            distance_squared: distance_sq.with_label_values(&triple),
            self_distance: self_distance.with_label_values(&[l.route_model, l.baseline]),
            mean: gauge("model_embedding_drift_cosine_similarity", "Mean cosine(baseline, canary) over the drift window (NaN with no pairs). Prefer the bounds for gating.")?,
            window_pairs: gauge("model_embedding_window_pairs", "Compared pairs inside the drift window.")?,
            quantiles: QUANTILES
                .iter()
                .map(|q| {
                    let g = quantile_vec.with_label_values(&[l.route_model, l.baseline, l.canary, &q.to_string()]);
                    g.set(f64::NAN);
                    g
                })
                .collect(),
            low_ratio: {
                let g = low_ratio_vec.with_label_values(&[l.route_model, l.baseline, l.canary, &floor]);
                g.set(f64::NAN);
                g
            },
            lower: gauge("model_embedding_cosine_similarity_lower_bound", "Anytime-valid lower confidence bound on the mean cosine since this canary started; NaN below min_pairs.")?,
            upper: gauge("model_embedding_cosine_similarity_upper_bound", "Anytime-valid upper confidence bound on the mean cosine since this canary started; NaN below min_pairs.")?,
            low_lower: low_bound("model_embedding_low_similarity_ratio_lower_bound", "Anytime-valid lower bound on the share of pairs under the floor.")?,
            low_upper: low_bound("model_embedding_low_similarity_ratio_upper_bound", "Anytime-valid upper bound on the share of pairs under the floor.")?,
            noise_adjusted_lower: gauge("model_embedding_noise_adjusted_similarity_lower_bound", "Lower bound on E[cos(baseline, canary)] / E[cos(baseline, baseline')]; NaN below min_pairs.")?,
            noise_adjusted_upper: gauge("model_embedding_noise_adjusted_similarity_upper_bound", "Upper bound on E[cos(baseline, canary)] / E[cos(baseline, baseline')]; NaN below min_pairs.")?,
            latency_lower: gauge("model_canary_latency_ratio_lower_bound", "Anytime-valid lower bound on the median of canary/baseline latency, both timed on the same sampled inputs (immune to node load and traffic mix); NaN below min_pairs.")?,
            latency_upper: gauge("model_canary_latency_ratio_upper_bound", "Anytime-valid upper bound on the median of canary/baseline latency on the same inputs; NaN below min_pairs.")?,
            self_mean: gauge("model_embedding_self_cosine_similarity", "Mean cosine of the baseline with itself on the same input (noise floor), since start.")?,
            norm_ratio: gauge("model_embedding_norm_ratio", "Mean |canary| / |baseline| over the drift window; NaN below min_pairs.")?,
            agreement: gauge("model_prediction_agreement_ratio", "Share of window pairs whose predictions agree; NaN below min_pairs.")?,
        };

        let slice_gauge =
            |name: &str, help: &str, floor_label: bool| -> Result<Vec<Gauge>, prometheus::Error> {
                let mut labels = vec!["model", "baseline", "canary", "slice"];
                if floor_label {
                    labels.push("floor");
                }
                let v = reg(r, GaugeVec::new(Opts::new(name, help), &labels)?)?;
                Ok(l.slices
                    .iter()
                    .map(|slice| {
                        let mut values = vec![l.route_model, l.baseline, l.canary, slice.as_str()];
                        if floor_label {
                            values.push(&floor);
                        }
                        let g = v.with_label_values(&values);
                        g.set(f64::NAN);
                        g
                    })
                    .collect())
            };
        let slices = SliceMetrics {
            pairs: slice_gauge("model_embedding_slice_pairs", "Compared pairs in each slice since this canary started.", false)?,
            cosine_lower: slice_gauge("model_embedding_slice_cosine_similarity_lower_bound", "Anytime-valid lower bound on a slice's mean cosine, at alpha/(2K) for K slices; NaN below min_pairs.", false)?,
            cosine_upper: slice_gauge("model_embedding_slice_cosine_similarity_upper_bound", "Anytime-valid upper bound on a slice's mean cosine, at alpha/(2K); NaN below min_pairs.", false)?,
            low_lower: slice_gauge("model_embedding_slice_low_similarity_ratio_lower_bound", "Anytime-valid lower bound on a slice's share of pairs under the floor, at alpha/(2K); NaN below min_pairs.", true)?,
            low_upper: slice_gauge("model_embedding_slice_low_similarity_ratio_upper_bound", "Anytime-valid upper bound on a slice's share of pairs under the floor, at alpha/(2K); NaN below min_pairs.", true)?,
            worst_low_lower: low_bound("model_embedding_worst_slice_low_similarity_ratio_lower_bound", "The highest slice low-share lower bound: a gate fails when it is over its budget (any slice broken; alpha in total over all slices).")?,
            worst_cosine_upper: gauge("model_embedding_worst_slice_cosine_similarity_upper_bound", "The lowest slice mean-cosine upper bound: a gate fails when it is under its threshold (alpha in total over all slices).")?,
        };

        let shadow_requests = reg(r, IntCounterVec::new(
            Opts::new("shadowgate_shadow_requests_total", "Shadow calls by target and outcome; `dropped` = not admitted (over max_in_flight)."),
            &["model", "canary", "protocol", "target", "outcome"],
        )?)?;
        let shadow_duration = reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "shadowgate_shadow_duration_seconds",
                    "Shadow call duration, request to last byte.",
                )
                .buckets(latency_buckets()),
                &["model", "canary", "protocol", "target"],
            )?,
        )?;
        let decisions = decisions_family(r)?;
        let in_flight = reg(
            r,
            prometheus::IntGaugeVec::new(
                Opts::new(
                    "shadowgate_shadow_in_flight",
                    "Shadow comparisons running now (capped by max_in_flight).",
                ),
                &["model", "canary"],
            )?,
        )?;
        let batch_items = reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "shadowgate_shadow_batch_items",
                    "Inputs per mirrored request: its count is requests, its sum is items (pairs).",
                )
                .buckets(BATCH_ITEMS_BUCKETS.to_vec()),
                &["model", "canary"],
            )?,
        )?;
        let targets = [Target::Baseline, Target::Canary];
        let unknown = ["unknown".to_string()];
        let protocols = if l.protocols.is_empty() {
            &unknown[..]
        } else {
            l.protocols
        };
        let shadow = ShadowMetrics {
            requests: protocols
                .iter()
                .map(|p| {
                    targets
                        .iter()
                        .map(|t| {
                            SHADOW_OUTCOMES
                                .iter()
                                .map(|o| {
                                    shadow_requests.with_label_values(&[
                                        l.route_model,
                                        l.canary,
                                        p.as_str(),
                                        t.as_str(),
                                        o,
                                    ])
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect(),
            duration: protocols
                .iter()
                .map(|p| {
                    targets
                        .iter()
                        .map(|t| {
                            shadow_duration.with_label_values(&[
                                l.route_model,
                                l.canary,
                                p.as_str(),
                                t.as_str(),
                            ])
                        })
                        .collect()
                })
                .collect(),
            decisions: MirrorDecision::ALL
                .iter()
                .map(|d| decisions.with_label_values(&[l.route_model, l.canary, d.as_str()]))
                .collect(),
            in_flight: in_flight.with_label_values(&[l.route_model, l.canary]),
            batch_items: batch_items.with_label_values(&[l.route_model, l.canary]),
        };

        Ok((drift, slices, shadow))
    }
}

fn decisions_family(r: &Families) -> Result<IntCounterVec, prometheus::Error> {
    reg(
        r,
        IntCounterVec::new(
            Opts::new(
                "shadowgate_mirror_decisions_total",
                "Eligible requests by mirroring decision; `canary` is empty for requests no candidate was drawn for (not sampled, or routed to no route: model=\"other\").",
            ),
            &["model", "canary", "decision"],
        )?,
    )
}

/// The families registered so far, by name: a second lane gets the same family and
/// binds its own label values.
#[derive(Clone)]
struct Families {
    registry: Registry,
    known: Arc<Mutex<HashMap<String, Box<dyn Any + Send>>>>,
}

/// Register `c`, or return the family of the same name registered before.
fn reg<C: prometheus::core::Collector + Clone + Send + 'static>(
    r: &Families,
    c: C,
) -> Result<C, prometheus::Error> {
    let name = c
        .desc()
        .first()
        .map(|d| d.fq_name.clone())
        .unwrap_or_default();
    let mut known = r.known.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = known.get(&name).and_then(|b| b.downcast_ref::<C>()) {
        return Ok(existing.clone());
    }
    r.registry.register(Box::new(c.clone()))?;
    known.insert(name, Box::new(c.clone()));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(&MetricLabels {
            model: "m",
            route_model: "m",
            version: "v2",
            baseline: "v1",
            canary: "v2",
            floor: 0.8,
            token_buckets: &[16, 64],
            slices: &[],
            protocols: &["openai".to_string()],
        })
        .unwrap()
    }

    #[test]
    fn token_buckets_map_to_their_labels() {
        let m = metrics();
        m.primary.duration_for(Some(3)).observe(0.1);
        m.primary.duration_for(Some(64)).observe(0.1);
        m.primary.duration_for(Some(65)).observe(0.1);
        m.primary.duration_for(None).observe(0.1);
        let text = m.render();
        for b in ["16", "64", "+Inf", "unknown"] {
            let needle = format!("model_inference_duration_seconds_count{{model=\"m\",tokens_generated_bucket=\"{b}\",version=\"v2\"}} 1");
            assert!(text.contains(&needle), "missing {needle}");
        }
    }

    #[test]
    fn gauges_start_as_nan_and_pairs_at_zero() {
        let text = metrics().render();
        assert!(text.contains("model_embedding_drift_cosine_similarity{baseline=\"v1\",canary=\"v2\",model=\"m\"} NaN"));
        assert!(text.contains("model_embedding_pairs_total{baseline=\"v1\",canary=\"v2\",model=\"m\",outcome=\"timeout\"} 0"));
        assert!(text.contains(
            "shadowgate_shadow_requests_total{canary=\"v2\",model=\"m\",outcome=\"dropped\",protocol=\"openai\",target=\"canary\"} 0"
        ));
    }
}
