//! The region codebook: its JSON file, and spherical k-means that fits it.
//!
//! Fitting is deterministic: k-means++ seeding from a fixed seed, rows split into
//! chunks of a fixed size (not one per thread), and per-chunk sums added in chunk order,
//! so the same rows give a byte-identical codebook whatever the thread count. (The
//! matrix products use the CPU's widest kernel, picked at run time: two machines with
//! different vector units may differ in the last bits.)

use std::path::Path;

use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::SplitMix;

/// Format version of the codebook JSON; bumped when a field changes meaning.
pub const CODEBOOK_VERSION: u32 = 1;

/// Rows per chunk of the parallel steps. Fixed (not derived from the thread count) so
/// that sums are added in the same order on any machine; 2048 rows × 768 floats = 6 MiB
/// per chunk, and a `2048 × k` block of products per matrix multiply.
const CHUNK_ROWS: usize = 2048;

/// A codebook of unit centroids: region `i` is the set of embeddings whose nearest
/// centroid by cosine is `centroids[i]` (largest region first, as fitted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Codebook {
    /// [`CODEBOOK_VERSION`].
    pub version: u32,
    /// Embedding dimension.
    pub dim: usize,
    /// Number of centroids (regions).
    pub k: usize,
    /// `k` lists of `dim` floats, unit length.
    pub centroids: Vec<Vec<f32>>,
    /// What the codebook was fitted from (informational).
    #[serde(default)]
    pub fitted_from: FittedFrom,
    /// When it was fitted, RFC 3339 (informational; `SOURCE_DATE_EPOCH` fixes it).
    #[serde(default)]
    pub created: String,
}

/// Provenance of a fitted codebook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FittedFrom {
    /// Inputs as given on the command line.
    pub paths: Vec<String>,
    /// Files read.
    pub files: u64,
    /// Usable embeddings seen (finite, non-zero, right dimension).
    pub rows_seen: u64,
    /// Embeddings the fit used (a seeded sample of `rows_seen`).
    pub rows_used: u64,
    /// Seed of the sample and of the k-means++ start.
    pub seed: u64,
    /// Lloyd iterations run.
    pub iterations: u32,
    /// Mean cosine of the used rows to their centroid.
    pub mean_cosine: f64,
    /// Rows of the sample in each region, in region order.
    pub sizes: Vec<u64>,
}

/// Why a codebook cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CodebookError {
    #[error("cannot read codebook {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("codebook {}: {problem}", path.display())]
    Invalid {
        path: std::path::PathBuf,
        problem: String,
    },
}

