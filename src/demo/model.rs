//! A small but real model server on loopback, speaking each supported protocol, with
//! embeddings that are deterministic functions of the input text. The canary variant
//! returns `c·u + sqrt(1 − c²)·n` (u the baseline's unit vector, n a unit vector
//! orthogonal to u), whose cosine to the baseline is exactly `c`. Faults (errors, hangs,
//! delays, malformed bodies, resets) are switchable so tests can drive every path.
//! Used by `shadowgate demo`, the integration tests and the benchmarks.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ids::{id_hash, mix64};
use crate::protocol::Protocol;

/// How the canary's cosine to the baseline is chosen for one input (by a hash of the text,
/// so the same input always gets the same answer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CosineSpec {
    /// Identical to the baseline.
    Identical,
    /// Every input at cosine `c`.
    Constant(f64),
    /// Uniform on `[lo, hi]` across inputs.
    Uniform { lo: f64, hi: f64 },
    /// A `share` of inputs at `bad`, the rest at `good`.
    Mixture { share: f64, bad: f64, good: f64 },
    /// Inputs longer than `bytes` at `bad` (a canary that cut its maximum sequence
    /// length), shorter ones at `good`.
    Longer { bytes: usize, bad: f64, good: f64 },
}

impl CosineSpec {
    /// The cosine for one input.
    pub fn cosine_for(&self, text: &str) -> f64 {
        let u = unit_interval(id_hash(text.as_bytes(), 0xc05));
        match *self {
            CosineSpec::Identical => 1.0,
            CosineSpec::Constant(c) => c,
            CosineSpec::Uniform { lo, hi } => lo + (hi - lo) * u,
            CosineSpec::Mixture { share, bad, good } => {
                if u < share {
                    bad
                } else {
                    good
                }
            }
            CosineSpec::Longer { bytes, bad, good } => {
                if text.len() > bytes {
                    bad
                } else {
                    good
                }
            }
        }
    }

    /// The expected cosine over inputs (what the drift mean should converge to).
    pub fn mean(&self) -> f64 {
        match *self {
            CosineSpec::Identical => 1.0,
            CosineSpec::Constant(c) => c,
            CosineSpec::Uniform { lo, hi } => (lo + hi) / 2.0,
            CosineSpec::Mixture { share, bad, good } => share * bad + (1.0 - share) * good,
            // Depends on the traffic's lengths: the mean of the two as a stand-in.
            CosineSpec::Longer { bad, good, .. } => (bad + good) / 2.0,
        }
    }
}

/// What the server does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Answer correctly.
    Normal,
    /// Answer with this HTTP status and a short JSON error.
    Status(u16),
    /// Never answer (until the client gives up).
    Hang,
    /// Answer normally after this delay.
    Delay(Duration),
    /// Answer after `base × slowdown × load(now)`, where `load` is the same function of
    /// wall-clock time in every server of the process (a busy node slows every model
    /// server on it at once): mostly 1, with a burst of 4 to 6 in every 2 s (see
    /// [`node_load`]). A canary with `slowdown` 1.2 is 20 % slower than a baseline with 1.0 on
    /// the same node.
    Loaded { base: Duration, slowdown: f64 },
    /// `{"data": [` and garbage.
    Malformed,
    /// NaN in the embedding (as Python's json.dumps writes it).
    NaN,
    /// An embedding of a different dimension.
    WrongDim(usize),
    /// An empty embedding array.
    Empty,
    /// An all-zero embedding.
    Zero,
    /// Half the body, then the connection is cut.
    Truncated,
    /// The embedding field is missing.
    MissingField,
    /// Nondeterministic: each call adds fresh noise so that cos(answer, clean) ≈ `self_cosine`.
    Noisy { self_cosine: f64 },
    /// A batch answer with its last item left out.
    DropLastItem,
    /// OpenAI: the items of a batch in reverse order (their `index` still right).
    ReverseItems,
}

