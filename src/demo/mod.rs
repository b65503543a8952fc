//! `shadowgate demo`: everything on one machine. Built-in baseline and canary model
//! servers on loopback, the sidecar mirroring every request, and a traffic generator,
//! with live progress and a summary.

pub mod model;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

use crate::config::Config;
use crate::demo::model::{CosineSpec, ModelOptions, ModelServer};
use crate::metrics::PairOutcome;
use crate::serve::{self, ServeError};
use crate::upstream::http_client;

/// Options of `shadowgate demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub seconds: u64,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    /// The canary's cosines are uniform on [1 − 2·drift, 1]: mean 1 − drift.
    pub drift: f64,
    pub clients: usize,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("--drift {0} must lie in [0, 1]")]
    Drift(f64),
    #[error("cannot start a built-in model server: {0}")]
    ModelServer(std::io::Error),
    #[error("invalid demo configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot write the demo's drift reference {path}: {source}")]
    Reference {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A path as the inside of a TOML basic string.
fn toml_string(p: &std::path::Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// The primary's drift reference (`[reference]`): built from the built-in model's
/// answers to 2000 texts like the traffic's, written to `dir/reference.json`, as
/// `shadowgate reference build` would from shadow logs. Window 50, ERT 2000, and 400
/// calibration streams rather than 2000 (the line within about ±1 % of its 5 %): a demo
/// builds in a moment, also from a debug build.
fn write_reference(dir: &std::path::Path) -> Result<std::path::PathBuf, DemoError> {
    let rows: Vec<f32> = (0..2000)
        .flat_map(|i| model::baseline_unit(&format!("reference input {i}"), DEMO_DIM))
        .collect();
    let x = ndarray::Array2::from_shape_vec((2000, DEMO_DIM), rows).expect("2000 rows of DEMO_DIM");
    let r = crate::reference::build(
        x.view(),
        &crate::reference::BuildParams {
            window: 50,
            ert: 2000.0,
            source: "the demo's built-in model, 2000 inputs".into(),
            streams: 400,
            ..crate::reference::BuildParams::new("demo-embedder")
        },
        0,
    )
    .expect("the demo's reference builds");
    let path = dir.join("reference.json");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, r.to_json()))
        .map_err(|source| DemoError::Reference {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Dimension of the demo embeddings (a MiniLM-sized model).
const DEMO_DIM: usize = 384;

/// Words the traffic generator builds inputs from.
const WORDS: [&str; 24] = [
    "canary",
    "model",
    "latency",
    "shadow",
    "vector",
    "token",
    "gradient",
    "rollout",
    "stable",
    "drift",
    "sample",
    "embedding",
    "cluster",
    "label",
    "request",
    "window",
    "quantile",
    "bound",
    "noise",
    "floor",
    "replica",
    "traffic",
    "version",
    "signal",
];

/// Run the demo to completion.
pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    if !(0.0..=1.0).contains(&opts.drift) {
        return Err(DemoError::Drift(opts.drift));
    }
    let canary_spec = CosineSpec::Uniform {
        lo: (1.0 - 2.0 * opts.drift).max(-1.0),
        hi: 1.0,
    };
    // Both versions also classify their input (a `label` beside the embedding); the
    // canary disagrees with the baseline on a share of inputs that grows with --drift.
    let base = ModelOptions {
        dim: DEMO_DIM,
        prediction_flip_share: Some(0.0),
        ..Default::default()
    };
    let primary = ModelServer::spawn(base.clone())
        .await
        .map_err(DemoError::ModelServer)?;
    let baseline = ModelServer::spawn(base.clone())
        .await
        .map_err(DemoError::ModelServer)?;
    let canary = ModelServer::spawn(ModelOptions {
        cosine: canary_spec,
        prediction_flip_share: Some(opts.drift),
        ..base
    })
    .await
    .map_err(DemoError::ModelServer)?;

    let reference = write_reference(&opts.dir)?;
    let toml = format!(
        r#"
[model]
name = "demo-embedder"
version = "v1"
[listen]
proxy = "127.0.0.1:0"
admin = "{admin}"
[primary]
url = "{primary}"
[shadow]
sample_rate = 1.0
max_per_second = 0
max_in_flight = 256
self_similarity_rate = 0.05
prediction_pointer = "/label"
[shadow.baseline]
url = "{baseline}"
version = "v1"
[shadow.canary]
url = "{canary}"
version = "v2"
[drift]
window = "5m"
[shadow_log]
dir = "{dir}"
max_file_age = "10s"
[reference]
path = "{reference}"
sample_rate = 0.25
"#,
        reference = toml_string(&reference),
        admin = opts.admin,
        primary = primary.url(),
        baseline = baseline.url(),
        canary = canary.url(),
        dir = toml_string(&opts.dir),
    );
    let config = Config::from_toml_with_env(&toml, std::iter::empty())?;
    let running = serve::start(config).await?;
    let proxy_url = format!("http://{}", running.proxy_addr);

    let out = std::io::stderr();
    let tty = out.is_terminal();
    eprintln!(
        "shadowgate demo: primary {} · baseline v1 {} · canary v2 {} (expected mean cosine {:.3})",
        primary.url(),
        baseline.url(),
        canary.url(),
        canary_spec.mean()
    );
    eprintln!(
        "proxy {proxy_url} · metrics http://{}/metrics · {}s of traffic from {} clients",
        running.admin_addr, opts.seconds, opts.clients
    );

    let traffic = Arc::new(Traffic::default());
    let stop = Arc::new(AtomicBool::new(false));
    let client = http_client::<Full<Bytes>>(opts.clients.max(1));
    let mut workers = Vec::new();
    for w in 0..opts.clients.max(1) {
        let admin = format!("http://{}", running.admin_addr);
        let (traffic, stop, client, url) = (
            traffic.clone(),
            stop.clone(),
            client.clone(),
            proxy_url.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = model::SplitMix(0xd3a0 + w as u64);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let words: Vec<&str> = (0..6)
                    .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
                    .collect();
                let body = format!(
                    r#"{{"model":"demo","input":"{} #{w}-{i}"}}"#,
                    words.join(" ")
                );
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(format!("{url}/v1/embeddings"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)));
                let Ok(req) = req else { continue };
                let t = Instant::now();
                let (ok, id) = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let id = resp
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        (
                            resp.into_body().collect().await.is_ok() && status.is_success(),
                            id,
                        )
                    }
                    Err(_) => (false, None),
                };
                traffic.record(t.elapsed(), ok);
                // Ground truth arrives for every 4th request (the baseline's class, wrong
                // one time in ten), and one request in ten converts.
                if let Some(id) = id.filter(|_| i % 4 == 0) {
                    let text = format!("{} #{w}-{i}", words.join(" "));
                    let mut truth = model::predicted_label(&text, 0.0);
                    if rng.uniform() < 0.1 {
                        truth = if truth == "0" { "1".into() } else { "0".into() };
                    }
                    let mut events = vec![(
                        format!("{admin}/labels"),
                        format!(r#"{{"request_id":"{id}","label":"{truth}"}}"#),
                    )];
                    if i % 10 == 0 {
                        events.push((
                            format!("{admin}/feedback"),
                            format!(r#"{{"request_id":"{id}","event":"conversion"}}"#),
                        ));
                    }
                    for (url, body) in events {
                        if let Ok(req) = Request::post(url).body(Full::new(Bytes::from(body))) {
                            if let Ok(resp) = client.request(req).await {
                                let _ = resp.into_body().collect().await;
                            }
                        }
                    }
                }
            }
        }));
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.seconds);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < deadline {
        tick.tick().await;
        let snap = running.drift_snapshot();
        let line = format!(
            "[{:>3}s] requests {:>7} ({:>5.0}/s)  errors {}  compared pairs {:>7}  mean cosine {}  p99 {:.1} ms",
            started.elapsed().as_secs(),
            traffic.count(),
            traffic.count() as f64 / started.elapsed().as_secs_f64(),
            traffic.errors.load(Ordering::Relaxed),
            running.metrics.drift.pair(PairOutcome::Compared).get(),
            fmt_nan(snap.as_ref().map_or(f64::NAN, |s| s.mean_cosine)),
            traffic.quantile(0.99).as_secs_f64() * 1e3,
        );
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        let _ = out.lock().flush();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    if tty {
        eprintln!();
    }
    let elapsed = started.elapsed();
    let snap = running.drift_snapshot();
    let m = running.metrics.clone();
    let families = m.registry.gather();
    let summary = running.shutdown().await;

    let pairs: Vec<String> = PairOutcome::ALL
        .iter()
        .map(|o| format!("{} {}", o.as_str(), m.drift.pair(*o).get()))
        .collect();
    println!("\nshadowgate demo summary ({:.1}s)", elapsed.as_secs_f64());
    println!(
        "  client requests     {} ({:.0}/s), errors {}",
        traffic.count(),
        traffic.count() as f64 / elapsed.as_secs_f64(),
        traffic.errors.load(Ordering::Relaxed)
    );
    println!(
        "  client latency      p50 {:.2} ms, p99 {:.2} ms",
        traffic.quantile(0.5).as_secs_f64() * 1e3,
        traffic.quantile(0.99).as_secs_f64() * 1e3
    );
    println!("  shadow pairs        {}", pairs.join(", "));
    if let Some(s) = snap {
        println!(
            "  mean cosine         {} (window {} pairs; expected {:.3})",
            fmt_nan(s.mean_cosine),
            s.window_pairs,
            canary_spec.mean()
        );
        println!(
            "  cosine bounds       [{}, {}] since start ({} pairs)",
            fmt_nan(s.cosine_lower),
            fmt_nan(s.cosine_upper),
            s.total_pairs
        );
        println!(
            "  low-similarity      {} of window pairs under the floor",
            fmt_nan(s.low_ratio)
        );
        println!(
            "  noise floor         self cosine {} over {} repeats",
            fmt_nan(s.self_mean_cosine),
            s.self_pairs
        );
    }
    let acc = |v: &str| {
        crate::admin::status::metric(&families, "model_inference_accuracy", &[("version", v)])
    };
    let labeled = crate::admin::status::metric(&families, "model_shadow_labeled_pairs_total", &[]);
    println!(
        "  accuracy (online)   baseline v1 {}, canary v2 {} on {} labeled pairs; ratio lower bound {}",
        fmt_nan(acc("v1")),
        fmt_nan(acc("v2")),
        labeled,
        fmt_nan(crate::admin::status::metric(&families, "model_accuracy_ratio_lower_bound", &[]))
    );
    println!(
        "  conversion rate     {} (this pod, v1)",
        fmt_nan(crate::admin::status::metric(
            &families,
            "business_metric_conversion_rate",
            &[]
        ))
    );
    let metric = |name: &str| crate::admin::status::metric(&families, name, &[]);
    let furthest = families
        .iter()
        .find(|f| f.name() == "shadowgate_reference_slice_shift_score")
        .and_then(|f| {
            f.get_metric().iter().max_by(|a, b| {
                a.get_gauge()
                    .get_value()
                    .total_cmp(&b.get_gauge().get_value())
            })
        })
        .map(|m| {
            let slice = m.get_label().iter().find(|l| l.name() == "slice");
            format!(
                "; furthest region {} ({:.2} of its null level)",
                slice.map_or("?", |l| l.value()),
                m.get_gauge().get_value()
            )
        })
        .unwrap_or_default();
    println!(
        "  input drift         score {} of the alarm line over {} answers scored against the reference{furthest}",
        fmt_nan(metric("shadowgate_reference_shift_score")),
        metric("shadowgate_reference_samples_total")
    );
    println!(
        "  model servers       primary {} requests, baseline {}, canary {}",
        primary.requests(),
        baseline.requests(),
        canary.requests()
    );
    if let Some(log) = &summary.shadow_log {
        println!(
            "  shadow log          {} rows in {} Parquet files ({} bytes) under {}",
            log.rows,
            log.files,
            log.bytes,
            opts.dir.display()
        );
    }
    if summary.shadow_tasks_cut > 0 {
        println!(
            "  shutdown            {} shadow comparisons cut by the grace period",
            summary.shadow_tasks_cut
        );
    }
    Ok(())
}

