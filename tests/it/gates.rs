//! The gates of `deploy/argo/`, proved against a real Prometheus: scenarios run through
//! the real sidecar with model servers whose cosine distributions are known, Prometheus
//! scrapes them, every template query is evaluated, and Argo's condition rules give the
//! verdict each scenario deserves.

use crate::support::prom;
use crate::support::{self, Component};

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shadowgate::demo::model::{Behaviour, CosineSpec, ModelOptions};

struct Scenario {
    model: &'static str,
    baseline: ModelOptions,
    canary: ModelOptions,
    /// Verdict of the drift template (bounds on the mean and on the low-similarity share).
    drift: &'static str,
    /// Verdict of the noise-adjusted drift template.
    noise_adjusted: &'static str,
    /// What the published recipe's bare `mean > 0.92` would have said if it could fail.
    recipe_mean_above: bool,
    /// Verdicts of the absolute p99 template (an SLO check) and of the paired
    /// latency-ratio template (the canary against the baseline on the same inputs).
    p99: &'static str,
    latency_ratio: &'static str,
    /// Requests sent (the slow scenarios need fewer: the latency bounds decide early).
    requests: usize,
    /// Every `long_every`-th input is 400 bytes long (0: none), the rest short.
    long_every: usize,
    /// The worst-slice metric that must fail, if any.
    failed_slice_metric: Option<&'static str>,
}

/// The text of input `i` of a scenario.
fn input_text(s: &Scenario, tag: &str, i: usize) -> String {
    let short = format!("{} {tag} {i}", s.model);
    if s.long_every > 0 && i % s.long_every == 0 {
        format!("{short} {}", "long input text ".repeat(24))
    } else {
        short
    }
}

fn opts(cosine: CosineSpec) -> ModelOptions {
    ModelOptions {
        dim: 64,
        cosine,
        ..Default::default()
    }
}

fn noisy() -> ModelOptions {
    ModelOptions {
        behaviour: Behaviour::Noisy { self_cosine: 0.9 },
        ..opts(CosineSpec::Identical)
    }
}

/// The fields the embedding scenarios share: fast, healthy model servers.
fn fast() -> Scenario {
    Scenario {
        model: "",
        baseline: opts(CosineSpec::Identical),
        canary: opts(CosineSpec::Identical),
        drift: "Successful",
        noise_adjusted: "Successful",
        recipe_mean_above: true,
        p99: "Successful",
        latency_ratio: "Successful",
        requests: REQUESTS,
        long_every: 0,
        failed_slice_metric: None,
    }
}

/// Identical embeddings from servers on a busy node (`Behaviour::Loaded`: every server
/// of the process slowed by the same bursts), the canary `slowdown` times slower.
fn loaded(model: &'static str, slowdown: f64, latency_ratio: &'static str) -> Scenario {
    let server = |slowdown| ModelOptions {
        behaviour: Behaviour::Loaded {
            base: Duration::from_millis(150),
            slowdown,
        },
        ..opts(CosineSpec::Identical)
    };
    Scenario {
        model,
        baseline: server(1.0),
        canary: server(slowdown),
        // A 150 ms model on a node whose bursts reach 6x: p99 over 500 ms for either.
        p99: "Failed",
        latency_ratio,
        requests: 900,
        ..fast()
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        // The absolute p99 gate fails both; only the paired ratio tells them apart.
        loaded("loaded-identical", 1.0, "Successful"),
        loaded("loaded-20pct-slower", 1.2, "Failed"),
        Scenario {
            model: "identical",
            baseline: opts(CosineSpec::Identical),
            canary: opts(CosineSpec::Identical),
            drift: "Successful",
            noise_adjusted: "Successful",
            recipe_mean_above: true,
            ..fast()
        },
        Scenario {
            model: "mild-drift",
            baseline: opts(CosineSpec::Identical),
            canary: opts(CosineSpec::Uniform { lo: 0.94, hi: 0.99 }),
            drift: "Successful",
            noise_adjusted: "Successful",
            recipe_mean_above: true,
            ..fast()
        },
        Scenario {
            model: "drift-below",
            baseline: opts(CosineSpec::Identical),
            canary: opts(CosineSpec::Uniform { lo: 0.84, hi: 0.92 }),
            drift: "Failed",
            noise_adjusted: "Failed",
            recipe_mean_above: false,
            ..fast()
        },
        Scenario {
            // 5 % of inputs broken to cosine 0.5, the rest at 0.97: the mean stays ≈ 0.947.
            model: "broken-subset",
            baseline: opts(CosineSpec::Identical),
            canary: opts(CosineSpec::Mixture {
                share: 0.05,
                bad: 0.5,
                good: 0.97,
            }),
            drift: "Failed",
            noise_adjusted: "Successful",
            recipe_mean_above: true,
            ..fast()
        },
        Scenario {
            // 3 % of inputs, the long ones, broken to cosine 0.5; the rest at 0.995. The
            // whole-traffic bounds are blind to it (mean 0.98; 3 % under the floor sits
            // right at the 2 % budget's edge); the input-length slice holds only the
            // broken inputs and fails the gate.
            model: "long-inputs-broken",
            canary: opts(CosineSpec::Longer {
                bytes: 300,
                bad: 0.5,
                good: 0.995,
            }),
            drift: "Failed",
            noise_adjusted: "Successful",
            recipe_mean_above: true,
            long_every: 33,
            failed_slice_metric: Some("worst-slice-low-share"),
            ..fast()
        },
        Scenario {
            // A sampled model, unchanged: baseline and canary each answer with fresh noise
            // (cos ≈ 0.9 to the clean vector, so ≈ 0.81 to each other and to themselves).
            model: "nondeterministic",
            baseline: noisy(),
            canary: noisy(),
            drift: "Failed",
            noise_adjusted: "Successful",
            recipe_mean_above: false,
            ..fast()
        },
    ]
}

