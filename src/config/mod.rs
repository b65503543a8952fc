//! Configuration: the TOML contract of DESIGN.md, environment overrides, and validation
//! that reports every problem at once with the key's path and what would fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use http::HeaderName;

use crate::grpc::GrpcProtocol;
use crate::ids::SampleRate;
use crate::protocol::{Extractor, Protocol, Rewrite};
use crate::slices::Slicer;

pub mod routes;

pub use crate::tls::TlsConfig;
pub use routes::{CheckedRoute, RouteConfig, RouteMatch, OTHER_MODEL};

/// Prefix of environment variables that override the file:
/// `SHADOWGATE_<SECTION>__<KEY>`, nested with further `__` (`SHADOWGATE_SHADOW__BASELINE__URL`).
pub const ENV_PREFIX: &str = "SHADOWGATE_";

/// Largest `shadow.self_similarity_min_pairs`: more is almost surely a typo, and would
/// double the baseline's shadow load for as long.
const MAX_SELF_SIMILARITY_MIN_PAIRS: u64 = 100_000;

/// A validated configuration: the file's settings as written (read through `Deref`,
/// printed by `check-config`), and the values validation parsed into their types, so
/// no component parses or checks a setting again.
#[derive(Debug, Clone)]
pub struct Config {
    settings: Settings,
    checked: Checked,
}

/// Settings that validation turned into typed values.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `primary.url`, `shadow.baseline.url`, `shadow.canary.url`: scheme and authority.
    pub primary_url: http::Uri,
    pub baseline_url: http::Uri,
    pub canary_url: http::Uri,
    /// `shadow.sample_rate`, `shadow.self_similarity_rate`.
    pub sample_rate: SampleRate,
    pub self_similarity_rate: SampleRate,
    /// `shadow.methods`.
    pub methods: Vec<http::Method>,
    /// `shadow.strip_headers`, lower-cased.
    pub strip_headers: Vec<HeaderName>,
    /// `primary.http2_url`, `shadow.baseline.http2_url`, `shadow.canary.http2_url`,
    /// when set.
    pub primary_http2_url: Option<http::Uri>,
    pub baseline_http2_url: Option<http::Uri>,
    pub canary_http2_url: Option<http::Uri>,
    /// `shadow.grpc_methods`: the protocol of each mirrored method (none when
    /// `primary.http2_url` is not set).
    pub grpc_methods: Vec<GrpcProtocol>,
    /// `primary.request_id_header`.
    pub request_id_header: HeaderName,
    /// `shadow.protocol` with its pointers and `shadow.max_batch_items`.
    pub extractor: Arc<Extractor>,
    /// `[slices]`.
    pub slicer: Arc<Slicer>,
    /// `[reference]`: the frozen reference, when `reference.path` is set.
    pub reference: Option<Arc<crate::reference::Reference>>,
    /// `[[routes]]`, or the one route of the `[shadow]` pair (matching every request at
    /// `shadow.sample_rate`) without them.
    pub routes: Vec<CheckedRoute>,
    /// `shadow.header`, lower-cased.
    pub shadow_header: HeaderName,
    /// `reference.sample_rate`.
    pub reference_sample_rate: SampleRate,
}

impl std::ops::Deref for Config {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// The whole configuration file, as written.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub model: ModelConfig,
    pub listen: ListenConfig,
    pub primary: PrimaryConfig,
    pub shadow: ShadowConfig,
    pub drift: DriftSection,
    pub shadow_log: ShadowLogConfig,
    pub feedback: FeedbackConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
    pub gates: GatesConfig,
    pub tls: TlsConfig,
    /// `[slices]`: per-slice statistics (length and region slices on by default).
    #[serde(default)]
    pub slices: crate::slices::SlicesConfig,
    /// `[reference]`: input drift of the primary's embeddings against a frozen reference.
    #[serde(default)]
    pub reference: ReferenceSection,
    /// `[[routes]]`: several models, several candidates (`config::routes`); empty: the
    /// `[shadow]` pair is the one route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

/// `[reference]`: score a sample of the primary's own embeddings against a reference
/// built by `shadowgate reference build` (see `crate::reference`), or built in the pod
/// from its first `from_first` sampled embeddings. Off when neither is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReferenceSection {
    /// The reference JSON (e.g. from a ConfigMap).
    pub path: PathBuf,
    /// Without `path`: build the reference from this many sampled embeddings after
    /// start (at least 1000), then freeze it; 0 is off.
    pub from_first: usize,
    /// Share of requests whose primary answer is scored, by request id (independent of
    /// `shadow.sample_rate`: no shadow call is made for these).
    pub sample_rate: f64,
    /// Answers waiting to be scored at most; more are dropped and counted.
    pub queue: usize,
}

impl Default for ReferenceSection {
    fn default() -> Self {
        ReferenceSection {
            path: PathBuf::new(),
            from_first: 0,
            sample_rate: 0.1,
            queue: 1024,
        }
    }
}

/// `[model]`: what this pod serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Value of the `model` label on every series.
    pub name: String,
    /// This pod's model version: the `version` label on primary-path series.
    pub version: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: "model".into(),
            version: "unknown".into(),
        }
    }
}

/// `[listen]`: the two ports. Admin endpoints are never served on the proxy port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Clients and the Service talk to this.
    pub proxy: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`, `/feedback`, `/labels`, `/`.
    pub admin: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            proxy: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

/// `[primary]`: the model server in this pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrimaryConfig {
    /// Required. `http://host:port`, no path.
    pub url: String,
    /// Whole-request limit for the primary, headers to last byte; over it the client gets 504.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Also count 4xx answers in `model_inference_errors_total` (5xx and transport errors always count).
    pub count_4xx_as_errors: bool,
    /// The primary's HTTP/2 endpoint (`h2c://host:port`, prior knowledge), where the
    /// proxy port's HTTP/2 clients (gRPC) are forwarded; `""` = the proxy port speaks
    /// HTTP/1.1 only. Model servers serve gRPC on a port of their own (Triton 8001).
    pub http2_url: String,
    /// The header that carries the request id: read from the client's request (a new
    /// UUIDv7 when absent), set on the forwarded request, the shadow calls and the answer.
    pub request_id_header: String,
}

impl Default for PrimaryConfig {
    fn default() -> Self {
        // Generation can take tens of seconds; 60 s is a common model-server ceiling.
        Self {
            url: String::new(),
            timeout: Duration::from_secs(60),
            count_4xx_as_errors: false,
            http2_url: String::new(),
            request_id_header: "x-request-id".into(),
        }
    }
}

