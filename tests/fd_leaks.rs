//! Tests that count the open file descriptors of their own process (`/proc/self/fd`)
//! before and after a run of sidecars, to prove that nothing outlives them. They live in
//! a test binary of their own, apart from `tests/it`: under `cargo test` the tests of one
//! binary run as threads of one process, and any other test opening a socket or a file
//! meanwhile would change the count. Within this binary they take a lock, so they never
//! run at the same time either. (cargo-nextest runs every test in a process of its own.)

#[path = "it/support/mod.rs"]
mod support;

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Held by every test of this binary while it runs: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Run `test` on a fresh current-thread runtime (as `#[tokio::test]` would) while holding
/// [`SERIAL`]; a test that failed before does not poison it for the next.
fn serial<F: Future>(test: F) -> F::Output {
    let _one_at_a_time: MutexGuard<'_, ()> = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test)
}

/// Descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// [`open_fds`] once it is at most `limit`, or after 5 s (closing is asynchronous: the
/// tasks of a shut-down sidecar drop their sockets as they end), whichever comes first.
async fn open_fds_settled(limit: usize) -> usize {
    support::poll_async(Duration::from_secs(5), async || {
        Some(open_fds()).filter(|&n| n <= limit)
    })
    .await
    .unwrap_or_else(open_fds)
}

/// From `tests/it/sidecar.rs`: faulty canaries.
mod sidecar {
    use std::time::Duration;

    use http::Method;
    use shadowgate::demo::model::{refused_addr, Behaviour, CosineSpec, ModelOptions, ModelServer};
    use shadowgate::serve;

    use super::support::{self, quantile, value, Client};
    use super::{open_fds, open_fds_settled, serial};

    fn opts(cosine: CosineSpec) -> ModelOptions {
        ModelOptions {
            dim: 256,
            cosine,
            ..Default::default()
        }
    }

