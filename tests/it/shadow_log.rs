//! Shadow log end to end: real files in temp dirs, read back with the parquet crate,
//! pyarrow and DuckDB (`tests/py/read_shadow_log.py`).

use crate::support::{self, Component};

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int8Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding};
use prometheus::Registry;
use serde_json::Value;
use shadowgate::shadow_log::{
    arrow_schema, start, start_gated, ShadowLogError, ShadowLogMetrics, ShadowRecord,
    TargetOutcome, WriterOptions, QUARANTINE_DIR, SCHEMA_VERSION_KEY,
};

/// 2026-11-05T12:00:00Z in µs.
const NOON: i64 = 1_793_880_000_000_000;
const HOUR: i64 = 3_600_000_000;
const MODEL: &str = "llm-inference";

fn record(i: usize, ts_micros: i64, model: &str) -> ShadowRecord {
    ShadowRecord {
        request_id: format!("req-{i:06}"),
        item: (i % 3) as u32,
        ts_micros,
        model: Arc::from(model),
        pod: Arc::from("pod-a"),
        baseline_version: Arc::from("v1"),
        canary_version: Arc::from("v2"),
        input_hash: format!("{:016x}", i * 7919),
        input: Some(format!("input {i}")),
        baseline_prediction: Some(format!("label_{}", i % 3)),
        canary_prediction: (i % 5 != 0).then(|| format!("label_{}", i % 4)),
        cosine_similarity: (i % 5 != 0).then_some(1.0 - i as f32 / 1000.0),
        baseline_norm: Some(1.0),
        canary_norm: (i % 5 != 0).then_some(2.0),
        baseline_latency_ms: Some(i as f32),
        canary_latency_ms: Some(i as f32 + 0.5),
        baseline_outcome: TargetOutcome::Ok,
        canary_outcome: if i % 5 == 0 {
            TargetOutcome::Timeout
        } else {
            TargetOutcome::Ok
        },
        sample_rate: 0.25,
        baseline_embedding: Some(vec![i as f32, 1.0, -2.0, 0.5]),
        canary_embedding: (i % 5 != 0).then(|| vec![i as f32 + 0.25, 1.0, -2.0, 0.5]),
    }
}

fn rec(i: usize) -> ShadowRecord {
    record(i, NOON + i as i64 * 1000, MODEL)
}

fn opts(dir: &Path) -> WriterOptions {
    WriterOptions {
        max_rows_per_file: 1000,
        max_file_age: Duration::from_secs(60),
        queue_capacity: 4096,
        ..WriterOptions::new(dir, "pod-a")
    }
}

fn metrics() -> (Registry, ShadowLogMetrics) {
    let reg = Registry::new();
    let m = ShadowLogMetrics::register(&reg, MODEL).expect("register");
    (reg, m)
}

/// Waits for `cond` up to 10 s (generous: the machine is shared).
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    support::wait_for(what, Duration::from_secs(10), cond);
}

/// Files under `dir` by kind: visible `.parquet` files (no path component starting with
/// `.` or `_`), temporary files, everything under `_quarantine/`.
#[derive(Default, Debug)]
struct Tree {
    visible: Vec<PathBuf>,
    temp: Vec<PathBuf>,
    quarantined: Vec<PathBuf>,
}

fn tree(dir: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, t: &mut Tree) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, t);
                continue;
            }
            let rel = p.strip_prefix(root).expect("under root");
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if rel.starts_with(QUARANTINE_DIR) {
                t.quarantined.push(p.clone());
            } else if name.starts_with('.') && name.ends_with(".parquet.tmp") {
                t.temp.push(p.clone());
            } else if name.ends_with(".parquet") {
                t.visible.push(p.clone());
            }
        }
    }
    let mut t = Tree::default();
    walk(dir, dir, &mut t);
    t.visible.sort();
    t.temp.sort();
    t
}

fn read_file(path: &Path) -> Vec<RecordBatch> {
    let b =
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open")).expect("footer");
    b.build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("batches")
}