/// `[shadow]`: which requests are mirrored, and how the answers are read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// Share of requests mirrored, 0..=1, decided by a hash of the request id.
    pub sample_rate: f64,
    /// Cap on mirrored requests per second (0 = no cap).
    pub max_per_second: u32,
    /// Concurrent shadow comparisons; over it, a sample is dropped and counted.
    pub max_in_flight: usize,
    /// Limit per shadow call, connect to last byte, for a request of one input. A batch
    /// of N inputs gets `timeout + (N - 1) * timeout_per_item`, at most `primary.timeout`.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// What each further input of a batched request adds to `timeout`. A model server's
    /// time for a batch grows about linearly with its inputs (one padded forward pass), so
    /// a fixed limit either cuts batches short or is lax for single inputs.
    #[serde(with = "duration_str")]
    pub timeout_per_item: Duration,
    /// Requests with more inputs than this are not mirrored (counted as `invalid`, reason
    /// `too_many_items`); an answer with more items is refused the same way.
    pub max_batch_items: usize,
    /// Only these methods are mirrored (inference calls are POSTs).
    pub methods: Vec<String>,
    /// Path prefixes to mirror; empty = all paths.
    pub paths: Vec<String>,
    /// How the model servers shape embeddings: openai | tei | kserve_v2 | tfserving | generic.
    pub protocol: Protocol,
    /// generic: JSON pointer to the embedding array (optional override for the others).
    pub embedding_pointer: String,
    /// Any protocol: JSON pointer to the prediction (empty = no prediction).
    pub prediction_pointer: String,
    /// Share of samples also sent to the baseline a second time: the model's noise floor.
    pub self_similarity_rate: f64,
    /// Every sample gets the self-similarity call until this many self pairs exist since
    /// the canary revision started, then `self_similarity_rate` applies: the
    /// noise-adjusted bounds need the noise floor within the first few hundred pairs.
    /// 0 = the rate from the start; ignored when `self_similarity_rate` is 0 (off).
    pub self_similarity_min_pairs: u64,
    /// Use the primary's own response as the side whose version this pod serves.
    pub reuse_primary: bool,
    /// Forward `Authorization` and `Cookie` to shadow targets (off: credentials stay in the pod).
    pub forward_credentials: bool,
    /// Further request headers never sent to shadow targets (case-insensitive).
    pub strip_headers: Vec<String>,
    /// Turn the incoming request into an embeddings request for the shadow calls.
    pub rewrite: Option<Rewrite>,
    /// gRPC methods mirrored (HTTP/2 `:path`), each one a unary embeddings call the
    /// sidecar can read: `/inference.GRPCInferenceService/ModelInfer` (Open Inference
    /// Protocol v2), `/tei.v1.Embed/Embed`, `/tensorflow.serving.PredictionService/Predict`.
    /// Other gRPC calls (streaming, health, metadata) are passed through, never mirrored.
    pub grpc_methods: Vec<String>,
    /// The output tensor holding the embedding in gRPC answers (OIP v2: an output's
    /// `name`, `""` = the first; TF Serving: the `outputs` key, required).
    pub grpc_output: String,
    /// The header added to every mirrored request, so model servers (and a sidecar in
    /// front of the baseline's own pods) can tell shadow traffic apart. Requests arriving
    /// with it are shadow copies already: passed through, never mirrored again.
    pub header: String,
    /// Required without `[[routes]]`; with them, each route names its own.
    pub baseline: TargetConfig,
    pub canary: TargetConfig,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            // 5 %: enough pairs for a gate within minutes at modest traffic.
            sample_rate: 0.05,
            max_per_second: 50,
            max_in_flight: 64,
            timeout: Duration::from_secs(2),
            // all-MiniLM-L6-v2 (numpy, one core; ../shared/real_models) took 98 ms for one
            // 256-token input and 145 ms per input in a batch of 32 such inputs (4.6 s);
            // 200 ms leaves room for a busy node. A batch of 32 then gets 8.2 s.
            timeout_per_item: Duration::from_millis(200),
            // OpenAI's own cap on inputs per embeddings request.
            max_batch_items: crate::protocol::DEFAULT_MAX_ITEMS,
            methods: vec!["POST".into()],
            paths: Vec::new(),
            protocol: Protocol::OpenAi,
            embedding_pointer: String::new(),
            prediction_pointer: String::new(),
            self_similarity_rate: 0.05,
            // An unchanged canary of a sampling model passes the noise-adjusted gate after
            // ~260 paired self pairs (src/drift.rs); the cost is up to 300 extra baseline
            // calls per canary revision and sidecar.
            self_similarity_min_pairs: 300,
            reuse_primary: false,
            forward_credentials: false,
            strip_headers: Vec::new(),
            rewrite: None,
            // TF Serving's Predict needs grpc_output (its outputs are a map): listed by
            // whoever sets it.
            grpc_methods: [GrpcProtocol::OipV2, GrpcProtocol::Tei]
                .iter()
                .map(|p| p.method_path().to_string())
                .collect(),
            grpc_output: String::new(),
            header: DEFAULT_SHADOW_HEADER.into(),
            baseline: TargetConfig::default(),
            canary: TargetConfig::default(),
        }
    }
}

/// `shadow.header` unless set.
pub const DEFAULT_SHADOW_HEADER: &str = "x-shadowgate-shadow";

/// `[shadow.baseline]` / `[shadow.canary]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// Required. `http://host:port`.
    pub url: String,
    /// Required. The label value of this side.
    pub version: String,
    /// This side's HTTP/2 endpoint (`h2c://host:port`) for mirrored gRPC calls; required
    /// when `primary.http2_url` is set and `shadow.grpc_methods` is not empty.
    pub http2_url: String,
}

/// `[drift]`: the statistics behind the drift gauges.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSection {
    /// Sliding window of the mean / quantile gauges.
    #[serde(with = "duration_str")]
    pub window: Duration,
    /// Below this many pairs, ratio, quantile and bound gauges are NaN.
    pub min_pairs: u64,
    /// Cosine under which a pair counts as "low".
    pub floor: f64,
    /// Per side, for the confidence sequences.
    pub alpha: f64,
}

impl Default for DriftSection {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            min_pairs: 50,
            floor: 0.8,
            alpha: 0.025,
        }
    }
}

impl From<&DriftSection> for crate::drift::DriftConfig {
    /// `[drift]`, validated by the configuration.
    fn from(d: &DriftSection) -> Self {
        crate::drift::DriftConfig {
            window: d.window,
            min_pairs: d.min_pairs,
            floor: d.floor,
            alpha: d.alpha,
        }
    }
}

/// `[shadow_log]`: the Parquet tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowLogConfig {
    /// Root of the Hive-partitioned tree; `""` turns the shadow log off. A URL
    /// (`s3://bucket/prefix`, `az://...`) writes to object storage through
    /// the local spool `spool_dir`.
    pub dir: PathBuf,
    /// With an object-store `dir`: where files are written and wait for their upload.
    pub spool_dir: PathBuf,
    /// With an object-store `dir`: bytes of closed files the spool holds at most while
    /// the store is slow or down; beyond it new rows are dropped and counted.
    pub spool_max_bytes: u64,
    /// With an object-store `dir`: how long one request to the store may take.
    #[serde(with = "duration_str")]
    pub upload_timeout: Duration,
    pub max_rows_per_file: usize,
    #[serde(with = "duration_str")]
    pub max_file_age: Duration,
    /// Rows; when full, drop and count.
    pub queue_capacity: usize,
    /// Write the request body into `input` (may hold personal data).
    pub store_inputs: bool,
    pub store_embeddings: bool,
}

impl Default for ShadowLogConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/shadowgate"),
            spool_dir: PathBuf::from("/var/lib/shadowgate/spool"),
            // An hour of a busy pod's rows with embeddings; an emptyDir's sizeLimit above it.
            spool_max_bytes: 1 << 30,
            upload_timeout: Duration::from_secs(30),
            max_rows_per_file: 100_000,
            // The batch job sees fresh data within a minute.
            max_file_age: Duration::from_secs(60),
            queue_capacity: 65_536,
            store_inputs: false,
            store_embeddings: false,
        }
    }
}

