//! Labels and business events posted to the admin port, joined online with the shadow
//! predictions and the version that served each request.

use crate::support;

use http::Method;
use shadowgate::accuracy::{self, AccuracyArgs};
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
    let s = support::stack(
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
    let acc = |v: &str| support::value(&m, "model_inference_accuracy", &[("version", v)]).unwrap();
    assert_eq!(acc("v1"), 1.0);
    assert!(
        (acc("v2") - canary_right as f64 / n as f64).abs() < 1e-12,
        "{} vs {canary_right}",
        acc("v2")
    );
    assert_eq!(
        support::value(
            &m,
            "model_shadow_labeled_pairs_total",
            &[("outcome", "both_correct")]
        ),
        Some(canary_right as f64)
    );
    assert_eq!(
        support::value(
            &m,
            "model_shadow_labeled_pairs_total",
            &[("outcome", "baseline_only")]
        ),
        Some((n - canary_right) as f64)
    );
    assert_eq!(
        support::value(
            &m,
            "shadowgate_feedback_events_total",
            &[("kind", "label"), ("result", "unknown")]
        ),
        Some(1.0)
    );
    let conv = support::value(&m, "business_metric_conversion_rate", &[("version", "v2")]).unwrap();
    assert!((conv - 0.25).abs() < 1e-12, "{conv}");
    let lb = support::value(&m, "model_accuracy_ratio_lower_bound", &[]).unwrap();
    assert!(lb.is_finite() && lb < 1.0, "{lb}");
}

/// Labels and events name the item (input) of a batched request; a bad `item` is an
/// error of its entry only. The batch's predictions are recorded through the same call
/// the mirror makes (`Feedback::predictions`, one pair per item), for an id served
/// outside the proxy, so the test does not race the mirror.
#[tokio::test]
async fn labels_score_the_named_item_and_bad_items_fail_only_their_entry() {
    let opts = ModelOptions {
        dim: 16,
        cosine: CosineSpec::Identical,
        prediction_flip_share: Some(0.0),
        ..Default::default()
    };
    let s = support::stack(
        opts.clone(),
        opts.clone(),
        opts,
        "prediction_pointer = \"/label\"",
        "",
    )
    .await;
    let mut ids = Vec::new();
    for text in ["first", "second"] {
        let r = s.embed(text).await;
        assert_eq!(r.status, 200);
        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
        ids.push((id, predicted_label(text, 0.0)));
    }
    s.wait_pairs(2).await;
    // The pair is counted just before its predictions are recorded. A sleep: the sidecar
    // shows no sign of a recorded prediction that this test could wait for without
    // posting a label (which would join it).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let fb = s.sidecar.feedback();
    let now = std::time::Instant::now();
    fb.served("batch-1", now);
    let p = |b: &str, c: &str| (Some(b.to_string()), Some(c.to_string()));
    fb.predictions("batch-1", vec![p("1", "1"), p("0", "1"), p("1", "0")], now);

    let (a, truth_a) = &ids[0];
    let (b, truth_b) = &ids[1];
    let labels = serde_json::json!([
        {"request_id": a, "label": truth_a},                     // 0 joined: both correct
        {"request_id": a, "item": 0, "label": truth_a},          // 1 duplicate
        {"request_id": a, "item": 1, "label": "1"},              // 2 unknown: a single input
        {"request_id": "batch-1", "item": 1, "label": "1"},      // 3 joined: canary only
        {"request_id": "batch-1", "item": 2, "label": "1"},      // 4 joined: baseline only
        {"request_id": "batch-1", "item": -1, "label": "1"},     // 5 invalid
        {"request_id": "batch-1", "item": 1.5, "label": "1"},    // 6 invalid
        {"request_id": "batch-1", "item": 1_000_001, "label": "1"}, // 7 invalid
        {"request_id": "batch-1", "item": "2", "label": "1"},    // 8 invalid
        {"request_id": b, "item": null, "label": truth_b},       // 9 joined: both correct
        {"request_id": "batch-1", "item": 1_000_000, "label": "1"}, // 10 unknown item
        {"request_id": "batch-1", "item": 0, "label": {"x": 1}}, // 11 invalid label
    ]);
    let url = format!("{}/labels", s.admin_url());
    let r = s
        .client
        .send(Method::POST, &url, &[], labels.to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let counts: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        [
            &counts["joined"],
            &counts["duplicate"],
            &counts["unknown"],
            &counts["not_mirrored"],
            &counts["invalid"]
        ],
        [4, 1, 2, 0, 5],
        "{counts}"
    );
    let errors = counts["errors"].as_array().expect("errors");
    let indices: Vec<u64> = errors
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [5, 6, 7, 8, 11], "{counts}");
    for e in &errors[..4] {
        let msg = e["error"].as_str().unwrap();
        assert!(
            msg.contains("item must be an integer from 0 to 1000000"),
            "{msg}"
        );
        assert_eq!(e["request_id"], "batch-1");
    }
    assert!(errors[4]["error"].as_str().unwrap().contains("label"));

    // Nothing usable in the body: 400, with the same per-entry report.
    let r = s
        .client
        .send(
            Method::POST,
            &url,
            &[],
            r#"{"request_id": "batch-1", "item": -3, "label": "1"}"#.into(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let counts: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(counts["invalid"], 1);
    assert_eq!(counts["errors"][0]["index"], 0);

    // Conversions count per request, whichever item they name; `item` is validated.
    let events = serde_json::json!([
        {"request_id": "batch-1", "item": 0},
        {"request_id": "batch-1", "item": 2, "event": "conversion"},
        {"request_id": a, "item": -5},
        {"request_id": b, "item": 3},
    ]);
    let r = s
        .client
        .send(
            Method::POST,
            &format!("{}/feedback", s.admin_url()),
            &[],
            events.to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let counts: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        [&counts["joined"], &counts["duplicate"], &counts["invalid"]],
        [2, 1, 1],
        "{counts}"
    );

    let m = s.metrics().await;
    let pairs = |o: &str| {
        support::value(&m, "model_shadow_labeled_pairs_total", &[("outcome", o)]).unwrap()
    };
    assert_eq!(
        [
            pairs("both_correct"),
            pairs("baseline_only"),
            pairs("canary_only"),
            pairs("both_wrong")
        ],
        [2.0, 1.0, 1.0, 0.0]
    );
    let acc = |v: &str| support::value(&m, "model_inference_accuracy", &[("version", v)]).unwrap();
    assert_eq!((acc("v1"), acc("v2")), (0.75, 0.75));
    // Served: the two proxied requests and batch-1; converted: batch-1 and b.
    let conv = support::value(&m, "business_metric_conversion_rate", &[("version", "v2")]).unwrap();
    assert!((conv - 2.0 / 3.0).abs() < 1e-12, "{conv}");
    assert_eq!(
        support::value(&m, "shadowgate_feedback_items_not_kept_total", &[]),
        Some(0.0)
    );
}

