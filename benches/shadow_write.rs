//! Shadow-log write throughput: N rows of the full schema through the real writer
//! (queue, writer thread, rotation, fsync, rename), without and with 768-dim embeddings,
//! against pyarrow writing the same rows with the same settings
//! (`benches/shadow_write_pyarrow.py`, run from here so both share one run).
//!
//! Two pairs are compared: "rust encode" (Arrow batches built before the clock, then
//! written on one thread) against pyarrow writing a prebuilt table: the encoders alone;
//! and "rust writer" (records in, closed files out) against pyarrow's `from_pylist` +
//! write: the whole job from records. MB/s is bytes of Parquet written per second.
//!
//! `cargo bench --bench shadow_write`; env: `SHADOW_BENCH_ROWS` (default 1 000 000),
//! `SHADOW_BENCH_EMB_ROWS` (rows of the embedding case, default 200 000: 1 GB of files;
//! a million writes 6 GB per run), `SHADOW_BENCH_REPEAT` (best of N runs, default 1),
//! `SHADOW_BENCH_DIR` (default a temp dir; everything written is removed after each case),
//! `SHADOW_BENCH_NO_PYARROW` (set: Rust only, e.g. under a profiler).
//!
//! Row values come from the same formulas as in the Python script (splitmix64 of the row
//! index), so both sides write identical data. Embeddings come from a pool of 4096
//! pseudo-random vectors: Parquet compresses each ~1 MB page on its own, so repeats
//! 4096 rows apart cannot be exploited and the floats behave as incompressible.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::arrow::ArrowWriter;
use shadowgate::shadow_log::{
    arrow_schema, records_to_batch, start, writer_properties, ShadowLogMetrics, ShadowRecord,
    TargetOutcome, WriterOptions,
};

/// 2026-11-05T12:00:00Z in µs: 1 M rows 1 ms apart stay inside one hour partition.
const BASE_TS: i64 = 1_793_880_000_000_000;
const ROWS_PER_FILE: usize = 100_000;
const ROW_GROUP_ROWS: usize = 65_536;
const QUEUE_CAPACITY: usize = 65_536;
const POOL: usize = 4096;
const DIM: usize = 768;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1), exactly representable in f32.
fn unit(x: u64) -> f32 {
    (splitmix64(x) >> 40) as f32 / 16_777_216.0
}

fn u(i: usize, k: u64) -> f32 {
    unit(i as u64 * 8 + k)
}

struct Gen {
    model: Arc<str>,
    pod: Arc<str>,
    v1: Arc<str>,
    v2: Arc<str>,
    /// `POOL` vectors of `DIM` floats, or empty without embeddings.
    pool: Vec<f32>,
}

impl Gen {
    fn new(dim: usize) -> Self {
        let pool = (0..(POOL * dim) as u64)
            .map(|k| unit(0x5EED_0000_0000 + k) * 2.0 - 1.0)
            .collect();
        Gen {
            model: Arc::from("llm-inference"),
            pod: Arc::from("bench-pod-0"),
            v1: Arc::from("v1"),
            v2: Arc::from("v2"),
            pool,
        }
    }

    fn embedding(&self, j: usize) -> Option<Vec<f32>> {
        if self.pool.is_empty() {
            return None;
        }
        let j = j % POOL;
        Some(self.pool[j * DIM..(j + 1) * DIM].to_vec())
    }

    fn record(&self, i: usize) -> ShadowRecord {
        let canary_ok = i % 100 != 0;
        ShadowRecord {
            request_id: format!("req-{i:010}"),
            // Batches of 8, as the pyarrow peer writes them.
            item: (i % 8) as u32,
            ts_micros: BASE_TS + i as i64 * 1000,
            model: Arc::clone(&self.model),
            pod: Arc::clone(&self.pod),
            baseline_version: Arc::clone(&self.v1),
            canary_version: Arc::clone(&self.v2),
            input_hash: format!("{:016x}", splitmix64(i as u64)),
            input: Some(format!(
                "summarize ticket {i}: customer cannot log in after password reset"
            )),
            baseline_prediction: Some(format!("label_{}", i % 10)),
            canary_prediction: canary_ok
                .then(|| format!("label_{}", (i + usize::from(i % 20 == 0)) % 10)),
            cosine_similarity: canary_ok.then(|| 1.0 - 0.05 * u(i, 1)),
            baseline_norm: Some(1.0 + u(i, 2)),
            canary_norm: canary_ok.then(|| 1.0 + u(i, 3)),
            baseline_latency_ms: Some(5.0 + 50.0 * u(i, 4)),
            canary_latency_ms: Some(5.0 + 50.0 * u(i, 5)),
            baseline_outcome: TargetOutcome::Ok,
            canary_outcome: if canary_ok {
                TargetOutcome::Ok
            } else {
                TargetOutcome::Error
            },
            sample_rate: 0.05,
            baseline_embedding: self.embedding(i),
            canary_embedding: if canary_ok {
                self.embedding(i + POOL / 2)
            } else {
                None
            },
        }
    }
}

