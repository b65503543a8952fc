//! deploy/ checked against reality, without a cluster: the offline validation script
//! passes, and every PromQL expression in deploy/ (AnalysisTemplates, alert rules,
//! dashboard panels) evaluates on a real Prometheus that scraped a real sidecar.

use crate::support::{self, prom, Component};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MODEL: &str = "demo-embedder";
const STABLE_HASH: &str = "6d5f7c9b8";
const CANARY_HASH: &str = "7f9c6b5d4";

#[test]
fn validate_deploy_script_passes() {
    if !support::require(&[Component::Node, Component::Promtool, Component::Python(&[])]) {
        return;
    }
    let out = Command::new("bash")
        .arg("scripts/validate-deploy.sh")
        .current_dir(ROOT)
        .env("SHADOWGATE_BIN", env!("CARGO_BIN_EXE_shadowgate"))
        .output()
        .expect("run scripts/validate-deploy.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "validate-deploy.sh failed:\n{text}");
    assert!(
        text.contains("validate-deploy: all checks passed"),
        "{text}"
    );
    assert!(text.contains("deploy_validate: 0 failed"), "{text}");
    assert!(
        text.contains("custom resources checked, 0 failed"),
        "{text}"
    );
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request over a fresh connection; returns (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Prometheus on a free loopback port with its own storage, scraping the sidecar every
/// second as the PodMonitor would scrape two pods of a Rollout (see the test's comment).
fn start_prometheus(dir: &Path, target: SocketAddr) -> (Killed, SocketAddr) {
    let pod = |name: &str, hash: &str| {
        format!(
            "    static_configs:\n      - targets: ['{target}']\n        labels: {{namespace: deploy-test, pod: {name}, rollouts_pod_template_hash: '{hash}'}}\n"
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n\
         \x20 - job_name: llm-inference-stable\n{}\
         \x20 - job_name: llm-inference-canary\n{}\
         \x20   metric_relabel_configs:\n\
         \x20     - source_labels: [__name__, version]\n\
         \x20       regex: '(model_inference_requests_total|model_inference_errors_total|model_inference_duration_seconds_(bucket|sum|count)|business_metric_conversion_rate);v1'\n\
         \x20       target_label: version\n\
         \x20       replacement: v2\n",
        pod("llm-inference-6d5f7c9b8-aaaaa", STABLE_HASH),
        pod("llm-inference-7f9c6b5d4-bbbbb", CANARY_HASH),
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write prometheus.yml");
    let addr: SocketAddr = format!("127.0.0.1:{}", prom::free_port())
        .parse()
        .expect("addr");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus (Debian package `prometheus`)");
    let child = Killed(child);
    support::wait_for(
        &format!("prometheus at {addr} to answer /-/ready"),
        Duration::from_secs(30),
        || prom::http_get(addr, "/-/ready").is_ok_and(|b| b.contains("Ready")),
    );
    (child, addr)
}

fn query(prom: SocketAddr, expr: &str) -> Result<Vec<f64>, String> {
    let body = prom::http_get(
        prom,
        &format!("/api/v1/query?query={}", prom::urlencode(expr)),
    )
    .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    match v["data"]["resultType"].as_str() {
        Some("vector") => Ok(v["data"]["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["value"][1].as_str().and_then(prom::parse_prom_float))
                    .collect()
            })
            .unwrap_or_default()),
        Some("scalar") => Ok(v["data"]["result"][1]
            .as_str()
            .and_then(prom::parse_prom_float)
            .into_iter()
            .collect()),
        other => Err(format!("unexpected result type {other:?}")),
    }
}

fn wait_finite(prom: SocketAddr, expr: &str, deadline: Instant) -> f64 {
    wait_until(prom, expr, deadline, f64::is_finite)
}

fn wait_until(prom: SocketAddr, expr: &str, deadline: Instant, pred: impl Fn(f64) -> bool) -> f64 {
    support::wait_for_value(
        &format!("a wanted value of {expr}"),
        deadline.saturating_duration_since(Instant::now()),
        || {
            query(prom, expr)
                .ok()
                .and_then(|v| v.iter().copied().find(|x| pred(*x)))
        },
    )
}

/// Every expression of deploy/ parses on a real Prometheus, and every dashboard panel
/// returns data, from one `shadowgate demo` (built-in model servers, real sidecar, real
/// traffic) scraped every second, with labels and conversions posted to its admin port.
///
/// The demo is one pod serving v1 that compares baseline v1 with canary v2. A Rollout in
/// progress has two ReplicaSets, and several expressions need both: the gates pick the
/// canary pods by `rollouts_pod_template_hash` (the PodMonitor copies it from the pod),
/// the conversion ratio divides the canary pods' series by the stable pods', and the
/// dashboard compares `version` v2 with v1 on the primary series. So Prometheus scrapes
/// the one sidecar twice, as the PodMonitor would scrape two pods: job
/// llm-inference-stable with the stable hash, and job llm-inference-canary with the
/// canary hash whose primary series (requests, errors, duration) and conversion gauge
/// are relabeled from version v1 to v2 by `metric_relabel_configs`. Both pods' drift,
/// accuracy and shadow series are the sidecar's own (every pod compares the same two
/// Services). The values on the two sides are therefore equal (ratios of 1): this test
/// proves that the expressions match the series and their labels; the verdicts on known
/// drifts are the gate-scenario tests' job.
#[test]
fn every_promql_expression_in_deploy_evaluates_against_a_real_prometheus() {
    if !support::require(&[Component::Prometheus, Component::Python(&["yaml"])]) {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let admin: SocketAddr = format!("127.0.0.1:{}", prom::free_port())
        .parse()
        .expect("addr");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_shadowgate"))
        .args(["demo", "--seconds", "45", "--clients", "2", "--admin"])
        .arg(admin.to_string())
        .arg("--dir")
        .arg(dir.path().join("shadow-log"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shadowgate demo");
    let stderr = demo.stderr.take().expect("stderr");
    let demo = Killed(demo);
    // The demo prints its proxy address: "proxy http://127.0.0.1:PORT · metrics ...".
    let mut lines = BufReader::new(stderr).lines();
    let proxy: SocketAddr = loop {
        let line = lines
            .next()
            .expect("demo exited before printing its proxy address")
            .expect("read demo stderr");
        if let Some(rest) = line.strip_prefix("proxy http://") {
            break rest
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .expect("proxy address");
        }
    };
    // The demo's 45 s of traffic start now, after its setup (which builds a drift
    // reference: seconds in a debug build on a loaded machine).
    let serving = Instant::now();
    // Keep draining the demo's progress lines so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let (_prom_child, prom) = start_prometheus(dir.path(), admin);

    // Requests with known ids through the proxy; the demo mirrors every request, so each
    // id is tracked with both shadow predictions. Then a label for each (the demo models
    // return no prediction, so every pair scores both_wrong: accuracy 0 on both sides,
    // finite) and a conversion for every other one.
    let ids: Vec<String> = (0..80).map(|i| format!("deploy-test-{i}")).collect();
    for id in &ids {
        let (status, _) = http(
            proxy,
            "POST",
            "/v1/embeddings",
            &[("x-request-id", id)],
            &format!(r#"{{"model":"demo","input":"labeled request {id}"}}"#),
        );
        assert_eq!(status, 200, "request {id} through the proxy");
    }
    // A sleep: the shadow calls finish after the answers, and only then are the ids
    // tracked for the joins; the sidecar shows nothing this test could wait for (the demo's
    // own traffic moves every counter), and a label posted early counts as unknown.
    std::thread::sleep(Duration::from_millis(500));
    let labels: Vec<Value> = ids
        .iter()
        .map(|id| serde_json::json!({"request_id": id, "label": "positive"}))
        .collect();
    let (status, body) = http(
        admin,
        "POST",
        "/labels",
        &[],
        &Value::from(labels).to_string(),
    );
    assert_eq!(status, 200, "POST /labels: {body}");
    let label_joins: Value = serde_json::from_str(&body).expect("POST /labels answer");
    let events: Vec<Value> = ids
        .iter()
        .step_by(2)
        .map(|id| serde_json::json!({"request_id": id, "event": "conversion"}))
        .collect();
    let (status, body) = http(
        admin,
        "POST",
        "/feedback",
        &[],
        &Value::from(events).to_string(),
    );
    assert_eq!(status, 200, "POST /feedback: {body}");
    let event_joins: Value = serde_json::from_str(&body).expect("POST /feedback answer");
    // Until the proxy and the mirror record each request for the online joins, the ids
    // come back "unknown" and the accuracy and conversion gauges stay NaN: the
    // expressions reading them still evaluate and return (NaN) samples, and the gate
    // queries that drop NaN return nothing. Once ids join, they must have finite data.
    let joined = label_joins["joined"].as_u64().unwrap_or(0) > 0
        && event_joins["joined"].as_u64().unwrap_or(0) > 0;
    println!("online joins: labels {label_joins}, feedback {event_joins}");

    // Wait until Prometheus holds what the expressions read: finite drift bounds (past
    // drift.min_pairs), accuracy and conversion from the posts, a shadow-log row count,
    // and enough samples in the window for rate() over [1m].
    let deadline = serving + Duration::from_secs(40);
    let q = |m: &str, hash: &str| {
        format!(r#"{m}{{model="{MODEL}",rollouts_pod_template_hash="{hash}"}}"#)
    };
    // The demo's canary has cosine uniform on [0.9, 1] (mean 0.95): the lower bound
    // clears the 0.92 threshold after a few hundred pairs.
    let lower = wait_until(
        prom,
        &q("model_embedding_cosine_similarity_lower_bound", CANARY_HASH),
        deadline,
        |x| x >= 0.92,
    );
    assert!((0.0..=1.0).contains(&lower), "cosine lower bound {lower}");
    if joined {
        let accuracy = wait_finite(prom, &q("model_inference_accuracy", CANARY_HASH), deadline);
        let conversion = wait_finite(
            prom,
            &q("business_metric_conversion_rate", STABLE_HASH),
            deadline,
        );
        assert!((0.0..=1.0).contains(&accuracy), "accuracy {accuracy}");
        assert!(
            conversion > 0.0 && conversion <= 1.0,
            "conversion {conversion}"
        );
    }
    wait_finite(
        prom,
        &format!(
            r#"sum(rate(model_inference_requests_total{{model="{MODEL}",version="v2"}}[1m]))"#
        ),
        deadline,
    );
    // A few more scrapes so that every window holds several samples (1 s apart: five,
    // where a fixed 3 s pause after the first finite rate used to stand).
    wait_until(
        prom,
        &format!(r#"min(count_over_time(model_inference_requests_total{{model="{MODEL}"}}[1m]))"#),
        deadline,
        |n| n >= 5.0,
    );

    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/py/deploy_promql.py"))
        .args([
            format!("model={MODEL}"),
            "baseline=v1".into(),
            "canary=v2".into(),
            format!("canary-hash={CANARY_HASH}"),
            format!("stable-hash={STABLE_HASH}"),
            // The demo's labeled traffic is small; the defaults are for production.
            "min-requests=10".into(),
            "min-labeled-pairs=30".into(),
            "__rate_interval=1m".into(),
        ])
        .output()
        .expect("run tests/py/deploy_promql.py (needs pyyaml)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exprs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("expression list");
    let count = |kind: &str| exprs.iter().filter(|e| e["kind"] == kind).count();
    assert!(
        count("template") >= 7,
        "template queries: {}",
        count("template")
    );
    assert!(count("alert") >= 6, "alert expressions: {}", count("alert"));
    assert!(
        count("dashboard") >= 30,
        "dashboard targets: {}",
        count("dashboard")
    );

    let mut problems = Vec::new();
    let mut report = String::new();
    for e in &exprs {
        let (kind, source, expr) = (
            e["kind"].as_str().unwrap_or(""),
            e["source"].as_str().unwrap_or(""),
            e["expr"].as_str().unwrap_or(""),
        );
        match query(prom, expr) {
            Err(err) => problems.push(format!("{source}: does not evaluate: {err}\n{expr}")),
            Ok(values) => {
                report.push_str(&format!(
                    "{kind:9} {:>2} values {values:?}  {source}\n",
                    values.len()
                ));
                // Dashboard panels must show something. Gate queries must find the canary
                // pods' series: each returns its one value, or its two bounds. Alert
                // expressions are conditions, empty while nothing is wrong; they must
                // evaluate (and promtool tests when they fire).
                let reads_joins =
                    source.contains("accuracy-ratio") || source.contains("conversion-ratio");
                let expected = match kind {
                    "dashboard" => !values.is_empty(),
                    "template" if reads_joins && !joined => true,
                    "template" => !values.is_empty(),
                    _ => true,
                };
                if !expected {
                    problems.push(format!("{source}: returned no data\n{expr}"));
                }
            }
        }
    }
    println!("{report}");

    // The templates' conditions, judged by Argo's rules (tests/py/argo_verdicts.py) on
    // this data: the demo's canary is healthy and drifts mildly above the threshold, so
    // every gate with evidence passes; the ones whose inputs need online joins pass with
    // them and are Inconclusive (never Successful) without.
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/py/argo_verdicts.py"))
        .arg(format!("http://{prom}"))
        .arg(Path::new(ROOT).join("deploy/argo"))
        .args([
            format!("model={MODEL}"),
            format!("canary-hash={CANARY_HASH}"),
            format!("stable-hash={STABLE_HASH}"),
            "min-requests=10".into(),
            "min-labeled-pairs=30".into(),
        ])
        .output()
        .expect("run tests/py/argo_verdicts.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Value = serde_json::from_slice(&out.stdout).expect("verdicts");
    println!("verdicts: {verdicts}");
    let verdict = |t: &str| {
        verdicts[t]["verdict"]
            .as_str()
            .unwrap_or("missing")
            .to_string()
    };
    for t in [
        "shadowgate-error-rate",
        "shadowgate-latency-p99",
        "shadowgate-embedding-drift",
        "shadowgate-embedding-drift-noise-adjusted",
    ] {
        assert_eq!(verdict(t), "Successful", "{t}: {}", verdicts[t]);
    }
    if !joined {
        for t in ["shadowgate-accuracy-ratio", "shadowgate-conversion-ratio"] {
            assert_eq!(
                verdict(t),
                "Inconclusive",
                "{t} without joined labels/feedback: {}",
                verdicts[t]
            );
        }
    } else {
        assert_eq!(
            verdict("shadowgate-conversion-ratio"),
            "Successful",
            "{}",
            verdicts
        );
    }
    drop(demo);
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

/// The thresholds a template's conditions compare against (the numbers after `<`, `<=`,
/// `>`, `>=`), in order of appearance.
fn condition_thresholds(template: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for line in template.lines() {
        let line = line.trim();
        let Some(cond) = line
            .strip_prefix("successCondition:")
            .or_else(|| line.strip_prefix("failureCondition:"))
        else {
            continue;
        };
        let tokens: Vec<&str> = cond.trim().trim_matches('"').split_whitespace().collect();
        for w in tokens.windows(2) {
            if matches!(w[0], "<" | "<=" | ">" | ">=") {
                if let Ok(x) = w[1].trim_end_matches(')').parse::<f64>() {
                    out.push(x);
                }
            }
        }
    }
    out
}

/// One source for the gates' thresholds: `[gates]` in config (what the status page
/// judges by) and every number the AnalysisTemplates compare against are the same; a
/// template edited alone fails here.
#[test]
fn template_thresholds_are_the_gates_config() {
    use shadowgate::config::GatesConfig;
    let g = GatesConfig::default();
    let read = |name: &str| {
        std::fs::read_to_string(Path::new(ROOT).join("deploy/argo").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let distinct = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let cases: [(&str, Vec<f64>); 7] = [
        (
            "embedding-drift.yaml",
            vec![
                g.low_similarity_budget,
                g.slice_low_similarity_budget,
                g.cosine_threshold,
            ],
        ),
        (
            "embedding-drift-noise-adjusted.yaml",
            vec![g.cosine_threshold],
        ),
        ("accuracy-ratio.yaml", vec![g.accuracy_ratio]),
        ("conversion-ratio.yaml", vec![g.conversion_ratio]),
        ("error-rate.yaml", vec![g.max_error_rate]),
        ("latency-p99.yaml", vec![g.max_p99.as_secs_f64()]),
        ("latency-ratio.yaml", vec![g.max_latency_ratio]),
    ];
    for (name, want) in cases {
        let got = distinct(condition_thresholds(&read(name)));
        assert_eq!(
            got,
            distinct(want),
            "{name}: thresholds vs [gates] defaults"
        );
    }
    let accuracy = read("accuracy-ratio.yaml");
    let arg = accuracy
        .split("- name: min-labeled-pairs")
        .nth(1)
        .and_then(|rest| rest.lines().nth(1))
        .map(|l| {
            l.trim()
                .trim_start_matches("value:")
                .trim()
                .trim_matches('"')
        })
        .unwrap_or_default();
    assert_eq!(arg, g.min_labeled_pairs.to_string(), "min-labeled-pairs");
}