#[tokio::test]
/// Batched requests through the real sidecar, labeled per item: the online join and the
/// batch job over the shadow log the sidecar wrote agree on every item.
async fn batched_requests_are_labeled_per_item_online_and_in_the_batch_job() {
    let base = ModelOptions {
        dim: 32,
        cosine: CosineSpec::Identical,
        prediction_flip_share: Some(0.0),
        ..Default::default()
    };
    let canary = ModelOptions {
        prediction_flip_share: Some(0.3),
        ..base.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let s = support::stack(
        base.clone(),
        base,
        canary,
        "prediction_pointer = \"/data/*/label\"",
        &format!(
            "[shadow_log]\ndir = {:?}\nmax_file_age = \"1s\"",
            dir.path().display().to_string()
        ),
    )
    .await;
    let mut sent = Vec::new();
    for r in 0..5 {
        let texts: Vec<String> = (0..8).map(|i| format!("req {r} item {i}")).collect();
        let id = format!("batch-{r}");
        let body = format!(
            r#"{{"model":"m","input":{}}}"#,
            serde_json::to_string(&texts).unwrap()
        );
        let reply = s
            .client
            .send(
                Method::POST,
                &format!("{}/v1/embeddings", s.proxy_url()),
                &[("x-request-id", &id)],
                body,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        sent.push((id, texts));
    }
    s.wait_pairs(40).await;
    // Predictions are recorded just after the pair is counted; nothing shows when (see
    // above), so a sleep.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut labels = Vec::new();
    let mut csv = String::from("request_id,item,label\n");
    let mut canary_right = 0;
    for (id, texts) in &sent {
        for (i, t) in texts.iter().enumerate() {
            let truth = predicted_label(t, 0.0);
            if predicted_label(t, 0.3) == truth {
                canary_right += 1;
            }
            labels.push(serde_json::json!({"request_id": id, "item": i, "label": truth}));
            csv.push_str(&format!("{id},{i},{truth}\n"));
        }
    }
    labels.push(serde_json::json!({"request_id": "batch-0", "item": 3, "label": "0"}));
    labels.push(serde_json::json!({"request_id": "batch-0", "item": 8, "label": "0"}));
    let r = s
        .client
        .send(
            Method::POST,
            &format!("{}/labels", s.admin_url()),
            &[],
            serde_json::Value::from(labels).to_string(),
        )
        .await;
    let counts: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    println!("online: {counts}, canary right {canary_right}/40");
    assert_eq!(counts["joined"], 40);
    assert_eq!(counts["duplicate"], 1);
    assert_eq!(counts["unknown"], 1);
    let m = s.metrics().await;
    let pairs = |o: &str| {
        support::value(&m, "model_shadow_labeled_pairs_total", &[("outcome", o)]).unwrap()
    };
    assert_eq!(pairs("both_correct"), canary_right as f64);
    assert_eq!(pairs("baseline_only"), (40 - canary_right) as f64);
    s.sidecar.shutdown().await;

    let lab = dir.path().join("labels.csv");
    std::fs::write(&lab, csv).unwrap();
    let report = accuracy::compute(&AccuracyArgs::new(
        vec![dir.path().to_path_buf()],
        vec![lab],
    ))
    .unwrap();
    let j = serde_json::to_value(&report).unwrap();
    println!(
        "batch: inputs {} labels {} paired {}",
        j["inputs"], j["labels"], j["models"][0]["paired"]
    );
    assert_eq!(j["inputs"]["rows"], 40);
    assert_eq!(j["inputs"]["labeled_rows"], 40);
    assert_eq!(j["models"][0]["paired"]["both_correct"], canary_right);
    assert_eq!(j["models"][0]["paired"]["baseline_only"], 40 - canary_right);
}
