//! `shadowgate slices fit`: reads baseline embeddings from shadow-log Parquet files
//! (written with `shadow_log.store_embeddings = true`) or `.npy` float32 matrices, takes
//! a seeded sample, fits spherical k-means and writes the codebook JSON that
//! `slices.codebook` names.
//!
//! The sample is the `--sample` rows with the smallest hash of (seed, file, row), files
//! taken in path order: it does not depend on the order in which files are read, so
//! files are read in parallel and the same inputs still give the same codebook.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::{Array, FixedSizeListArray, Float32Array, GenericListArray, OffsetSizeTrait};
use arrow_schema::DataType;
use ndarray::Array2;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;

use super::codebook::{spherical_kmeans, Codebook, FittedFrom, KMeansParams, CODEBOOK_VERSION};
use super::{mix64, MAX_SLICES};

/// Default sample: 50 000 rows is ~3 000 per region at k = 16, far more than k-means
/// needs to place 16 centroids, and 150 MiB at 768 dimensions.
pub const DEFAULT_SAMPLE: usize = 50_000;
/// Default seed of the sample and of the k-means++ start.
pub const DEFAULT_SEED: u64 = 0x5EED;
/// Default number of regions; see `slices.regions`.
pub const DEFAULT_K: usize = super::config::DEFAULT_REGIONS;
/// Lloyd iterations at most; it usually settles within 30.
pub const DEFAULT_MAX_ITER: u32 = 100;
/// Rows per Parquet batch.
const BATCH_ROWS: usize = 8192;

/// Arguments of `shadowgate slices fit`.
#[derive(Debug, Clone, clap::Args)]
pub struct FitArgs {
    /// Shadow-log tree(s) or Parquet files (with `baseline_embedding`, written when
    /// `shadow_log.store_embeddings = true`), and/or `.npy` float32 matrices (rows × dim).
    #[arg(long, required = true, num_args = 1..)]
    pub logs: Vec<PathBuf>,
    /// Number of regions (centroids), 2 to 32; with length and field slices, at most 32
    /// slices in all.
    #[arg(long, default_value_t = DEFAULT_K)]
    pub k: usize,
    /// Where to write the codebook JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// Fit on at most this many embeddings, a seeded sample of all rows read.
    #[arg(long, default_value_t = DEFAULT_SAMPLE)]
    pub sample: usize,
    /// Seed of the sample and of the k-means++ start: same inputs and seed, same codebook.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Most k-means iterations.
    #[arg(long, default_value_t = DEFAULT_MAX_ITER)]
    pub max_iter: u32,
    /// Embedding column of the Parquet files.
    #[arg(long, default_value = "baseline_embedding")]
    pub column: String,
    /// Keep rows as read (the reference needs their norms); a fit normalises them.
    #[arg(skip)]
    pub raw: bool,
}

impl FitArgs {
    /// Arguments with the command line's defaults.
    pub fn new(logs: Vec<PathBuf>, out: PathBuf) -> Self {
        FitArgs {
            logs,
            k: DEFAULT_K,
            out,
            sample: DEFAULT_SAMPLE,
            seed: DEFAULT_SEED,
            max_iter: DEFAULT_MAX_ITER,
            column: "baseline_embedding".into(),
            raw: false,
        }
    }
}

/// Why the fit failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("{0}")]
    Usage(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}", path.display())]
    BadFile { path: PathBuf, problem: String },
    #[error("{0}")]
    NoData(String),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FitError {
    /// sysexits-style exit code for `main`.
    pub fn exit_code(&self) -> u8 {
        match self {
            FitError::Usage(_) => 64,                             // EX_USAGE
            FitError::Io { .. } => 66,                            // EX_NOINPUT
            FitError::BadFile { .. } | FitError::NoData(_) => 65, // EX_DATAERR
            FitError::Write { .. } => 73,                         // EX_CANTCREAT
        }
    }
}

/// Fits and writes the codebook (first to a temporary name, then renamed).
pub fn run(args: &FitArgs) -> Result<Codebook, FitError> {
    let cb = fit(args, created_now())?;
    write_json(&args.out, &cb.to_json())
        .map_err(|(path, source)| FitError::Write { path, source })?;
    Ok(cb)
}

/// Writes `text` to `out` whole or not at all: to `out.json.tmp` first, then renamed.
/// The error names the path that failed.
pub(crate) fn write_json(out: &Path, text: &str) -> Result<(), (PathBuf, std::io::Error)> {
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| (tmp.clone(), e))?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        (out.to_path_buf(), e)
    })
}

