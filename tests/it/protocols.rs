//! Every protocol end to end: real model servers speaking it on loopback, the sidecar
//! parsing their answers, and the known cosine measured.

use crate::support;

use http::Method;
use serde_json::json;
use shadowgate::demo::model::{CosineSpec, ModelOptions};
use shadowgate::protocol::Protocol;

async fn run(protocol: Protocol, shadow_extra: &str, path: &str, body: impl Fn(&str) -> String) {
    let c = 0.8;
    let o = |cosine| ModelOptions {
        protocol,
        dim: 96,
        cosine,
        ..Default::default()
    };
    let extra = format!("protocol = \"{}\"\n{shadow_extra}", protocol.as_str());
    let s = support::stack(
        o(CosineSpec::Identical),
        o(CosineSpec::Identical),
        o(CosineSpec::Constant(c)),
        &extra,
        "",
    )
    .await;
    let n = 30;
    for i in 0..n {
        let r = s
            .client
            .send(
                Method::POST,
                &format!("{}{path}", s.proxy_url()),
                &[],
                body(&format!("text {i}")),
            )
            .await;
        assert_eq!(r.status, 200, "{protocol:?}: {}", r.text());
    }
    let m = s.wait_pairs(n).await;
    let compared = support::value(
        &m,
        "model_embedding_pairs_total",
        &[("outcome", "compared")],
    );
    assert_eq!(compared, Some(n as f64), "{protocol:?} {shadow_extra}: {m}");
    let mean = support::value(&m, "model_embedding_drift_cosine_similarity", &[]).unwrap();
    assert!((mean - c).abs() < 0.005, "{protocol:?}: {mean}");
}

#[tokio::test]
async fn openai_float() {
    run(Protocol::OpenAi, "", "/v1/embeddings", |t| {
        json!({"model": "m", "input": t}).to_string()
    })
    .await;
}

#[tokio::test]
async fn openai_base64() {
    run(Protocol::OpenAi, "", "/v1/embeddings", |t| {
        json!({"input": t, "encoding_format": "base64"}).to_string()
    })
    .await;
}

#[tokio::test]
async fn tei() {
    run(Protocol::Tei, "", "/embed", |t| {
        json!({"inputs": t}).to_string()
    })
    .await;
}

#[tokio::test]
async fn kserve_v2() {
    run(Protocol::KServeV2, "", "/v2/models/m/infer", |t| {
        json!({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [t]}]})
            .to_string()
    })
    .await;
}

#[tokio::test]
async fn tfserving() {
    run(Protocol::TfServing, "", "/v1/models/m:predict", |t| {
        json!({"instances": [t]}).to_string()
    })
    .await;
}

#[tokio::test]
async fn generic_pointer() {
    run(
        Protocol::Generic,
        "embedding_pointer = \"/result/vector\"",
        "/score",
        |t| json!({"input": t}).to_string(),
    )
    .await;
}

/// Chat completions go to the primary; the shadows get embeddings requests of the user's
/// message, built by the rewrite.
#[tokio::test]
async fn rewrite_turns_a_chat_request_into_an_embeddings_request() {
    run(
        Protocol::OpenAi,
        "rewrite = { path = \"/v1/embeddings\", input_pointer = \"/messages/0/content\" }",
        "/v1/chat/completions",
        |t| json!({"model": "m", "messages": [{"role": "user", "content": t}]}).to_string(),
    )
    .await;
}
