//! The per-region part of the sketch: which region of embedding space the traffic lands
//! in, against the reference's shares. It names *what* drifted: a new topic or language
//! fills one region and empties others, a truncating client moves traffic between them.
//!
//! A region is the set of embeddings whose nearest centroid by cosine is that region's
//! (spherical k-means over the build data, or the slices codebook given at build). The
//! file keeps the `k` unit centroids and each region's share `p_j` of the build data; the window
//! keeps a region per slot and the count `c_j` per region. Region `j`'s gap is
//! `g_j = |c_j − t·p_j| / √(w·p_j·(1 − p_j))` with `t` samples counted: a binomial z-score
//! of its count (with the window's empty places on the reference, as for the other parts).
//! The part's statistic is `Q = max_j g_j`; its scale, like the other parts', is the 95 %
//! quantile of the null streams' largest `Q` (centred, in the calibration, on each
//! pseudo-reference's own shares).

use serde::{Deserialize, Serialize};

/// Regions of a reference when the build is given no codebook.
pub const DEFAULT_REGIONS: usize = 8;

/// The regions and their reference shares, as kept in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regions {
    /// `k` unit centroids of the embedding dimension.
    pub centroids: Vec<Vec<f32>>,
    /// Each region's share of the reference half `A` (summing to 1).
    pub shares: Vec<f64>,
    /// Where the centroids came from (k-means over `A`, or the codebook).
    pub source: String,
    /// Slice label prefix: `region` for the slices codebook's centroids (the same
    /// `region:i` as the mirror's slices), `cluster` for the reference's own k-means.
    pub prefix: String,
}

impl Regions {
    /// Checks the shape against the embedding dimension (a message naming the problem).
    pub fn check(&self, dim: usize) -> Result<(), String> {
        let k = self.centroids.len();
        if !(2..=crate::slices::MAX_SLICES).contains(&k) || self.shares.len() != k {
            return Err(format!(
                "{k} region centroids and {} shares: a reference needs 2 to {} of each",
                self.shares.len(),
                crate::slices::MAX_SLICES
            ));
        }
        if let Some(i) = self.centroids.iter().position(|c| c.len() != dim) {
            return Err(format!(
                "region centroid {i} has {} values, the embeddings {dim}",
                self.centroids[i].len()
            ));
        }
        if !["region", "cluster"].contains(&self.prefix.as_str()) {
            return Err(format!(
                "region prefix {:?} is neither region nor cluster",
                self.prefix
            ));
        }
        if self.shares.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err("a region share is outside [0, 1]".into());
        }
        Ok(())
    }

    /// The slice label of region `i`: `region:i` or `cluster:i` (see `prefix`).
    pub fn label(&self, i: usize) -> String {
        format!("{}:{i}", self.prefix)
    }
}

/// Nearest-centroid lookup and the window's counts per region.
#[derive(Debug, Clone)]
pub struct RegionCounts {
    /// `k × dim` unit centroids, row-major.
    centroids: Vec<f32>,
    dim: usize,
    shares: Vec<f64>,
    /// `1 / √(w·p_j·(1 − p_j))` (a share is floored at half a sample of `w`).
    inv_sd: Vec<f64>,
    counts: Vec<u32>,
}

impl RegionCounts {
    pub fn new(r: &Regions, w: usize) -> Self {
        let dim = r.centroids.first().map_or(0, Vec::len);
        let floor = 0.5 / w as f64;
        RegionCounts {
            centroids: r.centroids.iter().flatten().copied().collect(),
            dim,
            shares: r.shares.clone(),
            inv_sd: r
                .shares
                .iter()
                .map(|&p| {
                    let p = p.clamp(floor, 1.0 - floor);
                    1.0 / (w as f64 * p * (1.0 - p)).sqrt()
                })
                .collect(),
            counts: vec![0; r.shares.len()],
        }
    }

    /// The region of `x` (nearest centroid by cosine: the largest dot product, as the
    /// centroids are unit).
    pub fn region(&self, x: &[f32]) -> u8 {
        if x.len() != self.dim {
            return 0;
        }
        let mut dots = [0.0f32; crate::slices::MAX_SLICES];
        let dots = &mut dots[..self.counts.len()];
        super::matvec::matvec(&self.centroids, x, dots);
        let mut best = (f32::NEG_INFINITY, 0u8);
        for (i, d) in dots.iter().enumerate() {
            if *d > best.0 {
                best = (*d, i as u8);
            }
        }
        best.1
    }

    pub fn add(&mut self, region: u8) {
        self.counts[usize::from(region)] += 1;
    }

    pub fn remove(&mut self, region: u8) {
        self.counts[usize::from(region)] -= 1;
    }

    /// Centres the gaps on `shares` (another sample's, in the calibration) while
    /// keeping the reference's scale.
    pub fn recentre(&mut self, shares: &[f64]) {
        self.shares.copy_from_slice(shares);
    }

    /// Region `j`'s gap `g_j` with `t` samples counted.
    pub fn gap(&self, j: usize, t: usize) -> f64 {
        (f64::from(self.counts[j]) - t as f64 * self.shares[j]).abs() * self.inv_sd[j]
    }

    /// `Q = max_j g_j` and the region that carries it.
    pub fn distance(&self, t: usize) -> (f64, usize) {
        (0..self.counts.len())
            .map(|j| (self.gap(j, t), j))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
    }

    /// Samples per region in the window.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    pub fn shares(&self) -> &[f64] {
        &self.shares
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn state_bytes(&self) -> usize {
        self.centroids.len() * std::mem::size_of::<f32>()
            + (self.shares.len() + self.inv_sd.len()) * std::mem::size_of::<f64>()
            + self.counts.len() * std::mem::size_of::<u32>()
    }
}
