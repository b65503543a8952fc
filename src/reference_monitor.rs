//! The runtime side of `[reference]`: which requests' answers are scored, the scoring
//! thread, and its series. The primary's answer is copied as it streams to the client
//! (`proxy::body::Tee`) and handed over whole once the client has it; parsing and scoring
//! run on a thread of their own, so the client path only pays for the copy and a
//! `try_send` (a full queue drops the answer and counts it).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::config::Config;
use crate::ids::{id_hash, SampleRate};
use crate::protocol::Extractor;
use crate::reference::{Detector, Reference};

/// Salt of the id hash: the reference's sample is independent of the mirror's.
const SALT: u64 = 0x7265_6665_7265_6e63;

/// Scores a sample of the primary's answers against the reference.
pub struct ReferenceMonitor {
    rate: SampleRate,
    tx: crossbeam_channel::Sender<Bytes>,
    /// Answers over this many bytes are not copied (`limits.max_response_bytes`-like cap).
    pub max_bytes: usize,
    dropped_queue: IntCounter,
}

/// The series, registered once.
struct Series {
    score: prometheus::Gauge,
    alarm: IntGauge,
    alarms: IntCounter,
    samples: IntCounter,
    age: IntGauge,
    dropped: IntCounterVec,
}

impl ReferenceMonitor {
    /// The monitor of `[reference]`, or `None` when no reference is configured. Starts the
    /// scoring thread.
    pub fn start(
        cfg: &Config,
        registry: &Registry,
    ) -> Result<Option<Arc<Self>>, prometheus::Error> {
        let checked = cfg.checked();
        let Some(reference) = checked.reference.clone() else {
            return Ok(None);
        };
        let model = cfg.model.name.as_str();
        let labels = |o: Opts| o.const_label("model", model);
        let info = IntGauge::with_opts(
            labels(Opts::new(
                "shadowgate_reference_info",
                "The reference in use (1): its id and dimension as labels.",
            ))
            .const_label("reference_id", reference.id.as_str())
            .const_label("dim", reference.dim.to_string()),
        )?;
        let series = Series {
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
        };
        registry.register(Box::new(info.clone()))?;
        registry.register(Box::new(series.score.clone()))?;
        registry.register(Box::new(series.alarm.clone()))?;
        registry.register(Box::new(series.alarms.clone()))?;
        registry.register(Box::new(series.samples.clone()))?;
        registry.register(Box::new(series.age.clone()))?;
        registry.register(Box::new(series.dropped.clone()))?;
        info.set(1);
        let dropped_queue = series.dropped.with_label_values(&["queue_full"]);
        let (tx, rx) = crossbeam_channel::bounded(cfg.reference.queue.max(1));
        let extractor = checked.extractor.clone();
        let path = cfg.reference.path.clone();
        std::thread::Builder::new()
            .name("reference".into())
            .spawn(move || score_loop(&reference, &extractor, &series, &rx, &path))
            .map_err(|e| {
                prometheus::Error::Msg(format!("cannot start the reference thread: {e}"))
            })?;
        Ok(Some(Arc::new(ReferenceMonitor {
            rate: checked.reference_sample_rate,
            tx,
            max_bytes: cfg.limits.max_body_bytes,
            dropped_queue,
        })))
    }

    /// Whether the answer to `request_id` is scored.
    pub fn sampled(&self, request_id: &str) -> bool {
        self.rate.admits(id_hash(request_id.as_bytes(), SALT))
    }

    /// Hands a whole answer to the scoring thread; never blocks.
    pub fn offer(&self, answer: Bytes) {
        if self.tx.try_send(answer).is_err() {
            self.dropped_queue.inc();
        }
    }
}

/// The scoring thread: until every sender is gone.
fn score_loop(
    reference: &Reference,
    extractor: &Extractor,
    s: &Series,
    rx: &crossbeam_channel::Receiver<Bytes>,
    path: &std::path::Path,
) {
    let mut det = Detector::new(reference);
    let mut warned = false;
    for answer in rx {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        s.age
            .set(i64::try_from(now.saturating_sub(reference.built_at)).unwrap_or(i64::MAX));
        let out = match extractor.parse(&answer) {
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
            let step = det.observe(row);
            s.samples.inc();
            if let Some(score) = step.score {
                s.score.set(score);
                s.alarm.set(i64::from(step.alarm));
                if step.alarm {
                    s.alarms.inc();
                }
            }
        }
    }
}