    /// A faulty canary changes nothing the client sees, and is counted under its outcome.
    #[test]
    fn canary_faults_never_reach_the_client() {
        serial(async {
            let refused = refused_addr().await.unwrap();
            let cases: Vec<(&str, Option<Behaviour>, &str)> = vec![
                ("hang", Some(Behaviour::Hang), "timeout"),
                (
                    "slow",
                    Some(Behaviour::Delay(Duration::from_millis(500))),
                    "compared",
                ),
                ("refused", None, "canary_error"),
                ("http 500", Some(Behaviour::Status(500)), "canary_error"),
                ("malformed", Some(Behaviour::Malformed), "invalid"),
                ("nan", Some(Behaviour::NaN), "invalid"),
                ("wrong dim", Some(Behaviour::WrongDim(17)), "invalid"),
                ("empty", Some(Behaviour::Empty), "invalid"),
                ("zero", Some(Behaviour::Zero), "invalid"),
                ("missing field", Some(Behaviour::MissingField), "invalid"),
                ("truncated", Some(Behaviour::Truncated), "canary_error"),
            ];
            let primary = ModelServer::spawn(opts(CosineSpec::Identical))
                .await
                .unwrap();
            let baseline = ModelServer::spawn(opts(CosineSpec::Identical))
                .await
                .unwrap();
            let client = Client::new();
            // The no-shadow level: the same requests with sampling off.
            let no_shadow = {
                let cfg = support::config(
                    &primary.url(),
                    &baseline.url(),
                    &baseline.url(),
                    "sample_rate = 0.0",
                    "",
                );
                let sidecar = serve::start(cfg).await.unwrap();
                let url = format!("http://{}/v1/embeddings", sidecar.proxy_addr);
                let mut latencies = Vec::new();
                for i in 0..12 {
                    latencies.push(
                        client
                            .send(
                                Method::POST,
                                &url,
                                &[],
                                format!(r#"{{"input":"plain {i}"}}"#),
                            )
                            .await
                            .elapsed,
                    );
                }
                sidecar.shutdown().await;
                quantile(&mut latencies, 0.5)
            };
            let fds_before = open_fds();
            for (name, behaviour, outcome) in cases {
                let canary = ModelServer::spawn(opts(CosineSpec::Identical))
                    .await
                    .unwrap();
                let canary_url = match &behaviour {
                    Some(b) => {
                        canary.set_behaviour(b.clone());
                        canary.url()
                    }
                    None => format!("http://{refused}"),
                };
                let cfg = support::config(
                    &primary.url(),
                    &baseline.url(),
                    &canary_url,
                    "timeout = \"1s\"",
                    "",
                );
                let sidecar = serve::start(cfg).await.unwrap();
                let url = format!("http://{}/v1/embeddings", sidecar.proxy_addr);
                let mut latencies = Vec::new();
                let n = 12;
                for i in 0..n {
                    let r = client
                        .send(
                            Method::POST,
                            &url,
                            &[],
                            format!(r#"{{"input":"{name} {i}"}}"#),
                        )
                        .await;
                    assert_eq!(r.status, 200, "{name}");
                    latencies.push(r.elapsed);
                }
                // The client never waited for the shadow path (hang times out after 1 s, slow
                // takes 500 ms): its p50 stays at the no-shadow level, within scheduling noise.
                let p50 = quantile(&mut latencies, 0.5);
                assert!(
                    p50 < no_shadow + Duration::from_millis(30),
                    "{name}: client p50 {p50:?}, without shadow {no_shadow:?}"
                );
                let mut m = String::new();
                support::poll_async(Duration::from_secs(5), async || {
                    m = client
                        .get(&format!("http://{}/metrics", sidecar.admin_addr))
                        .await
                        .text();
                    (value(&m, "model_embedding_pairs_total", &[("outcome", outcome)])
                        == Some(n as f64))
                    .then_some(())
                })
                .await;
                assert_eq!(
                    value(&m, "model_embedding_pairs_total", &[("outcome", outcome)]),
                    Some(n as f64),
                    "{name}"
                );
                assert_eq!(
                    value(&m, "model_inference_errors_total", &[]),
                    Some(0.0),
                    "{name}"
                );
                sidecar.shutdown().await;
            }
            // No task or connection outlives its sidecar: every descriptor opened for the eleven
            // faulty canaries (listeners, pooled upstream connections, hung calls) is closed.
            let fds_after = open_fds_settled(fds_before + 4).await;
            assert!(
                fds_after <= fds_before + 4,
                "descriptors leaked: {fds_before} before, {fds_after} after"
            );
        })
    }
}

/// From `tests/it/resets.rs`: shadow upstreams that reset mid-response.
mod resets {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use shadowgate::demo::model::{CosineSpec, ModelOptions, ModelServer};
    use shadowgate::serve;

    use super::support::reset_server::ResetServer;
    use super::support::{self, config, value, Client};
    use super::{open_fds, open_fds_settled, serial};

    fn opts() -> ModelOptions {
        ModelOptions {
            dim: 64,
            cosine: CosineSpec::Identical,
            ..Default::default()
        }
    }

    fn count(m: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        value(m, name, labels).unwrap_or(0.0)
    }

    #[test]
    fn shadow_resets_mid_response_never_reach_the_client_and_leak_nothing() {
        serial(async {
            let n: usize = 40;
            for (target, pair_outcome) in
                [("canary", "canary_error"), ("baseline", "baseline_error")]
            {
                let primary = ModelServer::spawn(opts()).await.unwrap();
                let healthy = ModelServer::spawn(opts()).await.unwrap();
                // Resets every answer (warm-up included).
                let resetting = ResetServer::spawn(usize::MAX).await;
                let (b, c) = if target == "canary" {
                    (healthy.url(), resetting.url())
                } else {
                    (resetting.url(), healthy.url())
                };
                let cfg = config(&primary.url(), &b, &c, "", "");
                let fds_start = open_fds();
                let sidecar = serve::start(cfg).await.unwrap();
                let stack = Stack {
                    sidecar,
                    client: Client::new(),
                };
                let warm = 5;
                for i in 0..warm {
                    assert_eq!(stack.embed(&format!("warm {i}")).await.status, 200);
                }
                stack.wait_pairs(warm).await;

                for i in 0..n {
                    let r = stack.embed(&format!("input {i}")).await;
                    assert_eq!(r.status, 200, "{target} {i}: {}", r.text());
                    assert!(r.text().contains("\"embedding\""), "{target} {i}");
                }
                let total = (warm + n) as f64;
                let m = stack.wait_pairs(warm + n).await;
                let shadow = |t: &str, outcome: &str| {
                    count(
                        &m,
                        "shadowgate_shadow_requests_total",
                        &[("target", t), ("outcome", outcome)],
                    )
                };
                let healthy_side = if target == "canary" {
                    "baseline"
                } else {
                    "canary"
                };
                // A cut body is a transport error of that side, not a timeout nor an invalid
                // embedding (the partial JSON is never parsed).
                assert_eq!(shadow(target, "error"), total, "{target}: {m}");
                for other in ["ok", "timeout", "invalid_embedding"] {
                    assert_eq!(shadow(target, other), 0.0, "{target} {other}");
                }
                assert_eq!(shadow(healthy_side, "ok"), total, "{target}");
                assert_eq!(
                    count(
                        &m,
                        "model_embedding_pairs_total",
                        &[("outcome", pair_outcome)]
                    ),
                    total,
                    "{target}"
                );
                assert_eq!(
                    count(
                        &m,
                        "model_embedding_pairs_total",
                        &[("outcome", "compared")]
                    ),
                    0.0
                );
                assert_eq!(count(&m, "model_inference_errors_total", &[]), 0.0);
                assert_eq!(resetting.requests.load(Ordering::SeqCst), warm + n);

                // Each reset connection is closed, and the rest (pooled shadow connections, the
                // shadow thread's runtime) go with the sidecar: afterwards the process holds as
                // many descriptors as before it started.
                stack.sidecar.shutdown().await;
                let fds_end = open_fds_settled(fds_start + 2).await;
                assert!(
                fds_end <= fds_start + 2,
                "{target}: descriptors leaked over {n} resets: {fds_start} before the sidecar, {fds_end} after it"
            );
            }
        })
    }

    /// The sidecar and a client; the upstreams are whatever the test built.
    struct Stack {
        sidecar: serve::Running,
        client: Client,
    }

    impl Stack {
        async fn embed(&self, text: &str) -> support::Reply {
            self.client
                .send(
                    http::Method::POST,
                    &format!("http://{}/v1/embeddings", self.sidecar.proxy_addr),
                    &[],
                    format!(r#"{{"input":"{text}"}}"#),
                )
                .await
        }

        async fn wait_pairs(&self, n: usize) -> String {
            let mut last = String::new();
            support::poll_async(Duration::from_secs(30), async || {
                last = self
                    .client
                    .get(&format!("http://{}/metrics", self.sidecar.admin_addr))
                    .await
                    .text();
                (support::pairs_total(&last) as usize >= n).then(|| last.clone())
            })
            .await
            .unwrap_or(last)
        }
    }
}
