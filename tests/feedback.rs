//! Labels and business events posted to the admin port, joined online with the shadow
//! predictions and the version that served each request.

mod common;

use http::Method;
use shadowgate::demo::model::{predicted_label, CosineSpec, ModelOptions};

#[tokio::test]
async fn labels_and_conversions_drive_accuracy_and_conversion_gauges() {
    let base = ModelOptions {
        dim: 64,
        cosine: CosineSpec::Identical,
        prediction_flip_share: Some(0.0),
        ..Default::default()
    };
    let canary = ModelOptions {
        prediction_flip_share: Some(0.3),
        ..base.clone()
    };
    let s = common::stack(
        base.clone(),
        base,
        canary,
        "prediction_pointer = \"/label\"",
        "[feedback]\ntoken = \"s3cret\"",
    )
    .await;
    let n = 60;
    let mut ids = Vec::new();
    for i in 0..n {
        let text = format!("item {i}");
        let r = s.embed(&text).await;
        assert_eq!(r.status, 200);
        ids.push((
            r.headers["x-request-id"].to_str().unwrap().to_string(),
            text,
        ));
    }
    s.wait_pairs(n).await;

    // Truth = the baseline's class, so the baseline is always right and the canary is
    // right exactly where it did not flip.
    let mut canary_right = 0;
    let mut labels = Vec::new();
    for (id, text) in &ids {
        let truth = predicted_label(text, 0.0);
        if predicted_label(text, 0.3) == truth {
            canary_right += 1;
        }
        labels.push(serde_json::json!({"request_id": id, "label": truth}));
    }
    labels.push(serde_json::json!({"request_id": "never-seen", "label": "1"}));
    let url = format!("{}/labels", s.admin_url());
    let body = serde_json::to_string(&labels).unwrap();
    let denied = s.client.send(Method::POST, &url, &[], body.clone()).await;
    assert_eq!(denied.status, 401);
    let wrong = s
        .client
        .send(
            Method::POST,
            &url,
            &[("authorization", "Bearer nope")],
            body.clone(),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let auth = [("authorization", "Bearer s3cret")];
    let r = s.client.send(Method::POST, &url, &auth, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let counts: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(counts["joined"], n, "{counts}");
    assert_eq!(counts["unknown"], 1);

    let bad = s
        .client
        .send(Method::POST, &url, &auth, "{\"request_id\": 5}".into())
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("malformed"), "{}", bad.text());

    // 15 of the 60 served requests convert.
    let events: Vec<_> = ids
        .iter()
        .take(15)
        .map(|(id, _)| serde_json::json!({"request_id": id, "event": "conversion"}))
        .collect();
    let r = s
        .client
        .send(
            Method::POST,
            &format!("{}/feedback", s.admin_url()),
            &auth,
            serde_json::to_string(&events).unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);

    let m = s.metrics().await;
    let acc = |v: &str| common::value(&m, "model_inference_accuracy", &[("version", v)]).unwrap();
    assert_eq!(acc("v1"), 1.0);
    assert!(
        (acc("v2") - canary_right as f64 / n as f64).abs() < 1e-12,
        "{} vs {canary_right}",
        acc("v2")
    );
    assert_eq!(
        common::value(
            &m,
            "model_shadow_labeled_pairs_total",
            &[("outcome", "both_correct")]
        ),
        Some(canary_right as f64)
    );
    assert_eq!(
        common::value(
            &m,
            "model_shadow_labeled_pairs_total",
            &[("outcome", "baseline_only")]
        ),
        Some((n - canary_right) as f64)
    );
    assert_eq!(
        common::value(
            &m,
            "shadowgate_feedback_events_total",
            &[("kind", "label"), ("result", "unknown")]
        ),
        Some(1.0)
    );
    let conv = common::value(&m, "business_metric_conversion_rate", &[("version", "v2")]).unwrap();
    assert!((conv - 0.25).abs() < 1e-12, "{conv}");
    let lb = common::value(&m, "model_accuracy_ratio_lower_bound", &[]).unwrap();
    assert!(lb.is_finite() && lb < 1.0, "{lb}");
}
