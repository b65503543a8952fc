//! The sidecar end to end, in-process, against real model servers on loopback.

use crate::support::{self, Component};

use std::time::{Duration, Instant};

use http::Method;
use shadowgate::demo::model::{refused_addr, Behaviour, CosineSpec, ModelOptions, ModelServer};
use shadowgate::ids::{id_hash, SampleRate};
use shadowgate::protocol::Protocol;
use shadowgate::serve;
use support::{stack, value, Client};

fn opts(cosine: CosineSpec) -> ModelOptions {
    ModelOptions {
        dim: 256,
        cosine,
        ..Default::default()
    }
}

#[tokio::test]
async fn proxy_returns_the_primary_answer_unchanged_with_request_ids() {
    let s = stack(
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        "",
        "",
    )
    .await;
    let body = r#"{"input":"hello"}"#;
    let direct = s
        .client
        .send(
            Method::POST,
            &format!("{}/v1/embeddings", s.primary.url()),
            &[],
            body.into(),
        )
        .await;
    let via = s
        .client
        .send(
            Method::POST,
            &format!("{}/v1/embeddings", s.proxy_url()),
            &[("x-request-id", "abc-123")],
            body.into(),
        )
        .await;
    assert_eq!(via.status, direct.status);
    assert_eq!(via.body, direct.body);
    assert_eq!(via.headers["content-type"], direct.headers["content-type"]);
    assert_eq!(via.headers["x-request-id"], "abc-123");

    // Without an id, a UUIDv7 is made, sent upstream and returned.
    let r = s.embed("no id").await;
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    let parsed = uuid::Uuid::parse_str(&id).expect("uuid");
    assert_eq!(parsed.get_version_num(), 7);
    let seen = s.primary.stats.seen.lock().unwrap().iter().any(|r| {
        r.headers
            .get("x-request-id")
            .is_some_and(|v| v == id.as_str())
    });
    assert!(seen, "generated id forwarded to the primary");

    // Statuses pass through as they are.
    s.primary.set_behaviour(Behaviour::Status(429));
    assert_eq!(s.embed("x").await.status, 429);
}

#[tokio::test]
async fn streamed_responses_reach_the_client_chunk_by_chunk() {
    use http_body_util::BodyExt;
    let s = stack(
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        "",
        "",
    )
    .await;
    let client = shadowgate::upstream::http_client::<http_body_util::Full<bytes::Bytes>>(4);
    let req = http::Request::post(format!("{}/v1/chat/stream", s.proxy_url()))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let started = Instant::now();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push(started.elapsed());
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    // The server pauses 150 ms between 6 events: a buffering proxy would deliver them all at once.
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(arrivals.len() >= 5, "{arrivals:?}");
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(500),
        "chunks arrived together: {arrivals:?}"
    );
    // The usage event's token count lands in the histogram's bucket.
    let m = s.metrics().await;
    let n = value(
        &m,
        "model_inference_duration_seconds_count",
        &[("tokens_generated_bucket", "64")],
    );
    assert_eq!(n, Some(1.0), "{m}");
}

#[tokio::test]
async fn mirrored_pairs_measure_the_known_cosine() {
    let c = 0.9;
    let s = stack(
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        opts(CosineSpec::Constant(c)),
        "",
        "",
    )
    .await;
    let n = 60;
    for i in 0..n {
        assert_eq!(s.embed(&format!("input number {i}")).await.status, 200);
    }
    let m = s.wait_pairs(n).await;
    let mean = value(
        &m,
        "model_embedding_drift_cosine_similarity",
        &[("model", "m"), ("baseline", "v1"), ("canary", "v2")],
    )
    .unwrap();
    assert!((mean - c).abs() < 0.005, "mean {mean}");
    assert_eq!(
        value(
            &m,
            "model_embedding_pairs_total",
            &[("outcome", "compared")]
        ),
        Some(n as f64)
    );
    assert_eq!(
        value(
            &m,
            "model_inference_requests_total",
            &[("model", "m"), ("version", "v2")]
        ),
        Some(n as f64)
    );
    assert_eq!(
        value(
            &m,
            "shadowgate_shadow_requests_total",
            &[("target", "canary"), ("outcome", "ok")]
        ),
        Some(n as f64)
    );
    assert_eq!(s.baseline.shadow_requests(), n);
    assert_eq!(s.canary.shadow_requests(), n);
    assert_eq!(s.primary.shadow_requests(), 0);
    let d_count = value(&m, "model_embedding_cosine_distance_count", &[]).unwrap();
    let d_sum = value(&m, "model_embedding_cosine_distance_sum", &[]).unwrap();
    assert_eq!(d_count, n as f64);
    assert!((d_sum / d_count - (1.0 - c)).abs() < 0.005);
    let sq = value(&m, "model_embedding_cosine_distance_squared_total", &[]).unwrap();
    assert!(
        (sq / n as f64 - (1.0 - c) * (1.0 - c)).abs() < 0.002,
        "{sq}"
    );
    let norm = value(&m, "model_embedding_norm_ratio", &[]).unwrap();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
}