impl Codebook {
    /// Reads and checks a codebook file.
    pub fn load(path: &Path) -> Result<Codebook, CodebookError> {
        let text = std::fs::read_to_string(path).map_err(|source| CodebookError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Codebook::from_json(&text).map_err(|problem| CodebookError::Invalid {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses and checks codebook JSON.
    pub fn from_json(text: &str) -> Result<Codebook, String> {
        let cb: Codebook =
            serde_json::from_str(text).map_err(|e| format!("not a codebook ({e})"))?;
        if cb.version != CODEBOOK_VERSION {
            return Err(format!(
                "version {} is not supported (this shadowgate reads version {CODEBOOK_VERSION}); refit with this release's `shadowgate slices fit`",
                cb.version
            ));
        }
        let (dim, _) = unit_rows(&cb.centroids)?;
        if dim != cb.dim || cb.centroids.len() != cb.k {
            return Err(format!(
                "says dim {} and k {} but holds {} centroids of dimension {dim}",
                cb.dim,
                cb.k,
                cb.centroids.len()
            ));
        }
        Ok(cb)
    }

    /// Pretty JSON with a final newline; floats in their shortest round-trip form.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Checks centroids (2 to `MAX_SLICES` rows, same non-zero dimension, finite, non-zero)
/// and returns the dimension and the rows scaled to unit length, row-major.
pub(crate) fn unit_rows(rows: &[Vec<f32>]) -> Result<(usize, Vec<f32>), String> {
    let k = rows.len();
    if !(2..=super::MAX_SLICES).contains(&k) {
        return Err(format!(
            "{k} centroids; a codebook needs 2 to {} (one per region)",
            super::MAX_SLICES
        ));
    }
    let dim = rows[0].len();
    let mut flat = Vec::with_capacity(k * dim);
    for (i, r) in rows.iter().enumerate() {
        if r.len() != dim || dim == 0 {
            return Err(format!(
                "centroid {i} has {} values, centroid 0 has {dim}: all need the embedding's dimension",
                r.len()
            ));
        }
        let n = r
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if !n.is_finite() || n == 0.0 {
            return Err(format!("centroid {i} is zero or not finite"));
        }
        flat.extend(r.iter().map(|&v| (f64::from(v) / n) as f32));
    }
    Ok((dim, flat))
}

/// [`unit_rows`] as one row per centroid.
pub fn unit_centroids(rows: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, String> {
    let (dim, flat) = unit_rows(rows)?;
    Ok(flat.chunks_exact(dim).map(<[f32]>::to_vec).collect())
}

/// Settings of [`spherical_kmeans`].
#[derive(Debug, Clone, Copy)]
pub struct KMeansParams {
    /// Number of centroids.
    pub k: usize,
    /// Seed of the k-means++ start.
    pub seed: u64,
    /// Most Lloyd iterations; it stops earlier when no row changes centroid.
    pub max_iter: u32,
}

/// Result of [`spherical_kmeans`].
#[derive(Debug, Clone)]
pub struct KMeansFit {
    /// `k × dim` unit centroids, largest cluster first.
    pub centroids: Array2<f32>,
    /// Centroid of each row.
    pub labels: Vec<u32>,
    /// Rows per centroid.
    pub sizes: Vec<u64>,
    /// Lloyd iterations run.
    pub iterations: u32,
    /// Mean cosine of the rows to their centroid.
    pub mean_cosine: f64,
}

/// Spherical k-means (cosine) of unit rows `x` (`n × dim`, n ≥ k ≥ 1): k-means++ start
/// (D² sampling with D = 1 − cosine) from `seed`, then Lloyd steps (each centroid the
/// normalised sum of its rows). An emptied cluster is moved to the row farthest from its
/// centroid. Deterministic for given rows and parameters.
pub fn spherical_kmeans(x: ArrayView2<'_, f32>, p: KMeansParams) -> KMeansFit {
    let (n, dim) = x.dim();
    let k = p.k.clamp(1, n.max(1));
    let mut rng = SplitMix(p.seed);
    let chunks: Vec<usize> = (0..n).step_by(CHUNK_ROWS).collect();
    let rows = |c: usize| x.slice(s![c..(c + CHUNK_ROWS).min(n), ..]);

    // k-means++: best[i] = largest cosine of row i to a chosen centre so far.
    let mut centroids = Array2::<f32>::zeros((k, dim));
    if n == 0 {
        return KMeansFit {
            centroids,
            labels: Vec::new(),
            sizes: vec![0; k],
            iterations: 0,
            mean_cosine: f64::NAN,
        };
    }
    centroids.row_mut(0).assign(&x.row(rng.below(n)));
    let mut best = vec![f32::NEG_INFINITY; n];
    let weight = |s: f32| {
        let d = (1.0 - f64::from(s)).max(0.0);
        d * d
    };
    for j in 1..k {
        let c = centroids.row(j - 1).to_owned();
        best.par_chunks_mut(CHUNK_ROWS)
            .zip(chunks.par_iter())
            .for_each(|(b, &start)| {
                let sims = rows(start).dot(&c);
                for (bi, s) in b.iter_mut().zip(sims) {
                    *bi = bi.max(s);
                }
            });
        let sums: Vec<f64> = best
            .par_chunks(CHUNK_ROWS)
            .map(|b| b.iter().map(|&s| weight(s)).sum())
            .collect();
        let total: f64 = sums.iter().sum();
        let pick = if total > 0.0 {
            let mut r = rng.uniform() * total;
            let mut pick = n - 1;
            'find: for (ci, &cs) in sums.iter().enumerate() {
                if r >= cs {
                    r -= cs;
                    continue;
                }
                let start = ci * CHUNK_ROWS;
                for (i, &b) in best.iter().enumerate().skip(start).take(CHUNK_ROWS) {
                    r -= weight(b);
                    if r < 0.0 {
                        pick = i;
                        break 'find;
                    }
                }
            }
            pick
        } else {
            // Every row coincides with a centre already: any row will do.
            rng.below(n)
        };
        centroids.row_mut(j).assign(&x.row(pick));
    }

    let mut labels = vec![u32::MAX; n];
    let mut iterations = 0;
    let mut mean_cosine = f64::NAN;
    let mut sizes = vec![0u64; k];
    while iterations < p.max_iter.max(1) {
        iterations += 1;
        let step = assign_and_sum(x, &centroids, &chunks, &mut labels);
        mean_cosine = step.sim_sum / n as f64;
        sizes.clone_from(&step.counts);
        if step.changed == 0 {
            break;
        }
        // New centroids; an empty one moves to the rows farthest from their centroid.
        let mut far = Vec::new();
        if step.counts.contains(&0) {
            far = (0..n).collect();
            far.sort_by(|&a, &b| step.sims[a].total_cmp(&step.sims[b]).then(a.cmp(&b)));
        }
        let mut far = far.into_iter();
        for j in 0..k {
            let sum = step.sums.row(j);
            let norm = sum.iter().map(|v| v * v).sum::<f64>().sqrt();
            if step.counts[j] > 0 && norm > 0.0 {
                for (c, &v) in centroids.row_mut(j).iter_mut().zip(sum) {
                    *c = (v / norm) as f32;
                }
            } else if let Some(i) = far.next() {
                centroids.row_mut(j).assign(&x.row(i));
            }
        }
        if iterations == p.max_iter.max(1) {
            // Labels and sizes describe the centroids returned.
            let last = assign_and_sum(x, &centroids, &chunks, &mut labels);
            mean_cosine = last.sim_sum / n as f64;
            sizes = last.counts;
        }
    }

    // Largest cluster first (ties by index), so `region:0` is the most common region.
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut rank = vec![0u32; k];
    for (r, &j) in order.iter().enumerate() {
        rank[j] = r as u32;
    }
    KMeansFit {
        centroids: centroids.select(Axis(0), &order),
        labels: labels.iter().map(|&l| rank[l as usize]).collect(),
        sizes: order.iter().map(|&j| sizes[j]).collect(),
        iterations,
        mean_cosine,
    }
}

/// One Lloyd assignment over all rows.
struct Step {
    /// Per centroid: sum of its rows (f64), and how many.
    sums: Array2<f64>,
    counts: Vec<u64>,
    /// Cosine of each row to its centroid.
    sims: Vec<f32>,
    sim_sum: f64,
    changed: usize,
}

fn assign_and_sum(
    x: ArrayView2<'_, f32>,
    centroids: &Array2<f32>,
    chunks: &[usize],
    labels: &mut [u32],
) -> Step {
    let (n, dim) = x.dim();
    let k = centroids.nrows();
    let ct = centroids.t();
    let parts: Vec<Step> = labels
        .par_chunks_mut(CHUNK_ROWS)
        .zip(chunks.par_iter())
        .map(|(lab, &start)| {
            let xs = x.slice(s![start..(start + CHUNK_ROWS).min(n), ..]);
            let prod = xs.dot(&ct);
            let mut part = Step {
                sums: Array2::zeros((k, dim)),
                counts: vec![0; k],
                sims: Vec::with_capacity(xs.nrows()),
                sim_sum: 0.0,
                changed: 0,
            };
            for ((row, sims), l) in xs.outer_iter().zip(prod.outer_iter()).zip(lab) {
                let (mut j, mut s) = (0usize, f32::NEG_INFINITY);
                for (jj, &v) in sims.iter().enumerate() {
                    if v > s {
                        (j, s) = (jj, v);
                    }
                }
                if *l != j as u32 {
                    part.changed += 1;
                    *l = j as u32;
                }
                part.counts[j] += 1;
                part.sims.push(s);
                part.sim_sum += f64::from(s);
                for (acc, &v) in part.sums.row_mut(j).iter_mut().zip(row) {
                    *acc += f64::from(v);
                }
            }
            part
        })
        .collect();
    let mut total = Step {
        sums: Array2::zeros((k, dim)),
        counts: vec![0; k],
        sims: Vec::with_capacity(n),
        sim_sum: 0.0,
        changed: 0,
    };
    for p in parts {
        total.sums += &p.sums;
        for (a, b) in total.counts.iter_mut().zip(&p.counts) {
            *a += b;
        }
        total.sims.extend(p.sims);
        total.sim_sum += p.sim_sum;
        total.changed += p.changed;
    }
    total
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `clusters` well-separated unit directions in `dim` dimensions with points spread
    /// around each (cosine to its centre ≈ 0.9), plus a common offset that puts all of
    /// them in a cone, as sentence embeddings are. Returns rows and true cluster ids.
    pub(crate) fn clustered(
        n: usize,
        dim: usize,
        clusters: usize,
        seed: u64,
    ) -> (Array2<f32>, Vec<usize>) {
        let mut rng = SplitMix(seed);
        let centres: Vec<Vec<f64>> = (0..clusters)
            .map(|_| (0..dim).map(|_| rng.normal()).collect())
            .collect();
        let offset: Vec<f64> = (0..dim).map(|_| rng.normal() * 1.5).collect();
        let mut x = Array2::<f32>::zeros((n, dim));
        let mut truth = Vec::with_capacity(n);
        for i in 0..n {
            // Unequal sizes: cluster c gets weight c + 1.
            let total = clusters * (clusters + 1) / 2;
            let mut r = rng.below(total);
            let mut c = 0;
            while r > c {
                r -= c + 1;
                c += 1;
            }
            let c = c.min(clusters - 1);
            truth.push(c);
            let v: Vec<f64> = (0..dim)
                .map(|d| offset[d] + centres[c][d] + 0.45 * rng.normal())
                .collect();
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            for d in 0..dim {
                x[(i, d)] = (v[d] / norm) as f32;
            }
        }
        (x, truth)
    }

    /// Adjusted Rand index of two labelings.
    pub(crate) fn ari(a: &[usize], b: &[usize]) -> f64 {
        let ka = a.iter().max().map_or(0, |m| m + 1);
        let kb = b.iter().max().map_or(0, |m| m + 1);
        let mut t = vec![vec![0f64; kb]; ka];
        for (&i, &j) in a.iter().zip(b) {
            t[i][j] += 1.0;
        }
        let c2 = |v: f64| v * (v - 1.0) / 2.0;
        let sum_ij: f64 = t.iter().flatten().map(|&v| c2(v)).sum();
        let sum_a: f64 = t.iter().map(|r| c2(r.iter().sum())).sum();
        let sum_b: f64 = (0..kb).map(|j| c2(t.iter().map(|r| r[j]).sum())).sum();
        let expected = sum_a * sum_b / c2(a.len() as f64);
        (sum_ij - expected) / (0.5 * (sum_a + sum_b) - expected)
    }

    #[test]
    fn recovers_clusters_and_is_deterministic() {
        let (x, truth) = clustered(6000, 48, 8, 11);
        let p = KMeansParams {
            k: 8,
            seed: 7,
            max_iter: 100,
        };
        let fit = spherical_kmeans(x.view(), p);
        let labels: Vec<usize> = fit.labels.iter().map(|&l| l as usize).collect();
        let score = ari(&truth, &labels);
        eprintln!(
            "ARI {score:.4}, {} iterations, mean cosine {:.3}, sizes {:?}",
            fit.iterations, fit.mean_cosine, fit.sizes
        );
        assert!(score > 0.95, "ARI {score}");
        assert!(
            fit.sizes.windows(2).all(|w| w[0] >= w[1]),
            "{:?}",
            fit.sizes
        );
        for row in fit.centroids.outer_iter() {
            let n: f32 = row.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
        let again = spherical_kmeans(x.view(), p);
        assert_eq!(again.centroids, fit.centroids);
        assert_eq!(again.labels, fit.labels);
        // In a one-thread pool the chunks run in another order: same result.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let single = pool.install(|| spherical_kmeans(x.view(), p));
        assert_eq!(single.centroids, fit.centroids);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        // Fewer distinct rows than k; k larger than n.
        let x = Array2::from_shape_vec((3, 2), vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
        for k in [1, 2, 3, 5] {
            let fit = spherical_kmeans(
                x.view(),
                KMeansParams {
                    k,
                    seed: 1,
                    max_iter: 10,
                },
            );
            assert_eq!(fit.labels.len(), 3);
            assert_eq!(fit.sizes.iter().sum::<u64>(), 3);
        }
    }

    #[test]
    fn codebook_json_round_trips_and_is_checked() {
        let cb = Codebook {
            version: CODEBOOK_VERSION,
            dim: 2,
            k: 2,
            centroids: vec![vec![1.0, 0.0], vec![0.0, 1.0]],
            fitted_from: FittedFrom::default(),
            created: "2026-11-01T00:00:00Z".into(),
        };
        assert_eq!(Codebook::from_json(&cb.to_json()).unwrap(), cb);
        for (bad, why) in [
            (
                r#"{"version":2,"dim":2,"k":2,"centroids":[[1,0],[0,1]]}"#,
                "version",
            ),
            (
                r#"{"version":1,"dim":3,"k":2,"centroids":[[1,0],[0,1]]}"#,
                "dim",
            ),
            (
                r#"{"version":1,"dim":2,"k":2,"centroids":[[1,0],[0,1,2]]}"#,
                "values",
            ),
            (r#"{"version":1,"dim":2,"k":1,"centroids":[[1,0]]}"#, "2 to"),
            (
                r#"{"version":1,"dim":2,"k":2,"centroids":[[0,0],[0,1]]}"#,
                "zero",
            ),
            (
                r#"{"version":1,"dim":2,"k":2,"centroids":[[1,0],[0,1]],"x":1}"#,
                "unknown",
            ),
        ] {
            let e = Codebook::from_json(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
