//! The shadow path. The mirror decides whether a request is mirrored ([`Mirror::admit`]:
//! sampling, the rate cap, the concurrency cap, and the counters of every decision);
//! then one bounded task per admitted request calls baseline and canary concurrently
//! ([`call`]), parses and compares their answers item by item ([`compare`]), and hands
//! the result to the drift statistics, the slices, the metrics and the shadow log.
//! Nothing here can reach the client.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::Method;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::{CheckedRoute, Config};
use crate::drift::DriftState;
use crate::feedback::Feedback;
use crate::grpc::{GrpcDecoder, GrpcProtocol};
use crate::metrics::{Metrics, MirrorDecision, Target};
use crate::protocol::{Extractor, Protocol, Rewrite};
use crate::shadow_log::ShadowLogSender;
use crate::slices::{SliceStats, Slicer};
use crate::upstream::h2::UnaryUpstream;
use crate::upstream::Upstream;

mod call;
mod compare;
pub mod router;
pub mod sampler;

pub use router::{Head, Router};
pub use sampler::{Decision, Sampler};

/// One sampled request, as the mirror needs it.
pub struct ShadowJob {
    pub request_id: String,
    pub method: Method,
    /// Path and query as the client sent them.
    pub path: String,
    /// Already without hop-by-hop headers; credentials are removed here.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub received_at: SystemTime,
    /// How the shadow calls travel and their answers are read.
    pub wire: Wire,
    /// With `reuse_primary`: the primary's own answer, for the side it serves.
    pub primary_response: Option<oneshot::Receiver<Result<Bytes, String>>>,
    /// Closed when the primary's response head is in (HTTP/1.1) or its whole answer has
    /// gone out (HTTP/2), or the primary failed: the shadow calls wait for it, at most
    /// [`PRIMARY_HEAD_WAIT`].
    pub primary_head: Option<oneshot::Receiver<()>>,
}

/// How a mirrored request's shadow calls travel and how their answers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1 to `shadow.*.url`, answers read as `shadow.protocol` says.
    Http1,
    /// A unary gRPC call to `shadow.*.http2_url`, its answer decoded as the method's
    /// protocol.
    Grpc(GrpcProtocol),
}

/// The HTTP/2 side of the mirror, for gRPC calls.
struct GrpcTargets {
    baseline: UnaryUpstream,
    canary: UnaryUpstream,
    /// The self-similarity repeat goes over a connection of its own, as for HTTP/1.1.
    again: UnaryUpstream,
    decoders: Vec<GrpcDecoder>,
}

impl GrpcTargets {
    fn decoder(&self, protocol: GrpcProtocol) -> Option<&GrpcDecoder> {
        self.decoders.iter().find(|d| d.protocol() == protocol)
    }
}

/// How long shadow calls wait for the primary's response head before they start anyway.
/// Waiting keeps the sidecar's work for the shadows out of the client's way: sent before
/// the primary answered, on a single-threaded runtime the two shadow sends delayed the
/// client's response (client p50 1.36x of unmirrored in the 50 ms-target bench row;
/// BENCHMARKS.md). A model slower than this gets its shadows started after this long,
/// so a sample is held at most this much longer than before.
pub const PRIMARY_HEAD_WAIT: Duration = Duration::from_millis(5);

/// How long a mirrored gRPC call's shadows wait after the client's answer has left the
/// proxy's handler. One yield is enough to put the answer's write first (HTTP/2
/// connections write once per turn, upstream/gather.rs), but the shadow calls' work then
/// runs in the same wake-up as the answer, right after it, ahead of whatever the next
/// call needs. Measured with `BENCH_GROUPS=slow bash benches/grpc_vs_nginx.sh` (100 %
/// mirrored to 50 ms targets, 800 calls/s, one worker), with the yield alone: client p50
/// 0.91–0.96x of no shadow, p99 1.22x (two runs, 2026-12-07); with this delay p50
/// 0.66–0.79x and p99 0.81–1.08x. CPU per call did not differ beyond this VM's noise
/// (the delay costs a timer wake-up per mirrored call). Both sides wait alike, so the
/// latency ratio is unaffected; a millisecond is nothing next to a model's answer.
pub const GRPC_SHADOW_DELAY: Duration = Duration::from_millis(1);

/// One shadow target.
pub struct ShadowTarget {
    /// Keep-alive connections to the target.
    pub upstream: Upstream,
    pub version: Arc<str>,
}