/// How a model server is built.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub protocol: Protocol,
    pub dim: usize,
    pub cosine: CosineSpec,
    /// ‖answer‖ / ‖baseline‖ (cosine ignores it; the norm-ratio gauge does not).
    pub norm_scale: f32,
    pub behaviour: Behaviour,
    /// Prediction returned beside the embedding (`"label"` field) when set: the class is
    /// derived from the input text; the canary flips it for a share of inputs.
    pub prediction_flip_share: Option<f64>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            protocol: Protocol::OpenAi,
            dim: 384,
            cosine: CosineSpec::Identical,
            norm_scale: 1.0,
            behaviour: Behaviour::Normal,
            prediction_flip_share: None,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

/// Counters a test can read.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub requests: AtomicU64,
    /// Requests carrying `x-shadowgate-shadow: 1`.
    pub shadow_requests: AtomicU64,
    /// Last requests seen (at most [`SEEN_CAP`]).
    pub seen: Mutex<VecDeque<Seen>>,
}

/// How many recent requests a server remembers.
pub const SEEN_CAP: usize = 256;

/// A running model server. Dropping it stops the server.
pub struct ModelServer {
    pub addr: SocketAddr,
    pub stats: Arc<ModelStats>,
    options: Arc<Mutex<ModelOptions>>,
    _stop: watch::Sender<bool>,
}

