//! A real Prometheus scrapes a running sidecar and answers the gate queries with the
//! values the model servers were built to produce.

use crate::support::prom;
use crate::support::{self, Component};

use std::time::Duration;

use shadowgate::demo::model::{Behaviour, CosineSpec, ModelOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_known_drift_and_error_rate() {
    if !support::require(&[Component::Prometheus]) {
        return;
    }
    let c = 0.93;
    let o = |cosine| ModelOptions {
        dim: 256,
        cosine,
        ..Default::default()
    };
    let s = support::stack(
        o(CosineSpec::Identical),
        o(CosineSpec::Identical),
        o(CosineSpec::Constant(c)),
        "",
        "",
    )
    .await;

    // 80 good answers, then 20 failures: an error rate of exactly 0.2.
    for i in 0..80 {
        assert_eq!(s.embed(&format!("req {i}")).await.status, 200);
    }
    s.primary.set_behaviour(Behaviour::Status(500));
    for i in 0..20 {
        assert_eq!(s.embed(&format!("bad {i}")).await.status, 500);
    }
    s.wait_pairs(100).await;

    let admin = s.sidecar.admin_addr;
    let prom = tokio::task::spawn_blocking(move || {
        let p = prom::Prometheus::start(&[admin], "1s", false, &[]);
        let q = r#"model_embedding_drift_cosine_similarity{model="m",baseline="v1",canary="v2"}"#;
        let drift = p.wait_for(q, Duration::from_secs(20), |v| v.is_finite());
        let err_q = r#"sum(model_inference_errors_total{model="m",version="v2"}) / sum(model_inference_requests_total{model="m",version="v2"})"#;
        let err = p.wait_for(err_q, Duration::from_secs(10), |v| v.is_finite());
        let pairs = p.value(r#"sum(model_embedding_pairs_total{model="m",outcome="compared"})"#);
        (drift, err, pairs, p)
    })
    .await
    .unwrap();
    let (drift, err, pairs, _p) = prom;
    let drift = drift.expect("drift series scraped");
    assert!((drift - c).abs() < 0.01, "drift {drift}");
    // The shadow pairs of the failed requests still compare (the shadows answered).
    assert_eq!(pairs, Some(100.0));
    let err = err.expect("error-rate query answered");
    assert!((err - 0.2).abs() < 1e-9, "error rate {err}");
}
