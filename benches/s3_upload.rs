//! Shadow-log upload throughput: the closed Parquet files of a directory sent to an
//! S3-compatible store through `shadowgate::store::Remote::upload`, the call the upload
//! thread makes (one PUT below 16 MiB, multipart with 8 MiB parts, 4 in flight, above).
//!
//! Not a criterion bench: `benches/s3_vs_pyarrow.sh` runs this binary once per round,
//! interleaved with pyarrow against the same server and the same files, and reads the
//! JSON line it prints.
//!
//! ```text
//! s3_upload upload DIR s3://bucket/prefix [CONCURRENCY]   # default 1: as the uploader
//! s3_upload encode DIR                                    # re-encode cost, no network
//! ```
//!
//! `upload`: every `*.parquet` under DIR (sorted), key = path relative to DIR, on a
//! current-thread tokio runtime like the upload thread's. CONCURRENCY > 1 runs that many
//! uploads at once (reference only: the sidecar sends one file at a time). Prints
//! `{"files","bytes","seconds","mb_s"}` (MB = 10^6 bytes). Store settings come from the
//! environment (AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_ACCESS_KEY_ID, ...).
//!
//! `encode`: each file is read into Arrow batches before the clock, then written again
//! with the sidecar's `writer_properties` into memory; prints `{"files","rows",
//! "bytes_in","bytes_out","seconds"}`. That is the encoding part of what pyarrow's
//! `pq.write_table(..., filesystem=s3)` does on top of the upload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, RecordBatchReader};
use arrow_schema::{DataType, Field, Schema};
use futures_util::stream::{self, StreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use shadowgate::shadow_log::writer_properties;
use shadowgate::store::Remote;

const ROW_GROUP_ROWS: usize = 65_536;

/// pyarrow names a list's values `element` (Parquet's compliant nested type) and reads
/// them back so; the sidecar's batches name them `item`, and `writer_properties` sets
/// BYTE_STREAM_SPLIT on `<col>.list.item`. Renamed here so that the encode measured is
/// the sidecar's, embeddings included.
fn as_sidecar_batch(b: &RecordBatch) -> RecordBatch {
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        match f.data_type() {
            DataType::List(inner) if inner.name() != "item" => {
                let item = Arc::new(Field::new(
                    "item",
                    inner.data_type().clone(),
                    inner.is_nullable(),
                ));
                let l = c.as_any().downcast_ref::<ListArray>().expect("list array");
                let l2 = ListArray::new(
                    Arc::clone(&item),
                    l.offsets().clone(),
                    Arc::clone(l.values()),
                    l.nulls().cloned(),
                );
                fields.push(Field::new(f.name(), DataType::List(item), f.is_nullable()));
                cols.push(Arc::new(l2));
            }
            _ => {
                fields.push(f.as_ref().clone());
                cols.push(Arc::clone(c));
            }
        }
    }
    let schema = Schema::new_with_metadata(fields, b.schema().metadata().clone());
    RecordBatch::try_new(Arc::new(schema), cols).expect("renamed batch")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("read_dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn upload(dir: &Path, url: &str, concurrency: usize) {
    let files = files_under(dir);
    assert!(
        !files.is_empty(),
        "no .parquet files under {}",
        dir.display()
    );
    let remote = Remote::from_url(url, Duration::from_secs(60)).expect("store URL");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let jobs: Vec<(PathBuf, String)> = files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).expect("under dir");
            (p.clone(), rel.to_string_lossy().replace('\\', "/"))
        })
        .collect();
    let remote = Arc::new(remote);
    let t0 = Instant::now();
    let bytes: u64 = rt.block_on(async {
        if concurrency <= 1 {
            let mut total = 0;
            for (p, rel) in &jobs {
                total += remote.upload(p, rel).await.expect("upload");
            }
            total
        } else {
            stream::iter(jobs.iter())
                .map(|(p, rel)| {
                    let remote = Arc::clone(&remote);
                    async move { remote.upload(p, rel).await.expect("upload") }
                })
                .buffer_unordered(concurrency)
                .fold(0u64, |a, b| async move { a + b })
                .await
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{{\"files\":{},\"bytes\":{bytes},\"seconds\":{secs:.6},\"mb_s\":{:.3}}}",
        jobs.len(),
        bytes as f64 / 1e6 / secs
    );
}

fn encode(dir: &Path) {
    let files = files_under(dir);
    assert!(
        !files.is_empty(),
        "no .parquet files under {}",
        dir.display()
    );
    let (mut rows, mut bytes_in, mut bytes_out, mut secs) = (0usize, 0u64, 0usize, 0f64);
    for p in &files {
        bytes_in += std::fs::metadata(p).expect("stat").len();
        let f = std::fs::File::open(p).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .expect("parquet reader")
            .with_batch_size(ROW_GROUP_ROWS)
            .build()
            .expect("parquet reader");
        let _ = reader.schema();
        let batches: Vec<_> = reader
            .map(|b| as_sidecar_batch(&b.expect("batch")))
            .collect();
        let schema = batches.first().expect("a batch").schema();
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        let t0 = Instant::now();
        let mut out = Vec::with_capacity(64 << 20);
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(writer_properties(ROW_GROUP_ROWS)))
            .expect("writer");
        for b in &batches {
            w.write(b).expect("write");
        }
        w.close().expect("close");
        secs += t0.elapsed().as_secs_f64();
        bytes_out += out.len();
    }
    println!(
        "{{\"files\":{},\"rows\":{rows},\"bytes_in\":{bytes_in},\"bytes_out\":{bytes_out},\"seconds\":{secs:.6}}}",
        files.len()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.first().map(String::as_str) {
        Some("upload") if args.len() >= 3 => {
            let c = args.get(3).map_or(1, |c| c.parse().expect("CONCURRENCY"));
            upload(Path::new(&args[1]), &args[2], c);
        }
        Some("encode") if args.len() >= 2 => encode(Path::new(&args[1])),
        _ => {
            eprintln!(
                "usage: s3_upload upload DIR s3://bucket/prefix [CONCURRENCY] | s3_upload encode DIR"
            );
            std::process::exit(2);
        }
    }
}