/// Requests per scenario: enough for the bounds to settle (the low-similarity bound needs
/// a few hundred pairs to go under a 2 % budget, a few thousand to clear 5 % from above).
const REQUESTS: usize = 2500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_gets_the_verdict_it_deserves() {
    if !support::require(&[Component::Prometheus, Component::Python(&["yaml"])]) {
        return;
    }
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/argo");
    assert!(
        templates.is_dir(),
        "deploy/argo holds the AnalysisTemplates"
    );
    let mut stacks = Vec::new();
    for s in scenarios() {
        let model = format!("[model]\nname = \"{}\"\nversion = \"v2\"\n", s.model);
        // This pod serves the canary's version: its primary is the canary's model.
        let stack = support::stack(
            s.canary.clone(),
            s.baseline.clone(),
            s.canary.clone(),
            "self_similarity_rate = 0.5\nmax_in_flight = 512\ntimeout = \"3s\"",
            &format!("{model}[drift]\nmin_pairs = 50\nwindow = \"10m\""),
        )
        .await;
        stacks.push((s, Arc::new(stack)));
    }
    // Traffic for all scenarios at once, 8 clients each.
    let mut tasks = Vec::new();
    for (s, stack) in &stacks {
        for w in 0..8 {
            let (stack, requests) = (stack.clone(), s.requests);
            let texts: Vec<String> = (w..requests)
                .step_by(8)
                .map(|i| input_text(s, "input", i))
                .collect();
            tasks.push(tokio::spawn(async move {
                for text in texts {
                    let r = stack.embed(&text).await;
                    assert_eq!(r.status, 200);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (s, stack) in &stacks {
        stack.wait_pairs(s.requests as u64).await;
    }

    // Light traffic goes on while Prometheus scrapes, so the rate() windows of the
    // error-rate and latency gates hold evidence.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    for (s, stack) in &stacks {
        // The slow scenarios' requests take ~180 ms: more clients for the same evidence.
        let clients = if s.requests < REQUESTS { 4 } else { 1 };
        for c in 0..clients {
            let (stack, stop, model) = (stack.clone(), stop.clone(), s.model);
            background.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    stack.embed(&format!("{model} late {c} {i}")).await;
                    // Pacing of the background traffic.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
    }
    let targets: Vec<_> = stacks.iter().map(|(_, s)| s.sidecar.admin_addr).collect();
    // Every sidecar here plays a canary pod of its model.
    let p = tokio::task::spawn_blocking(move || {
        prom::Prometheus::start_labeled(
            &targets,
            &[("rollouts_pod_template_hash", "canary")],
            "1s",
            false,
            &[],
        )
    })
    .await
    .unwrap();
    let prom_url = format!("http://{}", p.addr);
    // Let a few scrapes land so rate() windows have two points.
    let names: Vec<&str> = stacks.iter().map(|(s, _)| s.model).collect();
    for m in &names {
        let q = format!("model_embedding_cosine_similarity_lower_bound{{model=\"{m}\"}}");
        let v = p.wait_for(&q, Duration::from_secs(20), |v| v.is_finite());
        assert!(v.is_some_and(f64::is_finite), "{m}: bounds scraped");
    }
    // Several scrapes of every series (1 s apart) in the windows: 8 samples, where a fixed
    // 6 s pause after the first finite bound used to stand.
    for m in &names {
        let q =
            format!("min(count_over_time(model_inference_requests_total{{model=\"{m}\"}}[2m]))");
        let v = p.wait_for(&q, Duration::from_secs(30), |v| v >= 8.0);
        assert!(
            v.is_some_and(|v| v >= 8.0),
            "{m}: scrapes in the window: {v:?}"
        );
    }
    // The rate-window gates need min-requests (100) requests inside Prometheus' window.
    for m in &names {
        let q = format!("sum(increase(model_inference_requests_total{{model=\"{m}\"}}[2m]))");
        let v = p.wait_for(&q, Duration::from_secs(60), |v| v >= 120.0);
        assert!(
            v.is_some_and(|v| v >= 120.0),
            "{m}: requests in the window: {v:?}"
        );
    }

    let mut table = Vec::new();
    for (s, _) in &stacks {
        let out = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/argo_verdicts.py"))
            .arg(&prom_url)
            .arg(&templates)
            .args([
                format!("model={}", s.model),
                "baseline=v1".into(),
                "canary=v2".into(),
                "stable-version=v1".into(),
                "canary-version=v2".into(),
                "baseline-version=v1".into(),
                "canary-hash=canary".into(),
            ])
            .output()
            .expect("python3 with pyyaml");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let verdict = |needle: &str| -> String {
            let (name, t) = report
                .as_object()
                .unwrap()
                .iter()
                .find(|(name, _)| name.contains(needle))
                .unwrap_or_else(|| panic!("no template named *{needle}* in {report}"));
            let _ = name;
            t["verdict"].as_str().unwrap().to_string()
        };
        let drift = verdict_of(&report, "drift", false);
        let noise = verdict_of(&report, "noise", true);
        let mean = p
            .value(&format!(
                "model_embedding_drift_cosine_similarity{{model=\"{}\"}}",
                s.model
            ))
            .unwrap();
        table.push(format!(
            "{:<18} mean {:.4}  drift {:<12} noise-adjusted {:<12}",
            s.model, mean, drift, noise
        ));
        assert_eq!(mean > 0.92, s.recipe_mean_above, "{}: mean {mean}", s.model);
        assert_eq!(drift, s.drift, "{}: drift template: {report}", s.model);
        let drift_metrics = report
            .as_object()
            .unwrap()
            .iter()
            .find(|(name, _)| name.contains("drift") && !name.contains("noise"))
            .map(|(_, t)| t["metrics"].clone())
            .unwrap();
        for m in ["worst-slice-low-share", "worst-slice-cosine"] {
            let want = if s.failed_slice_metric == Some(m) {
                "Failed"
            } else if s.drift == "Successful" {
                "Successful"
            } else {
                continue;
            };
            assert_eq!(drift_metrics[m], want, "{}: {m}: {report}", s.model);
        }
        assert_eq!(
            noise, s.noise_adjusted,
            "{}: noise-adjusted template: {report}",
            s.model
        );
        // The error gate sees a healthy canary in every scenario; the latency gates see
        // what each scenario's servers do.
        assert_eq!(verdict("error"), "Successful", "{}: {report}", s.model);
        assert_eq!(verdict("latency-p99"), s.p99, "{}: {report}", s.model);
        assert_eq!(
            verdict("latency-ratio"),
            s.latency_ratio,
            "{}: {report}",
            s.model
        );
    }
    eprintln!("{}", table.join("\n"));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in background {
        b.await.unwrap();
    }
}

/// Verdict of the drift template (`noise` = the noise-adjusted one).
fn verdict_of(report: &Value, needle: &str, noise: bool) -> String {
    report
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, _)| name.contains(needle) && name.contains("noise") == noise)
        .map(|(_, t)| t["verdict"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {needle} template (noise-adjusted: {noise}) in {report}"))
}