fn request_ids(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("request_id").expect("request_id");
            let ids = col.as_string::<i32>();
            (0..ids.len())
                .map(|i| ids.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// All request ids in visible files, sorted; panics if any visible file is unreadable.
fn read_all_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = tree(dir)
        .visible
        .iter()
        .flat_map(|p| request_ids(&read_file(p)))
        .collect();
    ids.sort();
    ids
}

fn ids(range: impl IntoIterator<Item = usize>) -> Vec<String> {
    let mut v: Vec<String> = range.into_iter().map(|i| format!("req-{i:06}")).collect();
    v.sort();
    v
}

fn python_view(dir: &Path, request_id: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/read_shadow_log.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(request_id)
        .output()
        .expect("python3 must be installed (with pyarrow and duckdb)");
    assert!(
        out.status.success(),
        "read_shadow_log.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from read_shadow_log.py")
}

#[test]
fn schema_encodings_and_values_read_back_with_the_parquet_crate() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = metrics();
    let o = WriterOptions {
        store_inputs: true,
        store_embeddings: true,
        row_group_rows: 20,
        ..opts(dir.path())
    };
    let (tx, guard) = start(o, m).unwrap();
    for i in 0..50 {
        assert!(tx.try_log(rec(i)));
    }
    let summary = guard.close().unwrap();
    assert_eq!((summary.rows, summary.files), (50, 1));

    let t = tree(dir.path());
    assert_eq!(t.visible.len(), 1, "{t:?}");
    assert!(t.temp.is_empty());
    let file = &t.visible[0];
    let rel = file.strip_prefix(dir.path()).unwrap();
    let parent = rel.parent().unwrap();
    assert_eq!(
        parent,
        Path::new("model=llm-inference/date=2026-11-05/hour=12")
    );
    let name = rel.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("pod-a-") && name.ends_with("-000001.parquet"),
        "{name}"
    );
    assert_eq!(summary.bytes, fs::metadata(file).unwrap().len());

    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(file).unwrap()).unwrap();
    // Schema: names, types, nullability as DESIGN.md says.
    let utf8 = DataType::Utf8;
    let f32 = DataType::Float32;
    let outcome = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8));
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let expected: Vec<(&str, &DataType, bool)> = vec![
        ("request_id", &utf8, false),
        ("item", &DataType::Int32, false),
        ("ts", &ts, false),
        ("model", &utf8, true),
        ("pod", &utf8, true),
        ("baseline_version", &utf8, true),
        ("canary_version", &utf8, true),
        ("input_hash", &utf8, true),
        ("input", &utf8, true),
        ("baseline_prediction", &utf8, true),
        ("canary_prediction", &utf8, true),
        ("cosine_similarity", &f32, true),
        ("baseline_norm", &f32, true),
        ("canary_norm", &f32, true),
        ("baseline_latency_ms", &f32, true),
        ("canary_latency_ms", &f32, true),
        ("baseline_outcome", &outcome, true),
        ("canary_outcome", &outcome, true),
        ("sample_rate", &f32, false),
    ];
    let schema = builder.schema().clone();
    assert_eq!(schema.fields().len(), expected.len() + 2);
    for (field, (name, ty, nullable)) in schema.fields().iter().zip(&expected) {
        assert_eq!(
            (
                field.name().as_str(),
                field.data_type(),
                field.is_nullable()
            ),
            (*name, *ty, *nullable)
        );
    }
    for name in ["baseline_embedding", "canary_embedding"] {
        let f = schema.field_with_name(name).unwrap();
        assert!(f.is_nullable());
        match f.data_type() {
            DataType::List(item) => assert_eq!(item.data_type(), &DataType::Float32),
            other => panic!("{name}: {other}"),
        }
    }
    assert_eq!(schema.fields(), arrow_schema().fields());

    // Schema version in the file's key-value metadata.
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let version = kv.iter().find(|k| k.key == SCHEMA_VERSION_KEY).unwrap();
    assert_eq!(version.value.as_deref(), Some("2"));

    // Row groups of 20 rows; zstd everywhere; dictionary where values repeat, not on
    // floats; BYTE_STREAM_SPLIT on embedding floats.
    let meta = builder.metadata();
    let sizes: Vec<i64> = meta.row_groups().iter().map(|rg| rg.num_rows()).collect();
    assert_eq!(sizes, vec![20, 20, 10]);
    for rg in meta.row_groups() {
        for col in rg.columns() {
            let path = col.column_path().string();
            assert!(matches!(col.compression(), Compression::ZSTD(_)), "{path}");
            let encodings: Vec<Encoding> = col.encodings().collect();
            let dict = col.dictionary_page_offset().is_some();
            if ["model", "pod", "baseline_version", "canary_outcome"].contains(&path.as_str()) {
                assert!(dict, "{path} should be dictionary encoded");
            }
            if path.ends_with("_norm") || path == "cosine_similarity" || path == "sample_rate" {
                assert!(!dict, "{path} should not be dictionary encoded");
            }
            if path.ends_with("_embedding.list.item") {
                assert!(!dict, "{path}");
                assert!(
                    encodings.contains(&Encoding::BYTE_STREAM_SPLIT),
                    "{path}: {encodings:?}"
                );
            }
        }
    }

    // Values.
    // One batch across the three row groups.
    let batches = builder
        .with_batch_size(1024)
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(request_ids(&batches), ids(0..50));
    let b = &batches[0];
    let row = 7;
    let ts = b
        .column_by_name("ts")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(row), NOON + 7000);
    let cos = b
        .column_by_name("cosine_similarity")
        .unwrap()
        .as_primitive::<Float32Type>();
    assert!((cos.value(row) - 0.993).abs() < 1e-6);
    assert!(cos.is_null(5));
    let canary = b
        .column_by_name("canary_outcome")
        .unwrap()
        .as_dictionary::<Int8Type>();
    let values = canary.values().as_string::<i32>();
    let outcome_of = |i: usize| values.value(canary.keys().value(i) as usize).to_owned();
    assert_eq!(outcome_of(5), "timeout");
    assert_eq!(outcome_of(7), "ok");
    let input = b.column_by_name("input").unwrap().as_string::<i32>();
    assert_eq!(input.value(row), "input 7");
    let emb = b
        .column_by_name("canary_embedding")
        .unwrap()
        .as_list::<i32>();
    assert!(emb.is_null(5));
    let e7 = emb.value(row);
    assert_eq!(
        e7.as_primitive::<Float32Type>().values().to_vec(),
        vec![7.25, 1.0, -2.0, 0.5]
    );
}

