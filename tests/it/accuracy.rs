//! `shadowgate accuracy` on shadow logs and labels with known answers (written by
//! `tests/py/accuracy_fixtures.py` with pyarrow in the DESIGN.md schema): every count
//! exactly, every interval against independent reference values (scipy, in
//! `tests/py/accuracy_reference.py`), the Pushgateway path through a real Pushgateway
//! and Prometheus, and the Spark job's report against the Rust one.

use crate::support::{self, prom, Component};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use shadowgate::accuracy::{self, AccuracyArgs, AccuracyError, Report};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/py/accuracy_fixtures.py"))
        .arg(dir.path())
        .status()
        .expect("python3");
    assert!(
        status.success(),
        "tests/py/accuracy_fixtures.py failed: it needs pyarrow (scripts/test.sh installs it)"
    );
    dir
}

fn args(dir: &Path, logs: &str, labels: &str) -> AccuracyArgs {
    AccuracyArgs::new(vec![dir.join(logs)], vec![dir.join(labels)])
}

fn to_json(r: &Report) -> Value {
    serde_json::to_value(r).expect("json")
}

/// Counts of one pair: (both_correct, baseline_only, canary_only, both_wrong).
fn paired(v: &Value) -> [u64; 4] {
    ["both_correct", "baseline_only", "canary_only", "both_wrong"].map(|k| v[k].as_u64().expect(k))
}

fn pair<'a>(report: &'a Value, model: &str, b: &str, c: &str) -> &'a Value {
    let m = report["models"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["model"] == model))
        .unwrap_or_else(|| panic!("no model {model}"));
    m["pairs"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["baseline_version"] == b && p["canary_version"] == c)
        })
        .unwrap_or_else(|| panic!("no pair {b} -> {c} in {model}"))
}

