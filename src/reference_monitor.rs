//! The runtime side of `[reference]`: which requests' answers are scored, the scoring
//! thread, and its series. The primary's answer is copied as it streams to the client
//! (`proxy::body::Tee`) and handed over whole once the client has it; parsing and scoring
//! run on a thread of their own, so the client path only pays for the copy and a
//! `try_send` (a full queue drops the answer and counts it). The thread polls its queue
//! and scores the rows of what it drains together, up to `Detector::BATCH` at a time
//! (the same steps as one at a time; the feature products share the passes over `W`):
//! the score and alarm series move once per batch.
//!
//! With `reference.from_first = N` instead of a file, the thread first keeps the first N
//! sampled embeddings, builds the reference from them exactly as `shadowgate reference
//! build` would (same split, bandwidth, sketch and bootstrap calibration, same seed), drops
//! the vectors, and scores from then on against the frozen sketch. The feature map is the
//! same on every pod; the reference mean is each pod's own, so for series that aggregate
//! across pods ship one file instead.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::config::Config;
use crate::grpc::{GrpcDecoder, GrpcProtocol};
use crate::ids::{id_hash, SampleRate};
use crate::protocol::{Extractor, ModelOutput};
use crate::reference::picture::{Picture, Recent};
use crate::reference::{BuildParams, Detector, Reference, Step};

/// Scored embeddings the status page's "now" picture is drawn from.
pub const RECENT_POINTS: usize = 500;

/// What the status page draws: the reference's picture (once there is a reference that
/// has one) and the cells of the last [`RECENT_POINTS`] scored embeddings on its plane.
#[derive(Debug)]
pub struct PictureState {
    pub reference: Option<Picture>,
    pub recent: Recent,
}

/// Salt of the id hash: the reference's sample is independent of the mirror's.
const SALT: u64 = 0x7265_6665_7265_6e63;

pub use crate::reference::MIN_FROM_FIRST;

/// A whole answer of the primary, as the client got it.
#[derive(Debug)]
pub enum Answer {
    /// An HTTP/1.1 body, read by `primary`'s protocol (`shadow.protocol`).
    Http(Bytes),
    /// A unary gRPC answer (framed as on the wire) of one of `shadow.grpc_methods`.
    Grpc(GrpcProtocol, Bytes),
}

/// How the scoring thread reads answers.
struct Readers {
    http: Arc<Extractor>,
    /// `shadow.grpc_output` names the output, as for the mirror.
    grpc_output: Option<String>,
}

impl Readers {
    fn parse(&self, answer: &Answer) -> Result<ModelOutput, ()> {
        match answer {
            Answer::Http(b) => self.http.parse(b).map_err(drop),
            Answer::Grpc(p, b) => GrpcDecoder::new(*p, self.grpc_output.as_deref())
                .decode(b)
                .map_err(drop),
        }
    }
}

/// Scores a sample of the primary's answers against the reference.
pub struct ReferenceMonitor {
    rate: SampleRate,
    tx: crossbeam_channel::Sender<Answer>,
    /// Answers over this many bytes are not copied (`limits.max_response_bytes`-like cap).
    pub max_bytes: usize,
    dropped_queue: IntCounter,
    picture: Arc<Mutex<PictureState>>,
}

/// The series, registered once (`info` once the reference exists).
struct Series {
    registry: Registry,
    model: String,
    learning: IntGauge,
    score: prometheus::Gauge,
    alarm: IntGauge,
    alarms: IntCounter,
    samples: IntCounter,
    age: IntGauge,
    dropped: IntCounterVec,
    /// Per region of the reference (`slice` = `region:i` or `cluster:i`).
    slice_score: GaugeVec,
    slice_share: GaugeVec,
    slice_reference_share: GaugeVec,
}

