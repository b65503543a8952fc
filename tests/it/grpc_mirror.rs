//! Mirroring of unary gRPC calls (Open Inference Protocol v2 `ModelInfer`) through the
//! proxy port: the client's answer is the primary's, byte for byte; baseline and canary
//! are called over HTTP/2 and their `raw_output_contents` compared item by item; a
//! canary that fails (`grpc-status` 13), hangs or answers the wrong dimension changes
//! nothing the client gets and is counted on the shadow side. The model servers are
//! hyper's HTTP/2 on loopback speaking the protocol's messages (src/grpc/pb.rs).

use crate::support as common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prost::Message;
use shadowgate::demo::model::{ModelOptions, ModelServer};
use shadowgate::grpc::frame;
use shadowgate::grpc::pb::oip::{
    InferInputTensor, InferOutputTensor, InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use shadowgate::grpc::pb::tei::{EmbedRequest, EmbedResponse};

const DIM: usize = 16;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Embeddings from the input text.
    Ok,
    /// The same, each component shifted by this much (a different model).
    Shifted(f32),
    /// `grpc-status: 13` in the trailers.
    Fails,
    /// Never answers.
    Hangs,
    /// Answers with DIM + 1 floats per item.
    WrongDim,
}

/// A deterministic "embedding" of `text`: DIM values in [-1, 1).
fn embed(text: &[u8]) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..DIM)
        .map(|i| {
            let z = shadowgate::ids::mix64(h ^ i as u64);
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

async fn model(behaviour: Behaviour, calls: Arc<AtomicUsize>) -> std::net::SocketAddr {
    common::h2::server(move |req| infer(req, behaviour, calls.clone())).await
}

type ModelBody = http_body_util::channel::Channel<Bytes, Infallible>;

async fn infer(
    req: Request<Incoming>,
    behaviour: Behaviour,
    calls: Arc<AtomicUsize>,
) -> Response<ModelBody> {
    calls.fetch_add(1, Ordering::SeqCst);
    let tei = req.uri().path() == "/tei.v1.Embed/Embed";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if tei {
        // TEI: one input, one embedding.
        let request = EmbedRequest::decode(frame::unframe_bytes(&body, 1 << 20).unwrap()).unwrap();
        let embeddings = embed(request.inputs.as_bytes())
            .into_iter()
            .map(|v| match behaviour {
                Behaviour::Shifted(d) => v + d,
                _ => v,
            })
            .collect();
        let answer = EmbedResponse {
            embeddings,
            ..Default::default()
        };
        return grpc_answer(Some(frame::encode(&answer)), 0);
    }
    let Some(request) = frame::unframe_bytes(&body, 1 << 20)
        .ok()
        .and_then(|m| ModelInferRequest::decode(m).ok())
    else {
        // Not a ModelInfer message (check-config's probe): INVALID_ARGUMENT.
        let mut resp = Response::new(http_body_util::channel::Channel::new(1).1);
        resp.headers_mut()
            .insert("grpc-status", "3".parse().unwrap());
        return resp;
    };
    let texts = request.inputs[0]
        .contents
        .as_ref()
        .map(|c| c.bytes_contents.clone())
        .unwrap_or_default();
    if behaviour == Behaviour::Hangs {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let dim = if behaviour == Behaviour::WrongDim {
        DIM + 1
    } else {
        DIM
    };
    let mut raw = Vec::new();
    for t in &texts {
        let mut e = embed(t);
        e.resize(dim, 0.5);
        for v in e {
            let v = match behaviour {
                Behaviour::Shifted(d) => v + d,
                _ => v,
            };
            raw.extend_from_slice(&v.to_le_bytes());
        }
    }
    let answer = ModelInferResponse {
        model_name: request.model_name,
        id: request.id,
        outputs: vec![InferOutputTensor {
            name: "embedding".into(),
            datatype: "FP32".into(),
            shape: vec![texts.len() as i64, dim as i64],
            ..Default::default()
        }],
        raw_output_contents: vec![Bytes::from(raw)],
        ..Default::default()
    };
    if behaviour == Behaviour::Fails {
        return grpc_answer(None, 13);
    }
    grpc_answer(Some(frame::encode(&answer)), 0)
}

/// A gRPC answer: the framed message when given, then trailers with `grpc-status`.
fn grpc_answer(message: Option<Bytes>, status: u32) -> Response<ModelBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", status.into());
    if status != 0 {
        trailers.insert("grpc-message", "model%20crashed".parse().unwrap());
    }
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(2);
    tokio::spawn(async move {
        if let Some(m) = message {
            let _ = tx.send_data(m).await;
        }
        let _ = tx.send_trailers(trailers).await;
    });
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp
}

/// Primary and baseline answer `Ok`; the canary as given. Returns the running sidecar,
/// the call counters (primary, baseline, canary) and the primary's address.
async fn stack(
    canary: Behaviour,
) -> (
    shadowgate::serve::Running,
    [Arc<AtomicUsize>; 3],
    std::net::SocketAddr,
) {
    let counters = [(); 3].map(|_| Arc::new(AtomicUsize::new(0)));
    let primary = model(Behaviour::Ok, counters[0].clone()).await;
    let baseline = model(Behaviour::Ok, counters[1].clone()).await;
    let canary = model(canary, counters[2].clone()).await;
    // HTTP/1.1 URLs are required but unused here: nothing listens there.
    let unused = format!("http://127.0.0.1:{}", common::free_port());
    let cfg = common::config(
        &unused,
        &unused,
        &unused,
        &format!(
            "sample_rate = 1.0\ntimeout = \"300ms\"\n[shadow.baseline]\nhttp2_url = \"h2c://{baseline}\"\n[shadow.canary]\nhttp2_url = \"h2c://{canary}\""
        ),
        &format!("[primary]\nhttp2_url = \"h2c://{primary}\""),
    );
    let running = shadowgate::serve::start(cfg).await.unwrap();
    (running, counters, primary)
}

fn infer_request(addr: std::net::SocketAddr, id: &str, texts: &[&str]) -> Request<Full<Bytes>> {
    let message = ModelInferRequest {
        model_name: "minilm".into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![texts.len() as i64, 1],
            contents: Some(InferTensorContents {
                bytes_contents: texts.iter().map(|t| Bytes::from(t.to_string())).collect(),
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    Request::post(format!(
        "http://{addr}/inference.GRPCInferenceService/ModelInfer"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("x-request-id", id)
    .body(Full::new(frame::encode(&message)))
    .unwrap()
}

/// The whole answer: status, data, trailers.
async fn call(
    client: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (http::StatusCode, Bytes, HeaderMap) {
    let resp = client.send_request(req).await.unwrap();
    let status = resp.status();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (status, collected.to_bytes(), trailers)
}

async fn metrics(sg: &shadowgate::serve::Running) -> String {
    let reply = common::Client::new()
        .get(&format!("http://{}/metrics", sg.admin_addr))
        .await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Polls /metrics until `model_embedding_pairs_total` reaches `n`.
async fn wait_for_pairs(sg: &shadowgate::serve::Running, n: f64) -> String {
    wait_for_metric(sg, "pairs", Duration::from_secs(10), |text| {
        common::pairs_total(text) >= n
    })
    .await
}

/// Polls /metrics until `done` says so, for `timeout` at most; on timeout, panics with
/// the series whose names contain `shown`.
async fn wait_for_metric(
    sg: &shadowgate::serve::Running,
    shown: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = metrics(sg).await;
        if done(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached:\n{}",
            text.lines()
                .filter(|l| l.contains(shown))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const TEXTS: [&str; 3] = [
    "a short query",
    "a somewhat longer sentence about models",
    "третий",
];

#[tokio::test]
async fn unary_calls_are_mirrored_and_each_item_compared() {
    let (sg, counters, primary) = stack(Behaviour::Ok).await;
    let mut through = common::h2::client(sg.proxy_addr).await;
    let mut direct = common::h2::client(primary).await;
    for i in 0..20 {
        let id = format!("grpc-{i}");
        let (s1, d1, t1) = call(&mut through, infer_request(sg.proxy_addr, &id, &TEXTS)).await;
        let (s2, d2, t2) = call(&mut direct, infer_request(primary, &id, &TEXTS)).await;
        assert_eq!(
            (s1, &d1),
            (s2, &d2),
            "the client's answer is the primary's, byte for byte"
        );
        assert_eq!(t1, t2, "trailers too");
        assert_eq!(t1["grpc-status"], "0");
    }
    let text = wait_for_pairs(&sg, 60.0).await;
    assert_eq!(
        common::value(
            &text,
            "model_embedding_pairs_total",
            &[("outcome", "compared")]
        ),
        Some(60.0)
    );
    // Identical models: every pair at cosine 1, so every distance in the first bucket.
    let snapshot = sg.drift_snapshot().unwrap();
    assert!(
        (snapshot.mean_cosine - 1.0).abs() < 1e-6,
        "mean cosine {}",
        snapshot.mean_cosine
    );
    assert_eq!(counters[1].load(Ordering::SeqCst), 20);
    assert_eq!(counters[2].load(Ordering::SeqCst), 20);
    sg.shutdown().await;
}

#[tokio::test]
async fn a_shifted_canary_gives_the_cosine_of_its_embeddings() {
    let (sg, _, _) = stack(Behaviour::Shifted(0.5)).await;
    let mut client = common::h2::client(sg.proxy_addr).await;
    for i in 0..10 {
        let (status, _, trailers) = call(
            &mut client,
            infer_request(sg.proxy_addr, &format!("s-{i}"), &TEXTS),
        )
        .await;
        assert_eq!(
            (status, &trailers["grpc-status"]),
            (http::StatusCode::OK, &"0".parse().unwrap())
        );
    }
    wait_for_pairs(&sg, 30.0).await;
    // The expected mean, computed here from the same embeddings.
    let expected: f64 = (0..10)
        .flat_map(|_| TEXTS)
        .map(|t| {
            let a = embed(t.as_bytes());
            let b: Vec<f32> = a.iter().map(|v| v + 0.5).collect();
            shadowgate::compare::compare(&a, &b).unwrap().cosine
        })
        .sum::<f64>()
        / 30.0;
    let mean = sg.drift_snapshot().unwrap().mean_cosine;
    assert!(
        (mean - expected).abs() < 1e-6,
        "mean {mean} vs expected {expected}"
    );
    assert!(mean < 0.95);
    sg.shutdown().await;
}

#[tokio::test]
async fn failing_hanging_and_wrong_dimension_canaries_change_nothing_for_the_client() {
    for (canary, outcome) in [
        (Behaviour::Fails, "canary_error"),
        (Behaviour::Hangs, "timeout"),
        (Behaviour::WrongDim, "invalid"),
    ] {
        let (sg, _, primary) = stack(canary).await;
        let mut through = common::h2::client(sg.proxy_addr).await;
        let mut direct = common::h2::client(primary).await;
        for i in 0..5 {
            let id = format!("f-{i}");
            let started = std::time::Instant::now();
            let a = call(&mut through, infer_request(sg.proxy_addr, &id, &TEXTS)).await;
            assert!(
                started.elapsed() < Duration::from_millis(250),
                "{outcome}: the client waited for the shadow"
            );
            let b = call(&mut direct, infer_request(primary, &id, &TEXTS)).await;
            assert_eq!(a, b, "{outcome}: the client's answer changed");
        }
        let text = wait_for_pairs(&sg, 15.0).await;
        assert_eq!(
            common::value(
                &text,
                "model_embedding_pairs_total",
                &[("outcome", outcome)]
            ),
            Some(15.0),
            "{outcome}"
        );
        sg.shutdown().await;
    }
}

#[tokio::test]
async fn streaming_and_other_methods_pass_through_unmirrored() {
    let (sg, counters, _) = stack(Behaviour::Ok).await;
    let mut client = common::h2::client(sg.proxy_addr).await;
    let mut req = infer_request(sg.proxy_addr, "meta-1", &TEXTS);
    *req.uri_mut() = format!(
        "http://{}/inference.GRPCInferenceService/ModelStreamInfer",
        sg.proxy_addr
    )
    .parse()
    .unwrap();
    let (status, _, trailers) = call(&mut client, req).await;
    assert_eq!(status, 200);
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        counters[0].load(Ordering::SeqCst),
        1,
        "the primary got the call"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        counters[1].load(Ordering::SeqCst),
        0,
        "no shadow call for a method not in shadow.grpc_methods"
    );
    assert_eq!(counters[2].load(Ordering::SeqCst), 0);
    sg.shutdown().await;
}

/// `check-config` on a gRPC setup: an unknown method path, TF Serving without an output
/// name, a missing HTTP/2 target, and an "HTTP/2" endpoint that speaks only HTTP/1.1
/// are each refused with exit 64 and the key named; a good setup probes its endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_grpc_mistakes() {
    const BIN: &str = env!("CARGO_BIN_EXE_shadowgate");
    let dir = tempfile::tempdir().unwrap();
    let http1_only = ModelServer::spawn(ModelOptions::default()).await.unwrap();
    let good_h2 = model(Behaviour::Ok, Arc::new(AtomicUsize::new(0))).await;
    // check-config on a config with `shadow_extra` in [shadow] and `canary_http2` as the
    // canary's http2_url line: (exit code, stdout, stderr).
    let check = |shadow_extra: &str, canary_http2: &str| {
        let text = format!(
            r#"
[model]
name = "m"
version = "v2"
[primary]
url = "http://127.0.0.1:8000"
http2_url = "h2c://{good_h2}"
[shadow]
{shadow_extra}
[shadow.baseline]
url = "http://127.0.0.1:8001"
version = "v1"
http2_url = "h2c://{good_h2}"
[shadow.canary]
url = "http://127.0.0.1:8002"
version = "v2"
{canary_http2}
"#
        );
        let path = dir.path().join("g.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check-config", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = format!("http2_url = \"h2c://{good_h2}\"");
    let (code, out, err) = check("", &good);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("shadow.canary.http2_url") && out.contains("speaks HTTP/2"),
        "{out}"
    );

    let (code, _, err) = check(
        r#"grpc_methods = ["/inference.GRPCInferenceService/ModelInfr"]"#,
        &good,
    );
    assert_eq!(code, Some(64));
    assert!(
        err.contains("shadow.grpc_methods[0]")
            && err.contains("/inference.GRPCInferenceService/ModelInfer"),
        "{err}"
    );

    let (code, _, err) = check(
        r#"grpc_methods = ["/tensorflow.serving.PredictionService/Predict"]"#,
        &good,
    );
    assert_eq!(code, Some(64));
    assert!(err.contains("shadow.grpc_output"), "{err}");

    // The canary's "HTTP/2" port speaks HTTP/1.1 only.
    let (code, _, err) = check("", &format!("http2_url = \"h2c://{}\"", http1_only.addr));
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("shadow.canary.http2_url") && err.contains("does not speak HTTP/2"),
        "{err}"
    );

    // No HTTP/2 target for the canary while gRPC calls are mirrored.
    let (code, _, err) = check("", "");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("shadow.canary.http2_url") && err.contains("is required"),
        "{err}"
    );
}

#[tokio::test]
async fn tei_embed_calls_are_mirrored_too() {
    let (sg, counters, _) = stack(Behaviour::Shifted(0.25)).await;
    let mut client = common::h2::client(sg.proxy_addr).await;
    // 4 rounds: 12 pairs, over drift.min_pairs (10) so the mean is not NaN.
    for (i, text) in TEXTS.iter().cycle().take(12).enumerate() {
        let message = EmbedRequest {
            inputs: text.to_string(),
            ..Default::default()
        };
        let req = Request::post(format!("http://{}/tei.v1.Embed/Embed", sg.proxy_addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-request-id", format!("tei-{i}"))
            .body(Full::new(frame::encode(&message)))
            .unwrap();
        let (status, data, trailers) = call(&mut client, req).await;
        assert_eq!(
            (status, &trailers["grpc-status"]),
            (http::StatusCode::OK, &"0".parse().unwrap())
        );
        let answer = EmbedResponse::decode(frame::unframe_bytes(&data, 1 << 20).unwrap()).unwrap();
        assert_eq!(
            answer.embeddings,
            embed(text.as_bytes()),
            "the primary's answer"
        );
    }
    let text = wait_for_pairs(&sg, 12.0).await;
    assert_eq!(
        common::value(
            &text,
            "model_embedding_pairs_total",
            &[("outcome", "compared")]
        ),
        Some(12.0)
    );
    assert_eq!(
        common::value(
            &text,
            "shadowgate_shadow_requests_total",
            &[
                ("protocol", "grpc_tei"),
                ("target", "canary"),
                ("outcome", "ok")
            ]
        ),
        Some(12.0)
    );
    let expected: f64 = TEXTS
        .iter()
        .map(|t| {
            let a = embed(t.as_bytes());
            let b: Vec<f32> = a.iter().map(|v| v + 0.25).collect();
            shadowgate::compare::compare(&a, &b).unwrap().cosine
        })
        .sum::<f64>()
        / 3.0;
    let mean = sg.drift_snapshot().unwrap().mean_cosine;
    assert!(
        (mean - expected).abs() < 1e-6,
        "mean {mean} vs expected {expected}"
    );
    assert_eq!(counters[2].load(Ordering::SeqCst), 12);
    sg.shutdown().await;
}

/// `[reference]` on the gRPC path: a sample of the `ModelInfer` answers is copied as it
/// streams to the client and scored off the client path, item by item, with no shadow
/// call. Here the reference is built in the sidecar from the first 1000 items
/// (`from_first`), then the next 150 are scored; the client's answers stay the primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_scoring_reads_grpc_answers() {
    let counters = [(); 3].map(|_| Arc::new(AtomicUsize::new(0)));
    let primary = model(Behaviour::Ok, counters[0].clone()).await;
    let baseline = model(Behaviour::Ok, counters[1].clone()).await;
    let canary = model(Behaviour::Ok, counters[2].clone()).await;
    let unused = format!("http://127.0.0.1:{}", common::free_port());
    let cfg = common::config(
        &unused,
        &unused,
        &unused,
        &format!(
            "sample_rate = 0.0\n[shadow.baseline]\nhttp2_url = \"h2c://{baseline}\"\n[shadow.canary]\nhttp2_url = \"h2c://{canary}\""
        ),
        &format!(
            "[primary]\nhttp2_url = \"h2c://{primary}\"\n[reference]\nfrom_first = {}\nsample_rate = 1.0",
            shadowgate::reference_monitor::MIN_FROM_FIRST
        ),
    );
    let sg = shadowgate::serve::start(cfg).await.unwrap();
    let mut through = common::h2::client(sg.proxy_addr).await;
    let mut direct = common::h2::client(primary).await;
    // 3 items a call: 334 calls fill the 1000 of from_first (the last call's other two
    // items go with it, unscored), then 50 more calls: 150 items scored.
    for i in 0..384 {
        let id = format!("ref-{i}");
        let texts = [
            format!("first text {i}"),
            format!("second text {i}"),
            format!("third text {i}"),
        ];
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (s1, d1, t1) = call(&mut through, infer_request(sg.proxy_addr, &id, &texts)).await;
        if i % 50 == 0 {
            let (s2, d2, t2) = call(&mut direct, infer_request(primary, &id, &texts)).await;
            assert_eq!((s1, &d1, &t1), (s2, &d2, &t2), "the primary's answer");
        }
    }
    // The reference is built on the scoring thread first (seconds in a debug build, tens
    // of seconds beside the rest of the suite: the same bound as tests/it/reference.rs).
    let text = wait_for_metric(
        &sg,
        "shadowgate_reference",
        Duration::from_secs(120),
        |text| common::value(text, "shadowgate_reference_samples_total", &[]) == Some(150.0),
    )
    .await;
    assert_eq!(
        common::value(&text, "shadowgate_reference_learning_samples", &[]),
        Some(0.0)
    );
    assert_eq!(
        common::value(
            &text,
            "shadowgate_reference_info",
            &[("source", "first_n"), ("dim", &DIM.to_string())]
        ),
        Some(1.0)
    );
    assert_eq!(
        common::value(
            &text,
            "shadowgate_reference_dropped_total",
            &[("reason", "unparsable")]
        ),
        Some(0.0)
    );
    // No shadow call: scoring reads the primary's answer.
    assert_eq!(counters[1].load(Ordering::SeqCst), 0);
    assert_eq!(counters[2].load(Ordering::SeqCst), 0);
    sg.shutdown().await;
}