#[test]
fn input_and_embeddings_are_all_null_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = metrics();
    let (tx, guard) = start(opts(dir.path()), m).unwrap();
    for i in 0..10 {
        assert!(tx.try_log(rec(i)));
    }
    guard.close().unwrap();
    let t = tree(dir.path());
    let batches = read_file(&t.visible[0]);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 10);
    for b in &batches {
        for col in ["input", "baseline_embedding", "canary_embedding"] {
            let a = b
                .column_by_name(col)
                .unwrap_or_else(|| panic!("{col} missing"));
            assert_eq!(a.null_count(), a.len(), "{col}");
        }
        assert_eq!(b.column_by_name("request_id").unwrap().null_count(), 0);
    }
}

#[test]
fn pyarrow_and_duckdb_read_the_tree_as_one_partitioned_table() {
    if !support::require(&[Component::Python(&["pyarrow", "duckdb"])]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = metrics();
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let (tx, guard) = start_gated(opts(dir.path()), m, gate_rx).unwrap();
    // 300 rows 10 ms apart from 2026-11-05T23:59:58.5Z, across a day boundary, for two
    // models, all in one writer batch (the gate holds the writer until they are queued).
    let start_ts = NOON + 12 * HOUR - 1_500_000;
    let mut expected = std::collections::BTreeMap::<(String, String, i64), usize>::new();
    for i in 0..300 {
        let ts = start_ts + i as i64 * 10_000;
        let model = if i % 3 == 0 { "reranker" } else { MODEL };
        let (date, hour) = if ts < NOON + 12 * HOUR {
            ("2026-11-05", 23)
        } else {
            ("2026-11-06", 0)
        };
        *expected
            .entry((model.into(), date.into(), hour))
            .or_default() += 1;
        assert!(tx.try_log(record(i, ts, model)));
    }
    drop(gate_tx);
    let summary = guard.close().unwrap();
    assert_eq!((summary.rows, summary.files), (300, 4));

    let mut dirs: Vec<String> = tree(dir.path())
        .visible
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "model=llm-inference/date=2026-11-05/hour=23",
            "model=llm-inference/date=2026-11-06/hour=00",
            "model=reranker/date=2026-11-05/hour=23",
            "model=reranker/date=2026-11-06/hour=00",
        ]
    );

    let v = python_view(dir.path(), "req-000007");
    let expected_parts: Vec<Value> = expected
        .iter()
        .map(|((m, d, h), n)| serde_json::json!([m, d, h, n]))
        .collect();
    for engine in ["pyarrow", "duckdb"] {
        let e = &v[engine];
        assert_eq!(e["rows"], 300, "{engine}");
        let got: Vec<String> = serde_json::from_value(e["request_ids"].clone()).unwrap();
        assert_eq!(got, ids(0..300), "{engine}");
        assert_eq!(
            e["partitions"].as_array().unwrap(),
            &expected_parts,
            "{engine}"
        );
        for col in ["model", "date", "hour", "request_id", "canary_embedding"] {
            assert!(
                e["columns"].as_array().unwrap().iter().any(|c| c == col),
                "{engine} lacks {col}"
            );
        }
    }
    let pa = &v["pyarrow"];
    let schema: Vec<(String, String, bool)> =
        serde_json::from_value(pa["file_schema"].clone()).unwrap();
    let find = |n: &str| {
        schema
            .iter()
            .find(|(name, _, _)| name == n)
            .unwrap()
            .clone()
    };
    assert_eq!(find("request_id").1, "string");
    assert!(!find("request_id").2);
    assert_eq!(find("item").1, "int32");
    assert!(!find("item").2);
    assert_eq!(find("ts").1, "timestamp[us, tz=UTC]");
    assert!(!find("ts").2);
    assert!(!find("sample_rate").2);
    assert_eq!(find("cosine_similarity").1, "float");
    assert_eq!(
        find("canary_outcome").1,
        "dictionary<values=string, indices=int8, ordered=0>"
    );
    assert!(
        find("baseline_embedding").1.starts_with("list<"),
        "{:?}",
        find("baseline_embedding")
    );
    assert!(find("baseline_embedding").1.ends_with(": float not null>"));
    assert_eq!(pa["file_metadata"][SCHEMA_VERSION_KEY], "2");

    // A few values of row 7 (ts = 23:59:58.57, model llm-inference).
    let row = &pa["row"];
    assert_eq!(row["model"], MODEL);
    assert_eq!(row["item"], 7 % 3);
    assert_eq!(row["date"], "2026-11-05");
    assert_eq!(row["hour"], 23);
    assert_eq!(row["ts"], "2026-11-05T23:59:58.570000+00:00");
    assert!((row["cosine_similarity"].as_f64().unwrap() - 0.993).abs() < 1e-6);
    assert_eq!(row["sample_rate"], 0.25);
    assert_eq!(row["input"], Value::Null);
    let d = &v["duckdb"]["row"];
    assert!((d["cosine_similarity"].as_f64().unwrap() - 0.993).abs() < 1e-6);
    assert_eq!(d["canary_outcome"], "ok");
    assert_eq!(d["ts_micros"], start_ts + 70_000);
    assert_eq!(d["input_hash"], format!("{:016x}", 7 * 7919));
}

