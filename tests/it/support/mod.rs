//! Shared pieces of the integration tests: a sidecar started in-process on port 0 in
//! front of real model servers on loopback, a small HTTP client, and metric lookups.
#![allow(dead_code, unused_imports)]

pub mod h2;
pub mod prom;
pub mod reset_server;
pub mod system;
pub mod wait;

pub use system::{require, Component};
pub use wait::{poll, poll_async, wait_for, wait_for_async, wait_for_value, wait_for_value_async};

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use shadowgate::config::Config;
use shadowgate::demo::model::{ModelOptions, ModelServer};
use shadowgate::serve::{self, Running};
use shadowgate::upstream::{http_client, HttpClient};

/// Three model servers and a sidecar in front of the primary.
pub struct Stack {
    pub primary: ModelServer,
    pub baseline: ModelServer,
    pub canary: ModelServer,
    pub sidecar: Running,
    pub client: Client,
}

impl Stack {
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.sidecar.proxy_addr)
    }
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.sidecar.admin_addr)
    }
    /// POST an OpenAI-style embeddings request through the proxy.
    pub async fn embed(&self, text: &str) -> Reply {
        self.client
            .send(
                Method::POST,
                &format!("{}/v1/embeddings", self.proxy_url()),
                &[],
                format!(r#"{{"input":"{text}"}}"#),
            )
            .await
    }
    pub async fn metrics(&self) -> String {
        self.client
            .send(
                Method::GET,
                &format!("{}/metrics", self.admin_url()),
                &[],
                String::new(),
            )
            .await
            .text()
    }
    /// Wait until `pairs_total` (all outcomes) reaches `n`, or 30 s pass (a loaded CI
    /// machine can be that far behind; it returns as soon as the count is there).
    ///
    /// The text returned is a scrape taken after the count was seen: one scrape is not a
    /// snapshot (families are collected one after another, so a histogram can be read
    /// before the last pairs were counted), but a pair is counted after everything else
    /// its request records, so the next scrape holds all of it.
    pub async fn wait_pairs(&self, n: u64) -> String {
        let mut last = String::new();
        let reached = poll_async(Duration::from_secs(30), async || {
            last = self.metrics().await;
            (pairs_total(&last) as u64 >= n).then_some(())
        })
        .await;
        match reached {
            Some(()) => self.metrics().await,
            None => last,
        }
    }
}

/// Every `outcome` label of `model_embedding_pairs_total`.
pub const PAIR_OUTCOMES: [&str; 5] = [
    "compared",
    "baseline_error",
    "canary_error",
    "timeout",
    "invalid",
];

/// `model_embedding_pairs_total` summed over its outcomes (0 for absent series).
pub fn pairs_total(metrics_text: &str) -> f64 {
    PAIR_OUTCOMES
        .iter()
        .map(|o| {
            value(
                metrics_text,
                "model_embedding_pairs_total",
                &[("outcome", o)],
            )
            .unwrap_or(0.0)
        })
        .sum()
}

/// A config for the given servers: model "m", this pod v2, baseline v1, canary v2, every
/// request mirrored, no shadow log. `shadow_extra` holds `[shadow]` keys and `extra` whole
/// tables; both override the defaults here key by key.
pub fn config(
    primary: &str,
    baseline: &str,
    canary: &str,
    shadow_extra: &str,
    extra: &str,
) -> Config {
    let base = format!(
        r#"
[model]
name = "m"
version = "v2"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
[primary]
url = "{primary}"
timeout = "2s"
[shadow]
sample_rate = 1.0
max_per_second = 0
self_similarity_rate = 0.0
timeout = "500ms"
[shadow.baseline]
url = "{baseline}"
version = "v1"
[shadow.canary]
url = "{canary}"
version = "v2"
[drift]
min_pairs = 10
[shadow_log]
dir = ""
"#
    );
    let mut table: toml::Table = base.parse().unwrap();
    let over: toml::Table = format!("[shadow]\n{shadow_extra}\n{extra}")
        .parse()
        .unwrap();
    merge(&mut table, over);
    let text = toml::to_string(&table).unwrap();
    Config::from_toml_with_env(&text, std::iter::empty())
        .unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Start model servers with the given options and a sidecar in front.
pub async fn stack(
    primary: ModelOptions,
    baseline: ModelOptions,
    canary: ModelOptions,
    shadow_extra: &str,
    extra: &str,
) -> Stack {
    let primary = ModelServer::spawn(primary).await.unwrap();
    let baseline = ModelServer::spawn(baseline).await.unwrap();
    let canary = ModelServer::spawn(canary).await.unwrap();
    let cfg = config(
        &primary.url(),
        &baseline.url(),
        &canary.url(),
        shadow_extra,
        extra,
    );
    let sidecar = serve::start(cfg).await.unwrap();
    Stack {
        primary,
        baseline,
        canary,
        sidecar,
        client: Client::new(),
    }
}

/// A response as the client saw it.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP client for tests.
#[derive(Clone)]
pub struct Client {
    inner: HttpClient<Full<Bytes>>,
}

impl Client {
    pub fn new() -> Self {
        Self {
            inner: http_client(64),
        }
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, &[], String::new()).await
    }

    /// POST a JSON body; the status, or None when the request failed (connection refused,
    /// reset): for load that runs across a shutdown.
    pub async fn try_send(&self, method: Method, url: &str, body: String) -> Option<u16> {
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let resp = self.inner.request(req).await.ok()?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.ok()?;
        Some(status)
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Reply {
        let started = Instant::now();
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.inner.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        }
    }
}

/// The value of a sample in a Prometheus text exposition whose labels include all of `labels`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")));
            all.then(|| {
                if v == "NaN" {
                    Some(f64::NAN)
                } else {
                    v.parse().ok()
                }
            })
            .flatten()
        })
        .next()
}

/// Quantile of durations.
pub fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i]
}

/// A free TCP port on 127.0.0.1 (bound, then released for the process under test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Block until something accepts connections on 127.0.0.1:`port`, at most 10 s.
pub fn wait_listening(port: u16) {
    wait_for(
        &format!("something to listen on 127.0.0.1:{port}"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// `key=value` from the sidecar's final log line ("shut down; final pair counts").
pub fn final_count(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("final pair counts"))
        .unwrap_or_else(|| panic!("no final counts in:\n{log}"));
    let at = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Primary and baseline identical, canary at cosine 0.95, all of dimension `dim`.
pub async fn model_trio(
    dim: usize,
) -> (
    shadowgate::demo::model::ModelServer,
    shadowgate::demo::model::ModelServer,
    shadowgate::demo::model::ModelServer,
) {
    use shadowgate::demo::model::{CosineSpec, ModelOptions, ModelServer};
    let o = |c| ModelOptions {
        dim,
        cosine: c,
        ..Default::default()
    };
    (
        ModelServer::spawn(o(CosineSpec::Identical)).await.unwrap(),
        ModelServer::spawn(o(CosineSpec::Identical)).await.unwrap(),
        ModelServer::spawn(o(CosineSpec::Constant(0.95)))
            .await
            .unwrap(),
    )
}