impl ShadowLogConfig {
    /// `dir` when it is an object-store URL of a known scheme.
    pub fn remote_url(&self) -> Option<&str> {
        let d = self.dir.to_str()?;
        let (scheme, _) = d.split_once("://")?;
        crate::store::SCHEMES.contains(&scheme).then_some(d)
    }
}

/// `[feedback]`: online joins of labels and business events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// How long a request's versions and predictions are kept for online joins.
    #[serde(with = "duration_str")]
    pub label_ttl: Duration,
    #[serde(with = "duration_str")]
    pub conversion_window: Duration,
    /// If set, `/feedback` and `/labels` need `Authorization: Bearer <token>`.
    pub token: String,
    /// Request ids remembered at most; the oldest are evicted (and counted) beyond it.
    pub max_tracked: usize,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            label_ttl: Duration::from_secs(3600),
            conversion_window: Duration::from_secs(900),
            token: String::new(),
            // ~65 bytes per tracked id: 100k ≈ 6.5 MiB, an hour of ~30 req/s per pod.
            max_tracked: 100_000,
        }
    }
}

/// `[limits]`: inbound overload protection on the proxy port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted (413 above). Also bounds what a mirrored request buffers.
    pub max_body_bytes: usize,
    /// Largest shadow response read.
    pub max_shadow_response_bytes: usize,
    /// Concurrent client connections; above it new connections get 503 and are closed.
    pub max_connections: usize,
    /// Time allowed for a client to send the request headers.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// Longest pause allowed between two reads of a request body (not a total, like
    /// nginx's `client_body_timeout`): a client that stalls longer gets `408` and its
    /// request is abandoned, so it holds no shadow permit and is not blamed on the primary.
    #[serde(with = "duration_str")]
    pub body_read_timeout: Duration,
    /// Grace period on SIGTERM for in-flight requests and shadow work.
    #[serde(with = "duration_str")]
    pub shutdown_grace: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_shadow_response_bytes: 64 << 20,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            // nginx's client_body_timeout is 60 s; half that, as a stalled body also holds
            // an upstream connection (and, when mirrored, a shadow permit) while it waits.
            body_read_timeout: Duration::from_secs(30),
            // Kubernetes' default terminationGracePeriodSeconds is 30.
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// `[metrics]`: shape of the primary-path series.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Upper edges of the `tokens_generated_bucket` label; above the last, `+Inf`.
    pub token_buckets: Vec<u64>,
    /// JSON key holding the generated token count in the primary's response.
    pub tokens_field: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            token_buckets: vec![16, 64, 256, 1024],
            tokens_field: "completion_tokens".into(),
        }
    }
}

/// `[gates]`: the thresholds of the recipe's gates, used by the status page's verdicts.
/// Keep them equal to the AnalysisTemplates in `deploy/argo/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatesConfig {
    pub max_error_rate: f64,
    #[serde(with = "duration_str")]
    pub max_p99: Duration,
    /// Median canary/baseline latency on the same inputs the canary may not exceed.
    pub max_latency_ratio: f64,
    /// Mean cosine the canary must keep (the recipe's 0.92).
    pub cosine_threshold: f64,
    /// Largest share of pairs allowed under `drift.floor`.
    pub low_similarity_budget: f64,
    /// Largest share of pairs under `drift.floor` allowed in any one slice.
    pub slice_low_similarity_budget: f64,
    /// accuracy(canary) / accuracy(baseline) must stay above this.
    pub accuracy_ratio: f64,
    /// Labeled pairs (all canary pods together) before the accuracy gate may fail: the
    /// `min-labeled-pairs` argument of `deploy/argo/accuracy-ratio.yaml`.
    pub min_labeled_pairs: u64,
    /// conversion(canary) / conversion(baseline) must stay above this.
    pub conversion_ratio: f64,
}

impl Default for GatesConfig {
    fn default() -> Self {
        // The published recipe's stage gates.
        Self {
            max_error_rate: 0.001,
            max_p99: Duration::from_millis(500),
            // A canary proven more than 10 % slower fails; 20 % slower fails in time.
            max_latency_ratio: 1.1,
            cosine_threshold: 0.92,
            low_similarity_budget: 0.02,
            // A slice is a small share of traffic: a looser budget, still far under the
            // 20-100 % a broken slice shows.
            slice_low_similarity_budget: 0.05,
            accuracy_ratio: 0.95,
            min_labeled_pairs: 200,
            conversion_ratio: 0.98,
        }
    }
}

/// One problem in a configuration, with the key's path and the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Everything wrong with a configuration, reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    /// The problems, for tests and tooling.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

impl Config {
    /// Read a file, apply `SHADOWGATE_*` overrides from the process environment, validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_with_env(&text, std::env::vars())
    }

    /// Parse TOML text, apply overrides from `env`, and validate.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                return Err(ConfigError::Invalid(vec![ConfigProblem {
                    key: "(file)".into(),
                    message: format!("not valid TOML: {}", e.message().trim()),
                }]))
            }
        };
        apply_env(&mut table, env, &mut problems);
        let settings = collect_unknown_and_deserialize(table, &mut problems);
        let checked = settings.as_ref().and_then(|s| s.validate(&mut problems));
        match (settings, checked) {
            (Some(settings), Some(checked)) if problems.is_empty() => {
                Ok(Config { settings, checked })
            }
            _ => Err(ConfigError::Invalid(problems)),
        }
    }

    /// The values validation parsed.
    pub fn checked(&self) -> &Checked {
        &self.checked
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.settings).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