impl ModelServer {
    /// Bind 127.0.0.1 port 0 and serve.
    pub async fn spawn(options: ModelOptions) -> std::io::Result<ModelServer> {
        Self::spawn_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            options,
        )
        .await
    }

    /// Bind `addr` and serve.
    pub async fn spawn_on(addr: SocketAddr, options: ModelOptions) -> std::io::Result<ModelServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ModelStats::default());
        let options = Arc::new(Mutex::new(options));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let (st, op) = (stats.clone(), options.clone());
        let conn_stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let (st, op) = (st.clone(), op.clone());
                        let mut stop_conn = conn_stop.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| handle(req, st.clone(), op.clone()));
                            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = stop_conn.wait_for(|s| *s) => {}
                            }
                        });
                    }
                    _ = stop_rx.wait_for(|s| *s) => break,
                }
            }
        });
        Ok(ModelServer {
            addr,
            stats,
            options,
            _stop: stop_tx,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Change behaviour while running.
    pub fn set_behaviour(&self, b: Behaviour) {
        if let Ok(mut o) = self.options.lock() {
            o.behaviour = b;
        }
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    pub fn shadow_requests(&self) -> u64 {
        self.stats.shadow_requests.load(Ordering::Relaxed)
    }
}

/// An address on loopback where nothing listens (connections are refused).
pub async fn refused_addr() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    drop(l);
    Ok(a)
}

type ServerBody = http_body_util::Either<Full<Bytes>, ChunkedBody>;

async fn handle(
    req: Request<Incoming>,
    stats: Arc<ModelStats>,
    options: Arc<Mutex<ModelOptions>>,
) -> Result<Response<ServerBody>, Infallible> {
    let opts = match options.lock() {
        Ok(o) => o.clone(),
        Err(p) => p.into_inner().clone(),
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if req
        .headers()
        .get("x-shadowgate-shadow")
        .is_some_and(|v| v == "1")
    {
        stats.shadow_requests.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(mut seen) = stats.seen.lock() {
        if seen.len() == SEEN_CAP {
            seen.pop_front();
        }
        seen.push_back(Seen {
            path: req.uri().path().to_string(),
            headers: req.headers().clone(),
        });
    }
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    match &opts.behaviour {
        Behaviour::Hang => {
            std::future::pending::<()>().await;
        }
        Behaviour::Delay(d) => tokio::time::sleep(*d).await,
        Behaviour::Loaded { base, slowdown } => {
            tokio::time::sleep(base.mul_f64(slowdown * node_load(SystemTime::now()))).await
        }
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(json_response(
                status,
                json!({"error": {"message": "injected failure"}}).to_string(),
            ));
        }
        _ => {}
    }

    if path.ends_with("/stream") {
        return Ok(stream_response());
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path.ends_with("/chat/completions") {
        let text = request
            .pointer("/messages/0/content")
            .and_then(Value::as_str)
            .unwrap_or("");
        let tokens = text.split_whitespace().count().max(1) * 3;
        let answer = json!({
            "id": "chatcmpl-demo", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {text}")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens / 3, "completion_tokens": tokens, "total_tokens": tokens + tokens / 3}
        });
        return Ok(json_response(StatusCode::OK, answer.to_string()));
    }
    let texts = input_texts(opts.protocol, &request);
    let mut items: Vec<(Vec<f32>, Option<String>)> = texts
        .iter()
        .map(|text| {
            let prediction = opts
                .prediction_flip_share
                .map(|share| predicted_label(text, share));
            (answer(text, &opts), prediction)
        })
        .collect();
    if opts.behaviour == Behaviour::DropLastItem && items.len() > 1 {
        items.pop();
    }
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let reverse = opts.behaviour == Behaviour::ReverseItems;
    let mut body = render_batch(opts.protocol, &items, base64, reverse);
    match &opts.behaviour {
        Behaviour::Malformed => body = "{\"data\": [{\"embedding\": [0.1, 0.2,, }".into(),
        Behaviour::MissingField => {
            body = json!({"object": "list", "data": [{"index": 0}]}).to_string()
        }
        Behaviour::Truncated => return Ok(truncated_response(body)),
        _ => {}
    }
    Ok(json_response(StatusCode::OK, body))
}

static NOISE_COUNTER: AtomicU64 = AtomicU64::new(1);

fn json_response(status: StatusCode, body: String) -> Response<ServerBody> {
    let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The embedding this server answers for one input, by its behaviour.
fn answer(text: &str, opts: &ModelOptions) -> Vec<f32> {
    match &opts.behaviour {
        Behaviour::Zero => vec![0.0; opts.dim],
        Behaviour::WrongDim(d) => embed(text, *d, opts),
        Behaviour::Empty => Vec::new(),
        Behaviour::NaN => {
            let mut e = embed(text, opts.dim, opts);
            if let Some(first) = e.first_mut() {
                *first = f32::NAN;
            }
            e
        }
        Behaviour::Noisy { self_cosine } => {
            let clean = embed(text, opts.dim, opts);
            let seed = NOISE_COUNTER.fetch_add(1, Ordering::Relaxed);
            mix_toward(&clean, *self_cosine, seed ^ id_hash(text.as_bytes(), 7))
        }
        _ => embed(text, opts.dim, opts),
    }
}

/// The node's load factor at `now` for [`Behaviour::Loaded`], per 250 ms slot, so that
/// calls made at the same moment see the same load. In every 2 s cycle of 8 slots one
/// slot, chosen by a hash of the cycle, is a burst of 4x to 6x; of the others 70 % are
/// calm (1) and the rest busy (up to 2.3x). A fixed share of bursts, rather than a hash
/// per slot, gives any run of a few seconds its tail: a p99 over 500 ms for a 150 ms
/// model, not only on average over runs.
pub fn node_load(now: SystemTime) -> f64 {
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (slot, cycle) = (ms / 250, ms / 2000);
    let burst_slot = mix64(cycle ^ 0x0062_7572_7374) % 8;
    let u = unit_interval(mix64(slot));
    if slot % 8 == burst_slot {
        4.0 + 2.0 * u
    } else if u < 0.7 {
        1.0
    } else {
        1.0 + 1.3 * (u - 0.7) / 0.3
    }
}

/// The texts a request asks to embed, by protocol: every input of a batch (generic: the
/// first). A request this cannot read is one input, its whole JSON.
pub fn input_texts(protocol: Protocol, v: &Value) -> Vec<String> {
    let strings = |p: &str| -> Option<Vec<String>> {
        match v.pointer(p)? {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            _ => None,
        }
    };
    let texts = match protocol {
        Protocol::OpenAi => strings("/input"),
        Protocol::Generic => strings("/input").map(|mut t| {
            t.truncate(1);
            t
        }),
        Protocol::Tei => strings("/inputs"),
        Protocol::KServeV2 => strings("/inputs/0/data"),
        Protocol::TfServing => strings("/instances"),
    };
    texts.unwrap_or_else(|| vec![v.to_string()])
}

/// The class a classifier would predict for `text`; a `flip` share of inputs gets the
/// other class (0 for the baseline).
pub fn predicted_label(text: &str, flip: f64) -> String {
    let class = id_hash(text.as_bytes(), 0x1abe1) % 2;
    let flipped = unit_interval(id_hash(text.as_bytes(), 0xf11b)) < flip;
    format!("{}", if flipped { 1 - class } else { class })
}

/// Render one embedding as the protocol's response.
pub fn render(protocol: Protocol, e: &[f32], base64: bool, prediction: Option<&str>) -> String {
    render_batch(
        protocol,
        &[(e.to_vec(), prediction.map(str::to_owned))],
        base64,
        false,
    )
}

/// Render a batch's embeddings (and predictions) as the protocol's response; OpenAI
/// items in `reverse` order when asked. Item 0's prediction is also the top-level
/// `"label"`; generic answers carry item 0 only.
pub fn render_batch(
    protocol: Protocol,
    items: &[(Vec<f32>, Option<String>)],
    base64: bool,
    reverse: bool,
) -> String {
    let label = items
        .first()
        .and_then(|(_, p)| p.as_deref())
        .map(|p| format!(",\"label\":{}", json!(p)))
        .unwrap_or_default();
    let rows = |f: &dyn Fn(&[f32]) -> String| -> String {
        items
            .iter()
            .map(|(e, _)| f(e))
            .collect::<Vec<_>>()
            .join(",")
    };
    let dim = items.first().map_or(0, |(e, _)| e.len());
    match protocol {
        Protocol::OpenAi => {
            let mut data: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, (e, p))| {
                    let emb = if base64 {
                        let bytes: Vec<u8> = e.iter().flat_map(|x| x.to_le_bytes()).collect();
                        format!("\"{}\"", base64::engine::general_purpose::STANDARD.encode(bytes))
                    } else {
                        floats(e)
                    };
                    let label = p
                        .as_deref()
                        .map(|p| format!(",\"label\":{}", json!(p)))
                        .unwrap_or_default();
                    format!("{{\"object\":\"embedding\",\"index\":{i},\"embedding\":{emb}{label}}}")
                })
                .collect();
            if reverse {
                data.reverse();
            }
            format!(
                "{{\"object\":\"list\",\"data\":[{}],\"model\":\"demo\",\"usage\":{{\"prompt_tokens\":8,\"total_tokens\":8}}{label}}}",
                data.join(",")
            )
        }
        Protocol::Tei => format!("[{}]", rows(&|e| floats(e))),
        Protocol::KServeV2 => format!(
            "{{\"model_name\":\"demo\",\"outputs\":[{{\"name\":\"embedding\",\"datatype\":\"FP32\",\"shape\":[{},{dim}],\"data\":[{}]}}]{label}}}",
            items.len(),
            rows(&|e| floats(e).trim_matches(['[', ']']).to_owned())
        ),
        Protocol::TfServing => format!(
            "{{\"predictions\":[{}]{label}}}",
            rows(&|e| floats(e))
        ),
        Protocol::Generic => format!(
            "{{\"result\":{{\"vector\":{}}}{label}}}",
            items.first().map_or_else(|| "[]".to_owned(), |(e, _)| floats(e))
        ),
    }
}

/// An embedding as a JSON array, written by hand so NaN and infinities come out as
/// Python's json.dumps writes them.
fn floats(e: &[f32]) -> String {
    let mut out = String::with_capacity(e.len() * 12 + 2);
    out.push('[');
    for (i, x) in e.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match x {
            x if x.is_nan() => out.push_str("NaN"),
            x if x.is_infinite() => out.push_str(if *x > 0.0 { "Infinity" } else { "-Infinity" }),
            x => out.push_str(&x.to_string()),
        }
    }
    out.push(']');
    out
}

/// The embedding this server answers for `text`.
pub fn embed(text: &str, dim: usize, opts: &ModelOptions) -> Vec<f32> {
    let u = baseline_unit(text, dim);
    let c = opts.cosine.cosine_for(text);
    let mut v = mix_toward(&u, c, id_hash(text.as_bytes(), 0x0c7));
    if opts.norm_scale != 1.0 {
        v.iter_mut().for_each(|x| *x *= opts.norm_scale);
    }
    v
}

/// The baseline's unit vector for `text`: Gaussian coordinates from a seeded generator.
pub fn baseline_unit(text: &str, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix(id_hash(text.as_bytes(), 0xba5e));
    let v: Vec<f64> = (0..dim).map(|_| rng.gaussian()).collect();
    to_unit_f32(&v)
}

/// `c·u + sqrt(1 − c²)·n` with n a unit vector orthogonal to u drawn from `seed`: its
/// cosine to u is exactly c (up to f32 rounding).
pub fn mix_toward(u: &[f32], c: f64, seed: u64) -> Vec<f32> {
    if c >= 1.0 || u.len() < 2 {
        return u.to_vec();
    }
    let u64v: Vec<f64> = u.iter().map(|&x| f64::from(x)).collect();
    let un = u64v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let u64v: Vec<f64> = u64v.iter().map(|x| x / un).collect();
    let mut rng = SplitMix(seed);
    let mut n: Vec<f64> = (0..u.len()).map(|_| rng.gaussian()).collect();
    let dot: f64 = n.iter().zip(&u64v).map(|(a, b)| a * b).sum();
    n.iter_mut().zip(&u64v).for_each(|(x, ui)| *x -= dot * ui);
    let nn = n.iter().map(|x| x * x).sum::<f64>().sqrt();
    let s = (1.0 - c * c).max(0.0).sqrt();
    let v: Vec<f64> = u64v
        .iter()
        .zip(&n)
        .map(|(ui, ni)| c * ui + s * ni / nn)
        .collect();
    v.iter().map(|&x| x as f32).collect()
}

fn to_unit_f32(v: &[f64]) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    v.iter().map(|x| (x / n) as f32).collect()
}