#[test]
fn files_rotate_at_max_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = metrics();
    let o = WriterOptions {
        max_rows_per_file: 100,
        ..opts(dir.path())
    };
    let (tx, guard) = start(o, m.clone()).unwrap();
    for i in 0..250 {
        assert!(tx.try_log(rec(i)));
    }
    let summary = guard.close().unwrap();
    assert_eq!((summary.rows, summary.files), (250, 3));
    assert_eq!((m.rows.get(), m.files.get()), (250, 3));
    assert_eq!(m.bytes.get(), summary.bytes);
    let t = tree(dir.path());
    let mut counts: Vec<usize> = t
        .visible
        .iter()
        .map(|p| read_file(p).iter().map(RecordBatch::num_rows).sum())
        .collect();
    counts.sort();
    assert_eq!(counts, vec![50, 100, 100]);
    // Sequence numbers 1..=3 in the names, in write order.
    let names: Vec<String> = t
        .visible
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for (k, n) in names.iter().enumerate() {
        assert!(n.ends_with(&format!("-{:06}.parquet", k + 1)), "{names:?}");
    }
    assert_eq!(read_all_ids(dir.path()), ids(0..250));
}

#[test]
fn idle_writer_closes_its_file_at_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = metrics();
    let o = WriterOptions {
        max_file_age: Duration::from_millis(300),
        ..opts(dir.path())
    };
    let (tx, guard) = start(o, m.clone()).unwrap();
    for i in 0..10 {
        assert!(tx.try_log(rec(i)));
    }
    // No further rows: the writer's timer must close the file on its own.
    wait_until("the idle file to be closed", || m.files.get() == 1);
    let t = tree(dir.path());
    assert_eq!((t.visible.len(), t.temp.len()), (1, 0), "{t:?}");
    assert_eq!(read_all_ids(dir.path()), ids(0..10));
    assert_eq!(m.rows.get(), 10);
    let summary = guard.close().unwrap();
    assert_eq!((summary.rows, summary.files), (10, 1));
}