impl Settings {
    /// Semantic checks after deserialisation; pushes every problem found, and returns the
    /// typed values when there was none.
    fn validate(&self, problems: &mut Vec<ConfigProblem>) -> Option<Checked> {
        let mut bad = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.into(),
                message,
            });
        };
        let primary_url = check_url(&self.primary.url, "primary.url", &mut bad);
        let with_routes = !self.routes.is_empty();
        if with_routes {
            for (key, t) in [
                ("shadow.baseline", &self.shadow.baseline),
                ("shadow.canary", &self.shadow.canary),
            ] {
                if !t.url.is_empty() || !t.version.is_empty() {
                    bad(key, "is set beside [[routes]]: each route names its own baseline and candidates; move this side into a route".into());
                }
            }
            if self.shadow.reuse_primary {
                bad("shadow.reuse_primary", "cannot be used with [[routes]] yet: the primary answers for several models; turn it off".into());
            }
        }
        let shadow_pair = |url: &str, key: &str, bad: &mut dyn FnMut(&str, String)| {
            if with_routes {
                Some(http::Uri::from_static("http://unused.invalid"))
            } else {
                check_url(url, key, &mut |k: &str, m: String| bad(k, m))
            }
        };
        let baseline_url = shadow_pair(&self.shadow.baseline.url, "shadow.baseline.url", &mut bad);
        let canary_url = shadow_pair(&self.shadow.canary.url, "shadow.canary.url", &mut bad);
        let primary_http2_url =
            check_http2_url(&self.primary.http2_url, "primary.http2_url", &mut bad);
        let baseline_http2_url = check_http2_url(
            &self.shadow.baseline.http2_url,
            "shadow.baseline.http2_url",
            &mut bad,
        );
        let canary_http2_url = check_http2_url(
            &self.shadow.canary.http2_url,
            "shadow.canary.http2_url",
            &mut bad,
        );
        let mut grpc_methods = Vec::new();
        for (i, m) in self.shadow.grpc_methods.iter().enumerate() {
            match GrpcProtocol::from_method_path(m) {
                Some(p) if !grpc_methods.contains(&p) => grpc_methods.push(p),
                Some(_) => {}
                None => bad(
                    &format!("shadow.grpc_methods[{i}]"),
                    format!(
                        "{m:?} is not a gRPC method the sidecar can read embeddings from; use one of {}",
                        GrpcProtocol::ALL.map(|p| format!("{:?}", p.method_path())).join(", ")
                    ),
                ),
            }
        }
        let mirrors_grpc = !self.primary.http2_url.is_empty()
            && !self.shadow.grpc_methods.is_empty()
            && self.shadow.sample_rate > 0.0;
        if mirrors_grpc && with_routes {
            bad("shadow.grpc_methods", "routes mirror HTTP/1.1 requests only: with [[routes]] and primary.http2_url, set shadow.grpc_methods = [] (gRPC calls are then passed through, not mirrored)".into());
        }
        if mirrors_grpc && !with_routes {
            for (key, url) in [
                ("shadow.baseline.http2_url", &self.shadow.baseline.http2_url),
                ("shadow.canary.http2_url", &self.shadow.canary.http2_url),
            ] {
                if url.is_empty() {
                    bad(key, "is required: primary.http2_url is set, so the gRPC calls of shadow.grpc_methods are mirrored, and this side must be called over HTTP/2 too; give its gRPC port, e.g. \"h2c://127.0.0.1:8001\", or set shadow.grpc_methods = [] to mirror none".into());
                }
            }
            if grpc_methods.contains(&GrpcProtocol::TfServing) && self.shadow.grpc_output.is_empty()
            {
                bad("shadow.grpc_output", "is required with /tensorflow.serving.PredictionService/Predict: a PredictResponse's outputs are a map with no order; name the output holding the embedding, e.g. \"embeddings\"".into());
            }
        } else {
            grpc_methods.clear();
        }
        if self.model.name.is_empty() {
            bad(
                "model.name",
                "must not be empty: it is the `model` label on every series".into(),
            );
        }
        if self.model.version.is_empty() {
            bad(
                "model.version",
                "must not be empty: set this pod's model version, e.g. \"v2\"".into(),
            );
        }
        for (key, v) in [
            ("shadow.baseline.version", &self.shadow.baseline.version),
            ("shadow.canary.version", &self.shadow.canary.version),
        ] {
            if v.is_empty() && !with_routes {
                bad(
                    key,
                    "is required: the version label of this side, e.g. \"v1\"".into(),
                );
            }
        }
        let sample_rate = SampleRate::try_new(self.shadow.sample_rate).map_err(|_| {
            bad(
                "shadow.sample_rate",
                format!(
                    "{} is not a share: use a number from 0 to 1, e.g. 0.05",
                    self.shadow.sample_rate
                ),
            )
        });
        let self_similarity_rate =
            SampleRate::try_new(self.shadow.self_similarity_rate).map_err(|_| {
                bad(
                    "shadow.self_similarity_rate",
                    format!(
                        "{} is not a share: use a number from 0 to 1",
                        self.shadow.self_similarity_rate
                    ),
                )
            });
        if self.shadow.self_similarity_min_pairs > MAX_SELF_SIMILARITY_MIN_PAIRS {
            bad(
                "shadow.self_similarity_min_pairs",
                format!(
                    "{} would call the baseline twice for every sample for that long; the \
                     bounds need a few hundred, e.g. 300 (at most {MAX_SELF_SIMILARITY_MIN_PAIRS})",
                    self.shadow.self_similarity_min_pairs
                ),
            );
        }
        if self.shadow.max_in_flight == 0 {
            bad(
                "shadow.max_in_flight",
                "must be at least 1 (set shadow.sample_rate = 0 to turn mirroring off)".into(),
            );
        }
        if self.shadow.timeout.is_zero() {
            bad(
                "shadow.timeout",
                "must be greater than 0, e.g. \"2s\"".into(),
            );
        }
        if self.shadow.max_batch_items == 0 {
            bad(
                "shadow.max_batch_items",
                "must be at least 1, e.g. 2048 (OpenAI's cap on inputs per request)".into(),
            );
        }
        if self.primary.timeout.is_zero() {
            bad(
                "primary.timeout",
                "must be greater than 0, e.g. \"60s\"".into(),
            );
        }
        let mut methods = Vec::new();
        for (i, m) in self.shadow.methods.iter().enumerate() {
            match http::Method::from_bytes(m.as_bytes()) {
                Ok(method) if !m.is_empty() => methods.push(method),
                _ => bad(
                    &format!("shadow.methods[{i}]"),
                    format!("{m:?} is not an HTTP method, e.g. \"POST\""),
                ),
            }
        }
        let mut strip_headers = Vec::new();
        for (i, h) in self.shadow.strip_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(name) => strip_headers.push(name),
                Err(_) => bad(
                    &format!("shadow.strip_headers[{i}]"),
                    format!("{h:?} is not a header name, e.g. \"x-api-key\""),
                ),
            }
        }
        let request_id_header = HeaderName::from_bytes(
            self.primary
                .request_id_header
                .to_ascii_lowercase()
                .as_bytes(),
        )
        .map_err(|_| {
            bad(
                "primary.request_id_header",
                format!(
                    "{:?} is not a header name, e.g. \"x-request-id\"",
                    self.primary.request_id_header
                ),
            )
        });
        for (i, p) in self.shadow.paths.iter().enumerate() {
            if !p.starts_with('/') {
                bad(
                    &format!("shadow.paths[{i}]"),
                    format!("{p:?} must start with '/', e.g. \"/v1/embeddings\""),
                );
            }
        }
        let extractor = Extractor::new(
            self.shadow.protocol,
            &self.shadow.embedding_pointer,
            &self.shadow.prediction_pointer,
        )
        .map(|e| e.with_max_items(self.shadow.max_batch_items));
        if let Err(e) = &extractor {
            let key = if self.shadow.protocol == Protocol::Generic
                && self.shadow.embedding_pointer.is_empty()
            {
                "shadow.embedding_pointer"
            } else {
                "shadow.prediction_pointer"
            };
            bad(
                key,
                format!("{e} (a JSON pointer such as \"/data/0/embedding\")"),
            );
        }
        if self.shadow.reuse_primary && self.shadow.rewrite.is_some() {
            bad("shadow.reuse_primary", "cannot be used with shadow.rewrite: the primary's answer is not an embeddings answer; turn one off".into());
        }
        if let Some(r) = &self.shadow.rewrite {
            if !r.path.starts_with('/') {
                bad(
                    "shadow.rewrite.path",
                    format!("{:?} must start with '/', e.g. \"/v1/embeddings\"", r.path),
                );
            }
            if !(r.input_pointer.is_empty() || r.input_pointer.starts_with('/')) {
                bad(
                    "shadow.rewrite.input_pointer",
                    format!(
                        "{:?} is not a JSON pointer, e.g. \"/messages/0/content\"",
                        r.input_pointer
                    ),
                );
            }
        }
        if self.drift.window.is_zero() {
            bad("drift.window", "must be greater than 0, e.g. \"5m\"".into());
        }
        if !(self.drift.floor > -1.0 && self.drift.floor < 1.0) {
            bad(
                "drift.floor",
                format!(
                    "{} must lie strictly between -1 and 1, e.g. 0.8",
                    self.drift.floor
                ),
            );
        }
        if !(self.drift.alpha > 0.0 && self.drift.alpha < 0.5) {
            bad(
                "drift.alpha",
                format!(
                    "{} must lie strictly between 0 and 0.5 (per side), e.g. 0.025",
                    self.drift.alpha
                ),
            );
        }
        if self.shadow_log.max_rows_per_file == 0 {
            bad(
                "shadow_log.max_rows_per_file",
                "must be at least 1, e.g. 100000".into(),
            );
        }
        if self.shadow_log.max_file_age.is_zero() {
            bad(
                "shadow_log.max_file_age",
                "must be greater than 0, e.g. \"60s\"".into(),
            );
        }
        if let Some(url) = self.shadow_log.remote_url() {
            if let Err(e) = crate::store::Remote::from_url(url, self.shadow_log.upload_timeout) {
                bad("shadow_log.dir", e.to_string());
            }
            if self.shadow_log.spool_dir.as_os_str().is_empty() {
                bad(
                    "shadow_log.spool_dir",
                    "must name a local directory when shadow_log.dir is an object-store URL, \
                     e.g. \"/var/lib/shadowgate/spool\""
                        .into(),
                );
            }
            if self.shadow_log.spool_max_bytes == 0 {
                bad(
                    "shadow_log.spool_max_bytes",
                    "must be at least 1, e.g. 1073741824 (1 GiB)".into(),
                );
            }
            if self.shadow_log.upload_timeout.is_zero() {
                bad(
                    "shadow_log.upload_timeout",
                    "must be greater than 0, e.g. \"30s\"".into(),
                );
            }
        } else if self
            .shadow_log
            .dir
            .to_str()
            .is_some_and(|d| d.contains("://"))
        {
            bad(
                "shadow_log.dir",
                format!(
                    "{}: unknown scheme; use a local directory, s3://bucket/prefix or \
                     az://container/prefix",
                    self.shadow_log.dir.display()
                ),
            );
        }
        if self.shadow_log.queue_capacity == 0 {
            bad(
                "shadow_log.queue_capacity",
                "must be at least 1, e.g. 65536".into(),
            );
        }
        if self.feedback.max_tracked == 0 {
            bad(
                "feedback.max_tracked",
                "must be at least 1, e.g. 100000".into(),
            );
        }
        if self.limits.max_connections == 0 {
            bad(
                "limits.max_connections",
                "must be at least 1, e.g. 4096".into(),
            );
        }
        if self.limits.max_body_bytes == 0 {
            bad(
                "limits.max_body_bytes",
                "must be at least 1, e.g. 16777216".into(),
            );
        }
        if self.limits.body_read_timeout.is_zero() {
            bad(
                "limits.body_read_timeout",
                "must be greater than 0, e.g. \"30s\" (the longest pause between two reads of a request body)".into(),
            );
        }
        if self.metrics.token_buckets.windows(2).any(|w| w[0] >= w[1]) {
            bad(
                "metrics.token_buckets",
                "must be strictly increasing, e.g. [16, 64, 256, 1024]".into(),
            );
        }
        self.validate_tls(&mut bad);
        let slicer = self.slices.slicer().map_err(|slice_problems| {
            for p in slice_problems {
                bad(&p.key, p.message);
            }
        });
        let reference_sample_rate = SampleRate::try_new(self.reference.sample_rate).map_err(|_| {
            bad(
                "reference.sample_rate",
                format!(
                    "{} is not a share: use a number from 0 to 1, e.g. 0.1",
                    self.reference.sample_rate
                ),
            )
        });
        let reference = self.load_reference(&mut bad);
        let shadow_header = HeaderName::from_bytes(
            self.shadow.header.to_ascii_lowercase().as_bytes(),
        )
        .map_err(|_| {
            bad(
                "shadow.header",
                format!(
                    "{:?} is not a header name, e.g. \"x-shadowgate-shadow\"",
                    self.shadow.header
                ),
            )
        });
        if let (Ok(h), Ok(id)) = (&shadow_header, &request_id_header) {
            if h == id {
                bad("shadow.header", "is also primary.request_id_header: the shadow marker needs a header of its own".into());
            }
        }
        let routes = if with_routes {
            routes::check(&self.routes, &self.shadow, &mut bad)
        } else {
            None
        };
        if self.listen.proxy == self.listen.admin && self.listen.proxy.port() != 0 {
            bad("listen.admin", format!("{} is also listen.proxy: admin endpoints need their own port, e.g. \"0.0.0.0:9090\"", self.listen.admin));
        }
        let extractor = Arc::new(extractor.ok()?);
        let routes = match routes {
            Some(r) => r,
            None if with_routes => return None,
            // Without [[routes]], the [shadow] pair is the one route.
            None => vec![CheckedRoute {
                model: self.model.name.clone(),
                matcher: RouteMatch::All,
                protocol: self.shadow.protocol,
                extractor: extractor.clone(),
                baseline: routes::CheckedTarget {
                    url: baseline_url.clone()?,
                    version: self.shadow.baseline.version.clone(),
                },
                candidates: vec![routes::CheckedCandidate {
                    target: routes::CheckedTarget {
                        url: canary_url.clone()?,
                        version: self.shadow.canary.version.clone(),
                    },
                    share: self.shadow.sample_rate,
                }],
            }],
        };
        Some(Checked {
            routes,
            shadow_header: shadow_header.ok()?,
            primary_url: primary_url?,
            baseline_url: baseline_url?,
            canary_url: canary_url?,
            sample_rate: sample_rate.ok()?,
            self_similarity_rate: self_similarity_rate.ok()?,
            methods,
            strip_headers,
            primary_http2_url: primary_http2_url.ok()?,
            baseline_http2_url: baseline_http2_url.ok()?,
            canary_http2_url: canary_http2_url.ok()?,
            grpc_methods,
            request_id_header: request_id_header.ok()?,
            extractor,
            slicer: Arc::new(slicer.ok()?),
            reference: reference.ok()?,
            reference_sample_rate: reference_sample_rate.ok()?,
        })
    }

    /// `reference.path`: readable, a reference, for `model.name`. (Its dimension is
    /// checked against the first answers: the config does not know the model's.)
    fn load_reference(
        &self,
        bad: &mut impl FnMut(&str, String),
    ) -> Result<Option<Arc<crate::reference::Reference>>, ()> {
        let path = &self.reference.path;
        let first = self.reference.from_first;
        if first > 0 && first < crate::reference::MIN_FROM_FIRST {
            bad(
                "reference.from_first",
                format!(
                    "{first} is too few to calibrate on; use at least {}, e.g. 5000, or 0 for off",
                    crate::reference::MIN_FROM_FIRST
                ),
            );
        }
        if first > 0 && !path.as_os_str().is_empty() {
            bad(
                "reference.from_first",
                "set either reference.path (a reference file) or reference.from_first \
                 (build one in the pod), not both"
                    .into(),
            );
        }
        if (first > 0 || !path.as_os_str().is_empty()) && self.reference.queue == 0 {
            bad("reference.queue", "must be at least 1, e.g. 1024".into());
        }
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        let r = crate::reference::Reference::load(path).map_err(|e| {
            bad(
                "reference.path",
                format!(
                    "{e}; build one with `shadowgate reference build --model {} ...`",
                    self.model.name
                ),
            )
        })?;
        r.check(path, &self.model.name, r.dim)
            .map_err(|e| bad("reference.path", e.to_string()))?;
        if r.one_look {
            bad(
                "reference.path",
                format!(
                    "{} was built with --one-look, a test of one batch, and the sidecar watches a stream: build one with `shadowgate reference build` without --one-look",
                    path.display()
                ),
            );
            return Err(());
        }
        Ok(Some(Arc::new(r)))
    }

    /// `[tls]`: the CA bundle must be usable now, not at the first https call; an https
    /// upstream needs some root to be trusted.
    fn validate_tls(&self, bad: &mut impl FnMut(&str, String)) {
        if !self.tls.ca_file.as_os_str().is_empty() {
            let anchors = crate::tls::root_store(&TlsConfig {
                system_roots: false,
                ..self.tls.clone()
            });
            if let Err(e) = anchors {
                bad("tls.ca_file", e.to_string());
            }
        } else if !self.tls.system_roots {
            for (key, url) in [
                ("primary.url", &self.primary.url),
                ("shadow.baseline.url", &self.shadow.baseline.url),
                ("shadow.canary.url", &self.shadow.canary.url),
                ("primary.http2_url", &self.primary.http2_url),
                ("shadow.baseline.http2_url", &self.shadow.baseline.http2_url),
                ("shadow.canary.http2_url", &self.shadow.canary.http2_url),
            ] {
                if is_https(url) {
                    bad("tls.ca_file", format!("{key} {url:?} uses https but no root is trusted: set tls.ca_file to the PEM file of the CA that signed it, or tls.system_roots = true"));
                }
            }
            for (i, r) in self.routes.iter().enumerate() {
                let urls =
                    std::iter::once(&r.baseline.url).chain(r.candidates.iter().map(|c| &c.url));
                if let Some(url) = urls.into_iter().find(|u| is_https(u)) {
                    bad("tls.ca_file", format!("routes[{i}] {url:?} uses https but no root is trusted: set tls.ca_file to the PEM file of the CA that signed it, or tls.system_roots = true"));
                }
            }
        }
    }

    /// Whether any upstream is `https://` (only then are certificates read at start).
    pub fn uses_https(&self) -> bool {
        [
            &self.primary.url,
            &self.shadow.baseline.url,
            &self.shadow.canary.url,
            &self.primary.http2_url,
            &self.shadow.baseline.http2_url,
            &self.shadow.canary.http2_url,
        ]
        .into_iter()
        .chain(self.routes.iter().flat_map(|r| {
            std::iter::once(&r.baseline.url).chain(r.candidates.iter().map(|c| &c.url))
        }))
        .any(|u| is_https(u))
    }
}

