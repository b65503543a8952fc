//! `[[routes]]`: three models on one OpenAI-style server, routed by the body's `model`;
//! two candidates of one model at 1 % and 3 %; an unknown model name; a candidate that
//! hangs; the shadow marker header. Real model servers on loopback, the sidecar in
//! process, numbers read from `/metrics`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use shadowgate::config::Config;
use shadowgate::demo::model::{Behaviour, CosineSpec, ModelOptions, ModelServer};
use shadowgate::ids::{id_hash, SampleRate};
use shadowgate::serve;

use crate::support::{value, Client};

async fn model(cosine: CosineSpec) -> ModelServer {
    ModelServer::spawn(ModelOptions {
        dim: 64,
        cosine,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// One request: its id, its JSON body, extra headers.
type Req = (String, String, Vec<(String, String)>);

/// Send `bodies` through the proxy, `lanes` at a time; every answer must be a 200.
async fn send_all(url: &str, bodies: Vec<Req>, lanes: usize) {
    let client = Client::new();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..lanes {
        let (client, bodies, next, url) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            url.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, body, extra)) = bodies.get(i) else {
                    break;
                };
                let mut headers = vec![("x-request-id", id.as_str())];
                headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let reply = client
                    .send(Method::POST, &url, &headers, body.clone())
                    .await;
                assert_eq!(reply.status, 200, "{id}: {}", reply.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn request(id: String, model: &str, text: &str) -> Req {
    (
        id,
        format!(r#"{{"input":"{text}","model":"{model}"}}"#),
        Vec::new(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_models_by_the_model_field_shares_unknown_names_and_a_hanging_candidate() {
    let primary = model(CosineSpec::Identical).await;
    let alpha_base = model(CosineSpec::Identical).await;
    let alpha_v2 = model(CosineSpec::Constant(0.95)).await;
    let alpha_v3 = model(CosineSpec::Constant(0.90)).await;
    let beta_base = model(CosineSpec::Identical).await;
    let beta_v2 = model(CosineSpec::Identical).await;
    beta_v2.set_behaviour(Behaviour::Hang);
    let gamma_base = model(CosineSpec::Identical).await;
    let gamma_v2 = model(CosineSpec::Uniform { lo: 0.8, hi: 1.0 }).await;
    let text = format!(
        r#"
[model]
name = "pod"
version = "v1"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
[primary]
url = "{primary}"
timeout = "5s"
[shadow]
max_per_second = 0
max_in_flight = 512
self_similarity_rate = 0.0
timeout = "500ms"
header = "x-mirror-of"
[drift]
min_pairs = 10
[shadow_log]
dir = ""

[[routes]]
model = "alpha"
aliases = ["alpha-large"]
baseline = {{ url = "{ab}", version = "v1" }}
candidates = [
  {{ url = "{a2}", version = "v2", share = 0.01 }},
  {{ url = "{a3}", version = "v3", share = 0.03 }},
]

[[routes]]
model = "beta"
baseline = {{ url = "{bb}", version = "v1" }}
candidates = [{{ url = "{b2}", version = "v2", share = 1.0 }}]

[[routes]]
model = "gamma"
baseline = {{ url = "{gb}", version = "v1" }}
candidates = [{{ url = "{g2}", version = "v2", share = 1.0 }}]
"#,
        primary = primary.url(),
        ab = alpha_base.url(),
        a2 = alpha_v2.url(),
        a3 = alpha_v3.url(),
        bb = beta_base.url(),
        b2 = beta_v2.url(),
        gb = gamma_base.url(),
        g2 = gamma_v2.url(),
    );
    let cfg = Config::from_toml_with_env(&text, std::iter::empty()).unwrap();
    let sidecar = serve::start(cfg).await.unwrap();
    let url = format!("http://{}/v1/embeddings", sidecar.proxy_addr);

    // 100 k requests for alpha (a fifth of them by its alias), 1 000 each for beta,
    // gamma and a model no route knows, interleaved.
    const ALPHA: usize = 100_000;
    const OTHERS: usize = 1_000;
    let mut bodies = Vec::new();
    let mut unknown_ids = Vec::new();
    for i in 0..ALPHA {
        let name = if i % 5 == 0 { "alpha-large" } else { "alpha" };
        bodies.push(request(format!("a-{i}"), name, &format!("alpha text {i}")));
        if i % 100 == 0 {
            let k = i / 100;
            bodies.push(request(format!("b-{k}"), "beta", &format!("beta text {k}")));
            bodies.push(request(
                format!("g-{k}"),
                "gamma",
                &format!("gamma text {k}"),
            ));
            bodies.push(request(format!("u-{k}"), "no-such-model", "who"));
            unknown_ids.push(format!("u-{k}"));
        }
    }
    // Requests that already carry the shadow marker are shadow copies: never mirrored.
    for k in 0..50 {
        let mut r = request(format!("s-{k}"), "gamma", &format!("copy {k}"));
        r.2.push(("x-mirror-of".into(), "1".into()));
        bodies.push(r);
    }
    assert_eq!(bodies.len(), ALPHA + 3 * OTHERS + 50);
    send_all(&url, bodies, 32).await;

    // Every lane's comparisons are accounted for: gamma's all compared, beta's all timed
    // out or dropped, alpha's compared.
    let admin = format!("http://{}/metrics", sidecar.admin_addr);
    let client = Client::new();
    let lane = |m: &str, c: &str| vec![("model", m.to_string()), ("canary", c.to_string())];
    let get = |text: &str, name: &str, labels: &[(&str, String)], extra: &[(&str, &str)]| {
        let mut all: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        value(text, name, &all).unwrap_or(0.0)
    };
    let mut text = String::new();
    crate::support::poll_async(Duration::from_secs(30), async || {
        text = client.get(&admin).await.text();
        let in_flight: f64 = [
            ("alpha", "v2"),
            ("alpha", "v3"),
            ("beta", "v2"),
            ("gamma", "v2"),
        ]
        .iter()
        .map(|(m, c)| get(&text, "shadowgate_shadow_in_flight", &lane(m, c), &[]))
        .sum();
        (in_flight == 0.0).then_some(())
    })
    .await
    .expect("shadow work drained");
    // One scrape is not a snapshot (its families are collected one after another), so
    // the numbers below come from a scrape taken after the work drained.
    text = client.get(&admin).await.text();

    let mirrored = |m: &str, c: &str| {
        get(
            &text,
            "shadowgate_mirror_decisions_total",
            &lane(m, c),
            &[("decision", "mirrored")],
        )
    };
    let pairs = |m: &str, c: &str, outcome: &str| {
        get(
            &text,
            "model_embedding_pairs_total",
            &lane(m, c),
            &[("outcome", outcome)],
        )
    };

    // Shares: 1 % and 3 % of alpha's 100 k requests, each within ±0.5 % of them.
    for (c, share) in [("v2", 0.01), ("v3", 0.03)] {
        let got = mirrored("alpha", c) / ALPHA as f64;
        assert!(
            (got - share).abs() <= 0.005,
            "alpha {c}: realised share {got}, configured {share}"
        );
        // The hash draw itself, exactly: the same ids through the configured slices.
        let (lo, hi) = if c == "v2" { (0.0, 0.01) } else { (0.01, 0.04) };
        let expected = (0..ALPHA)
            .filter(|i| {
                let h = id_hash(format!("a-{i}").as_bytes(), 0);
                SampleRate::try_new(hi).unwrap().admits(h)
                    && !(lo > 0.0 && SampleRate::try_new(lo).unwrap().admits(h))
            })
            .count() as f64;
        assert_eq!(mirrored("alpha", c), expected, "alpha {c}");
        assert_eq!(pairs("alpha", c, "compared"), expected, "alpha {c}");
    }
    // Per-lane cosine: each alpha candidate at its own constant.
    for (c, cos) in [("v2", 0.95), ("v3", 0.90)] {
        let sum = get(
            &text,
            "model_embedding_cosine_distance_sum",
            &lane("alpha", c),
            &[],
        );
        let n = get(
            &text,
            "model_embedding_cosine_distance_count",
            &lane("alpha", c),
            &[],
        );
        assert!(
            ((1.0 - sum / n) - cos).abs() < 1e-3,
            "alpha {c}: mean cosine {}",
            1.0 - sum / n
        );
    }

    // The hanging candidate: beta's pairs time out (or are dropped over its own cap);
    // gamma beside it compares every one of its requests.
    assert_eq!(pairs("beta", "v2", "compared"), 0.0);
    let beta_timeouts = pairs("beta", "v2", "timeout");
    let beta_dropped = get(
        &text,
        "shadowgate_mirror_decisions_total",
        &lane("beta", "v2"),
        &[("decision", "dropped")],
    );
    assert_eq!(
        beta_timeouts + beta_dropped,
        OTHERS as f64,
        "beta: {beta_timeouts} timeouts, {beta_dropped} dropped"
    );
    assert_eq!(mirrored("gamma", "v2"), OTHERS as f64, "gamma mirrored");
    assert_eq!(
        pairs("gamma", "v2", "compared"),
        OTHERS as f64,
        "gamma compared"
    );

    // Unknown model names: counted under model="other" for the sampled ones (hash under
    // the largest route share, 1.0 here: all of them), never mirrored.
    let unrouted = value(
        &text,
        "shadowgate_mirror_decisions_total",
        &[("model", "other"), ("decision", "unrouted")],
    )
    .unwrap_or(0.0);
    assert_eq!(unrouted, unknown_ids.len() as f64);
    assert!(
        !text.contains("model=\"no-such-model\""),
        "request data became a label"
    );

    // The marker: every call the shadow servers saw carries it; the primary never saw
    // it on client traffic; the 50 marked requests were passed through, not mirrored.
    for server in [&alpha_base, &alpha_v2, &gamma_base, &gamma_v2] {
        let seen = server.stats.seen.lock().unwrap();
        assert!(!seen.is_empty());
        assert!(seen
            .iter()
            .all(|s| s.headers.get("x-mirror-of").is_some_and(|v| v == "1")));
        assert!(seen
            .iter()
            .all(|s| s.headers.get("x-shadowgate-shadow").is_none()));
    }
    {
        let seen = primary.stats.seen.lock().unwrap();
        let unmarked = seen
            .iter()
            .filter(|s| {
                s.headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|id| !id.starts_with("s-"))
            })
            .collect::<Vec<_>>();
        assert!(!unmarked.is_empty());
        assert!(unmarked
            .iter()
            .all(|s| s.headers.get("x-mirror-of").is_none()));
    }
    assert_eq!(primary.requests(), (ALPHA + 3 * OTHERS + 50) as u64);
    assert_eq!(
        gamma_base.requests(),
        OTHERS as u64,
        "marked copies reached the shadows"
    );

    // The status page: a row per lane, and the sections above it are the first lane's
    // (alpha v2 at 0.95), not a sum over lanes.
    let page = client
        .get(&format!("http://{}/", sidecar.admin_addr))
        .await
        .text();
    let table = &page[page.find("id=\"lanes\"").expect("lanes table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr><td>").count(), 4, "{table}");
    assert!(page.contains("baseline <b>v1</b> vs canary <b>v2</b>"));
    let at = page.find("id=\"mean-cosine\">").unwrap() + "id=\"mean-cosine\">".len();
    let shown: f64 = page[at..at + 6].parse().unwrap();
    assert!(
        (shown - 0.95).abs() < 1e-3,
        "status page mean cosine {shown}"
    );

    // Per-route cosine equals a single-route run on the same traffic: the same gamma
    // requests through a sidecar whose one [shadow] pair is gamma's.
    let single = format!(
        r#"
[model]
name = "gamma"
version = "v1"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
[primary]
url = "{primary}"
[shadow]
sample_rate = 1.0
max_per_second = 0
self_similarity_rate = 0.0
[shadow.baseline]
url = "{gb}"
version = "v1"
[shadow.canary]
url = "{g2}"
version = "v2"
[shadow_log]
dir = ""
"#,
        primary = primary.url(),
        gb = gamma_base.url(),
        g2 = gamma_v2.url(),
    );
    let one = serve::start(Config::from_toml_with_env(&single, std::iter::empty()).unwrap())
        .await
        .unwrap();
    let gamma: Vec<_> = (0..OTHERS)
        .map(|k| request(format!("g-{k}"), "gamma", &format!("gamma text {k}")))
        .collect();
    send_all(
        &format!("http://{}/v1/embeddings", one.proxy_addr),
        gamma,
        8,
    )
    .await;
    let one_admin = format!("http://{}/metrics", one.admin_addr);
    let mut one_text = String::new();
    crate::support::poll_async(Duration::from_secs(30), async || {
        one_text = client.get(&one_admin).await.text();
        (value(
            &one_text,
            "model_embedding_pairs_total",
            &[("outcome", "compared")],
        ) == Some(OTHERS as f64))
        .then_some(())
    })
    .await
    .expect("single-route pairs");
    // One scrape is not a snapshot: the histogram may be collected before the pair
    // counter within it. Every pair is counted last, after its observations, so a scrape
    // taken once all are counted sees every observation.
    one_text = client.get(&one_admin).await.text();
    let mean = |t: &str| {
        let l = lane("gamma", "v2");
        get(t, "model_embedding_cosine_distance_sum", &l, &[])
            / get(t, "model_embedding_cosine_distance_count", &l, &[])
    };
    let (routed, alone) = (mean(&text), mean(&one_text));
    let counts = |t: &str| {
        get(
            t,
            "model_embedding_cosine_distance_count",
            &lane("gamma", "v2"),
            &[],
        )
    };
    assert_eq!(counts(&text), counts(&one_text));
    // Other lanes' traffic would be off by 0.05 and more.
    assert!(
        (routed - alone).abs() < 1e-9,
        "gamma mean distance: routed {routed}, alone {alone}"
    );
    assert!(routed > 0.05, "gamma's canary differs: {routed}");
    one.shutdown().await;
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_oip_path_and_path_prefix_each_read_their_own_protocol() {
    let primary = model(CosineSpec::Identical).await;
    let kserve = |cosine| {
        ModelServer::spawn(ModelOptions {
            dim: 32,
            cosine,
            protocol: shadowgate::protocol::Protocol::KServeV2,
            ..Default::default()
        })
    };
    let bge_base = kserve(CosineSpec::Identical).await.unwrap();
    let bge_v2 = kserve(CosineSpec::Constant(0.9)).await.unwrap();
    let e5_base = model(CosineSpec::Identical).await;
    let e5_v2 = model(CosineSpec::Constant(0.8)).await;
    let logs = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[model]
name = "pod"
version = "v1"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
[primary]
url = "{primary}"
[shadow]
max_per_second = 0
self_similarity_rate = 0.0
[shadow_log]
dir = "{logs}"
[[routes]]
model = "bge"
aliases = ["bge-small"]
match = "oip_path"
protocol = "kserve_v2"
baseline = {{ url = "{bb}", version = "v1" }}
candidates = [{{ url = "{b2}", version = "v2", share = 1.0 }}]
[[routes]]
model = "e5"
match = "path_prefix"
path_prefix = "/e5/"
baseline = {{ url = "{eb}", version = "v1" }}
candidates = [{{ url = "{e2}", version = "v2", share = 1.0 }}]
"#,
        primary = primary.url(),
        bb = bge_base.url(),
        b2 = bge_v2.url(),
        eb = e5_base.url(),
        e2 = e5_v2.url(),
        logs = logs.path().display(),
    );
    let sidecar = serve::start(Config::from_toml_with_env(&text, std::iter::empty()).unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", sidecar.proxy_addr);
    let client = Client::new();
    let post = async |path: String, body: String| {
        let r = client
            .send(Method::POST, &format!("{base}{path}"), &[], body)
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    };
    let kserve_body = |text: String| {
        format!(
            r#"{{"inputs":[{{"name":"text","shape":[1],"datatype":"BYTES","data":["{text}"]}}]}}"#
        )
    };
    const N: usize = 40;
    for i in 0..N {
        let model = if i % 2 == 0 { "bge" } else { "bge-small" };
        post(
            format!("/v2/models/{model}/infer"),
            kserve_body(format!("bge {i}")),
        )
        .await;
        post(
            "/e5/v1/embeddings".into(),
            format!(r#"{{"input":"e5 {i}"}}"#),
        )
        .await;
    }
    // A model no route names, by path: not mirrored, counted under "other".
    for i in 0..5 {
        post(
            "/v2/models/nobody/infer".into(),
            kserve_body(format!("x {i}")),
        )
        .await;
    }
    let admin = format!("http://{}/metrics", sidecar.admin_addr);
    let compared = |t: &str, m: &str| {
        value(
            t,
            "model_embedding_pairs_total",
            &[("model", m), ("outcome", "compared")],
        )
        .unwrap_or(0.0)
    };
    let mut text = String::new();
    crate::support::poll_async(Duration::from_secs(30), async || {
        text = client.get(&admin).await.text();
        (compared(&text, "bge") == N as f64 && compared(&text, "e5") == N as f64).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "pairs: bge {} e5 {}",
            compared(&text, "bge"),
            compared(&text, "e5")
        )
    });
    for (m, cos) in [("bge", 0.9), ("e5", 0.8)] {
        let l = [("model", m), ("canary", "v2")];
        let sum = value(&text, "model_embedding_cosine_distance_sum", &l).unwrap();
        let n = value(&text, "model_embedding_cosine_distance_count", &l).unwrap();
        assert!(
            ((1.0 - sum / n) - cos).abs() < 1e-3,
            "{m}: {}",
            1.0 - sum / n
        );
    }
    assert_eq!(
        value(
            &text,
            "shadowgate_mirror_decisions_total",
            &[("model", "other"), ("decision", "unrouted")]
        ),
        Some(5.0)
    );
    assert_eq!(bge_base.requests(), N as u64);
    assert!(text.contains(r#"protocol="kserve_v2""#));
    let summary = sidecar.shutdown().await;
    // Each route's rows in its own partition: model=bge/ and model=e5/, N rows each.
    assert_eq!(summary.shadow_log.map(|s| s.rows), Some(2 * N as u64));
    for m in ["bge", "e5"] {
        let part = logs.path().join(format!("model={m}"));
        let files = walk(&part);
        assert!(
            !files.is_empty()
                && files
                    .iter()
                    .all(|f| f.extension().is_some_and(|e| e == "parquet")),
            "{m}: {files:?}"
        );
    }
    let mut tops: Vec<_> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.starts_with('_'))
        .collect();
    tops.sort();
    assert_eq!(tops, ["model=bge", "model=e5"]);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