#[test]
fn open_files_are_invisible_to_pyarrow_and_duckdb() {
    if !support::require(&[Component::Python(&["pyarrow", "duckdb"])]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = metrics();
    let o = WriterOptions {
        max_rows_per_file: 5,
        ..opts(dir.path())
    };
    let (tx, guard) = start(o, m.clone()).unwrap();
    for i in 0..8 {
        assert!(tx.try_log(rec(i)));
    }
    // One closed file of 5 rows, one open temporary file holding 3.
    wait_until("one closed and one open file", || {
        m.files.get() == 1 && tree(dir.path()).temp.len() == 1
    });
    let v = python_view(dir.path(), "req-000001");
    for engine in ["pyarrow", "duckdb"] {
        assert_eq!(v[engine]["rows"], 5, "{engine}: {}", v[engine]);
        let got: Vec<String> = serde_json::from_value(v[engine]["request_ids"].clone()).unwrap();
        assert_eq!(got, ids(0..5), "{engine}");
    }
    assert_eq!(v["pyarrow"]["files"].as_array().unwrap().len(), 1);

    guard.close().unwrap();
    assert!(tree(dir.path()).temp.is_empty());
    let v = python_view(dir.path(), "req-000001");
    for engine in ["pyarrow", "duckdb"] {
        assert_eq!(v[engine]["rows"], 8, "{engine}");
    }
}

#[test]
fn queue_full_drops_are_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = metrics();
    let o = WriterOptions {
        queue_capacity: 8,
        ..opts(dir.path())
    };
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let (tx, guard) = start_gated(o, m.clone(), gate_rx).unwrap();
    let accepted: Vec<bool> = (0..20).map(|i| tx.try_log(rec(i))).collect();
    assert_eq!(accepted, [[true; 8].as_slice(), &[false; 12]].concat());
    assert_eq!(m.dropped_queue_full.get(), 12);
    assert_eq!(m.queue_depth.get(), 8);
    assert_eq!(tx.queue_len(), 8);

    drop(gate_tx);
    let summary = guard.close().unwrap();
    assert_eq!(summary.rows, 8);
    assert_eq!(read_all_ids(dir.path()), ids(0..8));
    assert_eq!(m.queue_depth.get(), 0);

    // After close: refused and counted as `closed`.
    assert!(!tx.try_log(rec(99)));
    assert_eq!(m.dropped_closed.get(), 1);
    assert_eq!(m.dropped_queue_full.get(), 12);
    assert_eq!(m.dropped_write_error.get(), 0);
}

