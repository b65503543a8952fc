//! The status page at `/` on the admin port, rendered by headless Chromium: it must show
//! the numbers `/metrics` shows.

use crate::support::{self, Component};

use std::process::Command;

use shadowgate::demo::model::{CosineSpec, ModelOptions};

/// The Chromium binary ([`support::require`] checked that there is one).
fn chromium() -> &'static str {
    support::system::chromium().expect("chromium on PATH")
}

/// The DOM after load, as Chromium rendered it.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Text of the element with `id`.
fn by_id(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} missing"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end].trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_the_numbers_metrics_shows() {
    if !support::require(&[Component::Chromium]) {
        return;
    }
    let o = |c| ModelOptions {
        dim: 64,
        cosine: c,
        ..Default::default()
    };
    let s = support::stack(
        o(CosineSpec::Identical),
        o(CosineSpec::Identical),
        o(CosineSpec::Constant(0.9)),
        "self_similarity_rate = 1.0",
        "",
    )
    .await;
    // 800 pairs: enough for the anytime-valid upper bound to fall under 0.92.
    for i in 0..800 {
        assert_eq!(s.embed(&format!("page {i}")).await.status, 200);
    }
    // Traffic is over and drained: both views read the same, settled numbers.
    let m = s.wait_pairs(800).await;
    let url = format!("{}/", s.admin_url());
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url))
        .await
        .unwrap();
    let metric = |name: &str, labels: &[(&str, &str)]| support::value(&m, name, labels).unwrap();

    let shown = |id: &str| {
        by_id(&dom, id)
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("#{id}: {:?}", by_id(&dom, id)))
    };
    assert!(
        (shown("mean-cosine") - metric("model_embedding_drift_cosine_similarity", &[])).abs()
            < 5e-5
    );
    assert!(
        (shown("lower-bound") - metric("model_embedding_cosine_similarity_lower_bound", &[])).abs()
            < 5e-5
    );
    assert!(
        (shown("upper-bound") - metric("model_embedding_cosine_similarity_upper_bound", &[])).abs()
            < 5e-5
    );
    assert!(
        (shown("noise-floor") - metric("model_embedding_self_cosine_similarity", &[])).abs() < 5e-5
    );
    assert_eq!(
        shown("pairs-compared"),
        metric("model_embedding_pairs_total", &[("outcome", "compared")])
    );
    assert_eq!(shown("pairs-compared"), 800.0);
    assert_eq!(
        shown("shadow-canary-ok"),
        metric(
            "shadowgate_shadow_requests_total",
            &[("target", "canary"), ("outcome", "ok")]
        )
    );
    // The gate section judges this canary (cosine 0.9 < 0.92) as failing drift.
    assert!(
        dom.contains("data-gate=\"embedding drift\""),
        "gate verdicts shown"
    );
    let drift_row = &dom[dom.find("data-gate=\"embedding drift\"").unwrap()..];
    assert!(drift_row[..200].contains(">fail<"), "{}", &drift_row[..200]);
    assert!(
        dom.contains("<svg") || dom.contains("id=\"chart\""),
        "chart or its placeholder"
    );
    // Slices are on by default: the table lists them with the pairs each holds, and the
    // worst slice is named with its lowest-cosine requests.
    assert!(dom.contains("id=\"slices\""), "slices table");
    for slice in ["len:0-64", "region:0"] {
        assert!(
            dom.contains(&format!("data-slice=\"{slice}\"")),
            "{slice} listed"
        );
    }
    let worst = by_id(&dom, "worst-slice");
    assert!(
        worst.starts_with("len:") || worst.starts_with("region:"),
        "{worst}"
    );
    let examples = &dom[dom
        .find("id=\"worst-examples\"")
        .expect("worst-slice examples")..];
    let rows = examples[..examples.find("</table>").unwrap()]
        .matches("<tr>")
        .count();
    assert!(
        rows >= 2,
        "a header and at least one example request: {rows} rows"
    );
    assert!(
        dom.contains("data-gate=\"worst slice\""),
        "worst-slice verdict"
    );
    assert!(
        dom.contains("data-gate=\"paired latency\""),
        "paired-latency verdict"
    );
}