/// Fixed labels written into every shadow record.
pub struct RecordLabels {
    pub model: Arc<str>,
    pub pod: Arc<str>,
    pub sample_rate: f32,
    pub store_inputs: bool,
    pub store_embeddings: bool,
}

/// The mirror: the decision to mirror, clients, targets, parsing and where results go.
pub struct Mirror {
    /// Method, path, id hash and rate cap.
    pub sampler: Sampler,
    /// Caps concurrent comparisons (`shadow.max_in_flight`); a sample that finds it
    /// empty is dropped and counted, never queued.
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    pub baseline: ShadowTarget,
    pub canary: ShadowTarget,
    /// A second pool of connections to the baseline for the self-similarity call, so the
    /// repeat goes over another connection and cannot ride in the same server-side batch
    /// as the first.
    pub self_upstream: Upstream,
    pub protocol: Protocol,
    pub extractor: Arc<Extractor>,
    pub rewrite: Option<Rewrite>,
    /// What slices each pair belongs to (None: slices off), and their statistics.
    pub slicer: Option<Arc<Slicer>>,
    pub slice_stats: Arc<Mutex<SliceStats>>,
    /// Shadow-call limit for a single-input request.
    pub timeout: Duration,
    /// Added to `timeout` per further input of a batch.
    pub timeout_per_item: Duration,
    /// No shadow call waits longer than this (the primary's own timeout).
    pub timeout_cap: Duration,
    /// Requests with more inputs are not mirrored.
    pub max_batch_items: usize,
    pub max_response_bytes: usize,
    pub forward_credentials: bool,
    pub strip_headers: Vec<HeaderName>,
    pub request_id_header: HeaderName,
    /// `shadow.header`: marks every shadow call.
    pub shadow_header: HeaderName,
    /// Whether this lane's predictions feed the online label join (the first lane: the
    /// join's series carry `[shadow]`'s, or the first route's, versions).
    pub feeds_labels: bool,
    pub metrics: Arc<Metrics>,
    pub drift: Arc<Mutex<DriftState>>,
    pub feedback: Arc<Feedback>,
    pub log: Option<ShadowLogSender>,
    pub labels: RecordLabels,
    /// The side whose version this pod serves, when `reuse_primary` is on: its answer is
    /// the primary's, and it is not called.
    pub reuse: Option<Target>,
    /// HTTP/2 targets and decoders when gRPC calls are mirrored.
    grpc: Option<GrpcTargets>,
}

/// Which route and candidate a mirror compares.
pub struct Lane<'a> {
    pub route: &'a CheckedRoute,
    /// Index into `route.candidates`.
    pub candidate: usize,
    /// See [`Mirror::feeds_labels`].
    pub feeds_labels: bool,
}

/// What the mirror shares with the rest of the sidecar: the lane's own metrics handles,
/// drift and slice state, and the process's feedback, log and TLS.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub drift: Arc<Mutex<DriftState>>,
    pub slice_stats: Arc<Mutex<SliceStats>>,
    pub feedback: Arc<Feedback>,
    /// The shadow log's queue, when `shadow_log.dir` is set.
    pub log: Option<ShadowLogSender>,
    /// The one TLS configuration of every upstream client.
    pub tls: Arc<rustls::ClientConfig>,
    pub pod: Arc<str>,
}

