//! Wiring for `shadowgate serve`: build metrics, clients, mirror, shadow log and both
//! listeners from a validated config; run; shut down in order (stop accepting, finish
//! client requests, drain shadow work, close the shadow log).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::drift::{DriftConfig, DriftState};
use crate::feedback::Feedback;
use crate::metrics::{MetricLabels, Metrics, PairOutcome};
use crate::mirror::{Lane, Mirror, Router, Shared};
use crate::proxy::h2::H2Proxy;
use crate::proxy::{http1, Proxy};
use crate::reference_monitor::ReferenceMonitor;
use crate::shadow_log::{self, ShadowLogGuard, ShadowLogMetrics, WriterSummary};
use crate::slices::SliceStats;

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
    #[error("tls.ca_file: {0}")]
    Tls(#[from] crate::tls::TlsError),
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
    let checked = cfg.checked();
    let first = &checked.routes[0];
    let metrics = Arc::new(Metrics::new(&MetricLabels {
        model: &cfg.model.name,
        route_model: &first.model,
        version: &cfg.model.version,
        baseline: &first.baseline.version,
        canary: &first.candidates[0].target.version,
        floor: cfg.drift.floor,
        token_buckets: &cfg.metrics.token_buckets,
        slices: checked.slicer.names(),
        protocols: &shadow_protocols(&cfg),
    })?);
    let drift_config = DriftConfig::from(&cfg.drift);
    let pod: Arc<str> = pod_name().into();
    let (log, log_guard) = if cfg.shadow_log.dir.as_os_str().is_empty() {
        (None, None)
    } else {
        let log_metrics = ShadowLogMetrics::register(&metrics.registry, &cfg.model.name)?;
        let (sender, guard) = shadow_log::open(&cfg.shadow_log, &pod, log_metrics)?;
        (Some(sender), Some(guard))
    };
    let feedback = Arc::new(Feedback::from_config(&cfg, &metrics.registry)?);
    // One TLS configuration (roots, session cache) for every upstream client.
    let tls = crate::tls::client_config(&cfg.tls, cfg.uses_https())?;
    let mut lanes = Vec::new();
    for (r, route) in checked.routes.iter().enumerate() {
        let protocols = if r == 0 && cfg.routes.is_empty() {
            shadow_protocols(&cfg)
        } else {
            vec![route.protocol.as_str().to_string()]
        };
        let mut mirrors = Vec::new();
        for (c, candidate) in route.candidates.iter().enumerate() {
            let lane_metrics = Arc::new(metrics.lane(&MetricLabels {
                model: &cfg.model.name,
                route_model: &route.model,
                version: &cfg.model.version,
                baseline: &route.baseline.version,
                canary: &candidate.target.version,
                floor: cfg.drift.floor,
                token_buckets: &cfg.metrics.token_buckets,
                slices: checked.slicer.names(),
                protocols: &protocols,
            })?);
            let shared = Shared {
                metrics: lane_metrics,
                drift: Arc::new(Mutex::new(DriftState::new(drift_config.clone()))),
                slice_stats: Arc::new(Mutex::new(SliceStats::new(
                    checked.slicer.len(),
                    &drift_config,
                ))),
                feedback: feedback.clone(),
                log: log.clone(),
                tls: tls.clone(),
                pod: pod.clone(),
            };
            let lane = Lane {
                route,
                candidate: c,
                feeds_labels: r == 0 && c == 0,
            };
            mirrors.push(Arc::new(Mirror::new(&cfg, lane, shared)));
        }
        lanes.push(mirrors);
    }
    let router = Arc::new(Router::new(&cfg, lanes, &metrics)?);
    let mirror = router
        .first()
        .expect("config gives every route a candidate")
        .clone();
    // The first lane's handles are the process's: the status page and the final log
    // line read them.
    let metrics = mirror.metrics.clone();
    let drift = mirror.drift.clone();
    let slice_stats = mirror.slice_stats.clone();
    let reference = ReferenceMonitor::start(&cfg, &metrics.registry)?;
    let h2 = H2Proxy::new(
        &cfg,
        mirror.clone(),
        metrics.clone(),
        &tls,
        reference.clone(),
    )
    .map(H2Proxy::into_handler);
    let reference_picture = reference.as_ref().map(|m| m.picture());
    let lanes: Vec<_> = router.lanes().cloned().collect();
    let proxy = Arc::new(Proxy::new(
        &cfg,
        router,
        metrics.clone(),
        feedback.clone(),
        tls,
        reference,
    ));

    let (proxy_listener, proxy_addr) = bind(cfg.listen.proxy, "listen.proxy").await?;
    let (admin_listener, admin_addr) = bind(cfg.listen.admin, "listen.admin").await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_state = AdminState {
        metrics: metrics.clone(),
        drift: drift.clone(),
        slices: slice_stats.clone(),
        slice_names: checked.slicer.names().into(),
        feedback: feedback.clone(),
        primary: proxy.primary().clone(),
        started: Instant::now(),
        config: cfg.clone(),
        history: Arc::default(),
        reference_picture,
        lanes,
    };
    // The admin port outlives the proxy port so the last scrape sees the drained totals.
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, admin_stop_rx));
    let admin = (admin_stop_tx, admin_task);
    let task = tokio::spawn(run(
        cfg,
        proxy,
        h2,
        proxy_listener,
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

/// Values of the `protocol` label of the shadow-call series, in the order
/// [`Mirror::protocol_index`] numbers them.
fn shadow_protocols(cfg: &Config) -> Vec<String> {
    std::iter::once(cfg.shadow.protocol.as_str().to_string())
        .chain(
            cfg.checked()
                .grpc_methods
                .iter()
                .map(|p| format!("grpc_{}", p.as_str())),
        )
        .collect()
}

/// Bind `addr` (the setting `key`), and the address it got (port 0 picks one).
async fn bind(
    addr: SocketAddr,
    key: &'static str,
) -> Result<(TcpListener, SocketAddr), ServeError> {
    let error = |source| ServeError::Bind { addr, key, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

/// Serve until `stop`, then shut down in order: client connections, shadow work, the
/// shadow log, the admin port.
async fn run(
    cfg: Arc<Config>,
    proxy: Arc<Proxy>,
    h2: Option<h1::server::H2Handler>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    admin: (watch::Sender<bool>, JoinHandle<()>),
    log_guard: Option<ShadowLogGuard>,
) -> Summary {
    let stopped = http1::serve(proxy.clone(), h2, listener, &cfg.limits, async {
        let _ = stop.changed().await;
    })
    .await;
    let mut summary = Summary {
        connections_cut: stopped.connections_cut,
        ..Summary::default()
    };
    if summary.connections_cut > 0 {
        let open = summary.connections_cut;
        tracing::warn!(open, "grace period over with client connections open");
    }
    tracing::info!("draining shadow work");
    for lane in proxy.router().lanes() {
        summary.shadow_tasks_cut += lane.drain(stopped.deadline.into()).await;
    }
    if summary.shadow_tasks_cut > 0 {
        tracing::warn!(
            running = summary.shadow_tasks_cut,
            "grace period over with shadow work running"
        );
    }
    if let Some(guard) = log_guard {
        // Every row the mirror handed over is now in the queue: close the files.
        tracing::info!("closing the shadow log");
        // With an object store, what the spool holds is sent until the grace period ends.
        let deadline = stopped.deadline;
        match tokio::task::spawn_blocking(move || guard.close_by(deadline)).await {
            Ok(Ok(s)) => {
                tracing::info!(rows = s.rows, files = s.files, "shadow log closed");
                if let Some(u) = s.upload {
                    tracing::info!(
                        uploaded_files = u.files,
                        uploaded_rows = u.rows,
                        left_files = u.files_left,
                        left_rows = u.rows_left,
                        upload_errors = u.errors,
                        "shadow log: object store"
                    );
                }
                summary.shadow_log = Some(s);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "shadow log did not close cleanly"),
            Err(e) => tracing::error!(error = %e, "shadow log close task failed"),
        }
    }
    let _ = admin.0.send(true);
    let _ = admin.1.await;
    let pairs = &proxy.metrics().drift;
    tracing::info!(
        compared = pairs.pair(PairOutcome::Compared).get(),
        baseline_error = pairs.pair(PairOutcome::BaselineError).get(),
        canary_error = pairs.pair(PairOutcome::CanaryError).get(),
        timeout = pairs.pair(PairOutcome::Timeout).get(),
        invalid = pairs.pair(PairOutcome::Invalid).get(),
        shadow_log_rows = summary.shadow_log.map_or(0, |s| s.rows),
        shadow_log_uploaded_rows = summary
            .shadow_log
            .and_then(|s| s.upload)
            .map_or(0, |u| u.rows),
        shadow_log_spool_full_rows = summary.shadow_log.map_or(0, |s| s.rows_dropped_spool_full),
        shadow_log_upload_lost_rows = summary
            .shadow_log
            .and_then(|s| s.upload)
            .map_or(0, |u| u.rows_left),
        "shut down; final pair counts"
    );
    summary
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
