//! `shadowgate reference build` and `replay` as a user runs them: `.npy` files written by
//! numpy, the reference JSON read back, a null stream and planted shifts replayed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{self, Component};

const BIN: &str = env!("CARGO_BIN_EXE_shadowgate");

/// numpy writes `name.npy`: `rows` × `dim` float32 N(0, 1) draws from `seed`, then
/// `transform` (a numpy expression in `x`).
fn npy(dir: &Path, name: &str, seed: u64, rows: usize, dim: usize, transform: &str) {
    let script = format!(
        "import numpy as np\nx = np.random.default_rng({seed}).standard_normal(({rows}, {dim})).astype(np.float32)\n\
         x = ({transform}).astype(np.float32)\nnp.save({:?}, x)",
        dir.join(format!("{name}.npy")).display().to_string()
    );
    python(&script);
}

/// Runs a Python script; its stdout.
fn python(script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shadowgate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn build_then_replay_a_null_stream_and_planted_shifts() {
    if !support::require(&[Component::Python(&["numpy"])]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    npy(d, "reference", 1, 6000, 32, "x");
    npy(d, "null", 2, 600, 32, "x");
    npy(d, "shifted", 3, 600, 32, "x + 0.3");
    npy(d, "collapsed", 4, 600, 32, "x * 0.6");
    npy(d, "narrow", 5, 600, 8, "x");
    let reference = d.join("ref.json");
    let (code, out, err) = shadowgate(&[
        "reference",
        "build",
        "--logs",
        d.join("reference.npy").to_str().unwrap(),
        "--model",
        "m",
        "--out",
        reference.to_str().unwrap(),
        "--window",
        "50",
        // A false alarm within 550 samples: 5 %.
        "--ert",
        "11000",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("from 6000 embeddings"), "{out}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    assert_eq!(
        (r["dim"].as_u64(), r["model"].as_str()),
        (Some(32), Some("m"))
    );
    // Calibrated on 2000 null streams of α·ERT = 550 samples.
    assert_eq!(
        (r["bootstrap_streams"].as_u64(), r["horizon"].as_u64()),
        (Some(2000), Some(550)),
        "{r}"
    );
    let replay = |name: &str| -> Value {
        let (code, out, err) = shadowgate(&[
            "reference",
            "replay",
            "--reference",
            reference.to_str().unwrap(),
            "--input",
            d.join(format!("{name}.npy")).to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{name}: {err}");
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let null = replay("null");
    eprintln!("null: {null}");
    assert_eq!(null["samples"], 600);
    assert_eq!(null["first_alarm"], Value::Null, "{null}");
    assert!(null["max_score"].as_f64().unwrap() < 1.0);
    assert_eq!(null["reference_id"], r["id"]);
    for shifted in ["shifted", "collapsed"] {
        let s = replay(shifted);
        eprintln!("{shifted}: {s}");
        // Alarmed by the time the first window is full, or soon after.
        assert!(s["first_alarm"].as_u64().unwrap() < 150, "{shifted}: {s}");
        // The parts that rose: the score is the largest part over a line of at least 1
        // (each part's scale is its own 95 % null quantile, the line that of their max).
        let parts = s["max_parts"].as_object().expect("max_parts");
        assert_eq!(
            parts.keys().map(String::as_str).collect::<Vec<_>>(),
            ["coordinates", "coordinates_long", "kernel", "mean_long"],
            "{s}"
        );
        let top = parts.values().filter_map(Value::as_f64).fold(0.0, f64::max);
        assert!(top >= s["max_score"].as_f64().unwrap() - 1e-9, "{s}");
    }
    // Another dimension: refused, with what to do.
    let (code, _, err) = shadowgate(&[
        "reference",
        "replay",
        "--reference",
        reference.to_str().unwrap(),
        "--input",
        d.join("narrow.npy").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(65), "{err}");
    assert!(
        err.contains("dimension 32")
            && err.contains("dimension 8")
            && err.contains("reference build"),
        "{err}"
    );
    // Too few embeddings: a clear error, nothing written.
    let (code, _, err) = shadowgate(&[
        "reference",
        "build",
        "--logs",
        d.join("narrow.npy").to_str().unwrap(),
        "--model",
        "m",
        "--out",
        d.join("small.json").to_str().unwrap(),
        "--window",
        "200",
    ]);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("need at least 800"), "{err}");
    assert!(!d.join("small.json").exists());
}

/// Four topics; the slices codebook fitted on them (`slices fit`) gives the reference its
/// regions (`--codebook`), so `region:i` is the mirror's slice. A stream all from one
/// topic alarms, and the replay names that topic's region as the worst slice.
#[test]
fn a_reference_with_the_slices_codebook_names_the_region_traffic_moved_to() {
    if !support::require(&[Component::Python(&["numpy"])]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Topic centres 4 deviations out; `hot` is topic 2 only, `mixed` all four alike.
    let script = format!(
        "import numpy as np\nrng = np.random.default_rng(8)\n\
         c = rng.standard_normal((4, 32)); c = 4 * c / np.linalg.norm(c, axis=1, keepdims=True)\n\
         def draw(n, topics):\n    t = rng.choice(topics, n)\n    return (c[t] + rng.standard_normal((n, 32))).astype(np.float32)\n\
         np.save({ref:?}, draw(6000, [0, 1, 2, 3]))\nnp.save({mixed:?}, draw(400, [0, 1, 2, 3]))\n\
         np.save({hot:?}, draw(400, [2]))\nnp.save({centre:?}, c[2:3].astype(np.float32))",
        ref = d.join("ref.npy").display().to_string(),
        mixed = d.join("mixed.npy").display().to_string(),
        hot = d.join("hot.npy").display().to_string(),
        centre = d.join("centre.npy").display().to_string(),
    );
    python(&script);
    let path = |n: &str| d.join(n).display().to_string();
    let (code, _, err) = shadowgate(&[
        "slices",
        "fit",
        "--logs",
        &path("ref.npy"),
        "--k",
        "4",
        "--out",
        &path("cb.json"),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = shadowgate(&[
        "reference",
        "build",
        "--logs",
        &path("ref.npy"),
        "--model",
        "m",
        "--out",
        &path("ref.json"),
        "--window",
        "50",
        "--ert",
        "11000",
        "--codebook",
        &path("cb.json"),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("ref.json")).unwrap()).unwrap();
    let cb: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("cb.json")).unwrap()).unwrap();
    assert_eq!(r["regions"]["prefix"], "region");
    // The codebook's centroids, in its order (so `region:i` means the same on both).
    let centroids = |v: &Value| -> Vec<Vec<f64>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (ours, theirs) = (
        centroids(&r["regions"]["centroids"]),
        centroids(&cb["centroids"]),
    );
    assert_eq!(ours.len(), 4);
    for (a, b) in ours.iter().zip(&theirs) {
        let (dot, nb): (f64, f64) = (
            a.iter().zip(b).map(|(x, y)| x * y).sum(),
            b.iter().map(|y| y * y).sum(),
        );
        assert!(
            (dot / nb.sqrt() - 1.0).abs() < 1e-5,
            "codebook centroid changed"
        );
    }
    let shares: f64 = r["regions"]["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    // Topic 2's region: the centroid nearest its centre.
    let centre: Vec<f64> = python(&format!(
        "import numpy as np; print(' '.join(map(str, np.load({:?})[0])))",
        path("centre.npy")
    ))
    .split_whitespace()
    .map(|v| v.parse().unwrap())
    .collect();
    let hot_region = (0..4)
        .max_by(|&i, &j| {
            let dot = |k: usize| -> f64 { ours[k].iter().zip(&centre).map(|(a, b)| a * b).sum() };
            dot(i).total_cmp(&dot(j))
        })
        .unwrap();
    let replay = |name: &str| -> Value {
        let (code, out, err) = shadowgate(&[
            "reference",
            "replay",
            "--reference",
            &path("ref.json"),
            "--input",
            &path(name),
        ]);
        assert_eq!(code, Some(0), "{err}");
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let mixed = replay("mixed.npy");
    eprintln!("mixed: {mixed}");
    assert_eq!(mixed["first_alarm"], Value::Null, "{mixed}");
    let hot = replay("hot.npy");
    eprintln!("one topic: {hot}");
    assert!(hot["first_alarm"].as_u64().unwrap() < 50, "{hot}");
    assert_eq!(hot["worst_slice"], format!("region:{hot_region}"), "{hot}");
}

/// A reference of the demo model's baseline embeddings (dimension 32) for model "m",
/// written to `dir/ref.json`: window 50, ERT 11 000 (a false alarm within 550 samples
/// after the window fills has probability at most 5 %).
fn demo_reference(dir: &Path, model: &str) -> std::path::PathBuf {
    built_reference(dir, model, false, None)
}

/// [`demo_reference`], or with `one_look` a test of one batch of 500; `streams`: null
/// streams the line is calibrated on, when not the default 2000 (a file that only has to
/// be refused needs no exact line, and a debug build takes ~25 s per default build).
fn built_reference(
    dir: &Path,
    model: &str,
    one_look: bool,
    streams: Option<usize>,
) -> std::path::PathBuf {
    let defaults = shadowgate::reference::BuildParams::new(model);
    let dim = 32;
    let rows: Vec<f32> = (0..4000)
        .flat_map(|i| shadowgate::demo::model::baseline_unit(&format!("reference text {i}"), dim))
        .collect();
    let x = ndarray::Array2::from_shape_vec((4000, dim), rows).unwrap();
    let r = shadowgate::reference::build(
        x.view(),
        &shadowgate::reference::BuildParams {
            window: 50,
            ert: if one_look { 20.0 } else { 11_000.0 },
            long_window: one_look.then_some(500),
            one_look,
            streams: streams.unwrap_or(defaults.streams),
            ..defaults
        },
        0,
    )
    .unwrap();
    let path = dir.join(format!(
        "ref-{model}{}.json",
        if one_look { "-once" } else { "" }
    ));
    std::fs::write(&path, r.to_json()).unwrap();
    path
}

/// `[reference]` in the sidecar: with mirroring off, every answer of the primary is
/// scored off the client path; a real Prometheus scrapes the series. Traffic like the
/// reference's raises no alarm over 400 samples; a primary whose norms collapsed to half
/// (same directions) is over the line within the first window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_scores_the_primarys_answers_against_the_reference() {
    use shadowgate::demo::model::ModelOptions;
    if !support::require(&[Component::Prometheus]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = demo_reference(dir.path(), "m");
    let id = serde_json::from_str::<Value>(&std::fs::read_to_string(&reference).unwrap()).unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (what, norm_scale, requests) in
        [("like the reference", 1.0, 400), ("norms halved", 0.5, 120)]
    {
        let opts = ModelOptions {
            dim: 32,
            norm_scale,
            ..ModelOptions::default()
        };
        let stack = support::stack(
            opts.clone(),
            opts.clone(),
            opts,
            "sample_rate = 0.0",
            &format!(
                "[reference]\npath = {:?}\nsample_rate = 1.0",
                reference.display().to_string()
            ),
        )
        .await;
        let prom =
            crate::support::prom::Prometheus::start(&[stack.sidecar.admin_addr], "1s", false, &[]);
        // A null stream alarms with probability up to 5 % (the calibration's α over its
        // first `w − 1 + H` samples; tested over 200 streams in the library's tests): the
        // texts `live text {i}` are one of those 5 %, over the line at the last
        // checkpoint (sample 400, score 1.05) since format 9; these texts are not.
        for i in 0..requests {
            let reply = stack.embed(&format!("live input {i}")).await;
            assert_eq!(reply.status, 200, "{what}");
        }
        let samples = prom.wait_for(
            "shadowgate_reference_samples_total{model=\"m\"}",
            Duration::from_secs(30),
            |v| v >= requests as f64,
        );
        assert_eq!(samples, Some(requests as f64), "{what}");
        let alarms = prom
            .value("shadowgate_reference_alarms_total{model=\"m\"}")
            .unwrap();
        let score = prom
            .value("shadowgate_reference_shift_score{model=\"m\"}")
            .unwrap();
        let info = prom.value(&format!(
            "shadowgate_reference_info{{model=\"m\",reference_id=\"{id}\",dim=\"32\"}}"
        ));
        eprintln!("{what}: {requests} scored, {alarms} alarmed, last score {score:.3}");
        assert_eq!(info, Some(1.0), "{what}");
        // The reference's 8 regions (its own k-means: `cluster:i`), each with its share of
        // the reference and of the window; the shares sum to 1 on both sides.
        let regions = prom.value("count(shadowgate_reference_slice_reference_share{model=\"m\",slice=~\"cluster:[0-7]\"})");
        assert_eq!(regions, Some(8.0), "{what}");
        for series in ["slice_reference_share", "slice_share"] {
            let sum = prom
                .value(&format!(
                    "sum(shadowgate_reference_{series}{{model=\"m\"}})"
                ))
                .unwrap();
            assert!((sum - 1.0).abs() < 1e-9, "{what}: {series} sums to {sum}");
        }
        let slice_max = prom
            .value("max(shadowgate_reference_slice_shift_score{model=\"m\"})")
            .unwrap();
        // Each region's score is its part alone, near or under its line while traffic is
        // like the reference (norms halved keep every direction, so its regions stay
        // too): 1 is what a null stream's largest stays under in 95 % of streams of 550
        // samples, so one moment's value of 1.07 (this stream's, measured) is ordinary
        // and 1.5 would not be.
        assert!(slice_max < 1.5, "{what}: a region scored {slice_max}");
        // Scoring needs no shadow call.
        assert_eq!(stack.baseline.requests() + stack.canary.requests(), 0);
        if norm_scale == 1.0 {
            assert_eq!(alarms, 0.0, "{what}: score {score}");
            assert!(score < 1.0, "{what}: {score}");
        } else {
            // Every sample from the first full window on.
            assert!(alarms >= (requests - 50) as f64, "{what}: {alarms}");
            assert!(score > 1.0, "{what}: {score}");
            let alarm = prom.value("shadowgate_reference_alarm{model=\"m\"}");
            assert_eq!(alarm, Some(1.0), "{what}");
        }
        stack.sidecar.shutdown().await;
    }
}

/// A reference for another model, an unreadable one, or one built for one look at a
/// batch: a config error that names `reference.path` and the fix; `check-config` exits
/// 64.
#[test]
fn a_reference_for_another_model_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let other = built_reference(dir.path(), "other", false, Some(50));
    let once = built_reference(dir.path(), "m", true, Some(50));
    let config = dir.path().join("sg.toml");
    for (path, expect) in [
        (other.display().to_string(), "model \"other\""),
        (once.display().to_string(), "--one-look"),
        (
            dir.path().join("missing.json").display().to_string(),
            "cannot read",
        ),
    ] {
        std::fs::write(
            &config,
            format!(
                "[model]\nname = \"m\"\nversion = \"v2\"\n[primary]\nurl = \"http://127.0.0.1:1\"\n\
                 [shadow.baseline]\nurl = \"http://127.0.0.1:2\"\nversion = \"v1\"\n\
                 [shadow.canary]\nurl = \"http://127.0.0.1:3\"\nversion = \"v2\"\n\
                 [reference]\npath = {path:?}\n"
            ),
        )
        .unwrap();
        let (code, _, err) = shadowgate(&["check-config", config.to_str().unwrap()]);
        assert_eq!(code, Some(64), "{err}");
        assert!(
            err.contains("reference.path")
                && err.contains(expect)
                && err.contains("reference build"),
            "{err}"
        );
    }
}

/// `reference.from_first`: the sidecar keeps its first N sampled embeddings, builds the
/// reference from them in the pod, and scores from then on. Traffic like the first N
/// raises no alarm; a client stuck on one input (every embedding the same) is over the
/// line within the first window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_built_from_the_first_sampled_embeddings_then_scores() {
    use shadowgate::demo::model::ModelOptions;
    const FIRST: usize = 1000;
    let opts = ModelOptions {
        dim: 32,
        ..ModelOptions::default()
    };
    let stack = support::stack(
        opts.clone(),
        opts.clone(),
        opts,
        "sample_rate = 0.0",
        &format!("[reference]\nfrom_first = {FIRST}\nsample_rate = 1.0"),
    )
    .await;
    let client = support::Client::new();
    let metrics_url = format!("http://{}/metrics", stack.sidecar.admin_addr);
    let metric = async |name: &str| {
        let text = client.get(&metrics_url).await.text();
        support::value(&text, name, &[("model", "m")])
    };
    for i in 0..FIRST - 1 {
        assert_eq!(stack.embed(&format!("live text {i}")).await.status, 200);
    }
    support::wait_for_async(
        "all but one collected",
        Duration::from_secs(30),
        async || metric("shadowgate_reference_learning_samples").await == Some(1.0),
    )
    .await;
    assert_eq!(
        metric("shadowgate_reference_info").await,
        None,
        "no reference yet"
    );
    assert_eq!(
        metric("shadowgate_reference_samples_total").await,
        Some(0.0)
    );
    stack.embed("live text last").await;
    support::wait_for_async(
        "the reference built from the first embeddings",
        Duration::from_secs(120),
        async || metric("shadowgate_reference_info").await == Some(1.0),
    )
    .await;
    let text = client.get(&metrics_url).await.text();
    assert!(
        text.contains("source=\"first_n\"") && text.contains("dim=\"32\""),
        "{}",
        text.lines()
            .filter(|l| l.starts_with("shadowgate_reference_info"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        metric("shadowgate_reference_learning_samples").await,
        Some(0.0)
    );

    // Like the first N: no alarm over 300 samples.
    for i in 0..300 {
        stack.embed(&format!("more live text {i}")).await;
    }
    support::wait_for_async("300 scored", Duration::from_secs(30), async || {
        metric("shadowgate_reference_samples_total").await == Some(300.0)
    })
    .await;
    let score = metric("shadowgate_reference_shift_score").await.unwrap();
    assert_eq!(
        metric("shadowgate_reference_alarms_total").await,
        Some(0.0),
        "score {score}"
    );
    assert!(score < 1.0, "{score}");
    // One input over and over: the window's mean leaves the reference's.
    for _ in 0..150 {
        stack.embed("the same text again").await;
    }
    support::wait_for_async("450 scored", Duration::from_secs(30), async || {
        metric("shadowgate_reference_samples_total").await == Some(450.0)
    })
    .await;
    let score = metric("shadowgate_reference_shift_score").await.unwrap();
    eprintln!("one repeated input: score {score:.2}");
    assert!(score > 1.0, "{score}");
    assert_eq!(metric("shadowgate_reference_alarm").await, Some(1.0));
    // The status page draws the reference next to now, and says it is in alarm.
    let page = client
        .get(&format!("http://{}/", stack.sidecar.admin_addr))
        .await
        .text();
    assert!(page.contains("Input drift against the reference"), "{page}");
    assert!(page.contains("id=\"ref-picture\"") && page.contains("id=\"now-picture\""));
    assert!(page.contains("the last 450 scored embeddings"), "{page}");
    assert!(page.contains("<td class=\"num\" id=\"ref-alarm\">ALARM</td>"));
    stack.sidecar.shutdown().await;
}
