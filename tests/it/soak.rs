//! Sustained load through the real binary with sampling on and the shadow log writing:
//! RSS, open file descriptors, shadow-log queue depth and dropped rows are sampled over
//! time and must stay flat. `SOAK_SECONDS` sets the length (default 30; CI runs 120,
//! `scripts/soak.sh 3600` an hour).

use crate::support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use shadowgate::demo::model::{CosineSpec, ModelOptions, ModelServer};

const BIN: &str = env!("CARGO_BIN_EXE_shadowgate");

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    rss: u64,
    fds: usize,
    queue: f64,
    dropped: f64,
    requests: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_and_fds_stay_flat_under_sustained_load() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let o = |c| ModelOptions {
        dim: 384,
        cosine: c,
        ..Default::default()
    };
    let primary = ModelServer::spawn(o(CosineSpec::Identical)).await.unwrap();
    let baseline = ModelServer::spawn(o(CosineSpec::Identical)).await.unwrap();
    let canary = ModelServer::spawn(o(CosineSpec::Uniform { lo: 0.9, hi: 1.0 }))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (proxy_port, admin_port) = (support::free_port(), support::free_port());
    let cfg = format!(
        r#"[model]
name = "soak"
version = "v1"
[listen]
proxy = "127.0.0.1:{proxy_port}"
admin = "127.0.0.1:{admin_port}"
[primary]
url = "{}"
[shadow]
sample_rate = 0.1
max_per_second = 0
self_similarity_rate = 0.05
[shadow.baseline]
url = "{}"
version = "v1"
[shadow.canary]
url = "{}"
version = "v2"
[shadow_log]
dir = "{}"
max_file_age = "5s"
[feedback]
# The id cache fills to its cap during warm-up, so growth after it would be a leak.
max_tracked = 20000
"#,
        primary.url(),
        baseline.url(),
        canary.url(),
        dir.path().join("logs").display()
    );
    std::fs::write(dir.path().join("soak.toml"), cfg).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            dir.path().join("soak.toml").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    support::wait_listening(proxy_port);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let client = support::Client::new();
            let url = format!("http://127.0.0.1:{proxy_port}/v1/embeddings");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match client
                    .try_send(Method::POST, &url, format!(r#"{{"input":"soak {w} {i}"}}"#))
                    .await
                {
                    Some(200) => sent.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let client = support::Client::new();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        // The sampling interval of the soak: time passing is what it measures.
        tokio::time::sleep(Duration::from_secs(5).min(Duration::from_secs(seconds) / 6)).await;
        let m = client
            .get(&format!("http://127.0.0.1:{admin_port}/metrics"))
            .await
            .text();
        let s = Sample {
            t: started.elapsed().as_secs_f64(),
            rss: rss_kib(pid),
            fds: open_fds(pid),
            queue: support::value(&m, "shadowgate_shadow_log_queue_depth", &[]).unwrap_or(f64::NAN),
            dropped: ["queue_full", "write_error"]
                .iter()
                .map(|r| {
                    support::value(&m, "shadowgate_shadow_log_dropped_total", &[("reason", r)])
                        .unwrap_or(0.0)
                })
                .sum(),
            requests: sent.load(Ordering::Relaxed),
        };
        eprintln!(
            "soak t={:>6.1}s rss={:>6} KiB fds={:>4} queue={:>4} dropped={} requests={}",
            s.t, s.rss, s.fds, s.queue, s.dropped, s.requests
        );
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    assert!(samples.len() >= 4, "{samples:?}");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no client request failed"
    );
    let total = sent.load(Ordering::Relaxed);
    assert!(total > 1000, "load was applied: {total} requests");
    // Flat: after warm-up (the first quarter), RSS grows by at most 8 MiB or 15 %, and
    // the descriptor count by at most a handful (pooled connections come and go).
    let warm = &samples[samples.len() / 4];
    let last = samples.last().unwrap();
    let peak_rss = samples[samples.len() / 4..]
        .iter()
        .map(|s| s.rss)
        .max()
        .unwrap();
    let allowed = (warm.rss + 8 * 1024).max(warm.rss * 115 / 100);
    assert!(
        peak_rss <= allowed,
        "RSS grew from {} KiB to {} KiB: {samples:?}",
        warm.rss,
        peak_rss
    );
    assert!(
        last.fds <= warm.fds + 8,
        "fds grew from {} to {}: {samples:?}",
        warm.fds,
        last.fds
    );
    assert_eq!(last.dropped, 0.0, "no shadow row dropped");
}