/// `url` as an upstream's base URL: scheme http or https, a host, no path.
fn check_url(url: &str, key: &str, bad: &mut impl FnMut(&str, String)) -> Option<http::Uri> {
    if url.is_empty() {
        bad(
            key,
            "is required: the model server's base URL, e.g. \"http://127.0.0.1:8000\"".into(),
        );
        return None;
    }
    match url.parse::<http::Uri>() {
        Ok(u) => {
            let scheme_ok = matches!(u.scheme_str(), Some("http" | "https"));
            if !scheme_ok || u.authority().is_none() {
                bad(
                    key,
                    format!("{url:?} needs a scheme (http or https) and host, e.g. \"http://127.0.0.1:8000\""),
                );
                None
            } else if u.path() != "/" && !u.path().is_empty() {
                bad(key, format!("{url:?} has a path; give only scheme, host and port (the client's path is kept)"));
                None
            } else {
                Some(u)
            }
        }
        Err(e) => {
            bad(
                key,
                format!("{url:?} is not a URL ({e}), e.g. \"http://127.0.0.1:8000\""),
            );
            None
        }
    }
}

/// An HTTP/2 endpoint: `""` (none), `h2c://host:port` (`http://` is read the same way:
/// HTTP/2 with prior knowledge, no TLS), or `https://host:port` (TLS with ALPN `h2`).
/// `Err` after reporting a problem.
fn check_http2_url(
    url: &str,
    key: &str,
    bad: &mut impl FnMut(&str, String),
) -> Result<Option<http::Uri>, ()> {
    if url.is_empty() {
        return Ok(None);
    }
    let example = "e.g. \"h2c://127.0.0.1:8001\"";
    match url.parse::<http::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("h2c" | "http" | "https"))
                && u.authority().is_some() =>
        {
            if u.path() != "/" && !u.path().is_empty() {
                bad(
                    key,
                    format!("{url:?} has a path; give only scheme, host and port, {example}"),
                );
                return Err(());
            }
            Ok(Some(u))
        }
        Ok(_) => {
            bad(
                key,
                format!("{url:?} needs the scheme h2c (prior knowledge) or https (TLS, ALPN h2) and a host, {example}"),
            );
            Err(())
        }
        Err(e) => {
            bad(key, format!("{url:?} is not a URL ({e}), {example}"));
            Err(())
        }
    }
}

