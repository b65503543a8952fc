//! The admin port: `/metrics`, `/healthz`, `/readyz` and the status page. Never served on
//! the proxy port.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::drift::DriftState;
use crate::feedback::{token_matches, Feedback, JoinResult};
use crate::metrics::Metrics;
use crate::slices::SliceStats;

pub mod status;

/// How long `/readyz` waits for a TCP connection to the primary.
const READY_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Shared state of the admin endpoints.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub drift: Arc<Mutex<DriftState>>,
    pub slices: Arc<Mutex<SliceStats>>,
    /// `Slicer::names`, for the status page.
    pub slice_names: Arc<[String]>,
    pub feedback: Arc<Feedback>,
    pub primary: http::Uri,
    pub started: Instant,
    pub config: Arc<Config>,
    pub history: Arc<Mutex<status::History>>,
    /// `[reference]`'s picture, for the status page.
    pub reference_picture: Option<Arc<Mutex<crate::reference_monitor::PictureState>>>,
    /// Every lane (`[[routes]]`; one without them). The first's drift and slices are
    /// `drift` and `slices`; the others' gauges are brought up to date with it at each
    /// scrape.
    pub lanes: Vec<Arc<crate::mirror::Mirror>>,
}

impl AdminState {
    /// Bring the drift gauges up to date (they are computed on demand, once per scrape).
    pub fn refresh(&self) -> Option<crate::drift::DriftSnapshot> {
        let now = Instant::now();
        self.feedback.refresh(now);
        if let Ok(s) = self.slices.lock() {
            self.metrics.slices.set(&s);
        }
        for lane in self.lanes.iter().skip(1) {
            lane.refresh_gauges(now);
        }
        let snapshot = self.drift.lock().ok()?.snapshot(now);
        self.metrics.drift.set(&snapshot);
        Some(snapshot)
    }
}

/// The admin router; tests can call it directly.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(status_page))
        .route("/labels", post(labels))
        .route("/feedback", post(feedback))
        .with_state(state)
}

/// Serve until `stop` turns true.
pub async fn serve(listener: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(record_history(state.clone(), stop.clone()));
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin server failed");
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    state.refresh();
    let body = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Ready when the primary model server accepts TCP connections.
async fn readyz(State(state): State<AdminState>) -> Response {
    let host = state
        .primary
        .host()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']'])
        .to_string();
    let port = state
        .primary
        .port_u16()
        .unwrap_or(if state.primary.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    match tokio::time::timeout(
        READY_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("primary {} unreachable: {e}\n", state.primary),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "primary {} did not accept within {READY_CONNECT_TIMEOUT:?}\n",
                state.primary
            ),
        )
            .into_response(),
    }
}