impl Mirror {
    /// The mirror of one lane: its route's baseline and candidate, with `[shadow]`'s
    /// limits, `[slices]`, `shadow_log.store_*` and the primary's timeout as the cap on a
    /// batch's shadow timeout.
    pub fn new(cfg: &Config, lane: Lane<'_>, shared: Shared) -> Self {
        let shadow = &cfg.shadow;
        let checked = cfg.checked();
        let route = lane.route;
        let candidate = &route.candidates[lane.candidate];
        let baseline_version = route.baseline.version.as_str();
        let canary_version = candidate.target.version.as_str();
        // Every sample gets the self call until self_similarity_min_pairs self pairs
        // exist, so the noise-adjusted gate can decide as early as the plain one (drift.rs).
        let self_sampling = (shadow.self_similarity_rate > 0.0).then(|| {
            shared
                .drift
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .self_sampling(
                    shadow.self_similarity_rate,
                    shadow.self_similarity_min_pairs,
                )
        });
        let reuse = if !shadow.reuse_primary {
            None
        } else if cfg.model.version == baseline_version {
            Some(Target::Baseline)
        } else if cfg.model.version == canary_version {
            Some(Target::Canary)
        } else {
            tracing::warn!(
                version = %cfg.model.version,
                "shadow.reuse_primary is on but model.version matches neither shadow version: both sides are called"
            );
            None
        };
        let upstream = |url| Upstream::new(url, shadow.max_in_flight, shared.tls.clone());
        // gRPC calls are mirrored for the [shadow] pair only (config refuses them with
        // [[routes]]).
        let grpc = match (&checked.baseline_http2_url, &checked.canary_http2_url) {
            (Some(b), Some(c)) if !checked.grpc_methods.is_empty() && cfg.routes.is_empty() => {
                Some(GrpcTargets {
                    baseline: UnaryUpstream::new(b, &shared.tls),
                    canary: UnaryUpstream::new(c, &shared.tls),
                    again: UnaryUpstream::new(b, &shared.tls),
                    decoders: checked
                        .grpc_methods
                        .iter()
                        .map(|&p| {
                            let output = (!shadow.grpc_output.is_empty())
                                .then_some(shadow.grpc_output.as_str());
                            GrpcDecoder::new(p, output)
                                .with_max_items(shadow.max_batch_items)
                                .with_max_message_bytes(cfg.limits.max_shadow_response_bytes)
                        })
                        .collect(),
                })
            }
            _ => None,
        };
        Mirror {
            sampler: Sampler::new(
                crate::ids::SampleRate::try_new(candidate.share).unwrap_or(checked.sample_rate),
                shadow.max_per_second,
                checked.methods.clone(),
                &shadow.paths,
                self_sampling,
            ),
            permits: Arc::new(Semaphore::new(shadow.max_in_flight)),
            max_in_flight: shadow.max_in_flight,
            self_upstream: upstream(&route.baseline.url),
            baseline: ShadowTarget {
                upstream: upstream(&route.baseline.url),
                version: baseline_version.into(),
            },
            canary: ShadowTarget {
                upstream: upstream(&candidate.target.url),
                version: canary_version.into(),
            },
            protocol: route.protocol,
            extractor: route.extractor.clone(),
            rewrite: shadow.rewrite.clone(),
            slicer: (!checked.slicer.is_empty()).then(|| checked.slicer.clone()),
            slice_stats: shared.slice_stats,
            timeout: shadow.timeout,
            timeout_per_item: shadow.timeout_per_item,
            timeout_cap: cfg.primary.timeout.max(shadow.timeout),
            max_batch_items: shadow.max_batch_items,
            max_response_bytes: cfg.limits.max_shadow_response_bytes,
            forward_credentials: shadow.forward_credentials,
            strip_headers: checked.strip_headers.clone(),
            request_id_header: checked.request_id_header.clone(),
            shadow_header: checked.shadow_header.clone(),
            feeds_labels: lane.feeds_labels,
            metrics: shared.metrics,
            drift: shared.drift,
            feedback: shared.feedback,
            log: shared.log,
            labels: RecordLabels {
                model: route.model.as_str().into(),
                pod: shared.pod,
                sample_rate: candidate.share as f32,
                store_inputs: cfg.shadow_log.store_inputs,
                store_embeddings: cfg.shadow_log.store_embeddings,
            },
            reuse,
            grpc,
        }
    }

    /// The index of `wire`'s value of the `protocol` label on the shadow-call series:
    /// 0 for HTTP/1.1, then the gRPC protocols in `shadow.grpc_methods` order (as
    /// `serve` lists them for [`crate::metrics::MetricLabels::protocols`]).
    pub fn protocol_index(&self, wire: Wire) -> usize {
        match wire {
            Wire::Http1 => 0,
            Wire::Grpc(p) => self
                .grpc_methods()
                .position(|q| q == p)
                .map_or(0, |i| i + 1),
        }
    }

    /// Bring this lane's computed gauges (drift, slices) up to date, as a scrape does.
    pub fn refresh_gauges(&self, now: Instant) -> Option<crate::drift::DriftSnapshot> {
        if let Ok(s) = self.slice_stats.lock() {
            self.metrics.slices.set(&s);
        }
        let snapshot = self.drift.lock().ok()?.snapshot(now);
        self.metrics.drift.set(&snapshot);
        Some(snapshot)
    }

    /// The gRPC protocols whose calls are mirrored (empty: none).
    pub fn grpc_methods(&self) -> impl Iterator<Item = GrpcProtocol> + '_ {
        self.grpc
            .iter()
            .flat_map(|g| g.decoders.iter().map(GrpcDecoder::protocol))
    }
}

/// A request the mirror took: its place among `shadow.max_in_flight` comparisons is held
/// until [`Mirror::start`]'s task has accounted for it, or until it is dropped.
pub struct Admission {
    permit: OwnedSemaphorePermit,
    self_similarity: bool,
}