/// Embeddings read for a fit: a seeded sample of at most `args.sample` rows.
pub struct Loaded {
    /// One embedding per row, in file and row order.
    pub x: Array2<f32>,
    /// Files read.
    pub files: usize,
    /// Rows seen before sampling.
    pub seen: u64,
}

/// Reads `args.logs` (shadow-log Parquet and `.npy` files) into a seeded sample of at
/// most `args.sample` embeddings of one dimension (unit length unless `args.raw`), at
/// least `min_rows` of them. Also the
/// input of `shadowgate reference build`.
pub fn load(args: &FitArgs, min_rows: usize) -> Result<Loaded, FitError> {
    let files = crate::accuracy::files::list_files(&args.logs, &["parquet", "npy"]).map_err(
        |e| match e {
            crate::accuracy::AccuracyError::Io { path, source } => FitError::Io { path, source },
            other => FitError::Usage(other.to_string()),
        },
    )?;
    if files.is_empty() {
        return Err(FitError::NoData(format!(
            "no .parquet or .npy files under {:?}",
            args.logs
        )));
    }
    let per_file: Vec<Result<Sample, FitError>> = files
        .par_iter()
        .enumerate()
        .map(|(i, path)| read_file(path, i as u64, args))
        .collect();
    let mut all = Sample::default();
    let mut dim_from: Option<&Path> = None;
    for (r, path) in per_file.into_iter().zip(&files) {
        let s = r?;
        if let (Some(d), Some(new)) = (all.dim, s.dim) {
            if d != new {
                return Err(FitError::BadFile {
                    path: path.clone(),
                    problem: format!(
                        "embeddings of dimension {new}, but {} has {d}: fit one model's embeddings at a time",
                        dim_from.map_or_else(String::new, |p| p.display().to_string())
                    ),
                });
            }
        }
        if all.dim.is_none() && s.dim.is_some() {
            all.dim = s.dim;
            dim_from = Some(path);
        }
        all.seen += s.seen;
        all.rows.extend(s.rows);
        all.shrink(args.sample);
    }
    all.shrink(args.sample);
    let (Some(dim), false) = (all.dim, all.rows.len() < min_rows) else {
        return Err(FitError::NoData(format!(
            "{} usable embeddings in column `{}` of {} files; need at least {min_rows} (are the shadow logs written with shadow_log.store_embeddings = true?)",
            all.rows.len(),
            args.column,
            files.len(),
        )));
    };
    all.rows.sort_by_key(|c| (c.file, c.row));
    let n = all.rows.len();
    let mut x = Array2::<f32>::zeros((n, dim));
    for (mut dst, c) in x.outer_iter_mut().zip(&all.rows) {
        for (d, &v) in dst.iter_mut().zip(&c.v) {
            *d = v;
        }
    }
    Ok(Loaded {
        x,
        files: files.len(),
        seen: all.seen,
    })
}

/// Reads the inputs and fits the codebook; `created` goes into the file as is.
pub fn fit(args: &FitArgs, created: String) -> Result<Codebook, FitError> {
    if !(2..=MAX_SLICES).contains(&args.k) {
        return Err(FitError::Usage(format!(
            "--k {} must be 2 to {MAX_SLICES} (regions are slices, at most {MAX_SLICES} in all)",
            args.k
        )));
    }
    if args.sample < args.k {
        return Err(FitError::Usage(format!(
            "--sample {} must be at least --k {}",
            args.sample, args.k
        )));
    }
    let Loaded { x, files, seen } = load(args, args.k)?;
    let (n, dim) = x.dim();
    let km = spherical_kmeans(
        x.view(),
        KMeansParams {
            k: args.k,
            seed: args.seed,
            max_iter: args.max_iter,
        },
    );
    Ok(Codebook {
        version: CODEBOOK_VERSION,
        dim,
        k: args.k,
        centroids: km.centroids.outer_iter().map(|r| r.to_vec()).collect(),
        fitted_from: FittedFrom {
            paths: args.logs.iter().map(|p| p.display().to_string()).collect(),
            files: files as u64,
            rows_seen: seen,
            rows_used: n as u64,
            seed: args.seed,
            iterations: km.iterations,
            // Rounded so that the file does not carry float noise.
            mean_cosine: (km.mean_cosine * 1e6).round() / 1e6,
            sizes: km.sizes,
        },
        created,
    })
}