#[test]
fn close_loses_no_accepted_row_under_concurrent_producers() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = metrics();
    let o = WriterOptions {
        queue_capacity: 256,
        max_rows_per_file: 3000,
        ..opts(dir.path())
    };
    let (tx, guard) = start(o, m.clone()).unwrap();
    const THREADS: usize = 4;
    const PER_THREAD: usize = 5000;
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|k| t * PER_THREAD + k)
                    .filter(|&i| tx.try_log(rec(i)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut accepted: Vec<usize> = producers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    // Close while nothing is left to produce but the queue may still be full.
    let summary = guard.close().unwrap();
    accepted.sort();
    eprintln!(
        "concurrent producers: {} of {} rows accepted",
        accepted.len(),
        THREADS * PER_THREAD
    );
    assert!(!accepted.is_empty());
    let got = read_all_ids(dir.path());
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a request_id appears twice");
    assert_eq!(got, ids(accepted.iter().copied()));
    assert_eq!(summary.rows, accepted.len() as u64);
    assert_eq!(m.rows.get(), accepted.len() as u64);
    assert_eq!(
        m.dropped_queue_full.get(),
        (THREADS * PER_THREAD - accepted.len()) as u64
    );
    assert!(tree(dir.path()).temp.is_empty());
}

/// Writes `n` rows (10 per file) and returns the closed files, in write order.
fn write_files(dir: &Path, n: usize) -> Vec<PathBuf> {
    let (_reg, m) = metrics();
    let o = WriterOptions {
        max_rows_per_file: 10,
        ..opts(dir)
    };
    let (tx, guard) = start(o, m).unwrap();
    for i in 0..n {
        assert!(tx.try_log(rec(i)));
    }
    guard.close().unwrap();
    tree(dir).visible
}

fn temp_path_of(file: &Path) -> PathBuf {
    let name = file.file_name().unwrap().to_str().unwrap();
    file.with_file_name(format!(".{name}.tmp"))
}

#[test]
fn recovery_renames_complete_temp_files_and_quarantines_torn_ones() {
    if !support::require(&[Component::Python(&["pyarrow", "duckdb"])]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), 30);
    assert_eq!(files.len(), 3);
    // files[0]: complete but never renamed (killed between footer and rename).
    let complete = temp_path_of(&files[0]);
    fs::rename(&files[0], &complete).unwrap();
    // files[1]: killed mid-write: no footer.
    let torn = temp_path_of(&files[1]);
    let full = fs::read(&files[1]).unwrap();
    fs::write(&torn, &full[..full.len() / 2]).unwrap();
    fs::remove_file(&files[1]).unwrap();

    let (_reg, m) = metrics();
    let (_tx, guard) = start(opts(dir.path()), m.clone()).unwrap();
    let report = guard.recovery_report().clone();
    assert_eq!(report.recovered, vec![files[0].clone()]);
    assert_eq!(report.quarantined.len(), 1);
    let q = &report.quarantined[0];
    assert_eq!(q.from, torn);
    let rel = torn.strip_prefix(dir.path()).unwrap();
    assert_eq!(q.to, dir.path().join(QUARANTINE_DIR).join(rel));
    // Never deleted: the bytes are all there.
    assert_eq!(fs::read(&q.to).unwrap(), &full[..full.len() / 2]);
    assert!(report.failed.is_empty());
    assert_eq!((m.recovered_files.get(), m.quarantined_files.get()), (1, 1));
    guard.close().unwrap();

    let t = tree(dir.path());
    assert!(t.temp.is_empty());
    assert_eq!(t.quarantined, vec![q.to.clone()]);
    let expected = ids((0..10).chain(20..30));
    assert_eq!(read_all_ids(dir.path()), expected);
    // Readers skip the quarantine.
    let v = python_view(dir.path(), "req-000001");
    for engine in ["pyarrow", "duckdb"] {
        let got: Vec<String> = serde_json::from_value(v[engine]["request_ids"].clone()).unwrap();
        assert_eq!(got, expected, "{engine}");
    }
}