impl Mirror {
    /// The whole decision for one request, counted under
    /// `shadowgate_shadow_decisions_total`: `None` when it is not mirrored (not eligible,
    /// not sampled, over the rate cap, or every comparison slot taken).
    pub fn admit(
        &self,
        method: &Method,
        path: &str,
        request_id: &str,
        now: Instant,
    ) -> Option<Admission> {
        let decision = self.sampler.decide(method, path, request_id, now);
        self.admit_decided(decision, Wire::Http1)
    }

    /// [`Mirror::admit`] for a request a [`Router`] drew for this lane: the rate cap and
    /// the concurrency cap.
    pub fn admit_drawn(&self, request_id: &str, now: Instant) -> Option<Admission> {
        self.admit_decided(self.sampler.drawn(request_id, now), Wire::Http1)
    }

    /// [`Mirror::admit`] for a request its caller found eligible by its own rule (a gRPC
    /// call of `shadow.grpc_methods`): sampling, the rate cap and the concurrency cap.
    pub fn admit_eligible(&self, wire: Wire, request_id: &str, now: Instant) -> Option<Admission> {
        self.admit_decided(self.sampler.sample(request_id, now), wire)
    }

    fn admit_decided(&self, decision: Decision, wire: Wire) -> Option<Admission> {
        let shadow = &self.metrics.shadow;
        match decision {
            Decision::NotEligible => None,
            Decision::NotSampled => {
                shadow.decision(MirrorDecision::NotSampled).inc();
                None
            }
            Decision::RateLimited => {
                shadow.decision(MirrorDecision::RateLimited).inc();
                None
            }
            Decision::Mirror { self_similarity } => {
                match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => Some(Admission {
                        permit,
                        self_similarity,
                    }),
                    Err(_) => {
                        shadow.decision(MirrorDecision::Dropped).inc();
                        shadow.dropped(self.protocol_index(wire));
                        None
                    }
                }
            }
        }
    }

    /// The admitted request's body could not be read whole: counted, and its place freed.
    pub fn abandon(&self, admission: Admission) {
        self.metrics
            .shadow
            .decision(MirrorDecision::BodyUnavailable)
            .inc();
        drop(admission);
    }

    /// Compare the admitted request in its own task. Returns at once.
    pub fn start(self: &Arc<Self>, admission: Admission, job: ShadowJob) {
        self.metrics.shadow.decision(MirrorDecision::Mirrored).inc();
        let mirror = self.clone();
        // Boxed: the task holds a pointer, not the whole comparison's state, so the
        // runtime's moves of it (spawn, completion) copy a few bytes.
        tokio::spawn(Box::pin(async move { mirror.run(job, admission).await }));
    }

    /// Wait until every running comparison is accounted for, or `deadline`; returns how
    /// many were still running then.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> usize {
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(deadline, self.permits.acquire_many(all)).await {
            Ok(_) => 0,
            Err(_) => self.max_in_flight - self.permits.available_permits(),
        }
    }

    /// Run one comparison; the admission is held until it is fully accounted for.
    async fn run(self: Arc<Self>, mut job: ShadowJob, admission: Admission) {
        self.metrics.shadow.in_flight.inc();
        if let Some(head) = job.primary_head.take() {
            let _ = tokio::time::timeout(PRIMARY_HEAD_WAIT, head).await;
            // The signal comes as the answer's last frame leaves the proxy's handler,
            // before the connection's task has written it to the client's socket. Yield
            // once so that write goes first: on one worker thread the shadow calls would
            // otherwise be encoded and sent ahead of the client's answer.
            tokio::task::yield_now().await;
            if matches!(job.wire, Wire::Grpc(_)) {
                tokio::time::sleep(GRPC_SHADOW_DELAY).await;
            }
        }
        let primary = job.primary_response.take();
        self.compare_job(&job, primary, admission.self_similarity)
            .await;
        self.metrics.shadow.in_flight.dec();
        drop(admission.permit);
    }

    /// The shadow-call limit for a request of `items` inputs (`shadow.timeout` plus
    /// `shadow.timeout_per_item` for each further input, at most `timeout_cap`).
    fn timeout_for(&self, items: usize) -> Duration {
        let extra = self
            .timeout_per_item
            .saturating_mul(u32::try_from(items.saturating_sub(1)).unwrap_or(u32::MAX));
        self.timeout.saturating_add(extra).min(self.timeout_cap)
    }
}
