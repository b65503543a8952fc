//! Wiring for `shadowgate serve`: build metrics, clients, mirror, shadow log and both
//! listeners from a validated config; run; shut down in order (stop accepting, finish
//! client requests, drain shadow work, close the shadow log).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use http::header::HeaderName;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::drift::{DriftConfig, DriftState};
use crate::feedback::{Feedback, FeedbackMetrics};
use crate::metrics::{MetricLabels, Metrics, PairOutcome, Target};
use crate::mirror::{Mirror, RecordLabels, ShadowTarget};
use crate::protocol::Extractor;
use crate::proxy::Proxy;
use crate::sampler::{SampleRate, Sampler};
use crate::shadow_log::{self, ShadowLogGuard, ShadowLogMetrics, WriterOptions, WriterSummary};
use crate::slices::SliceStats;
use crate::upstream::Upstream;

/// Why the sidecar could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("invalid setting {key}: {reason}")]
    Setting { key: &'static str, reason: String },
    #[error("shadow_log.dir: {0}")]
    ShadowLog(#[from] crate::shadow_log::ShadowLogError),
}

/// What a finished run did, for logs and tests.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Client connections still open when the grace period ended.
    pub connections_cut: usize,
    /// Shadow comparisons still running when the grace period ended.
    pub shadow_tasks_cut: usize,
    /// What the shadow log wrote, when it is on.
    pub shadow_log: Option<WriterSummary>,
}

/// A running sidecar: its bound addresses and the handle that stops it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    drift: Arc<Mutex<DriftState>>,
    slices: Arc<Mutex<SliceStats>>,
    feedback: Arc<Feedback>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Summary>,
}

impl Running {
    /// The drift statistics now; also brings every computed gauge (drift, slices,
    /// conversion) up to date, as a scrape would.
    pub fn drift_snapshot(&self) -> Option<crate::drift::DriftSnapshot> {
        let now = Instant::now();
        self.feedback.refresh(now);
        if let Ok(s) = self.slices.lock() {
            self.metrics.slices.set(&s);
        }
        let snapshot = self.drift.lock().ok()?.snapshot(now);
        self.metrics.drift.set(&snapshot);
        Some(snapshot)
    }

    /// The online join state, as the mirror and the admin handlers see it.
    pub fn feedback(&self) -> &Arc<Feedback> {
        &self.feedback
    }