/// Child half of `kill_9_mid_write_leaves_only_complete_files`: writes until killed.
#[test]
#[ignore = "run by kill_9_mid_write_leaves_only_complete_files in a child process"]
fn child_writes_until_killed() {
    let Ok(dir) = std::env::var("SHADOW_KILL_DIR") else {
        return;
    };
    let (_reg, m) = metrics();
    let o = WriterOptions {
        max_rows_per_file: 100,
        ..opts(Path::new(&dir))
    };
    let (tx, _guard) = start(o, m).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while Instant::now() < deadline {
        if tx.try_log(rec(i)) {
            i += 1;
        }
        if i % 50 == 0 {
            // Pacing: the writer rolls a file every ~10 ms until the parent kills it.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Killed long before: never close the guard normally.
    std::process::abort();
}

/// Start a writer in a child process, let it close a few files, and SIGKILL it. The
/// child rolls a file every ~10 ms, so the kill can land between one file's rename and
/// the next one's creation: that run leaves no open file to recover and is repeated.
fn kill_writer_mid_file() -> (tempfile::TempDir, Tree) {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "shadow_log::child_writes_until_killed",
                "--ignored",
                "--nocapture",
            ])
            .env("SHADOW_KILL_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until("closed files and an open one", || {
            let t = tree(dir.path());
            t.visible.len() >= 3 && !t.temp.is_empty()
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let t = tree(dir.path());
        if !t.temp.is_empty() {
            return (dir, t);
        }
    }
    panic!("five kills in a row landed between files");
}

#[test]
fn kill_9_mid_write_leaves_only_complete_files() {
    let (dir, t) = kill_writer_mid_file();
    for f in &t.visible {
        let rows: usize = read_file(f).iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 100, "{}", f.display());
    }
    let visible_before = t.visible.len();

    let (_reg, m) = metrics();
    let (_tx, guard) = start(opts(dir.path()), m.clone()).unwrap();
    let r = guard.recovery_report().clone();
    // A kill between footer and rename would make the file recoverable; any other
    // leaves it without a footer.
    assert_eq!(
        r.recovered.len() + r.quarantined.len(),
        t.temp.len(),
        "{r:?}"
    );
    assert!(r.failed.is_empty());
    guard.close().unwrap();
    let after = tree(dir.path());
    assert!(after.temp.is_empty());
    assert_eq!(after.visible.len(), visible_before + r.recovered.len());
    let ids = read_all_ids(dir.path());
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
}

#[test]
fn unwritable_dir_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let target = file.join("shadow");
    let (_reg, m) = metrics();
    let err = start(opts(&target), m).err().expect("start must fail");
    assert!(matches!(err, ShadowLogError::Unwritable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&target.display().to_string()), "{msg}");
    assert!(msg.contains("not writable"), "{msg}");

    let (_reg, m) = metrics();
    let bad = WriterOptions {
        max_rows_per_file: 0,
        queue_capacity: 0,
        ..opts(dir.path())
    };
    let msg = start(bad, m).err().expect("invalid").to_string();
    assert!(
        msg.contains("max_rows_per_file") && msg.contains("queue_capacity"),
        "{msg}"
    );
}