fn is_https(url: &str) -> bool {
    url.parse::<http::Uri>()
        .is_ok_and(|u| u.scheme() == Some(&http::uri::Scheme::HTTPS))
}

/// Apply `SHADOWGATE_A__B__C=value` as `a.b.c = value`. The value is read as a TOML
/// value when it parses as one (numbers, booleans, arrays, inline tables), else as a string.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<ConfigProblem>,
) {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in env {
        if let Some(rest) = k.strip_prefix(ENV_PREFIX) {
            if rest.contains("__") {
                vars.insert(rest.to_string(), v);
            }
        }
    }
    for (rest, raw) in vars {
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|s| s.is_empty()) {
            problems.push(ConfigProblem {
                key: format!("{ENV_PREFIX}{rest}"),
                message: "empty path segment; use SHADOWGATE_<SECTION>__<KEY>".into(),
            });
            continue;
        }
        let value = parse_env_value(path.last().map_or("", String::as_str), &raw);
        if let Err(seg) = set_path(table, &path, value) {
            problems.push(ConfigProblem {
                key: format!("{ENV_PREFIX}{rest}"),
                message: format!("{seg} is a value, not a section"),
            });
        }
    }
}

/// Set `path` (non-empty) in `table`, creating sections; Err names a segment that is a value.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(first.clone()),
            }
        }
    }
}

/// Keys whose values are always strings, even when they look like numbers
/// (`SHADOWGATE_MODEL__VERSION=2` is the version "2", not the integer 2).
const STRING_KEYS: [&str; 17] = [
    "http2_url",
    "grpc_output",
    "request_id_header",
    "name",
    "version",
    "url",
    "token",
    "dir",
    "protocol",
    "embedding_pointer",
    "prediction_pointer",
    "path",
    "input_pointer",
    "ca_file",
    "codebook",
    "pointer",
    "header",
];