    /// Ask for a graceful shutdown and wait for it to complete.
    pub async fn shutdown(self) -> Summary {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The pod name written into shadow records and file names.
pub fn pod_name() -> String {
    for var in ["POD_NAME", "HOSTNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    "local".into()
}

/// Bind both ports and start serving. Returns once both listeners are up.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let cfg = Arc::new(config);
    // Validated with the rest of the config; a problem here names the key all the same.
    let slicer = cfg.slices.slicer().map_err(|problems| {
        let p = problems.into_iter().next();
        ServeError::Setting {
            key: "slices",
            reason: p.map_or_else(String::new, |p| format!("{}: {}", p.key, p.message)),
        }
    })?;
    let metrics = Arc::new(Metrics::new(&MetricLabels {
        model: &cfg.model.name,
        version: &cfg.model.version,
        baseline: &cfg.shadow.baseline.version,
        canary: &cfg.shadow.canary.version,
        floor: cfg.drift.floor,
        token_buckets: &cfg.metrics.token_buckets,
        slices: slicer.names(),
    })?);

    let setting = |key: &'static str, reason: String| ServeError::Setting { key, reason };
    let parse_uri = |key: &'static str, url: &str| -> Result<http::Uri, ServeError> {
        url.parse()
            .map_err(|e: http::uri::InvalidUri| setting(key, e.to_string()))
    };
    let drift_config = DriftConfig {
        window: cfg.drift.window,
        min_pairs: cfg.drift.min_pairs,
        floor: cfg.drift.floor,
        alpha: cfg.drift.alpha,
    };
    let slice_stats = Arc::new(Mutex::new(SliceStats::new(slicer.len(), &drift_config)));
    let slice_names: Arc<[String]> = slicer.names().into();
    let slicer = (!slicer.is_empty()).then(|| Arc::new(slicer));
    let drift = Arc::new(Mutex::new(DriftState::new(drift_config)));
    let rate = SampleRate::try_new(cfg.shadow.sample_rate)
        .map_err(|e| setting("shadow.sample_rate", e.to_string()))?;
    SampleRate::try_new(cfg.shadow.self_similarity_rate)
        .map_err(|e| setting("shadow.self_similarity_rate", e.to_string()))?;
    // Every sample gets the self call until self_similarity_min_pairs self pairs exist,
    // so the noise-adjusted gate can decide as early as the plain one (drift.rs).
    let self_sampling = (cfg.shadow.self_similarity_rate > 0.0).then(|| {
        drift
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .self_sampling(
                cfg.shadow.self_similarity_rate,
                cfg.shadow.self_similarity_min_pairs,
            )
    });
    let extractor = Extractor::new(
        cfg.shadow.protocol,
        &cfg.shadow.embedding_pointer,
        &cfg.shadow.prediction_pointer,
    )
    .map_err(|e| setting("shadow.embedding_pointer", e.to_string()))?
    .with_max_items(cfg.shadow.max_batch_items);
    let request_id_header = HeaderName::from_static("x-request-id");
    let strip_headers = cfg
        .shadow
        .strip_headers
        .iter()
        .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
        .collect();
    let pod: Arc<str> = pod_name().into();
    let (log, log_guard) = if cfg.shadow_log.dir.as_os_str().is_empty() {
        (None, None)
    } else {
        let opts = WriterOptions {
            dir: cfg.shadow_log.dir.clone(),
            pod: pod.to_string(),
            max_rows_per_file: cfg.shadow_log.max_rows_per_file,
            max_file_age: cfg.shadow_log.max_file_age,
            queue_capacity: cfg.shadow_log.queue_capacity,
            store_inputs: cfg.shadow_log.store_inputs,
            store_embeddings: cfg.shadow_log.store_embeddings,
            ..WriterOptions::new(cfg.shadow_log.dir.clone(), pod.to_string())
        };
        let (sender, guard) = shadow_log::start(
            opts,
            ShadowLogMetrics::register(&metrics.registry, &cfg.model.name)?,
        )?;
        let report = guard.recovery_report();
        if !report.is_empty() {
            tracing::warn!(?report, "shadow log: leftover temporary files from an earlier run were recovered or set aside");
        }
        (Some(sender), Some(guard))
    };
    let feedback = Arc::new(Feedback::new(
        cfg.feedback.label_ttl,
        cfg.feedback.max_tracked,
        cfg.feedback.conversion_window,
        cfg.drift.alpha,
        FeedbackMetrics::register(
            &metrics.registry,
            &cfg.model.name,
            &cfg.model.version,
            &cfg.shadow.baseline.version,
            &cfg.shadow.canary.version,
        )?,
    ));

    // One TLS configuration (roots, session cache) for every upstream client.
    let tls = crate::tls::client_config(&cfg.tls, cfg.uses_https())
        .map_err(|e| setting("tls.ca_file", e.to_string()))?;
    let reuse = if !cfg.shadow.reuse_primary {
        None
    } else if cfg.model.version == cfg.shadow.baseline.version {
        Some(Target::Baseline)
    } else if cfg.model.version == cfg.shadow.canary.version {
        Some(Target::Canary)
    } else {
        tracing::warn!(
            version = %cfg.model.version,
            "shadow.reuse_primary is on but model.version matches neither shadow version: both sides are called"
        );
        None
    };
    let baseline_url = parse_uri("shadow.baseline.url", &cfg.shadow.baseline.url)?;
    let primary_url = parse_uri("primary.url", &cfg.primary.url)?;
    let mirror = Arc::new(Mirror {
        reuse,
        self_upstream: Upstream::new(&baseline_url, cfg.shadow.max_in_flight, tls.clone()),
        baseline: ShadowTarget {
            upstream: Upstream::new(&baseline_url, cfg.shadow.max_in_flight, tls.clone()),
            version: cfg.shadow.baseline.version.as_str().into(),
        },
        canary: ShadowTarget {
            upstream: Upstream::new(
                &parse_uri("shadow.canary.url", &cfg.shadow.canary.url)?,
                cfg.shadow.max_in_flight,
                tls.clone(),
            ),
            version: cfg.shadow.canary.version.as_str().into(),
        },
        protocol: cfg.shadow.protocol,
        extractor,
        rewrite: cfg.shadow.rewrite.clone(),
        slicer,
        slice_stats: slice_stats.clone(),
        timeout: cfg.shadow.timeout,
        timeout_per_item: cfg.shadow.timeout_per_item,
        timeout_cap: cfg.primary.timeout.max(cfg.shadow.timeout),
        max_batch_items: cfg.shadow.max_batch_items,
        max_response_bytes: cfg.limits.max_shadow_response_bytes,
        forward_credentials: cfg.shadow.forward_credentials,
        strip_headers,
        request_id_header: request_id_header.clone(),
        metrics: metrics.clone(),
        drift: drift.clone(),
        feedback: feedback.clone(),
        log,
        labels: RecordLabels {
            model: cfg.model.name.as_str().into(),
            pod,
            sample_rate: cfg.shadow.sample_rate as f32,
            store_inputs: cfg.shadow_log.store_inputs,
            store_embeddings: cfg.shadow_log.store_embeddings,
        },
    });
    let shadow_permits = Arc::new(Semaphore::new(cfg.shadow.max_in_flight));
    let proxy = Arc::new(Proxy {
        upstream: Upstream::new(&primary_url, 1024, tls),
        primary: primary_url,
        timeout: cfg.primary.timeout,
        count_4xx_as_errors: cfg.primary.count_4xx_as_errors,
        request_id_header,
        max_body_bytes: cfg.limits.max_body_bytes,
        sampler: Sampler::new(
            rate,
            cfg.shadow.max_per_second,
            &cfg.shadow.methods,
            &cfg.shadow.paths,
            self_sampling,
        ),
        mirror,
        shadow_permits: shadow_permits.clone(),
        metrics: metrics.clone(),
        feedback: feedback.clone(),
        tokens_finder: memchr::memmem::Finder::new(cfg.metrics.tokens_field.as_bytes())
            .into_owned(),
    });

    let proxy_listener = TcpListener::bind(cfg.listen.proxy)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen.proxy,
            key: "listen.proxy",
            source,
        })?;
    let admin_listener = TcpListener::bind(cfg.listen.admin)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen.admin,
            key: "listen.admin",
            source,
        })?;
    let proxy_addr = proxy_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen.proxy,
            key: "listen.proxy",
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen.admin,
            key: "listen.admin",
            source,
        })?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_state = AdminState {
        metrics: metrics.clone(),
        drift: drift.clone(),
        slices: slice_stats.clone(),
        slice_names,
        feedback: feedback.clone(),
        primary: proxy.primary.clone(),
        started: Instant::now(),
        config: cfg.clone(),
        history: Arc::default(),
    };
    // The admin port outlives the proxy port so the last scrape sees the drained totals.
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, admin_stop_rx));
    let admin = (admin_stop_tx, admin_task);
    let task = tokio::spawn(run(
        cfg,
        proxy,
        proxy_listener,
        shadow_permits,
        stop_rx,
        admin,
        log_guard,
    ));
    tracing::info!(%proxy_addr, %admin_addr, "shadowgate listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        metrics,
        drift,
        slices: slice_stats,
        feedback,
        stop: stop_tx,
        task,
    })
}