impl ReferenceMonitor {
    /// The monitor of `[reference]`, or `None` when no reference is configured. Starts the
    /// scoring thread.
    pub fn start(
        cfg: &Config,
        registry: &Registry,
    ) -> Result<Option<Arc<Self>>, prometheus::Error> {
        let checked = cfg.checked();
        let source = match (checked.reference.clone(), cfg.reference.from_first) {
            (Some(r), _) => Source::File(r),
            (None, 0) => return Ok(None),
            (None, n) => Source::FirstN(n),
        };
        let model = cfg.model.name.as_str();
        let labels = |o: Opts| o.const_label("model", model);
        let series = Series {
            registry: registry.clone(),
            model: model.to_string(),
            learning: IntGauge::with_opts(labels(Opts::new(
                "shadowgate_reference_learning_samples",
                "With reference.from_first: sampled embeddings still to collect before the reference is built and scoring starts (0 once it is).",
            )))?,
            score: prometheus::Gauge::with_opts(labels(Opts::new(
                "shadowgate_reference_shift_score",
                "Input drift of the primary's embeddings against the reference, over the last window of scored samples: 1 is the alarm line (calibrated to reference.ert).",
            )))?,
            alarm: IntGauge::with_opts(labels(Opts::new(
                "shadowgate_reference_alarm",
                "1 while the shift score is at or over 1.",
            )))?,
            alarms: IntCounter::with_opts(labels(Opts::new(
                "shadowgate_reference_alarms_total",
                "Scored samples at or over the alarm line.",
            )))?,
            samples: IntCounter::with_opts(labels(Opts::new(
                "shadowgate_reference_samples_total",
                "Embeddings of the primary's answers scored against the reference.",
            )))?,
            age: IntGauge::with_opts(labels(Opts::new(
                "shadowgate_reference_age_seconds",
                "Seconds since the reference was built.",
            )))?,
            dropped: IntCounterVec::new(
                labels(Opts::new(
                    "shadowgate_reference_dropped_total",
                    "Sampled answers not scored, by reason: queue_full, unparsable, dimension (the reference is for another dimension).",
                )),
                &["reason"],
            )?,
            slice_score: GaugeVec::new(
                labels(Opts::new(
                    "shadowgate_reference_slice_shift_score",
                    "Per region of the reference: its share of the window against its reference share, on the shift score's scale (1 is the alarm line); the largest names what drifted.",
                )),
                &["slice"],
            )?,
            slice_share: GaugeVec::new(
                labels(Opts::new(
                    "shadowgate_reference_slice_share",
                    "Per region of the reference: its share of the last window of scored samples.",
                )),
                &["slice"],
            )?,
            slice_reference_share: GaugeVec::new(
                labels(Opts::new(
                    "shadowgate_reference_slice_reference_share",
                    "Per region of the reference: its share of the reference's build data.",
                )),
                &["slice"],
            )?,
        };
        registry.register(Box::new(series.learning.clone()))?;
        registry.register(Box::new(series.score.clone()))?;
        registry.register(Box::new(series.alarm.clone()))?;
        registry.register(Box::new(series.alarms.clone()))?;
        registry.register(Box::new(series.samples.clone()))?;
        registry.register(Box::new(series.age.clone()))?;
        registry.register(Box::new(series.dropped.clone()))?;
        registry.register(Box::new(series.slice_score.clone()))?;
        registry.register(Box::new(series.slice_share.clone()))?;
        registry.register(Box::new(series.slice_reference_share.clone()))?;
        let dropped_queue = series.dropped.with_label_values(&["queue_full"]);
        // Every reason present from the start, at 0 (rate() and alerts need the series).
        for reason in ["unparsable", "dimension"] {
            series.dropped.with_label_values(&[reason]);
        }
        let (tx, rx) = crossbeam_channel::bounded(cfg.reference.queue.max(1));
        let codebook = slice_codebook(cfg);
        let readers = Readers {
            http: checked.extractor.clone(),
            grpc_output: Some(cfg.shadow.grpc_output.clone()).filter(|o| !o.is_empty()),
        };
        let path = cfg.reference.path.clone();
        let picture = Arc::new(Mutex::new(PictureState {
            reference: None,
            recent: Recent::new(RECENT_POINTS),
        }));
        let shown = Arc::clone(&picture);
        std::thread::Builder::new()
            .name("reference".into())
            .spawn(move || score_loop(source, &readers, &series, &rx, &path, &shown, codebook))
            .map_err(|e| {
                prometheus::Error::Msg(format!("cannot start the reference thread: {e}"))
            })?;
        Ok(Some(Arc::new(ReferenceMonitor {
            rate: checked.reference_sample_rate,
            tx,
            max_bytes: cfg.limits.max_body_bytes,
            dropped_queue,
            picture,
        })))
    }

