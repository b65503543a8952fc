//! `shadowgate reference build` and `shadowgate reference replay`.

use std::path::PathBuf;
use std::time::Instant;

use crate::slices::fit::{self, FitArgs, FitError};

use super::{build, BuildParams, Detector, Part, Reference, ReferenceError};

/// Arguments of `shadowgate reference build`.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// Shadow-log trees or Parquet files (an embedding column, written with
    /// `shadow_log.store_embeddings = true`), and/or `.npy` float32 matrices (rows × dim).
    #[arg(long, required = true, num_args = 1..)]
    pub logs: Vec<PathBuf>,
    /// `model.name` of the sidecar that will use it (checked at start).
    #[arg(long)]
    pub model: String,
    /// Where to write the reference JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// Embedding column of the Parquet files.
    #[arg(long, default_value = "baseline_embedding")]
    pub column: String,
    /// Build from at most this many embeddings, a seeded sample of all rows read.
    #[arg(long, default_value_t = 20_000)]
    pub sample: usize,
    /// Seed of the sample, the split, the feature map and the bootstrap.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Random Fourier features D.
    #[arg(long, default_value_t = 128)]
    pub features: usize,
    /// Window of the statistic, in sampled embeddings.
    #[arg(long, default_value_t = 100)]
    pub window: usize,
    /// The per-coordinate part's long window, in sampled embeddings: a shift of part of
    /// the traffic too small to see in one window adds up over it. Default 10 windows
    /// (up to 32767); at most `--window` (e.g. 0): none.
    #[arg(long)]
    pub long_window: Option<usize>,
    /// Expected run length under no drift, in samples: over L samples the false-alarm
    /// probability is at most L/ERT.
    #[arg(long, default_value_t = 10_000.0)]
    pub ert: f64,
    /// Test one batch of N embeddings once, as a two-sample test at α = 5 %: the long
    /// window is the batch, the line holds for the one sample at which it fills (ERT =
    /// 1/α), and covers the long window's parts alone. Replay the batch and read
    /// `last_score` (≥ 1: drift). Not for the sidecar, which watches a stream.
    #[arg(long, value_name = "N", conflicts_with_all = ["long_window", "ert"])]
    pub one_look: Option<usize>,
    /// No early looks at the long window's tests while it fills (at w/2, 0.71 w, w,
    /// 1.41 w, ... samples after start): the window's parts alone until it is full, as
    /// format 8 did. For comparisons; the looks cost a slightly higher early line.
    #[arg(long)]
    pub no_checkpoints: bool,
    /// Regions of the per-region part (spherical k-means over the build data), 2 to 32.
    #[arg(long, default_value_t = super::regions::DEFAULT_REGIONS)]
    pub regions: usize,
    /// Use the centroids of this slices codebook (`shadowgate slices fit`) as the
    /// regions instead, so the reference's `region:i` is the mirror's slice `region:i`.
    #[arg(long)]
    pub codebook: Option<PathBuf>,
}

/// Arguments of `shadowgate reference replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The reference JSON.
    #[arg(long)]
    pub reference: PathBuf,
    /// Embeddings in order: `.npy` float32 matrices and/or Parquet files.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Embedding column of the Parquet files.
    #[arg(long, default_value = "baseline_embedding")]
    pub column: String,
    /// Print one JSON line per sample (index, score, alarm, the part of the statistic
    /// that carries the score, every part over its null scale and the line in force,
    /// the coordinate and the region furthest from the reference) before the summary.
    #[arg(long)]
    pub trace: bool,
}