fn unit_interval(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// splitmix64: tiny, seedable, good enough for test vectors.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        unit_interval(self.next_u64())
    }
    /// Standard normal (Box–Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Server-sent events with pauses between them, ending with a usage event: tests check
/// that each event reaches the client before the next is sent.
fn stream_response() -> Response<ServerBody> {
    let body = ChunkedBody {
        step: 0,
        sleep: None,
        events: 5,
        pause: Duration::from_millis(150),
        cut_after: None,
    };
    let mut r = Response::new(http_body_util::Either::Right(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// Half a body, then an error: hyper cuts the connection, so the client sees a truncated message.
fn truncated_response(full: String) -> Response<ServerBody> {
    let half = full.len() / 2;
    let body = ChunkedBody {
        step: 0,
        sleep: None,
        events: 1,
        pause: Duration::ZERO,
        cut_after: Some(Bytes::from(full[..half].to_string())),
    };
    let mut r = Response::new(http_body_util::Either::Right(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(full.len()),
    );
    r
}

/// A body that yields frames with pauses (or a prefix and then an error).
pub struct ChunkedBody {
    step: usize,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    events: usize,
    pause: Duration,
    cut_after: Option<Bytes>,
}

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if let Some(prefix) = this.cut_after.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if this.events == 1 && this.step == 0 && this.pause.is_zero() {
            // The truncated body's second poll: fail so hyper aborts the connection.
            this.step = 1;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cut",
            ))));
        }
        if this.step > this.events {
            return Poll::Ready(None);
        }
        if this.step > 0 {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(this.pause)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let i = this.step;
        this.step += 1;
        let data = if i < this.events {
            format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n")
        } else {
            "data: {\"choices\":[],\"usage\":{\"completion_tokens\":40}}\n\ndata: [DONE]\n\n"
                .to_string()
        };
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f64 {
        let d: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        d / na / nb
    }

    #[test]
    fn drifted_vector_has_the_requested_cosine() {
        for c in [0.99, 0.95, 0.5, 0.0, -0.3] {
            let u = baseline_unit("hello world", 768);
            let v = mix_toward(&u, c, 42);
            assert!((cos(&u, &v) - c).abs() < 1e-5, "{c}: {}", cos(&u, &v));
        }
    }

    #[test]
    fn embeddings_are_deterministic() {
        let o = ModelOptions {
            cosine: CosineSpec::Constant(0.9),
            ..Default::default()
        };
        assert_eq!(embed("abc", 64, &o), embed("abc", 64, &o));
        assert_ne!(embed("abc", 64, &o), embed("abd", 64, &o));
    }
}