struct Run {
    rows: usize,
    secs: f64,
    /// CPU seconds of the whole process over the timed part (all threads): robust to a
    /// busy machine, where wall time is not.
    cpu: f64,
    bytes: u64,
    files: u64,
}

impl Run {
    fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.secs
    }
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

fn rust_run(dir: &Path, rows: usize, dim: usize) -> Run {
    let gen = Gen::new(dim);
    let metrics = ShadowLogMetrics::register(&prometheus::Registry::new(), "llm-inference")
        .expect("fresh registry");
    let opts = WriterOptions {
        max_rows_per_file: ROWS_PER_FILE,
        max_file_age: Duration::from_secs(3600),
        queue_capacity: QUEUE_CAPACITY,
        store_inputs: true,
        store_embeddings: dim > 0,
        row_group_rows: ROW_GROUP_ROWS,
        ..WriterOptions::new(dir, "bench-pod-0")
    };
    let t0 = Instant::now();
    let c0 = process_cpu_secs();
    let (tx, guard) = start(opts, metrics).expect("start writer");
    for i in 0..rows {
        let rec = gen.record(i);
        // A single producer: once the queue has room, try_log cannot fail.
        // Sleep rather than spin, so the CPU column counts the writer, not a busy wait.
        while tx.queue_len() >= QUEUE_CAPACITY {
            std::thread::sleep(Duration::from_micros(100));
        }
        assert!(tx.try_log(rec), "row {i} dropped");
    }
    let summary = guard.close().expect("close");
    let secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_secs() - c0;
    assert_eq!(summary.rows, rows as u64);
    assert_eq!(summary.write_errors, 0);
    Run {
        rows,
        secs,
        cpu,
        bytes: summary.bytes,
        files: summary.files,
    }
}

/// pyarrow's terms: each file's Arrow batches are built before its clock starts, then
/// written with the writer's exact Parquet settings on this one thread (no queue).
fn rust_encode_only(dir: &Path, rows: usize, dim: usize) -> Run {
    let gen = Gen::new(dim);
    let props = writer_properties(ROW_GROUP_ROWS);
    let part = dir.join("model=llm-inference/date=2026-11-05/hour=12");
    std::fs::create_dir_all(&part).expect("mkdir");
    let (mut secs, mut cpu, mut bytes, mut files) = (0.0, 0.0, 0, 0);
    for lo in (0..rows).step_by(ROWS_PER_FILE) {
        let hi = (lo + ROWS_PER_FILE).min(rows);
        let batches: Vec<_> = (lo..hi)
            .step_by(8192)
            .map(|b| {
                let recs: Vec<_> = (b..(b + 8192).min(hi)).map(|i| gen.record(i)).collect();
                records_to_batch(&recs, true, dim > 0).expect("batch")
            })
            .collect();
        files += 1;
        let final_path = part.join(format!("encode-{files:06}.parquet"));
        let temp = part.join(format!(".encode-{files:06}.parquet.tmp"));
        let t0 = Instant::now();
        let c0 = process_cpu_secs();
        let file = File::create(&temp).expect("create");
        let mut w =
            ArrowWriter::try_new(file, arrow_schema(), Some(props.clone())).expect("writer");
        for b in &batches {
            w.write(b).expect("write");
        }
        w.finish().expect("finish");
        w.inner().sync_all().expect("fsync");
        std::fs::rename(&temp, &final_path).expect("rename");
        secs += t0.elapsed().as_secs_f64();
        cpu += process_cpu_secs() - c0;
        bytes += std::fs::metadata(&final_path).expect("stat").len();
    }
    Run {
        rows,
        secs,
        cpu,
        bytes,
        files,
    }
}

/// Time to build the records alone (the producer's share of the Rust run).
fn generation_secs(rows: usize, dim: usize) -> f64 {
    let gen = Gen::new(dim);
    let t0 = Instant::now();
    for i in 0..rows {
        std::hint::black_box(gen.record(i));
    }
    t0.elapsed().as_secs_f64()
}