fn fmt_nan(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        format!("{v:.4}")
    }
}

/// Client-side counts and latencies (log-spaced buckets, 1 µs to ~100 s).
#[derive(Default)]
struct Traffic {
    ok: AtomicU64,
    errors: AtomicU64,
    buckets: Mutex<Vec<u64>>,
}

/// Buckets per factor of 10 in the latency histogram.
const PER_DECADE: f64 = 40.0;

impl Traffic {
    fn record(&self, d: Duration, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = d.as_secs_f64() * 1e6;
        let i = (us.max(1.0).log10() * PER_DECADE) as usize;
        if let Ok(mut b) = self.buckets.lock() {
            if b.len() <= i {
                b.resize(i + 1, 0);
            }
            b[i] += 1;
        }
    }

    fn count(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.errors.load(Ordering::Relaxed)
    }

    fn quantile(&self, q: f64) -> Duration {
        let Ok(b) = self.buckets.lock() else {
            return Duration::ZERO;
        };
        let total: u64 = b.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, n) in b.iter().enumerate() {
            seen += n;
            if seen >= target {
                // Upper edge of the bucket.
                return Duration::from_secs_f64(10f64.powf((i + 1) as f64 / PER_DECADE) / 1e6);
            }
        }
        Duration::ZERO
    }
}