/// `SOURCE_DATE_EPOCH` (reproducible builds' convention) if set, else now; RFC 3339.
fn created_now() -> String {
    let t = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(std::time::SystemTime::now, |s| {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)
        });
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A unit embedding candidate for the sample.
struct Candidate {
    key: u64,
    file: u64,
    row: u64,
    v: Vec<f32>,
}

/// Bottom-`cap` sample by hash key.
#[derive(Default)]
struct Sample {
    rows: Vec<Candidate>,
    dim: Option<usize>,
    /// Usable rows seen.
    seen: u64,
}

impl Sample {
    /// Keeps the `cap` smallest keys.
    fn shrink(&mut self, cap: usize) {
        if self.rows.len() > cap {
            self.rows
                .select_nth_unstable_by_key(cap, |c| (c.key, c.file, c.row));
            self.rows.truncate(cap);
        }
    }

    /// Offers row `row` of file `file`; `Err` on a dimension change.
    fn offer(
        &mut self,
        seed: u64,
        file: u64,
        row: u64,
        v: &[f32],
        cap: usize,
        normalise: bool,
    ) -> Result<(), String> {
        if v.is_empty() {
            return Ok(());
        }
        match self.dim {
            None => self.dim = Some(v.len()),
            Some(d) if d != v.len() => {
                return Err(format!(
                    "row {row} has {} values, earlier rows {d}",
                    v.len()
                ))
            }
            Some(_) => {}
        }
        let norm = v
            .iter()
            .map(|&a| f64::from(a) * f64::from(a))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Ok(());
        }
        self.seen += 1;
        let key = mix64(mix64(seed ^ file) ^ row);
        self.rows.push(Candidate {
            key,
            file,
            row,
            v: if normalise {
                v.iter().map(|&a| (f64::from(a) / norm) as f32).collect()
            } else {
                v.to_vec()
            },
        });
        if self.rows.len() >= cap.max(1).saturating_mul(2) {
            self.shrink(cap);
        }
        Ok(())
    }
}