#[tokio::test]
async fn credentials_stay_with_the_primary_and_shadows_are_marked() {
    let s = stack(
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        "",
        "",
    )
    .await;
    let r = s
        .client
        .send(
            Method::POST,
            &format!("{}/v1/embeddings", s.proxy_url()),
            &[
                ("authorization", "Bearer secret"),
                ("cookie", "session=1"),
                ("x-request-id", "cred-1"),
            ],
            r#"{"input":"x"}"#.into(),
        )
        .await;
    assert_eq!(r.status, 200);
    s.wait_pairs(1).await;
    let primary = s
        .primary
        .stats
        .seen
        .lock()
        .unwrap()
        .back()
        .cloned()
        .unwrap();
    assert_eq!(primary.headers["authorization"], "Bearer secret");
    assert!(primary.headers.get("x-shadowgate-shadow").is_none());
    for server in [&s.baseline, &s.canary] {
        let seen = server.stats.seen.lock().unwrap().back().cloned().unwrap();
        assert_eq!(seen.headers["x-shadowgate-shadow"], "1");
        assert_eq!(seen.headers["x-request-id"], "cred-1");
        assert!(seen.headers.get("authorization").is_none());
        assert!(seen.headers.get("cookie").is_none());
    }
}

#[tokio::test]
async fn sampling_follows_the_id_hash_exactly() {
    let s = stack(
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        "sample_rate = 0.3\nmethods = [\"POST\"]\npaths = [\"/v1/embeddings\"]",
        "",
    )
    .await;
    let rate = SampleRate::try_new(0.3).unwrap();
    let mut expected = 0;
    for i in 0..200 {
        let id = format!("id-{i}");
        if rate.admits(id_hash(id.as_bytes(), 0)) {
            expected += 1;
        }
        let r = s
            .client
            .send(
                Method::POST,
                &format!("{}/v1/embeddings", s.proxy_url()),
                &[("x-request-id", &id)],
                r#"{"input":"a"}"#.into(),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    // Other paths and methods are never mirrored.
    s.client
        .send(
            Method::POST,
            &format!("{}/v1/other", s.proxy_url()),
            &[],
            r#"{"input":"a"}"#.into(),
        )
        .await;
    s.client
        .get(&format!("{}/v1/embeddings", s.proxy_url()))
        .await;
    s.wait_pairs(expected).await;
    // A sleep: gives a wrongly mirrored request time to reach the canary, whose count
    // must stay at `expected` (an absence cannot be waited for).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.canary.shadow_requests(), expected);
    assert!((40..=80).contains(&expected), "{expected}");
}

#[tokio::test]
async fn over_max_in_flight_samples_are_dropped_and_counted() {
    let canary = ModelOptions {
        behaviour: Behaviour::Hang,
        ..opts(CosineSpec::Identical)
    };
    let s = stack(
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        canary,
        "max_in_flight = 2",
        "",
    )
    .await;
    for i in 0..10 {
        assert_eq!(s.embed(&format!("x{i}")).await.status, 200);
    }
    let m = s.metrics().await;
    assert_eq!(
        value(
            &m,
            "shadowgate_shadow_requests_total",
            &[("target", "canary"), ("outcome", "dropped")]
        ),
        Some(8.0)
    );
    assert_eq!(
        value(
            &m,
            "shadowgate_mirror_decisions_total",
            &[("decision", "dropped")]
        ),
        Some(8.0)
    );
    assert!(value(&m, "shadowgate_shadow_in_flight", &[]).unwrap() <= 2.0);
    let m = s.wait_pairs(2).await;
    assert_eq!(
        value(&m, "model_embedding_pairs_total", &[("outcome", "timeout")]),
        Some(2.0)
    );
}

#[tokio::test]
async fn primary_failures_become_clear_gateway_errors() {
    let refused = refused_addr().await.unwrap();
    let baseline = ModelServer::spawn(opts(CosineSpec::Identical))
        .await
        .unwrap();
    let client = Client::new();
    let cfg = support::config(
        &format!("http://{refused}"),
        &baseline.url(),
        &baseline.url(),
        "sample_rate = 0.0",
        "",
    );
    let sidecar = serve::start(cfg).await.unwrap();
    let r = client
        .send(
            Method::POST,
            &format!("http://{}/v1/embeddings", sidecar.proxy_addr),
            &[],
            "{}".into(),
        )
        .await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("primary"), "{}", r.text());
    let ready = client
        .get(&format!("http://{}/readyz", sidecar.admin_addr))
        .await;
    assert_eq!(ready.status, 503);
    let health = client
        .get(&format!("http://{}/healthz", sidecar.admin_addr))
        .await;
    assert_eq!(health.status, 200);
    sidecar.shutdown().await;

    let hanging = ModelServer::spawn(ModelOptions {
        behaviour: Behaviour::Hang,
        ..opts(CosineSpec::Identical)
    })
    .await
    .unwrap();
    let cfg = support::config(
        &hanging.url(),
        &baseline.url(),
        &baseline.url(),
        "sample_rate = 0.0",
        "",
    );
    let sidecar = serve::start(cfg).await.unwrap();
    let r = client
        .send(
            Method::POST,
            &format!("http://{}/v1/embeddings", sidecar.proxy_addr),
            &[],
            "{}".into(),
        )
        .await;
    assert_eq!(r.status, 504);
    let m = client
        .get(&format!("http://{}/metrics", sidecar.admin_addr))
        .await
        .text();
    assert_eq!(value(&m, "model_inference_errors_total", &[]), Some(1.0));
    assert_eq!(value(&m, "model_inference_requests_total", &[]), Some(1.0));
    let ready = client
        .get(&format!("http://{}/readyz", sidecar.admin_addr))
        .await;
    assert_eq!(ready.status, 200);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let s = stack(
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        "",
        "[limits]\nmax_body_bytes = 1000",
    )
    .await;
    let big = format!(r#"{{"input":"{}"}}"#, "a".repeat(5000));
    let r = s
        .client
        .send(
            Method::POST,
            &format!("{}/v1/embeddings", s.proxy_url()),
            &[],
            big,
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(s.primary.requests(), 0);
    assert_eq!(s.embed("small").await.status, 200);
}

#[tokio::test]
async fn metrics_exposition_passes_promtool() {
    if !support::require(&[Component::Promtool]) {
        return;
    }
    let s = stack(
        opts(CosineSpec::Identical),
        opts(CosineSpec::Identical),
        opts(CosineSpec::Constant(0.95)),
        "",
        "",
    )
    .await;
    for i in 0..20 {
        s.embed(&format!("p{i}")).await;
    }
    let m = s.wait_pairs(20).await;
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With reuse_primary on a canary pod, the primary's own answer is the canary side: one
/// shadow call per sample instead of two, the same drift measured, the client unaffected.
#[tokio::test]
async fn reuse_primary_saves_the_call_for_the_pods_own_version() {
    let c = 0.9;
    let s = stack(
        opts(CosineSpec::Constant(c)),
        opts(CosineSpec::Identical),
        opts(CosineSpec::Constant(c)),
        "reuse_primary = true",
        "",
    )
    .await;
    let n = 40;
    for i in 0..n {
        let direct = s
            .client
            .send(
                Method::POST,
                &format!("{}/v1/embeddings", s.primary.url()),
                &[],
                format!(r#"{{"input":"reuse {i}"}}"#),
            )
            .await;
        let via = s.embed(&format!("reuse {i}")).await;
        assert_eq!(via.status, 200);
        assert_eq!(via.body, direct.body);
    }
    let m = s.wait_pairs(n).await;
    assert_eq!(
        value(
            &m,
            "model_embedding_pairs_total",
            &[("outcome", "compared")]
        ),
        Some(n as f64)
    );
    let mean = value(&m, "model_embedding_drift_cosine_similarity", &[]).unwrap();
    assert!((mean - c).abs() < 0.005, "{mean}");
    assert_eq!(s.baseline.shadow_requests(), n);
    assert_eq!(
        s.canary.requests(),
        0,
        "the canary side came from the primary"
    );
    assert_eq!(s.primary.requests(), 2 * n, "n direct + n proxied");
    assert_eq!(
        value(
            &m,
            "shadowgate_shadow_requests_total",
            &[("target", "canary"), ("outcome", "ok")]
        ),
        Some(n as f64)
    );
}

/// One batch request per protocol: (protocol, path, body of the given texts).
fn batch_request(protocol: Protocol, texts: &[String]) -> (&'static str, String) {
    let list = serde_json::to_string(texts).unwrap();
    match protocol {
        Protocol::OpenAi => (
            "/v1/embeddings",
            format!(r#"{{"model":"m","input":{list}}}"#),
        ),
        Protocol::Tei => ("/embed", format!(r#"{{"inputs":{list}}}"#)),
        Protocol::KServeV2 => (
            "/v2/models/m/infer",
            format!(
                r#"{{"inputs":[{{"name":"text","shape":[{}],"datatype":"BYTES","data":{list}}}]}}"#,
                texts.len()
            ),
        ),
        Protocol::TfServing => ("/v1/models/m:predict", format!(r#"{{"instances":{list}}}"#)),
        Protocol::Generic => ("/embed", format!(r#"{{"input":{list}}}"#)),
    }
}

/// Every shadow-log row the sidecar wrote: (request id, item, input, cosine).
fn shadow_rows(dir: &std::path::Path) -> Vec<(String, i32, Option<String>, Option<f32>)> {
    use arrow_array::{Array, Float32Array, Int32Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    let mut rows = Vec::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = |n: &str| batch.column_by_name(n).unwrap().clone();
            let ids = col("request_id");
            let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
            let items = col("item");
            let items = items.as_any().downcast_ref::<Int32Array>().unwrap();
            let inputs = col("input");
            let inputs = inputs.as_any().downcast_ref::<StringArray>().unwrap();
            let cos = col("cosine_similarity");
            let cos = cos.as_any().downcast_ref::<Float32Array>().unwrap();
            for i in 0..batch.num_rows() {
                rows.push((
                    ids.value(i).to_owned(),
                    items.value(i),
                    (!inputs.is_null(i)).then(|| inputs.value(i).to_owned()),
                    (!cos.is_null(i)).then(|| cos.value(i)),
                ));
            }
        }
    }
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows
}

/// Every input of a batch is one pair, in every protocol: the counters count items and
/// requests apart, each shadow-log row holds its item's own input, and each item's
/// cosine is the one its input was given (so no item was matched to another's answer,
/// even when the OpenAI canary returns its items in reverse order).
#[tokio::test]
async fn batches_give_one_pair_per_input_in_every_protocol() {
    let spec = CosineSpec::Uniform { lo: 0.5, hi: 0.99 };
    for protocol in [
        Protocol::OpenAi,
        Protocol::Tei,
        Protocol::KServeV2,
        Protocol::TfServing,
    ] {
        let with = |cosine, behaviour| ModelOptions {
            protocol,
            dim: 64,
            cosine,
            behaviour,
            ..Default::default()
        };
        let canary_behaviour = if protocol == Protocol::OpenAi {
            Behaviour::ReverseItems
        } else {
            Behaviour::Normal
        };
        let dir = tempfile::tempdir().unwrap();
        let s = stack(
            with(CosineSpec::Identical, Behaviour::Normal),
            with(CosineSpec::Identical, Behaviour::Normal),
            with(spec, canary_behaviour),
            &format!("protocol = \"{}\"", protocol.as_str()),
            &format!(
                "[shadow_log]\ndir = {:?}\nstore_inputs = true\nmax_file_age = \"1s\"",
                dir.path().display().to_string()
            ),
        )
        .await;
        // Batches of 1, 8 and 32 (41 inputs in 3 requests), then 2 more of 8.
        let mut sent: Vec<(String, Vec<String>)> = Vec::new();
        for (r, n) in [1usize, 8, 32, 8, 8].into_iter().enumerate() {
            let texts: Vec<String> = (0..n)
                .map(|i| format!("{protocol} req {r} item {i} é"))
                .collect();
            let (path, body) = batch_request(protocol, &texts);
            let id = format!("{protocol}-{r}");
            let reply = s
                .client
                .send(
                    Method::POST,
                    &format!("{}{path}", s.proxy_url()),
                    &[("x-request-id", &id)],
                    body,
                )
                .await;
            assert_eq!(reply.status, 200, "{protocol}: {}", reply.text());
            sent.push((id, texts));
        }
        let inputs: usize = sent.iter().map(|(_, t)| t.len()).sum();
        let m = s.wait_pairs(inputs as u64).await;
        let compared = value(
            &m,
            "model_embedding_pairs_total",
            &[("outcome", "compared")],
        );
        assert_eq!(compared, Some(inputs as f64), "{protocol}");
        assert_eq!(
            value(&m, "shadowgate_shadow_batch_items_count", &[]),
            Some(sent.len() as f64)
        );
        assert_eq!(
            value(&m, "shadowgate_shadow_batch_items_sum", &[]),
            Some(inputs as f64)
        );
        assert_eq!(
            value(
                &m,
                "shadowgate_shadow_requests_total",
                &[("target", "canary"), ("outcome", "ok")]
            ),
            Some(sent.len() as f64)
        );
        s.sidecar.shutdown().await;

        let rows = shadow_rows(dir.path());
        assert_eq!(rows.len(), inputs, "{protocol}: one row per item");
        for (id, texts) in &sent {
            for (i, text) in texts.iter().enumerate() {
                let row = rows
                    .iter()
                    .find(|r| &r.0 == id && r.1 == i as i32)
                    .unwrap_or_else(|| panic!("{protocol}: no row for {id} item {i}"));
                assert_eq!(row.2.as_deref(), Some(text.as_str()), "{protocol}");
                let want = spec.cosine_for(text);
                let got = f64::from(row.3.unwrap());
                assert!(
                    (got - want).abs() < 1e-5,
                    "{protocol} {id} item {i}: cosine {got}, input's own {want}"
                );
            }
        }
    }
}

/// Answers whose item counts differ from each other or from the request are `invalid`
/// with a reason, one per item; empty and oversized batches are not mirrored at all.
/// The client gets the primary's answer in every case.
#[tokio::test]
async fn mismatched_empty_and_oversized_batches_are_counted_by_reason() {
    let o = |behaviour| ModelOptions {
        dim: 32,
        behaviour,
        ..Default::default()
    };
    let s = stack(
        o(Behaviour::Normal),
        o(Behaviour::Normal),
        o(Behaviour::DropLastItem),
        "max_batch_items = 16",
        "",
    )
    .await;
    let s = &s;
    let send = |texts: Vec<String>| {
        let (path, body) = batch_request(Protocol::OpenAi, &texts);
        let url = format!("{}{path}", s.proxy_url());
        async move { s.client.send(Method::POST, &url, &[], body).await }
    };
    let batch = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
    let direct = s
        .client
        .send(
            Method::POST,
            &format!("{}/v1/embeddings", s.primary.url()),
            &[],
            batch_request(Protocol::OpenAi, &batch(8)).1,
        )
        .await;
    let via = send(batch(8)).await;
    assert_eq!(
        via.body, direct.body,
        "the client gets the primary's answer"
    );
    let m = s.wait_pairs(8).await;
    let reason = |m: &str, r: &str| {
        value(m, "model_embedding_invalid_pairs_total", &[("reason", r)]).unwrap_or(0.0)
    };
    assert_eq!(reason(&m, "item_count"), 8.0);
    assert_eq!(
        value(&m, "model_embedding_pairs_total", &[("outcome", "invalid")]),
        Some(8.0)
    );

    // A single input: the canary cannot drop anything, so it is compared.
    assert_eq!(send(batch(1)).await.status, 200);
    // Its shadow call starts after the client has the answer: count calls once it is in.
    s.wait_pairs(8 + 1).await;
    // Empty: one invalid pair, no shadow call. Oversized: every item invalid, no call.
    let calls = s.baseline.shadow_requests();
    assert_eq!(send(batch(0)).await.status, 200);
    assert_eq!(send(batch(17)).await.status, 200);
    // 10 000 tiny items: the client gets its answer; the mirror neither calls nor buffers.
    assert_eq!(send(batch(10_000)).await.status, 200);
    let m = s.wait_pairs(8 + 1 + 1 + 17 + 10_000).await;
    assert_eq!(reason(&m, "empty_batch"), 1.0);
    assert_eq!(reason(&m, "too_many_items"), 17.0 + 10_000.0);
    assert_eq!(
        value(
            &m,
            "model_embedding_pairs_total",
            &[("outcome", "compared")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.baseline.shadow_requests(),
        calls,
        "no shadow call for either"
    );
}

/// Sends requests one at a time and, after each pair lands, reads the drift snapshot:
/// the pair count at which `done` first holds (None within `max`).
async fn pairs_until(
    s: &support::Stack,
    tag: &str,
    max: usize,
    done: impl Fn(&shadowgate::drift::DriftSnapshot) -> bool,
) -> Option<usize> {
    for i in 1..=max {
        assert_eq!(s.embed(&format!("{tag} {i}")).await.status, 200);
        let snap = support::wait_for_value_async(
            &format!("pair {i} to land"),
            Duration::from_secs(10),
            async || {
                let snap = s.sidecar.drift_snapshot().unwrap();
                (snap.total_pairs >= i as u64).then_some(snap)
            },
        )
        .await;
        if done(&snap) {
            return Some(i);
        }
    }
    None
}

/// Issue 15, point 3, through the real sidecar with its default self-similarity
/// sampling (every sample until 300 self pairs, then 5 %): a broken deterministic canary
/// (cosine uniform on [0.6, 1], mean 0.80) fails the noise-adjusted gate (upper bound
/// < 0.92) within 1.5x the pairs the plain gate (cosine upper bound < 0.92) needs; an
/// unchanged canary of a sampling model passes it (lower bound ≥ 0.92) and never fails.
#[tokio::test]
async fn noise_adjusted_gate_decides_as_fast_as_the_plain_one() {
    let o = |cosine, behaviour| ModelOptions {
        dim: 64,
        cosine,
        behaviour,
        ..Default::default()
    };
    let broken = CosineSpec::Uniform { lo: 0.6, hi: 1.0 };
    let extra = "self_similarity_rate = 0.05";
    // A fresh sidecar for each gate: the same traffic, counted from zero.
    let broken_stack = || {
        stack(
            o(broken, Behaviour::Normal),
            o(CosineSpec::Identical, Behaviour::Normal),
            o(broken, Behaviour::Normal),
            extra,
            "[drift]\nmin_pairs = 50",
        )
    };
    let s = broken_stack().await;
    let plain = pairs_until(&s, "plain", 1000, |d| d.cosine_upper < 0.92).await;
    s.sidecar.shutdown().await;
    let s = broken_stack().await;
    let noise = pairs_until(&s, "noise", 1000, |d| d.noise_adjusted_upper < 0.92).await;
    s.sidecar.shutdown().await;
    let (plain, noise) = (
        plain.expect("plain gate fails"),
        noise.expect("noise-adjusted gate fails"),
    );
    eprintln!("broken canary: plain gate failed at {plain} pairs, noise-adjusted at {noise}");
    assert!(noise as f64 <= 1.5 * plain as f64, "{noise} vs {plain}");

    // Unchanged, but the model samples: baseline and canary each answer with fresh noise
    // (cos ≈ 0.9 to the clean vector), so cos(b, c) ≈ cos(b, b′) ≈ 0.81.
    let noisy = || o(CosineSpec::Identical, Behaviour::Noisy { self_cosine: 0.9 });
    let s = stack(noisy(), noisy(), noisy(), extra, "[drift]\nmin_pairs = 50").await;
    let passed = pairs_until(&s, "sampling", 1500, |d| {
        assert!(
            d.noise_adjusted_upper.is_nan() || d.noise_adjusted_upper >= 0.92,
            "an unchanged sampling canary failed: {d:?}"
        );
        d.noise_adjusted_lower >= 0.92
    })
    .await;
    eprintln!("unchanged sampling canary: noise-adjusted gate passed at {passed:?} pairs");
    assert!(passed.is_some(), "passes within 1500 pairs");
}