/// Accept loop and ordered shutdown.
async fn run(
    cfg: Arc<Config>,
    proxy: Arc<Proxy>,
    listener: TcpListener,
    shadow_permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    admin: (watch::Sender<bool>, JoinHandle<()>),
    log_guard: Option<ShadowLogGuard>,
) -> Summary {
    let handler = {
        let proxy = proxy.clone();
        move |req| {
            let proxy = proxy.clone();
            async move {
                match proxy.handle(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        }
    };
    let server = h1::server::Server::new(
        h1::server::Config {
            header_read_timeout: cfg.limits.header_read_timeout,
            body_read_timeout: cfg.limits.body_read_timeout,
            max_connections: cfg.limits.max_connections,
            refusal_text,
        },
        handler,
    );
    server
        .accept(&listener, async {
            let _ = stop.changed().await;
        })
        .await;
    drop(listener);
    let deadline = Instant::now() + cfg.limits.shutdown_grace;
    tracing::info!("shutting down: finishing client requests");
    let mut summary = Summary {
        connections_cut: server.drain(deadline.into()).await,
        ..Summary::default()
    };
    if summary.connections_cut > 0 {
        let open = summary.connections_cut;
        tracing::warn!(open, "grace period over with client connections open");
    }
    tracing::info!("draining shadow work");
    let all = u32::try_from(cfg.shadow.max_in_flight).unwrap_or(u32::MAX);
    match tokio::time::timeout_at(deadline.into(), shadow_permits.acquire_many(all)).await {
        Ok(_) => {}
        Err(_) => {
            summary.shadow_tasks_cut =
                cfg.shadow.max_in_flight - shadow_permits.available_permits();
            tracing::warn!(
                running = summary.shadow_tasks_cut,
                "grace period over with shadow work running"
            );
        }
    }
    if let Some(guard) = log_guard {
        // Every row the mirror handed over is now in the queue: close the files.
        tracing::info!("closing the shadow log");
        match tokio::task::spawn_blocking(move || guard.close()).await {
            Ok(Ok(s)) => {
                tracing::info!(rows = s.rows, files = s.files, "shadow log closed");
                summary.shadow_log = Some(s);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "shadow log did not close cleanly"),
            Err(e) => tracing::error!(error = %e, "shadow log close task failed"),
        }
    }
    let _ = admin.0.send(true);
    let _ = admin.1.await;
    let pairs = &proxy.metrics.drift;
    tracing::info!(
        compared = pairs.pair(PairOutcome::Compared).get(),
        baseline_error = pairs.pair(PairOutcome::BaselineError).get(),
        canary_error = pairs.pair(PairOutcome::CanaryError).get(),
        timeout = pairs.pair(PairOutcome::Timeout).get(),
        invalid = pairs.pair(PairOutcome::Invalid).get(),
        shadow_log_rows = summary.shadow_log.map_or(0, |s| s.rows),
        "shut down; final pair counts"
    );
    summary
}

/// The text of the answers the proxy port gives by itself (refused heads, `408` for a
/// slow head, `503` over the connection cap), naming the setting that applies.
fn refusal_text(e: &h1::server::Error) -> String {
    match e {
        h1::server::Error::HeadTimeout(_) => {
            "shadowgate: request head not received within limits.header_read_timeout\n".into()
        }
        h1::server::Error::Overloaded => {
            "shadowgate: too many open connections (limits.max_connections)\n".into()
        }
        e => format!("shadowgate: {e}\n"),
    }
}

/// `shadowgate serve`: start, wait for SIGTERM or SIGINT, shut down gracefully.
pub async fn serve_until_signal(config: Config) -> Result<Summary, ServeError> {
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!("signal received");
    let summary = running.shutdown().await;
    if summary.connections_cut > 0 || summary.shadow_tasks_cut > 0 {
        tracing::warn!(?summary, "stopped with work cut off by the grace period");
    }
    Ok(summary)
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (a terminal).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