    /// The status page's picture of the reference and of the last scored embeddings.
    pub fn picture(&self) -> Arc<Mutex<PictureState>> {
        Arc::clone(&self.picture)
    }

    /// Whether the answer to `request_id` is scored.
    pub fn sampled(&self, request_id: &str) -> bool {
        self.rate.admits(id_hash(request_id.as_bytes(), SALT))
    }

    /// Hands a whole answer to the scoring thread; never blocks.
    pub fn offer(&self, answer: Answer) {
        if self.tx.try_send(answer).is_err() {
            self.dropped_queue.inc();
        }
    }
}

/// Where the reference comes from.
enum Source {
    File(Arc<Reference>),
    /// Build it from the first this many sampled embeddings.
    FirstN(usize),
}

/// `shadowgate_reference_info{reference_id, dim, source}` = 1, once there is a reference.
fn register_info(s: &Series, r: &Reference, source: &str) {
    let info = IntGauge::with_opts(
        Opts::new(
            "shadowgate_reference_info",
            "The reference in use (1): its id, dimension and source (file, or first_n: built in this pod) as labels.",
        )
        .const_label("model", s.model.as_str())
        .const_label("reference_id", r.id.as_str())
        .const_label("dim", r.dim.to_string())
        .const_label("source", source),
    );
    match info.and_then(|g| s.registry.register(Box::new(g.clone())).map(|()| g)) {
        Ok(g) => g.set(1),
        Err(e) => tracing::error!(error = %e, "cannot register shadowgate_reference_info"),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The scoring thread: until every sender is gone.
fn score_loop(
    source: Source,
    readers: &Readers,
    s: &Series,
    rx: &crossbeam_channel::Receiver<Answer>,
    path: &std::path::Path,
    shown: &Mutex<PictureState>,
    codebook: Option<(Vec<Vec<f32>>, String)>,
) {
    let reference = match source {
        Source::File(r) => r,
        Source::FirstN(n) => match learn(n, readers, s, rx, codebook) {
            Some(r) => Arc::new(r),
            None => return,
        },
    };
    register_info(
        s,
        &reference,
        if path.as_os_str().is_empty() {
            "first_n"
        } else {
            "file"
        },
    );
    let picture = reference.picture.clone().filter(|p| p.fits(reference.dim));
    if let Ok(mut st) = shown.lock() {
        st.reference.clone_from(&picture);
    }
    let slices: Vec<String> = (0..reference.regions.centroids.len())
        .map(|i| reference.regions.label(i))
        .collect();
    for (label, share) in slices.iter().zip(&reference.regions.shares) {
        s.slice_reference_share
            .with_label_values(&[label.as_str()])
            .set(*share);
    }
    // The per-slice gauges, looked up once (a lookup hashes the label values).
    let slice_gauges: Vec<(Gauge, Gauge)> = slices
        .iter()
        .map(|l| {
            (
                s.slice_score.with_label_values(&[l.as_str()]),
                s.slice_share.with_label_values(&[l.as_str()]),
            )
        })
        .collect();
    let mut cells = Vec::new();
    let mut det = Detector::new(&reference);
    // Rows parsed and not yet scored: scored together when a batch's worth is in, and
    // when the queue drains.
    let mut rows = Scoring::new(reference.dim);
    let mut warned = false;
    let mut idle = 0u32;
    let mut unpublished = 0u32;
    loop {
        // Polled, not parked on: a parked receiver costs every `offer` a futex wake (a
        // syscall on a proxy thread) and this thread a context switch per answer. A
        // poll every POLL costs one wake-up per POLL whatever the rate; after IDLE_POLLS
        // empty polls the thread parks until the next answer.
        let answer = match rx.try_recv() {
            Ok(a) => {
                idle = 0;
                a
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                rows.score(&mut det, s);
                return;
            }
            Err(crossbeam_channel::TryRecvError::Empty) => {
                // The queue is drained: score what is in and publish what the answers
                // since then moved.
                if idle == 0 {
                    rows.score(&mut det, s);
                    publish(&mut cells, shown, &det, &slice_gauges);
                    unpublished = 0;
                }
                idle = idle.saturating_add(1);
                if idle < IDLE_POLLS {
                    std::thread::sleep(POLL);
                    continue;
                }
                match rx.recv() {
                    Ok(a) => {
                        idle = 0;
                        a
                    }
                    Err(_) => {
                        rows.score(&mut det, s);
                        return;
                    }
                }
            }
        };
        s.age
            .set(i64::try_from(now_secs().saturating_sub(reference.built_at)).unwrap_or(i64::MAX));
        let out = match readers.parse(&answer) {
            Ok(out) => out,
            Err(_) => {
                s.dropped.with_label_values(&["unparsable"]).inc();
                continue;
            }
        };
        if out.dim != reference.dim {
            s.dropped.with_label_values(&["dimension"]).inc();
            if !std::mem::replace(&mut warned, true) {
                tracing::error!(
                    reference = %path.display(),
                    reference_dim = reference.dim,
                    answer_dim = out.dim,
                    "the reference is for another embedding dimension than the model answers: nothing is scored; build one from this model's embeddings with `shadowgate reference build`"
                );
            }
            continue;
        }
        for row in out.data.chunks_exact(out.dim) {
            if let Some(p) = &picture {
                cells.push(p.cell(p.project(row)));
            }
        }
        rows.push(&out.data[..out.data.len() / out.dim * out.dim]);
        if rows.full() {
            rows.score(&mut det, s);
        }
        unpublished += 1;
        if unpublished >= PUBLISH_EVERY {
            // A queue that never drains still shows on the page and the slice series.
            rows.score(&mut det, s);
            publish(&mut cells, shown, &det, &slice_gauges);
            unpublished = 0;
        }
    }
}

/// Parsed rows waiting to be scored, and the steps of the last ones scored.
struct Scoring {
    rows: Vec<f32>,
    dim: usize,
    steps: Vec<Step>,
}

impl Scoring {
    fn new(dim: usize) -> Self {
        Scoring {
            rows: Vec::with_capacity(Detector::BATCH * dim),
            dim,
            steps: Vec::with_capacity(Detector::BATCH),
        }
    }

    fn push(&mut self, rows: &[f32]) {
        self.rows.extend_from_slice(rows);
    }

    fn full(&self) -> bool {
        self.rows.len() >= Detector::BATCH * self.dim
    }

    /// Scores the waiting rows, in order, and sets the series: the samples and alarms
    /// counted, the score and alarm state of the last one.
    fn score(&mut self, det: &mut Detector, s: &Series) {
        if self.rows.is_empty() {
            return;
        }
        self.steps.clear();
        det.observe_many(&self.rows, &mut self.steps);
        self.rows.clear();
        s.samples.inc_by(self.steps.len() as u64);
        let alarms = self.steps.iter().filter(|st| st.alarm).count();
        s.alarms.inc_by(alarms as u64);
        if let Some(last) = self.steps.last() {
            s.score.set(last.score);
            s.alarm.set(i64::from(last.alarm));
        }
    }
}

/// The recent picture cells and the per-slice series, from the answers scored since the
/// last time.
fn publish(
    cells: &mut Vec<usize>,
    shown: &Mutex<PictureState>,
    det: &Detector,
    slice_gauges: &[(Gauge, Gauge)],
) {
    if !cells.is_empty() {
        if let Ok(mut st) = shown.lock() {
            for &c in cells.iter() {
                st.recent.push(c);
            }
        }
        cells.clear();
    }
    for ((score, share), now) in slice_gauges.iter().zip(det.regions()) {
        score.set(now.score);
        share.set(now.share);
    }
}

/// Answers scored between publications while the queue does not drain.
const PUBLISH_EVERY: u32 = 256;

/// How often the scoring thread looks for answers while traffic flows. A longer poll
/// saves no CPU but lengthens the thread's bursts on a shared core: at 25 ms the
/// client p99 with the detector on rose from 0.83 to 1.81 ms at saturation
/// (BENCHMARKS.md, twenty-first session).
const POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// Empty polls (a second's worth) before the scoring thread parks until the next answer.
const IDLE_POLLS: u32 = 200;

/// The centroids of `[slices]` (`slices.codebook` or `slices.centroids`), unit length,
/// for a reference built in the pod: its regions are then the mirror's `region:i`.
fn slice_codebook(cfg: &Config) -> Option<(Vec<Vec<f32>>, String)> {
    let sl = &cfg.slices;
    let (rows, source) = if !sl.codebook.as_os_str().is_empty() {
        let cb = crate::slices::Codebook::load(&sl.codebook).ok()?;
        (
            cb.centroids,
            format!("slices.codebook {}", sl.codebook.display()),
        )
    } else if !sl.centroids.is_empty() {
        (sl.centroids.clone(), "slices.centroids".to_string())
    } else {
        return None;
    };
    crate::slices::codebook::unit_centroids(&rows)
        .ok()
        .map(|c| (c, source))
}

/// `reference.from_first`: keeps the first `n` sampled embeddings (of the dimension of
/// the first answer), builds the reference from them and drops them. `None` if the
/// sidecar stops first or the build fails (logged).
fn learn(
    n: usize,
    readers: &Readers,
    s: &Series,
    rx: &crossbeam_channel::Receiver<Answer>,
    codebook: Option<(Vec<Vec<f32>>, String)>,
) -> Option<Reference> {
    s.learning.set(i64::try_from(n).unwrap_or(i64::MAX));
    let mut dim = 0usize;
    let mut rows: Vec<f32> = Vec::new();
    let mut have = 0usize;
    for answer in rx {
        let Ok(out) = readers.parse(&answer) else {
            s.dropped.with_label_values(&["unparsable"]).inc();
            continue;
        };
        if dim == 0 {
            dim = out.dim;
            rows.reserve_exact(n * dim);
        } else if out.dim != dim {
            s.dropped.with_label_values(&["dimension"]).inc();
            continue;
        }
        for row in out.data.chunks_exact(dim).take(n - have) {
            rows.extend_from_slice(row);
            have += 1;
        }
        s.learning.set(i64::try_from(n - have).unwrap_or(0));
        if have == n {
            break;
        }
    }
    if have < n {
        return None;
    }
    let started = std::time::Instant::now();
    let x = ndarray::ArrayView2::from_shape((n, dim), &rows).ok()?;
    let mut params = BuildParams::new(s.model.clone());
    params.source = format!("first {n} sampled embeddings after start");
    params.codebook = codebook.filter(|(c, _)| c.first().is_some_and(|c| c.len() == dim));
    match crate::reference::build(x, &params, now_secs()) {
        Ok(r) => {
            tracing::info!(
                reference_id = %r.id,
                dim,
                embeddings = n,
                build_ms = started.elapsed().as_millis() as u64,
                "reference built from the first sampled embeddings; scoring from now on"
            );
            Some(r)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot build the reference from the first sampled embeddings; nothing is scored");
            None
        }
    }
}