fn read_file(path: &Path, file: u64, args: &FitArgs) -> Result<Sample, FitError> {
    let bad = |problem: String| FitError::BadFile {
        path: path.to_path_buf(),
        problem,
    };
    let io = |source: std::io::Error| FitError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut sample = Sample::default();
    let offer = |row: u64, v: &[f32], s: &mut Sample| {
        s.offer(args.seed, file, row, v, args.sample, !args.raw)
            .map_err(bad)
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        let mut r = BufReader::new(File::open(path).map_err(io)?);
        let (rows, dim, wide) = npy_header(&mut r).map_err(bad)?;
        let width = if wide { 8 } else { 4 };
        let mut buf = vec![0u8; dim * width];
        let mut v = vec![0f32; dim];
        for row in 0..rows {
            r.read_exact(&mut buf).map_err(io)?;
            for (x, b) in v.iter_mut().zip(buf.chunks_exact(width)) {
                // chunks_exact gives `width` bytes, so the conversions cannot fail.
                *x = if wide {
                    f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32
                } else {
                    f32::from_le_bytes(b.try_into().unwrap_or([0; 4]))
                };
            }
            offer(row as u64, &v, &mut sample)?;
        }
        return Ok(sample);
    }
    let f = File::open(path).map_err(io)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| bad(format!("not a readable Parquet file ({e})")))?;
    let idx = builder.schema().index_of(&args.column).map_err(|_| {
        bad(format!(
            "no column `{}` (see --column; shadow logs hold `baseline_embedding`)",
            args.column
        ))
    })?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let col = batch.column(0);
        let n = col.len();
        let mut each = |i: usize, v: Option<&[f32]>, s: &mut Sample| match v {
            Some(v) => offer(row + i as u64, v, s),
            None => Ok(()),
        };
        match col.data_type() {
            DataType::List(_) => {
                list_rows::<i32>(col.as_any().downcast_ref(), &mut sample, &mut each)
            }
            DataType::LargeList(_) => {
                list_rows::<i64>(col.as_any().downcast_ref(), &mut sample, &mut each)
            }
            DataType::FixedSizeList(_, _) => {
                let l = col
                    .as_any()
                    .downcast_ref::<FixedSizeListArray>()
                    .ok_or_else(|| bad("unreadable list column".into()))?;
                let vals =
                    f32_values(l.values().as_ref()).ok_or_else(|| bad(not_f32(&args.column)))?;
                let w = l.value_length() as usize;
                for i in 0..n {
                    let start = (l.offset() + i) * w;
                    let v = vals.get(start..start + w).filter(|_| l.is_valid(i));
                    each(i, v, &mut sample)?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
        .and_then(|ok| {
            if ok {
                Ok(())
            } else {
                Err(bad(not_f32(&args.column)))
            }
        })?;
        row += n as u64;
    }
    Ok(sample)
}

fn not_f32(column: &str) -> String {
    format!("column `{column}` is not a list of float32")
}

/// Calls `each(i, row)` for each row of a list column (None for null rows or rows with
/// null elements); `Ok(false)` if the elements are not float32.
fn list_rows<O: OffsetSizeTrait>(
    l: Option<&GenericListArray<O>>,
    sample: &mut Sample,
    each: &mut impl FnMut(usize, Option<&[f32]>, &mut Sample) -> Result<(), FitError>,
) -> Result<bool, FitError> {
    let Some(l) = l else { return Ok(false) };
    let Some(values) = l.values().as_any().downcast_ref::<Float32Array>() else {
        return Ok(false);
    };
    let vals = values.values();
    let offsets = l.value_offsets();
    for i in 0..l.len() {
        let (a, b) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
        let holes = values.null_count() > 0 && (a..b).any(|j| values.is_null(j));
        let v = vals.get(a..b).filter(|_| l.is_valid(i) && !holes);
        each(i, v, sample)?;
    }
    Ok(true)
}

fn f32_values(a: &dyn Array) -> Option<&[f32]> {
    let f = a.as_any().downcast_ref::<Float32Array>()?;
    (f.null_count() == 0).then(|| f.values().as_ref())
}

/// Reads an `.npy` header: (rows, columns, 8-byte floats?). Only little-endian float32
/// or float64, C order, two dimensions.
fn npy_header(r: &mut impl Read) -> Result<(usize, usize, bool), String> {
    let mut head = [0u8; 10];
    r.read_exact(&mut head)
        .map_err(|e| format!("not an .npy file ({e})"))?;
    if &head[..6] != b"\x93NUMPY" {
        return Err("not an .npy file (no \\x93NUMPY magic)".into());
    }
    let len = if head[6] == 1 {
        usize::from(u16::from_le_bytes([head[8], head[9]]))
    } else {
        let mut more = [0u8; 2];
        r.read_exact(&mut more).map_err(|e| e.to_string())?;
        u32::from_le_bytes([head[8], head[9], more[0], more[1]]) as usize
    };
    if len > 1 << 20 {
        return Err("implausible .npy header length".into());
    }
    let mut text = vec![0u8; len];
    r.read_exact(&mut text).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text);
    let descr = dict_value(&text, "descr").unwrap_or_default();
    let wide = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" | "|f4" => false,
        "<f8" => true,
        other => {
            return Err(format!(
                "dtype {other} is not supported; save float32 (np.asarray(x, dtype='<f4'))"
            ))
        }
    };
    if dict_value(&text, "fortran_order").as_deref() != Some("False") {
        return Err("Fortran order is not supported; save np.ascontiguousarray(x)".into());
    }
    let shape = dict_value(&text, "shape").unwrap_or_default();
    let dims: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape}")))
        .collect::<Result<_, _>>()?;
    match dims[..] {
        [rows, cols] => Ok((rows, cols, wide)),
        _ => Err(format!("shape {shape} is not two-dimensional (rows × dim)")),
    }
}