#[test]
fn failing_partition_dir_counts_a_write_error_and_the_writer_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the partition directory must go: opening any file fails.
    let blocker = dir.path().join(format!("model={MODEL}"));
    fs::write(&blocker, b"in the way").unwrap();
    let (_reg, m) = metrics();
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let (tx, guard) = start_gated(opts(dir.path()), m.clone(), gate_rx).unwrap();
    for i in 0..10 {
        assert!(tx.try_log(rec(i)));
    }
    drop(gate_tx);
    wait_until("the write error", || m.dropped_write_error.get() == 10);
    assert_eq!(m.write_errors.get(), 1);

    fs::remove_file(&blocker).unwrap();
    for i in 10..15 {
        assert!(tx.try_log(rec(i)));
    }
    let s = guard.close().unwrap();
    assert_eq!(
        (s.rows, s.write_errors, s.rows_dropped_write_error),
        (5, 1, 10)
    );
    assert_eq!(read_all_ids(dir.path()), ids(10..15));
    assert_eq!(m.rows.get(), 5);
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_counts_write_errors_and_the_writer_keeps_going() {
    if !support::require(&[Component::TmpfsMount]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        mounted.is_ok_and(|s| s.success()),
        "mount -t tmpfs failed, though a trial mount succeeded"
    );
    let _mount = Tmpfs(dir.path().to_path_buf());
    let (_reg, m) = metrics();
    let o = WriterOptions {
        max_rows_per_file: 20,
        store_embeddings: true,
        ..opts(dir.path())
    };
    let (tx, guard) = start(o, m.clone()).unwrap();
    // 768-dim pseudo-random embeddings do not compress: ~6 KB a row, 2.4 MB in all,
    // more than the 1 MB filesystem holds.
    let mut x: u32 = 1;
    let mut noise = move || {
        (0..768)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as f32 / u32::MAX as f32
            })
            .collect::<Vec<f32>>()
    };
    const N: u64 = 400;
    for i in 0..N as usize {
        let mut r = rec(i);
        r.baseline_embedding = Some(noise());
        r.canary_embedding = Some(noise());
        while tx.queue_len() > 1000 {
            std::thread::yield_now();
        }
        assert!(tx.try_log(r));
    }
    wait_until("every row written or dropped", || {
        m.rows.get() + m.dropped_write_error.get() == N
    });
    eprintln!(
        "full disk: {} rows written, {} dropped in {} failed files",
        m.rows.get(),
        m.dropped_write_error.get(),
        m.write_errors.get()
    );
    assert!(m.write_errors.get() >= 1);
    assert!(m.rows.get() >= 20, "some files fit before the disk filled");
    assert_eq!(m.rows.get() % 20, 0);
    assert_eq!(m.dropped_write_error.get() % 20, 0);
    let t = tree(dir.path());
    assert!(t.temp.is_empty(), "failed temp files are removed: {t:?}");
    let written = read_all_ids(dir.path());
    assert_eq!(written.len() as u64, m.rows.get());

    // Free the space: the next file succeeds.
    for f in &t.visible {
        fs::remove_file(f).unwrap();
    }
    let errors = m.write_errors.get();
    for i in 1000..1020 {
        assert!(tx.try_log(rec(i)));
    }
    let s = guard.close().unwrap();
    assert_eq!(m.write_errors.get(), errors);
    assert_eq!(read_all_ids(dir.path()), ids(1000..1020));
    assert_eq!(s.rows, N - s.rows_dropped_write_error + 20);
}

#[test]
fn metrics_are_registered_with_the_model_label() {
    let (reg, m) = metrics();
    m.dropped_queue_full.inc();
    let families = reg.gather();
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    for n in [
        "shadowgate_shadow_log_rows_total",
        "shadowgate_shadow_log_files_total",
        "shadowgate_shadow_log_bytes_total",
        "shadowgate_shadow_log_dropped_total",
        "shadowgate_shadow_log_queue_depth",
        "shadowgate_shadow_log_write_errors_total",
        "shadowgate_shadow_log_recovered_files_total",
        "shadowgate_shadow_log_uploaded_rows_total",
        "shadowgate_shadow_log_upload_errors_total",
        "shadowgate_shadow_log_spool_bytes",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let dropped = families
        .iter()
        .find(|f| f.name() == "shadowgate_shadow_log_dropped_total")
        .unwrap();
    let mut reasons: Vec<(String, f64)> = dropped
        .get_metric()
        .iter()
        .map(|mm| {
            let labels = mm.get_label();
            assert!(labels
                .iter()
                .any(|l| l.name() == "model" && l.value() == MODEL));
            let reason = labels.iter().find(|l| l.name() == "reason").unwrap();
            (reason.value().to_owned(), mm.get_counter().get_value())
        })
        .collect();
    reasons.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reasons,
        vec![
            ("closed".to_owned(), 0.0),
            ("queue_full".to_owned(), 1.0),
            ("spool_full".to_owned(), 0.0),
            ("upload_lost".to_owned(), 0.0),
            ("write_error".to_owned(), 0.0)
        ]
    );
    // A second model registers into the same registry.
    ShadowLogMetrics::register(&reg, "other-model").unwrap();
}