/// Reference numbers for paired tables from the independent python script.
fn reference(tables: &[[u64; 4]]) -> Vec<Value> {
    let input: Vec<Value> = tables
        .iter()
        .map(|t| {
            json!({"both_correct": t[0], "baseline_only": t[1], "canary_only": t[2], "both_wrong": t[3]})
        })
        .collect();
    let mut child = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/py/accuracy_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(Value::Array(input).to_string().as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("reference");
    assert!(
        out.status.success(),
        "tests/py/accuracy_reference.py failed: it needs scipy (scripts/test.sh installs it)"
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("reference json")
}

fn assert_close(got: &Value, want: &Value, what: &str) {
    match (got.as_f64(), want.as_f64()) {
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-9, "{what}: {g} vs reference {w}"),
        _ => assert_eq!(got, want, "{what}"),
    }
}

#[test]
fn every_number_matches_the_known_answers() {
    if !support::require(&[Component::Python(&["pyarrow", "scipy"])]) {
        return;
    }
    let dir = fixtures();
    let report = accuracy::compute(&args(dir.path(), "logs", "labels")).expect("report");
    let r = to_json(&report);

    assert_eq!(
        r["inputs"],
        json!({"files_read": 5, "files_pruned": 0, "files_skipped": [], "rows": 159,
               "labeled_rows": 139, "unlabeled_rows": 20})
    );
    assert_eq!(
        r["labels"],
        json!({"rows": 151, "invalid": 1, "duplicates": 4, "distinct": 146,
               "matched": 139, "unmatched": 7})
    );
    assert_eq!(r["report_version"], 1);
    assert_eq!(r["ratio_interval_method"], "tang_score");
    let models: Vec<&str> = r["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["model"].as_str().expect("name"))
        .collect();
    assert_eq!(models, ["llm", "ranker"]);

    // (model, baseline, canary, table, rows, compared, agreed, baseline_missing, canary_missing)
    let expected = [
        ("llm", "v1", "v2", [46, 15, 31, 7], 119, 110, 66, 6, 5),
        ("llm", "v2", "v3", [12, 5, 5, 8], 30, 30, 20, 0, 0),
        ("ranker", "v1", "v2", [7, 0, 3, 0], 10, 10, 7, 0, 0),
    ];
    let refs = reference(&expected.map(|e| e.3));
    for ((m, b, c, t, rows, compared, agreed, bmiss, cmiss), want) in expected.iter().zip(&refs) {
        let p = pair(&r, m, b, c);
        let labeled: u64 = t.iter().sum();
        assert_eq!(paired(&p["paired"]), *t, "{m} {b}->{c}");
        assert_eq!(p["rows"], *rows, "{m} {b}->{c} rows");
        assert_eq!(p["labeled_rows"], labeled);
        assert_eq!(p["predictions_compared"], *compared);
        assert_eq!(p["predictions_agreed"], *agreed);
        assert_eq!(p["agreement_rate"], *agreed as f64 / *compared as f64);
        assert_eq!(p["baseline_missing"], *bmiss);
        assert_eq!(p["canary_missing"], *cmiss);
        assert_eq!(p["baseline"]["labeled"], labeled);
        assert_eq!(p["baseline"]["correct"], t[0] + t[1]);
        assert_eq!(p["canary"]["correct"], t[0] + t[2]);
        assert_eq!(p["baseline"]["version"], *b);
        assert_eq!(p["canary"]["version"], *c);
        let what = format!("{m} {b}->{c}");
        for (side, key) in [("baseline", "baseline"), ("canary", "canary")] {
            let w = &want[key];
            assert_close(
                &p[side]["accuracy"],
                &w[0],
                &format!("{what} {side} accuracy"),
            );
            assert_close(
                &p[side]["accuracy_lower"],
                &w[1],
                &format!("{what} {side} lower"),
            );
            assert_close(
                &p[side]["accuracy_upper"],
                &w[2],
                &format!("{what} {side} upper"),
            );
        }
        for k in [
            "mcnemar_p_value",
            "accuracy_ratio",
            "accuracy_ratio_lower",
            "accuracy_ratio_upper",
        ] {
            assert_close(&p[k], &want[k], &format!("{what} {k}"));
        }
    }
    // The tie (5 vs 5 discordant) has p = 1 and a ratio of exactly 1.
    let tie = pair(&r, "llm", "v2", "v3");
    assert_eq!(tie["mcnemar_p_value"], 1.0);
    assert_eq!(tie["accuracy_ratio"], 1.0);
    // Ranker's baseline is never right where the canary is wrong: canary accuracy 1.
    assert_eq!(
        pair(&r, "ranker", "v1", "v2")["canary"]["accuracy_upper"],
        1.0
    );

    // Per model: versions summed over pairs, paired tables summed.
    let llm = &r["models"][0];
    assert_eq!(
        (llm["rows"].as_u64(), llm["labeled_rows"].as_u64()),
        (Some(149), Some(129))
    );
    assert_eq!(paired(&llm["paired"]), [58, 20, 36, 15]);
    let versions: Vec<(String, u64, u64)> = llm["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or_default().to_string(),
                v["correct"].as_u64().unwrap_or_default(),
                v["labeled"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("v1".into(), 61, 99),
            ("v2".into(), 94, 129),
            ("v3".into(), 17, 30)
        ]
    );
    assert_eq!(llm["versions"][1]["accuracy"], 94.0 / 129.0);

    // The table shows the same numbers.
    let table = report.to_table();
    assert!(
        table.contains("model llm: 149 rows, 129 labeled"),
        "{table}"
    );
    assert!(
        table.contains("paired: both correct 46, baseline only 15, canary only 31, both wrong 7"),
        "{table}"
    );
}

#[test]
fn filters_prune_partitions_before_reading_and_rows_by_time() {
    if !support::require(&[Component::Python(&["pyarrow"])]) {
        return;
    }
    let dir = fixtures();
    let mut a = args(dir.path(), "logs", "labels");
    a.model = Some("ranker".into());
    a.since = Some("2024-05-01T10:05:00Z".into());
    let r = to_json(&accuracy::compute(&a).expect("report"));
    assert_eq!(r["inputs"]["files_pruned"], 3);
    assert_eq!(r["inputs"]["files_read"], 2);
    assert_eq!(r["inputs"]["rows"], 5);
    assert_eq!(
        paired(&pair(&r, "ranker", "v1", "v2")["paired"]),
        [2, 0, 3, 0]
    );
    assert_eq!(r["models"].as_array().map(Vec::len), Some(1));
    // Labels of the rows left out are unmatched, not errors.
    assert_eq!(r["labels"]["matched"], 5);
    assert_eq!(r["labels"]["unmatched"], 141);

    let mut a = args(dir.path(), "logs", "labels");
    a.since = Some("2024-05-01T11:00:00Z".into());
    a.until = Some("2024-05-02".into());
    let r = to_json(&accuracy::compute(&a).expect("report"));
    assert_eq!(r["inputs"]["files_pruned"], 4);
    assert_eq!(r["inputs"]["files_read"], 1);
    assert_eq!(r["inputs"]["rows"], 59);

    let mut a = args(dir.path(), "logs", "labels");
    a.since = Some("tomorrow".into());
    let e = accuracy::compute(&a).expect_err("bad time");
    assert!(matches!(e, AccuracyError::Usage(_)), "{e}");
}

#[test]
fn bad_inputs_are_errors_naming_the_file_or_skipped_and_listed() {
    if !support::require(&[Component::Python(&["pyarrow"])]) {
        return;
    }
    let dir = fixtures();
    let d = dir.path();

    let e = accuracy::compute(&args(d, "no/such/dir", "labels")).expect_err("missing");
    assert!(e.to_string().contains("no/such/dir"), "{e}");
    assert_eq!(e.exit_code(), 66);
    let e = accuracy::compute(&args(d, "logs", "no-labels.csv")).expect_err("missing");
    assert!(e.to_string().contains("no-labels.csv"), "{e}");

    let e = accuracy::compute(&args(d, "bad/logs", "bad/labels")).expect_err("corrupt");
    let msg = e.to_string();
    assert!(
        msg.contains("cut.parquet") || msg.contains("text.parquet"),
        "error names the file: {msg}"
    );
    assert!(msg.contains("Parquet"), "{msg}");
    assert_eq!(e.exit_code(), 65);

    let mut a = args(d, "bad/logs", "bad/labels");
    a.skip_bad_files = true;
    let r = to_json(&accuracy::compute(&a).expect("skipping"));
    let skipped: Vec<&str> = r["inputs"]["files_skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|f| f["path"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].ends_with("hour=10/text.parquet"), "{skipped:?}");
    assert!(skipped[1].ends_with("hour=11/cut.parquet"), "{skipped:?}");
    assert_eq!(r["inputs"]["files_read"], 1);
    assert_eq!(paired(&pair(&r, "llm", "v1", "v2")["paired"]), [3, 1, 0, 0]);

    let e = accuracy::compute(&args(d, "newer/logs", "bad/labels")).expect_err("newer");
    let msg = e.to_string();
    assert!(
        msg.contains("v2.parquet") && msg.contains("schema version 3"),
        "{msg}"
    );
    // A newer schema is not "corrupt": skipping does not hide it.
    let mut a = args(d, "newer/logs", "bad/labels");
    a.skip_bad_files = true;
    assert!(accuracy::compute(&a).is_err());

    let e = accuracy::compute(&args(d, "logs", "nolabelid/labels.csv")).expect_err("no id");
    let msg = e.to_string();
    assert!(
        msg.contains("nolabelid/labels.csv") && msg.contains("`request_id`"),
        "{msg}"
    );
    // The id column is configurable.
    let mut a = args(d, "logs", "nolabelid/labels.csv");
    a.label_id_column = "id".into();
    let r = to_json(&accuracy::compute(&a).expect("custom id column"));
    assert_eq!(r["inputs"]["labeled_rows"], 1);
}

#[test]
fn batched_requests_join_labels_per_item_and_version_1_rows_are_item_0() {
    if !support::require(&[Component::Python(&["pyarrow", "scipy"])]) {
        return;
    }
    let dir = fixtures();
    let r = to_json(
        &accuracy::compute(&args(dir.path(), "items/logs", "items/labels")).expect("report"),
    );
    // One version-2 file (45 rows: 10 requests of 4 items, 5 single-input) and one
    // version-1 file (10 rows, no `item` column) in one tree.
    assert_eq!(
        r["inputs"],
        json!({"files_read": 2, "files_pruned": 0, "files_skipped": [], "rows": 55,
               "labeled_rows": 44, "unlabeled_rows": 11})
    );
    // Keys are (request_id, item): 4 superseded rows of two keys, 5 rows with an item
    // that is not a non-negative integer, the labels of (s-0, 1) and (old-7, 1) have no
    // row.
    assert_eq!(
        r["labels"],
        json!({"rows": 55, "invalid": 5, "duplicates": 4, "distinct": 46,
               "matched": 44, "unmatched": 2})
    );
    let p = pair(&r, "emb", "v1", "v2");
    let t = [10, 11, 17, 6];
    assert_eq!(paired(&p["paired"]), t);
    assert_eq!(p["rows"], 55);
    assert_eq!(p["labeled_rows"], 44);
    assert_eq!(p["predictions_compared"], 55);
    assert_eq!(p["predictions_agreed"], 25);
    assert_eq!(p["baseline"]["correct"], 21);
    assert_eq!(p["canary"]["correct"], 27);
    let want = &reference(&[t])[0];
    for k in [
        "mcnemar_p_value",
        "accuracy_ratio",
        "accuracy_ratio_lower",
        "accuracy_ratio_upper",
    ] {
        assert_close(&p[k], &want[k], k);
    }

    // Only the version-2 file: its 45 rows, 36 labeled (the b-k items and s-0..s-3).
    let r = to_json(
        &accuracy::compute(&args(
            dir.path(),
            "items/logs/model=emb/date=2024-05-03/hour=01",
            "items/labels",
        ))
        .expect("report"),
    );
    let p = pair(&r, "emb", "v1", "v2");
    assert_eq!(paired(&p["paired"]), [10, 10, 10, 6]);
    assert_eq!(r["labels"]["matched"], 36);

    // Only the version-1 file: every row is item 0, so old-7's item-1 label is
    // unmatched and the others join as before items existed.
    let r = to_json(
        &accuracy::compute(&args(
            dir.path(),
            "items/logs/model=emb/date=2024-05-03/hour=00",
            "items/labels",
        ))
        .expect("report"),
    );
    assert_eq!(paired(&pair(&r, "emb", "v1", "v2")["paired"]), [0, 1, 7, 0]);
    assert_eq!(r["inputs"]["labeled_rows"], 8);

    // Ignoring the labels' item column: every label is item 0, duplicates merge by id.
    let mut a = args(dir.path(), "items/logs", "items/labels");
    a.label_item_column = String::new();
    let r = to_json(&accuracy::compute(&a).expect("report"));
    assert_eq!(r["labels"]["invalid"], 0);
    assert_ne!(paired(&pair(&r, "emb", "v1", "v2")["paired"]), t);

    // A shadow log whose `item` is not an integer is a bad file, named.
    let e = accuracy::compute(&args(dir.path(), "items/bad/logs", "items/labels"))
        .expect_err("string item");
    assert!(
        e.to_string().contains("item.parquet") && e.to_string().contains("`item`"),
        "{e}"
    );
}

#[test]
fn empty_inputs_give_an_empty_report() {
    if !support::require(&[Component::Python(&["pyarrow"])]) {
        return;
    }
    let dir = fixtures();
    let r = to_json(
        &accuracy::compute(&args(dir.path(), "empty/logs", "empty/labels")).expect("report"),
    );
    assert_eq!(r["models"], json!([]));
    assert_eq!(r["inputs"]["rows"], 0);
    assert_eq!(r["labels"]["rows"], 0);
    // Logs without any label: every row unlabeled, every statistic null.
    let r = to_json(&accuracy::compute(&args(dir.path(), "logs", "empty/labels")).expect("report"));
    assert_eq!(r["inputs"]["unlabeled_rows"], 159);
    let p = pair(&r, "llm", "v1", "v2");
    assert_eq!(p["labeled_rows"], 0);
    for k in [
        "mcnemar_p_value",
        "accuracy_ratio",
        "accuracy_ratio_lower",
        "accuracy_ratio_upper",
    ] {
        assert_eq!(p[k], Value::Null, "{k}");
    }
    assert_eq!(p["baseline"]["accuracy"], Value::Null);
    assert_eq!(p["agreement_rate"], 66.0 / 110.0);
}

#[test]
fn cli_prints_the_table_writes_json_and_exits_non_zero_on_bad_input() {
    if !support::require(&[Component::Python(&["pyarrow"])]) {
        return;
    }
    let dir = fixtures();
    let d = dir.path();
    let json_path = d.join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_shadowgate"))
        .args(["accuracy", "--logs"])
        .arg(d.join("logs"))
        .arg("--labels")
        .arg(d.join("labels"))
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("model ranker: 10 rows, 10 labeled"),
        "{stdout}"
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json written")).expect("json");
    assert_eq!(written["inputs"]["rows"], 159);

    let out = Command::new(env!("CARGO_BIN_EXE_shadowgate"))
        .args(["accuracy", "--logs"])
        .arg(d.join("newer/logs"))
        .arg("--labels")
        .arg(d.join("labels"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("v2.parquet"), "{stderr}");
}

/// The Debian Pushgateway on a free loopback port, killed on drop.
struct Pushgateway {
    addr: std::net::SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Pushgateway {
    fn start() -> Pushgateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", prom::free_port())
            .parse()
            .expect("addr");
        let child = Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--persistence.file={}",
                dir.path().join("p").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-pushgateway: the test command installs the Debian package");
        support::wait_for(
            &format!("the pushgateway at {addr} to answer /-/ready"),
            Duration::from_secs(20),
            || prom::http_get(addr, "/-/ready").is_ok(),
        );
        Pushgateway {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pushgateway_and_prometheus_see_the_known_accuracy_ratio() {
    if !support::require(&[
        Component::Python(&["pyarrow"]),
        Component::Pushgateway,
        Component::Prometheus,
    ]) {
        return;
    }
    let dir = fixtures();
    let pg = Pushgateway::start();
    let mut a = args(dir.path(), "logs", "labels");
    a.pushgateway = Some(format!("http://{}", pg.addr));
    accuracy::run(&a).expect("push");
    // A second run replaces the group instead of failing or duplicating.
    accuracy::run(&a).expect("push again");

    let p = prom::Prometheus::start(&[pg.addr], "1s", true, &[]);
    let q = "model_inference_accuracy{model=\"llm\",version=\"v2\"} / ignoring(version) model_inference_accuracy{model=\"llm\",version=\"v1\"}";
    let want = (94.0 / 129.0) / (61.0 / 99.0);
    let got = p.wait_for(q, Duration::from_secs(30), |v| v.is_finite());
    let got = got.expect("ratio query answered");
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");

    let v = |q: &str| p.value(q).unwrap_or(f64::NAN);
    assert_eq!(
        v("model_shadow_labeled_pairs_total{job=\"shadowgate_accuracy\",model=\"llm\",outcome=\"canary_only\"}"),
        36.0
    );
    assert_eq!(
        v("model_inference_labeled_total{model=\"llm\",version=\"v2\"}"),
        129.0
    );
    let report = accuracy::compute(&args(dir.path(), "logs", "labels")).expect("report");
    let lower = report.models[0].pairs[0].accuracy_ratio_lower;
    let got = v("model_accuracy_ratio_lower_bound{model=\"llm\",baseline=\"v1\",canary=\"v2\"}");
    assert!((got - lower).abs() < 1e-12, "{got} vs {lower}");
    // Ten labeled pairs are below the minimum: NaN, not a number a gate could pass on.
    assert!(v("model_accuracy_ratio_lower_bound{model=\"ranker\"}").is_nan());
}

/// Every number of two reports equal (floats within 1e-9), skipped files by path only.
fn assert_same_report(rust: &Value, spark: &Value, path: &str) {
    match (rust, spark) {
        (Value::Object(a), Value::Object(b)) => {
            let mut ka: Vec<&String> = a.keys().collect();
            let mut kb: Vec<&String> = b.keys().collect();
            ka.sort();
            kb.sort();
            assert_eq!(ka, kb, "keys of {path}");
            for (k, v) in a {
                if k == "error" {
                    continue; // the two engines word errors differently
                }
                assert_same_report(v, &b[k], &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "length of {path}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same_report(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            assert!((x - y).abs() <= 1e-9, "{path}: rust {x} vs spark {y}");
        }
        _ => assert_eq!(rust, spark, "{path}"),
    }
}

#[test]
fn spark_job_reports_the_same_numbers() {
    if !support::require(&[Component::Python(&["pyarrow", "pyspark"]), Component::Java]) {
        return;
    }
    let dir = fixtures();
    let d = dir.path();
    let s = |p: &str| d.join(p).display().to_string();
    // (logs, labels, flags): the main fixture, corrupt files skipped, filters; items:
    // a tree of version-1 and version-2 files (the version-1 file first, whose schema a
    // single Spark read would take for both), the version-2 file alone, and the tree
    // with half of the version-2 hour filtered out by time.
    let cases: [(&str, &str, &[&str]); 6] = [
        ("logs", "labels", &[]),
        ("bad/logs", "bad/labels", &["--skip-bad-files"]),
        (
            "logs",
            "labels",
            &["--model", "llm", "--since", "2024-05-01T11:00:00Z"],
        ),
        ("items/logs", "items/labels", &[]),
        (
            "items/logs/model=emb/date=2024-05-03/hour=01",
            "items/labels",
            &[],
        ),
        (
            "items/logs",
            "items/labels",
            &["--model", "emb", "--since", "2024-05-03T01:30:00Z"],
        ),
    ];
    let mut argvs = Vec::new();
    for (i, (logs, labels, flags)) in cases.iter().enumerate() {
        let mut argv = vec![
            "--logs".to_string(),
            s(logs),
            "--labels".into(),
            s(labels),
            "--json".into(),
            s(&format!("spark-{i}.json")),
        ];
        argv.extend(flags.iter().map(|f| f.to_string()));
        argvs.push(argv);
    }
    let cases_file = d.join("cases.json");
    std::fs::write(&cases_file, serde_json::to_string(&argvs).expect("json")).expect("write");
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/py/accuracy_spark_cases.py"))
        .arg(&cases_file)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("PYSPARK_PYTHON", "python3")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the Spark job failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, (logs, labels, flags)) in cases.iter().enumerate() {
        let mut a = args(d, logs, labels);
        a.skip_bad_files = flags.contains(&"--skip-bad-files");
        if let Some(i) = flags.iter().position(|f| *f == "--model") {
            a.model = Some(flags[i + 1].into());
        }
        if let Some(i) = flags.iter().position(|f| *f == "--since") {
            a.since = Some(flags[i + 1].into());
        }
        let rust = to_json(&accuracy::compute(&a).expect("rust report"));
        let spark: Value = serde_json::from_slice(
            &std::fs::read(d.join(format!("spark-{i}.json"))).expect("spark json"),
        )
        .expect("json");
        assert_same_report(&rust, &spark, &format!("case {i}"));
    }
}