fn parse_env_value(key: &str, raw: &str) -> toml::Value {
    if STRING_KEYS.contains(&key) {
        return toml::Value::String(raw.to_string());
    }
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Deserialize, collecting every unknown key and type error rather than stopping at the
/// first: each section is deserialised on its own so one bad section does not hide another.
fn collect_unknown_and_deserialize(
    table: toml::Table,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Settings> {
    let mut config = Settings::default();
    let mut ok = true;
    for (section, value) in table {
        macro_rules! section {
            ($field:ident) => {{
                match section_from(&section, value, problems) {
                    Some(v) => config.$field = v,
                    None => ok = false,
                }
            }};
        }
        match section.as_str() {
            "model" => section!(model),
            "listen" => section!(listen),
            "primary" => section!(primary),
            "shadow" => section!(shadow),
            "drift" => section!(drift),
            "shadow_log" => section!(shadow_log),
            "feedback" => section!(feedback),
            "limits" => section!(limits),
            "metrics" => section!(metrics),
            "gates" => section!(gates),
            "tls" => section!(tls),
            "slices" => section!(slices),
            "reference" => section!(reference),
            "routes" => match value {
                toml::Value::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        match section_from(&format!("routes[{i}]"), item, problems) {
                            Some(r) => config.routes.push(r),
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    ok = false;
                    problems.push(ConfigProblem {
                        key: "routes".into(),
                        message: "must be a list of tables ([[routes]])".into(),
                    });
                }
            },
            other => {
                ok = false;
                problems.push(ConfigProblem {
                    key: other.to_string(),
                    message: "unknown section; known: model, listen, primary, shadow, drift, shadow_log, feedback, limits, metrics, gates, tls, slices, reference, routes".into(),
                });
            }
        }
    }
    ok.then_some(config)
}

fn section_from<T: serde::de::DeserializeOwned>(
    section: &str,
    value: toml::Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    // Report every unknown key of the section, then the first type error (serde stops there).
    let before = problems.len();
    if let toml::Value::Table(t) = &value {
        let mut probe = t.clone();
        loop {
            match T::deserialize(toml::Value::Table(probe.clone())) {
                Ok(v) => {
                    if problems.len() == before {
                        return Some(v);
                    }
                    return None;
                }
                Err(e) => {
                    let msg = e.message().to_string();
                    if let Some(unknown) = unknown_field_name(&msg) {
                        let nested = find_and_remove(&mut probe, &unknown);
                        problems.push(ConfigProblem {
                            key: format!("{section}.{}", nested.unwrap_or(unknown.clone())),
                            message: format!("unknown key; {}", expected_list(&msg)),
                        });
                        if problems.len() - before > 64 {
                            return None;
                        }
                        continue;
                    }
                    problems.push(ConfigProblem {
                        key: section.to_string(),
                        message: msg,
                    });
                    return None;
                }
            }
        }
    }
    problems.push(ConfigProblem {
        key: section.to_string(),
        message: "must be a table ([section])".into(),
    });
    None
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

fn expected_list(msg: &str) -> String {
    match msg.find("expected") {
        Some(i) => msg[i..].to_string(),
        None => "check the spelling against DESIGN.md".into(),
    }
}

/// Remove the unknown key, searching nested tables, and return its dotted path.
fn find_and_remove(table: &mut toml::Table, key: &str) -> Option<String> {
    if table.remove(key).is_some() {
        return Some(key.to_string());
    }
    for (name, v) in table.iter_mut() {
        if let toml::Value::Table(t) = v {
            if let Some(p) = find_and_remove(t, key) {
                return Some(format!("{name}.{p}"));
            }
        }
    }
    None
}

/// Durations as strings like "250ms", "2s", "5m" (humantime).
pub mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); use e.g. \"250ms\", \"2s\", \"5m\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[primary]
url = "http://127.0.0.1:8000"
[shadow.baseline]
url = "http://127.0.0.1:8001"
version = "v1"
[shadow.canary]
url = "http://127.0.0.1:8002"
version = "v2"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.shadow.sample_rate, 0.05);
        assert_eq!(c.shadow.max_in_flight, 64);
        assert_eq!(c.shadow.timeout, Duration::from_secs(2));
        assert_eq!(c.drift.window, Duration::from_secs(300));
        assert_eq!(c.shadow.methods, vec!["POST".to_string()]);
        assert!(c.tls.system_roots);
        assert!(c.tls.ca_file.as_os_str().is_empty());
    }

    #[test]
    fn env_overrides_nested_keys_and_types() {
        let c = load(
            MINIMAL,
            &[
                ("SHADOWGATE_SHADOW__SAMPLE_RATE", "0.5"),
                ("SHADOWGATE_SHADOW__CANARY__VERSION", "v3"),
                ("SHADOWGATE_SHADOW_LOG__DIR", "/tmp/x"),
                ("SHADOWGATE_DRIFT__WINDOW", "1m"),
                ("SHADOWGATE_MODEL__NAME", "m"),
                ("SHADOWGATE_MODEL__VERSION", "2"),
                ("OTHER_VAR", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.shadow.sample_rate, 0.5);
        assert_eq!(c.shadow.canary.version, "v3");
        assert_eq!(c.shadow_log.dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.drift.window, Duration::from_secs(60));
        assert_eq!(c.model.name, "m");
        assert_eq!(
            c.model.version, "2",
            "a version that looks like a number stays a string"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
[primary]
url = ""
colour = "blue"
[shadow]
sample_rate = 1.5
max_in_flight = 0
[shadow.canary]
url = "ftp://x"
[drift]
alpha = 0.9
[bogus]
"#;
        let err = load(text, &[]).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        for k in ["primary.colour", "bogus"] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        // Unknown keys stop deserialisation; fix them and semantic errors all show at once.
        let text = text
            .replace("colour = \"blue\"\n", "")
            .replace("[bogus]\n", "");
        let err = load(&text, &[]).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        for k in [
            "primary.url",
            "shadow.sample_rate",
            "shadow.max_in_flight",
            "shadow.canary.url",
            "shadow.baseline.url",
            "shadow.baseline.version",
            "shadow.canary.version",
            "drift.alpha",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        let shown = err.to_string();
        assert!(shown.contains("e.g."), "errors say how to fix: {shown}");
    }

    #[test]
    fn body_read_timeout_has_a_default_an_env_override_and_refuses_zero() {
        assert_eq!(
            load(MINIMAL, &[]).unwrap().limits.body_read_timeout,
            Duration::from_secs(30)
        );
        let c = load(
            MINIMAL,
            &[("SHADOWGATE_LIMITS__BODY_READ_TIMEOUT", "750ms")],
        )
        .unwrap();
        assert_eq!(c.limits.body_read_timeout, Duration::from_millis(750));
        assert!(c.to_toml().contains("body_read_timeout = \"750ms\""));
        let err = load(
            &format!("{MINIMAL}\n[limits]\nbody_read_timeout = \"0s\"\n"),
            &[],
        )
        .unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(p.key, "limits.body_read_timeout");
        assert!(p.message.contains("e.g. \"30s\""), "{}", p.message);
    }

    #[test]
    fn self_similarity_min_pairs_has_a_default_and_a_ceiling() {
        assert_eq!(
            load(MINIMAL, &[]).unwrap().shadow.self_similarity_min_pairs,
            300
        );
        let key = "SHADOWGATE_SHADOW__SELF_SIMILARITY_MIN_PAIRS";
        assert_eq!(
            load(MINIMAL, &[(key, "0")])
                .unwrap()
                .shadow
                .self_similarity_min_pairs,
            0
        );
        let err = load(MINIMAL, &[(key, "100001")]).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(p.key, "shadow.self_similarity_min_pairs");
        assert!(p.message.contains("e.g. 300"), "{}", p.message);
    }

    #[test]
    fn slices_default_on_and_report_problems_with_the_others() {
        let c = load(MINIMAL, &[]).unwrap();
        let slicer = c.slices.slicer().unwrap();
        assert_eq!(slicer.len(), 20, "4 length slices + 16 regions by default");
        let c = load(
            &format!("{MINIMAL}\n[slices.field]\nheader = \"x-tenant\"\n"),
            &[("SHADOWGATE_SLICES__FIELD__VALUES", "[\"acme\", \"globex\"]")],
        )
        .unwrap();
        assert_eq!(
            c.slices.slicer().unwrap().names()[..3],
            ["field:acme", "field:globex", "field:other"]
        );
        let err = load(
            &format!("{MINIMAL}\n[drift]\nalpha = 0.9\n[slices]\nlength_edges = [256, 64]\n"),
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["drift.alpha", "slices.length_edges"]);
        let err = load(&format!("{MINIMAL}\n[slices]\nbins = 3\n"), &[]).unwrap_err();
        assert_eq!(err.problems()[0].key, "slices.bins");
    }

    const ROUTES: &str = r#"
[primary]
url = "http://127.0.0.1:8000"
[[routes]]
model = "minilm"
aliases = ["all-MiniLM-L6-v2"]
baseline = { url = "http://127.0.0.1:8001", version = "v1" }
candidates = [
  { url = "http://127.0.0.1:8002", version = "v2", share = 0.01 },
  { url = "http://127.0.0.1:8003", version = "v3", share = 0.03 },
]
[[routes]]
model = "bge"
match = "oip_path"
protocol = "kserve_v2"
baseline = { url = "http://127.0.0.1:8004", version = "v1" }
candidates = [{ url = "http://127.0.0.1:8005", version = "v2", share = 0.5 }]
"#;

    #[test]
    fn routes_give_lanes_and_the_shadow_pair_is_one_route_without_them() {
        let c = load(ROUTES, &[]).unwrap();
        let routes = &c.checked().routes;
        assert_eq!(routes.len(), 2);
        assert_eq!(
            routes[0].matcher,
            RouteMatch::Pointer {
                pointer: "/model".into(),
                names: vec!["minilm".into(), "all-MiniLM-L6-v2".into()]
            }
        );
        assert_eq!(routes[0].candidates[1].share, 0.03);
        assert_eq!(routes[1].protocol, Protocol::KServeV2);
        assert_eq!(c.checked().shadow_header.as_str(), "x-shadowgate-shadow");
        // The effective config prints the routes and reads back the same.
        let again = load(&c.to_toml(), &[]).unwrap();
        assert_eq!(again.checked().routes.len(), 2);

        let single = load(MINIMAL, &[]).unwrap();
        let one = &single.checked().routes;
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].matcher, RouteMatch::All);
        assert_eq!(one[0].model, single.model.name);
        assert_eq!(one[0].candidates[0].share, single.shadow.sample_rate);
        assert_eq!(one[0].candidates[0].target.version, "v2");
    }

    #[test]
    fn route_problems_name_the_key_and_the_fix() {
        let keys = |text: &str| -> Vec<(String, String)> {
            load(text, &[])
                .unwrap_err()
                .problems()
                .iter()
                .map(|p| (p.key.clone(), p.message.clone()))
                .collect()
        };
        let over = ROUTES
            .replace("share = 0.5", "share = 0.7")
            .replace("share = 0.03", "share = 0.995");
        let p = keys(&over);
        assert!(
            p.iter()
                .any(|(k, m)| k == "routes[0].candidates" && m.contains("add up to")),
            "{p:?}"
        );
        let p = keys(&ROUTES.replace(
            "aliases = [\"all-MiniLM-L6-v2\"]",
            "aliases = [\"bge\"]\nhedge = 1",
        ));
        assert!(p.iter().any(|(k, _)| k == "routes[0].hedge"), "{p:?}");
        let p = keys(&ROUTES.replace("aliases = [\"all-MiniLM-L6-v2\"]", "aliases = [\"bge\"]"));
        assert!(
            p.iter()
                .any(|(k, m)| k == "routes[1].aliases" && m.contains("routes[0]")),
            "{p:?}"
        );
        let p = keys(&format!(
            "{ROUTES}\n[shadow.canary]\nurl = \"http://127.0.0.1:9\"\n"
        ));
        assert!(
            p.iter()
                .any(|(k, m)| k == "shadow.canary" && m.contains("move")),
            "{p:?}"
        );
        let p = keys(&ROUTES.replace("version = \"v3\"", "version = \"v1\""));
        assert!(
            p.iter()
                .any(|(k, _)| k == "routes[0].candidates[1].version"),
            "{p:?}"
        );
        let p = keys(&ROUTES.replace("model = \"bge\"", "model = \"other\""));
        assert!(p.iter().any(|(k, _)| k == "routes[1].model"), "{p:?}");
        let p = keys(&format!("{ROUTES}\n[shadow]\nheader = \"x request\"\n"));
        assert!(p.iter().any(|(k, _)| k == "shadow.header"), "{p:?}");
        let grpc = ROUTES.replace(
            "[primary]\n",
            "[primary]\nhttp2_url = \"h2c://127.0.0.1:9000\"\n",
        );
        let p = keys(&grpc);
        assert!(
            p.iter()
                .any(|(k, m)| k == "shadow.grpc_methods" && m.contains("grpc_methods = []")),
            "{p:?}"
        );
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = load(
            &format!("{MINIMAL}\n[drift]\nwindow = \"five minutes\"\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.problems()[0].key, "drift");
        assert!(err.problems()[0].message.contains("five minutes"));
    }

    proptest::proptest! {
        /// The loader never panics, whatever the file and the environment hold: every
        /// input is either a config or a list of problems.
        #[test]
        fn loader_never_panics_on_arbitrary_input(
            text in ".{0,400}",
            key in "[A-Z_]{1,24}",
            value in ".{0,40}",
        ) {
            let env = vec![(format!("SHADOWGATE_{key}"), value)];
            let _ = Config::from_toml_with_env(&text, env);
        }

        /// Mutations of a valid file (a line dropped or doubled, a value replaced) also
        /// come back as a config or as problems, never a panic.
        #[test]
        fn loader_never_panics_on_mutated_valid_files(line in 0usize..12, junk in ".{0,20}", dup in proptest::bool::ANY) {
            let mut lines: Vec<String> = MINIMAL.lines().map(str::to_string).collect();
            let i = line % lines.len();
            if dup {
                let l = lines[i].clone();
                lines.insert(i, l);
            } else if let Some((k, _)) = lines[i].clone().split_once('=') {
                lines[i] = format!("{k}= {junk}");
            }
            let _ = Config::from_toml_with_env(&lines.join("\n"), std::iter::empty());
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let c = load(MINIMAL, &[]).unwrap();
        let again = load(&c.to_toml(), &[]).unwrap();
        assert_eq!(again.to_toml(), c.to_toml());
    }
}