/// The raw text of `key`'s value in the header's Python dict literal.
fn dict_value(text: &str, key: &str) -> Option<String> {
    let at = text.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{Float32Builder, ListBuilder};
    use arrow_array::RecordBatch;
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::slices::codebook::tests::{ari, clustered};

    fn write_npy(path: &Path, x: &Array2<f32>) {
        let (n, d) = x.dim();
        let mut header =
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        for v in x.iter() {
            out.extend(v.to_le_bytes());
        }
        std::fs::write(path, out).unwrap();
    }

    /// A shadow-log-like Parquet file: `baseline_embedding` list<float32>, some nulls.
    fn write_parquet(path: &Path, rows: &[Option<Vec<f32>>]) {
        let mut b = ListBuilder::new(Float32Builder::new());
        for r in rows {
            match r {
                Some(v) => {
                    b.values().append_slice(v);
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        let col = Arc::new(b.finish());
        let schema = Arc::new(Schema::new(vec![Field::new(
            "baseline_embedding",
            col.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![col]).unwrap();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn fits_from_parquet_and_npy_recovering_clusters_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let (x, truth) = clustered(6000, 32, 6, 3);
        // Half in a Hive-style tree of Parquet files (with null rows: store_embeddings
        // off for a while), half in an .npy file.
        let tree = dir.path().join("logs/model=m/date=2026-11-01/hour=10");
        std::fs::create_dir_all(&tree).unwrap();
        let rows: Vec<Option<Vec<f32>>> = x
            .outer_iter()
            .take(3000)
            .map(|r| Some(r.to_vec()))
            .collect();
        let mut with_nulls = rows[..1500].to_vec();
        with_nulls.insert(10, None);
        write_parquet(&tree.join("a.parquet"), &with_nulls);
        write_parquet(&tree.join("b.parquet"), &rows[1500..]);
        std::fs::write(tree.join(".tmp-c.parquet"), b"half written").unwrap();
        let rest = x.slice(ndarray::s![3000.., ..]).to_owned();
        write_npy(&dir.path().join("rest.npy"), &rest);

        let mut args = FitArgs::new(
            vec![dir.path().join("logs"), dir.path().join("rest.npy")],
            dir.path().join("codebook.json"),
        );
        args.k = 6;
        let cb = fit(&args, "2026-11-01T00:00:00Z".into()).unwrap();
        assert_eq!((cb.dim, cb.k, cb.fitted_from.files), (32, 6, 3));
        assert_eq!(cb.fitted_from.rows_seen, 6000);
        assert_eq!(cb.fitted_from.rows_used, 6000);
        // Assign every row with the codebook as the sidecar would.
        let slicer = crate::slices::SlicesConfig {
            length_edges: vec![],
            centroids: cb.centroids.clone(),
            ..Default::default()
        }
        .slicer()
        .unwrap();
        let got: Vec<usize> = x
            .outer_iter()
            .map(|r| {
                let v: Vec<f32> = r.iter().map(|a| a * 3.0).collect(); // unnormalised
                slicer.assign(None, None, &v).iter().next().unwrap()
            })
            .collect();
        let score = ari(&truth, &got);
        eprintln!("fit job: ARI {score:.4}, sizes {:?}", cb.fitted_from.sizes);
        assert!(score > 0.95, "ARI {score}");

        // Same inputs, byte-identical file; a sample is also deterministic.
        let again = fit(&args, "2026-11-01T00:00:00Z".into()).unwrap();
        assert_eq!(again.to_json(), cb.to_json());
        args.sample = 1000;
        let s1 = fit(&args, String::new()).unwrap();
        let s2 = fit(&args, String::new()).unwrap();
        assert_eq!(s1.to_json(), s2.to_json());
        assert_eq!(s1.fitted_from.rows_used, 1000);

        // run() writes a file the config accepts.
        let written = run(&args).unwrap();
        let loaded = Codebook::load(&args.out).unwrap();
        assert_eq!(loaded.centroids, written.centroids);
    }

    #[test]
    fn bad_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cb.json");
        let p = dir.path().join("x.parquet");
        write_parquet(&p, &[None, None]);
        let e = fit(&FitArgs::new(vec![p.clone()], out.clone()), String::new()).unwrap_err();
        assert!(e.to_string().contains("store_embeddings"), "{e}");
        assert_eq!(e.exit_code(), 65);

        let mut args = FitArgs::new(vec![p.clone()], out.clone());
        args.column = "nope".into();
        let e = fit(&args, String::new()).unwrap_err();
        assert!(e.to_string().contains("no column `nope`"), "{e}");

        let e = fit(
            &FitArgs::new(vec![dir.path().join("missing")], out.clone()),
            String::new(),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 66);

        let mut args = FitArgs::new(vec![p], out.clone());
        args.k = 40;
        assert_eq!(fit(&args, String::new()).unwrap_err().exit_code(), 64);

        let q = dir.path().join("y.npy");
        std::fs::write(&q, b"\x93NUMPY\x01\x00\x30\x00{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }\n").unwrap();
        let e = fit(&FitArgs::new(vec![q], out), String::new()).unwrap_err();
        assert!(e.to_string().contains("float32"), "{e}");
    }
}