fn pyarrow_run(dir: &Path, rows: usize, dim: usize, mode: &str) -> Result<Run, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/shadow_write_pyarrow.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--rows", &rows.to_string(), "--dim", &dim.to_string()])
        .args(["--rows-per-file", &ROWS_PER_FILE.to_string()])
        .args(["--row-group", &ROW_GROUP_ROWS.to_string()])
        .args(["--mode", mode])
        .arg("--dir")
        .arg(dir)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("output: {e}"))?;
    Ok(Run {
        rows: v["rows"].as_u64().unwrap_or(0) as usize,
        secs: v["seconds"].as_f64().unwrap_or(f64::NAN),
        cpu: v["cpu_seconds"].as_f64().unwrap_or(f64::NAN),
        bytes: v["bytes"].as_u64().unwrap_or(0),
        files: v["files"].as_u64().unwrap_or(0),
    })
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// utime + stime of this process, dead threads included (`/proc/self/stat`, 100 Hz ticks).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command: state is [0], utime [11], stime [12].
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// Best (shortest) of `repeat` runs, each in a fresh directory removed afterwards.
fn best<E>(
    root: &Path,
    repeat: usize,
    mut f: impl FnMut(&Path) -> Result<Run, E>,
) -> Result<Run, E> {
    let dir = root.join("run");
    let mut best: Option<Run> = None;
    for _ in 0..repeat.max(1) {
        let _ = std::fs::remove_dir_all(&dir);
        let r = f(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let r = r?;
        if best.as_ref().is_none_or(|b| r.secs < b.secs) {
            best = Some(r);
        }
    }
    Ok(best.expect("at least one run"))
}

fn main() {
    let rows = env_usize("SHADOW_BENCH_ROWS", 1_000_000);
    let emb_rows = env_usize("SHADOW_BENCH_EMB_ROWS", 200_000);
    let repeat = env_usize("SHADOW_BENCH_REPEAT", 1);
    let with_pyarrow = std::env::var_os("SHADOW_BENCH_NO_PYARROW").is_none();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = std::env::var_os("SHADOW_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());

    println!(
        "shadow-log write: zstd(1), {ROW_GROUP_ROWS}-row groups, {ROWS_PER_FILE} rows/file, \
         inputs stored, fsync + rename per file; best of {repeat}"
    );
    println!(
        "{:<44} {:>9} {:>7} {:>11} {:>7} {:>8} {:>5} {:>7} {:>13}",
        "case / writer", "rows", "secs", "rows/s", "MB/s", "MB", "files", "cpu s", "rows/cpu-s"
    );
    for (case, n, dim) in [("no emb", rows, 0), ("768-dim emb", emb_rows, DIM)] {
        let line = |who: &str, r: &Run| {
            println!(
                "{:<44} {:>9} {:>7.2} {:>11.0} {:>7.1} {:>8.1} {:>5} {:>7.2} {:>13.0}",
                format!("{case} / {who}"),
                r.rows,
                r.secs,
                r.rows_per_sec(),
                r.mb_per_sec(),
                r.bytes as f64 / 1e6,
                r.files,
                r.cpu,
                r.rows as f64 / r.cpu
            );
        };
        let writer = best(&root, repeat, |d| Ok::<_, ()>(rust_run(d, n, dim))).expect("infallible");
        line("rust writer (records -> files)", &writer);
        let encode =
            best(&root, repeat, |d| Ok::<_, ()>(rust_encode_only(d, n, dim))).expect("infallible");
        line("rust encode (prebuilt batches)", &encode);
        let sample = n.min(200_000);
        println!(
            "{:<44} record building alone: {:.2} s (producer thread, overlaps the writer)",
            "",
            generation_secs(sample, dim) * n as f64 / sample as f64
        );
        if !with_pyarrow {
            continue;
        }
        for (mode, label, mine, what) in [
            ("table", "pyarrow (prebuilt table)", &encode, "encode"),
            ("rows", "pyarrow (from_pylist + write)", &writer, "writer"),
        ] {
            match best(&root, repeat, |d| pyarrow_run(d, n, dim, mode)) {
                Ok(p) => {
                    line(label, &p);
                    println!(
                        "{:<44} rust {what} / {label} = {:.2}x rows/s, {:.2}x rows/cpu-s",
                        "",
                        mine.rows_per_sec() / p.rows_per_sec(),
                        p.cpu / mine.cpu
                    );
                }
                Err(e) => println!("{case} / {label}: unavailable: {}", e.trim()),
            }
        }
    }
}