/// Why a reference command failed.
#[derive(Debug, thiserror::Error)]
pub enum RefCommandError {
    #[error(transparent)]
    Input(#[from] FitError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{0}")]
    Build(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RefCommandError {
    /// sysexits-style exit code for `main`.
    pub fn exit_code(&self) -> u8 {
        match self {
            RefCommandError::Input(e) => e.exit_code(),
            RefCommandError::Reference(ReferenceError::Read { .. }) => 66,
            RefCommandError::Reference(_) | RefCommandError::Build(_) => 65,
            RefCommandError::Write { .. } => 73,
        }
    }
}

fn input_args(logs: Vec<PathBuf>, column: &str, sample: usize, seed: u64) -> FitArgs {
    FitArgs {
        sample,
        seed,
        column: column.to_string(),
        raw: true,
        ..FitArgs::new(logs, PathBuf::new())
    }
}

/// Builds and writes the reference (to a temporary name, then renamed).
pub fn run_build(args: &BuildArgs) -> Result<Reference, RefCommandError> {
    let loaded = fit::load(
        &input_args(args.logs.clone(), &args.column, args.sample, args.seed),
        1,
    )?;
    let codebook = match &args.codebook {
        None => None,
        Some(path) => {
            let cb = crate::slices::Codebook::load(path)
                .map_err(|e| RefCommandError::Build(format!("--codebook: {e}")))?;
            let centroids =
                crate::slices::codebook::unit_centroids(&cb.centroids).map_err(|e| {
                    RefCommandError::Build(format!("--codebook {}: {e}", path.display()))
                })?;
            if cb.dim != loaded.x.ncols() {
                return Err(RefCommandError::Build(format!(
                    "--codebook {} is for dimension {}, the embeddings are {}: fit one from the same model's embeddings",
                    path.display(),
                    cb.dim,
                    loaded.x.ncols()
                )));
            }
            Some((centroids, format!("slices codebook {}", path.display())))
        }
    };
    if !(2..=crate::slices::MAX_SLICES).contains(&args.regions) {
        return Err(RefCommandError::Build(format!(
            "--regions {} must be 2 to {}",
            args.regions,
            crate::slices::MAX_SLICES
        )));
    }
    let params = BuildParams {
        model: args.model.clone(),
        regions: args.regions,
        codebook,
        seed: args.seed,
        features: args.features,
        window: args.window,
        long_window: args.one_look.or(args.long_window),
        ert: if args.one_look.is_some() {
            1.0 / super::build::HORIZON_ALPHA
        } else {
            args.ert
        },
        one_look: args.one_look.is_some(),
        checkpoints: !args.no_checkpoints,
        source: format!(
            "{} of {} embeddings in {} files under {}",
            loaded.x.nrows(),
            loaded.seen,
            loaded.files,
            args.logs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ..BuildParams::new(args.model.clone())
    };
    let built_at = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let r = build(loaded.x.view(), &params, built_at).map_err(RefCommandError::Build)?;
    fit::write_json(&args.out, &r.to_json())
        .map_err(|(path, source)| RefCommandError::Write { path, source })?;
    Ok(r)
}

/// What a replay found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplaySummary {
    pub reference_id: String,
    pub samples: u64,
    /// Index of the first sample at or over the alarm line.
    pub first_alarm: Option<u64>,
    pub alarms: u64,
    pub max_score: f64,
    pub last_score: Option<f64>,
    /// The region furthest from its reference share at the end (`region:i`/`cluster:i`).
    pub worst_slice: String,
    /// Each part's largest value over its null scale (the score is the largest part
    /// over the line): which statistic rose, and how far.
    pub max_parts: std::collections::BTreeMap<&'static str, f64>,
    /// Detector time per sample (feature map and window update), microseconds.
    pub us_per_sample: f64,
    pub state_bytes: usize,
}

/// Runs the embeddings of `args.input`, in order, through the reference's detector;
/// `trace` receives each sample's line when `args.trace` is set.
pub fn run_replay(
    args: &ReplayArgs,
    mut trace: impl FnMut(String),
) -> Result<ReplaySummary, RefCommandError> {
    let r = Reference::load(&args.reference)?;
    let loaded = fit::load(
        &input_args(args.input.clone(), &args.column, usize::MAX, 0),
        1,
    )?;
    r.check(&args.reference, &r.model, loaded.x.ncols())?;
    let mut det = Detector::new(&r);
    let (mut first, mut max, mut last) = (None, f64::NEG_INFINITY, None);
    let mut max_parts = [0.0f64; 4];
    let mut spent = std::time::Duration::ZERO;
    for (i, row) in loaded.x.outer_iter().enumerate() {
        let v = row.to_vec();
        let t = Instant::now();
        let step = det.observe(&v);
        spent += t.elapsed();
        max = max.max(step.score);
        last = Some(step.score);
        if step.alarm && first.is_none() {
            first = Some(i as u64);
        }
        let (parts, line) = det.parts();
        for (m, p) in max_parts.iter_mut().zip(parts) {
            *m = m.max(p);
        }
        if args.trace {
            trace(
                serde_json::json!({
                    "i": i,
                    "score": step.score,
                    "alarm": step.alarm,
                    "part": step.part.as_str(),
                    "parts": parts,
                    "line": line,
                    "worst_coordinate": det.worst_coordinate(),
                    "worst_slice": r.regions.label(det.worst_region()),
                })
                .to_string(),
            );
        }
    }
    let n = det.seen();
    Ok(ReplaySummary {
        reference_id: r.id.clone(),
        samples: n,
        first_alarm: first,
        alarms: det.alarms(),
        max_score: if max.is_finite() { max } else { 0.0 },
        last_score: last,
        worst_slice: r.regions.label(det.worst_region()),
        max_parts: Part::ALL
            .iter()
            .zip(max_parts)
            .map(|(p, m)| (p.as_str(), m))
            .collect(),
        us_per_sample: spent.as_secs_f64() * 1e6 / n.max(1) as f64,
        state_bytes: det.state_bytes(),
    })
}