async fn status_page(State(state): State<AdminState>) -> Html<String> {
    state.refresh();
    let c = &state.config;
    let (slices, worst_slice) = match state.slices.lock() {
        Ok(st) => {
            let rows = state
                .slice_names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), st.summary(i)))
                .collect();
            let w = st.worst();
            let worst = w
                .low_share_slice
                .or(w.cosine_slice)
                .and_then(|i| Some((state.slice_names.get(i)?.clone(), st.examples(i))));
            (rows, worst)
        }
        Err(_) => (Vec::new(), None),
    };
    let first = &c.checked().routes[0];
    let (model, canary) = (
        first.model.clone(),
        first.candidates[0].target.version.clone(),
    );
    let now = Instant::now();
    let lanes = if state.lanes.len() > 1 {
        state
            .lanes
            .iter()
            .filter_map(|l| {
                Some(status::LaneRow {
                    model: l.labels.model.to_string(),
                    baseline: l.baseline.version.to_string(),
                    canary: l.canary.version.to_string(),
                    share: f64::from(l.labels.sample_rate),
                    drift: l.drift.lock().ok()?.snapshot(now),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let view = status::View {
        model: c.model.name.clone(),
        version: c.model.version.clone(),
        baseline: first.baseline.version.clone(),
        canary: canary.clone(),
        uptime: state.started.elapsed(),
        // Every section but the lanes table is the first lane's.
        families: status::first_lane(state.metrics.registry.gather(), &model, &canary),
        lanes,
        gates: c.gates.clone(),
        slices,
        worst_slice,
        reference: state.reference_picture.as_ref().and_then(|p| {
            let p = p.lock().ok()?;
            Some(status::ReferencePicture {
                reference: p.reference.as_ref()?.density.clone(),
                recent: p.recent.density(),
                recent_points: p.recent.len(),
            })
        }),
    };
    let page = match state.history.lock() {
        Ok(h) => status::render(&view, &h),
        Err(_) => status::render(&view, &status::History::default()),
    };
    Html(page)
}

/// Sample the drift statistics into the status page's history until `stop`.
pub async fn record_history(state: AdminState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(status::HISTORY_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Some(s) = state.refresh() {
            if let Ok(mut h) = state.history.lock() {
                h.push(status::HistoryPoint {
                    at: state.started.elapsed().as_secs_f64(),
                    mean: s.mean_cosine,
                    lower: s.cosine_lower,
                    upper: s.cosine_upper,
                    self_mean: s.self_mean_cosine,
                });
            }
        }
    }
}

/// Largest `item` a posted label or event may name: far above any real batch (the
/// OpenAI embeddings API takes at most 2048 inputs), low enough that a wrong field
/// (a timestamp, an id) posted as `item` is reported instead of silently never joining.
pub const MAX_POSTED_ITEM: u64 = 1_000_000;

/// Most per-entry errors listed in an answer; `invalid` counts them all.
const MAX_LISTED_ERRORS: usize = 100;

/// One posted label.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelIn {
    request_id: String,
    /// Which input of a batched request (0 = the first, or the only one). Taken as any
    /// JSON value so that a bad one is an error of this entry, not of the whole body.
    #[serde(default)]
    item: Option<serde_json::Value>,
    label: serde_json::Value,
}

/// One posted business event.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    request_id: String,
    /// Validated as for labels; an event counts once per request whatever item it
    /// names (see [`Feedback::event`]).
    #[serde(default)]
    item: Option<serde_json::Value>,
    #[serde(default = "conversion")]
    event: String,
    #[serde(default)]
    #[allow(dead_code)]
    value: Option<f64>,
}

fn conversion() -> String {
    "conversion".into()
}

/// An entry's `item`: absent or null is item 0; otherwise an integer in
/// `0..=MAX_POSTED_ITEM`.
fn parse_item(v: Option<&serde_json::Value>) -> Result<u32, String> {
    use serde_json::Value;
    let bad = |v: &Value| format!("item must be an integer from 0 to {MAX_POSTED_ITEM}, got {v}");
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(n @ Value::Number(num)) => match num.as_u64() {
            Some(i) if i <= MAX_POSTED_ITEM => Ok(i as u32),
            _ => Err(bad(n)),
        },
        Some(other) => Err(bad(other)),
    }
}

/// An entry rejected on its own; the rest of the batch is applied.
#[derive(Debug, serde::Serialize)]
struct EntryError {
    /// Position in the posted array (0 for a single object).
    index: usize,
    request_id: String,
    error: String,
}

/// How a batch joined, returned to the poster.
#[derive(Debug, Default, serde::Serialize)]
struct JoinCounts {
    joined: u64,
    not_mirrored: u64,
    unknown: u64,
    duplicate: u64,
    /// Entries rejected (bad `item` or label value); the first
    /// [`MAX_LISTED_ERRORS`] are in `errors`.
    invalid: u64,
    errors: Vec<EntryError>,
}

impl JoinCounts {
    fn add(&mut self, r: JoinResult) {
        match r {
            JoinResult::Joined => self.joined += 1,
            JoinResult::NotMirrored => self.not_mirrored += 1,
            JoinResult::Unknown => self.unknown += 1,
            JoinResult::Duplicate => self.duplicate += 1,
        }
    }

    fn reject(&mut self, index: usize, request_id: &str, error: String) {
        self.invalid += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(EntryError {
                index,
                request_id: request_id.to_owned(),
                error,
            });
        }
    }

    /// 200 when some entry was applied (or there were none); 400 when every entry was
    /// rejected, so a single bad label is not mistaken for an accepted one.
    fn into_response(self, entries: usize) -> Response {
        let status = if self.invalid > 0 && self.invalid as usize == entries {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        (status, axum::Json(self)).into_response()
    }
}

/// `Authorization: Bearer <token>` when a token is configured.
fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let token = state.config.feedback.token.as_bytes();
    if token.is_empty() {
        return true;
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    token_matches(presented.as_bytes(), token)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token\n",
    )
        .into_response()
}

/// A JSON object or an array of them.
fn parse_batch<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, Box<Response>> {
    let bad = |e: serde_json::Error| {
        Box::new((StatusCode::BAD_REQUEST, format!("malformed body: {e}\n")).into_response())
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body).map_err(bad),
        _ => serde_json::from_slice(body)
            .map(|one| vec![one])
            .map_err(bad),
    }
}

fn label_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

async fn labels(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let batch: Vec<LabelIn> = match parse_batch(&body) {
        Ok(b) => b,
        Err(bad) => return *bad,
    };
    let now = Instant::now();
    let mut counts = JoinCounts::default();
    for (i, l) in batch.iter().enumerate() {
        let item = parse_item(l.item.as_ref());
        let text = label_text(&l.label)
            .ok_or_else(|| "label must be a string, number or boolean".to_string());
        match (item, text) {
            (Ok(item), Ok(text)) => {
                counts.add(state.feedback.label(&l.request_id, item, &text, now));
            }
            (Err(e), _) | (_, Err(e)) => counts.reject(i, &l.request_id, e),
        }
    }
    counts.into_response(batch.len())
}

async fn feedback(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let batch: Vec<EventIn> = match parse_batch(&body) {
        Ok(b) => b,
        Err(bad) => return *bad,
    };
    let now = Instant::now();
    let mut counts = JoinCounts::default();
    for (i, e) in batch.iter().enumerate() {
        // The item is checked so a client's mistake shows, but the served unit of the
        // conversion rate is the request (Feedback::event).
        match parse_item(e.item.as_ref()) {
            Ok(_) => counts.add(state.feedback.event(&e.request_id, &e.event, now)),
            Err(err) => counts.reject(i, &e.request_id, err),
        }
    }
    counts.into_response(batch.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_are_small_non_negative_integers_defaulting_to_0() {
        assert_eq!(parse_item(None), Ok(0));
        assert_eq!(parse_item(Some(&json!(null))), Ok(0));
        assert_eq!(parse_item(Some(&json!(0))), Ok(0));
        assert_eq!(parse_item(Some(&json!(7))), Ok(7));
        assert_eq!(parse_item(Some(&json!(MAX_POSTED_ITEM))), Ok(1_000_000));
        for bad in [
            json!(-1),
            json!(1.5),
            json!(2.0),
            json!(MAX_POSTED_ITEM + 1),
            json!(u64::MAX),
            json!(1e300),
            json!("3"),
            json!(true),
            json!([1]),
        ] {
            let e = parse_item(Some(&bad)).expect_err("rejected");
            assert!(e.contains(&bad.to_string()), "{e}");
        }
    }
}
