//! A picture of the reference for people: the reference embeddings' density on the plane
//! of their two main directions, next to the same density of the last scored embeddings
//! (the status page draws both). It is for the eye only; the detector does not use it.
//!
//! Kept in the reference file: the two directions (top principal components of the build
//! data, by power iteration), their centre, the range shown and a `GRID × GRID` histogram
//! of shares. No vector of the build data is kept.

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// Cells per side of the density grid.
pub const GRID: usize = 16;
/// Power iterations per direction (the top two of a few hundred dimensions settle well
/// before this; the result only positions a picture).
const ITERATIONS: usize = 60;

/// The reference's picture (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Picture {
    /// Subtracted before projecting: the mean of the build vectors.
    pub center: Vec<f32>,
    /// Two orthonormal directions, each of the embedding dimension.
    pub axes: [Vec<f32>; 2],
    /// Shown range of each axis, `[low, high]` (1st and 99th percentile, widened).
    pub range: [[f32; 2]; 2],
    /// Share of the build vectors in each cell, row-major (`y * GRID + x`), summing to 1.
    pub density: Vec<f32>,
}

impl Picture {
    /// The picture of `x` (one embedding per row), or `None` for fewer than 10 rows.
    pub fn build(x: ArrayView2<f32>, seed: u64) -> Option<Picture> {
        let (n, dim) = x.dim();
        if n < 10 || dim < 2 {
            return None;
        }
        let center = x.mean_axis(Axis(0))?;
        let xc = &x - &center;
        let mut rng = super::SplitMix64(seed ^ 0x0070_6963_7475_7265);
        // Column vectors throughout: a matrix product goes to matrixmultiply's kernel,
        // where a matrix-vector one would be an indexed loop compiled with this crate
        // (seconds in a debug build, which the demo and the tests run).
        let mut axes: Vec<Array2<f32>> = Vec::with_capacity(2);
        for _ in 0..2 {
            let mut v = Array2::from_shape_fn((dim, 1), |_| rng.uniform() as f32 - 0.5);
            for _ in 0..ITERATIONS {
                let mut w = xc.t().dot(&xc.dot(&v));
                for a in &axes {
                    let along = (&w * a).sum();
                    w.scaled_add(-along, a);
                }
                let norm = (&w * &w).sum().sqrt();
                if !(norm > 0.0 && norm.is_finite()) {
                    break;
                }
                v = w / norm;
            }
            axes.push(v);
        }
        let axes = [axes[0].column(0).to_owned(), axes[1].column(0).to_owned()];
        let both = ndarray::concatenate(
            Axis(1),
            &[
                axes[0].view().insert_axis(Axis(1)),
                axes[1].view().insert_axis(Axis(1)),
            ],
        )
        .expect("two columns of the same length");
        let proj: Vec<[f32; 2]> = xc
            .dot(&both)
            .rows()
            .into_iter()
            .map(|r| [r[0], r[1]])
            .collect();
        let mut range = [[0f32; 2]; 2];
        for (k, rk) in range.iter_mut().enumerate() {
            let mut v: Vec<f32> = proj.iter().map(|p| p[k]).collect();
            v.sort_by(f32::total_cmp);
            let lo = v[n / 100];
            let hi = v[n - 1 - n / 100];
            let pad = ((hi - lo) * 0.1).max(1e-6);
            *rk = [lo - pad, hi + pad];
        }
        let mut pic = Picture {
            center: center.to_vec(),
            axes: [axes[0].to_vec(), axes[1].to_vec()],
            range,
            density: vec![0.0; GRID * GRID],
        };
        for p in &proj {
            let c = pic.cell(*p);
            pic.density[c] += 1.0 / n as f32;
        }
        Some(pic)
    }

    /// `v`'s coordinates on the two axes.
    pub fn project(&self, v: &[f32]) -> [f32; 2] {
        let mut out = [0f32; 2];
        for (k, axis) in self.axes.iter().enumerate() {
            out[k] = v
                .iter()
                .zip(&self.center)
                .zip(axis)
                .map(|((x, c), a)| (x - c) * a)
                .sum();
        }
        out
    }

    /// The grid cell of a projected point (points outside the range count at its edge).
    pub fn cell(&self, p: [f32; 2]) -> usize {
        let idx = |k: usize| {
            let [lo, hi] = self.range[k];
            let t = ((p[k] - lo) / (hi - lo) * GRID as f32).floor();
            (t.max(0.0) as usize).min(GRID - 1)
        };
        idx(1) * GRID + idx(0)
    }

    /// Whether the picture fits embeddings of dimension `dim`.
    pub fn fits(&self, dim: usize) -> bool {
        self.center.len() == dim
            && self.axes.iter().all(|a| a.len() == dim)
            && self.density.len() == GRID * GRID
    }
}

/// The last few hundred scored embeddings on the picture's plane.
#[derive(Debug, Clone)]
pub struct Recent {
    cells: std::collections::VecDeque<u16>,
    capacity: usize,
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Recent {
            cells: std::collections::VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, cell: usize) {
        if self.cells.len() == self.capacity {
            self.cells.pop_front();
        }
        self.cells.push_back(cell as u16);
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Shares per cell, summing to 1 (all 0 when empty).
    pub fn density(&self) -> Vec<f32> {
        let mut d = vec![0f32; GRID * GRID];
        let n = self.cells.len().max(1) as f32;
        for &c in &self.cells {
            d[usize::from(c)] += 1.0 / n;
        }
        d
    }
}
