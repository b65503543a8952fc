//! Slices: which bounded groups of traffic a compared pair belongs to, so that a canary
//! that breaks one language, one tenant or long inputs fails its gate although the mean
//! cosine over all traffic stays at 0.99.
//!
//! Three sources, each optional, each putting a pair in at most one of its slices:
//! - **field**: a request field (JSON pointer into the body) or header that the operator
//!   names, with the values listed in config (`field:de`, the rest `field:other`) or
//!   hashed into a fixed number of buckets (`field:bucket3`). Both are pure functions of
//!   the value, so every pod exports the same label set and a slice means the same
//!   traffic on every pod; first-come assignment would not (pods see values in different
//!   orders, and a restart reshuffles them).
//! - **length**: bytes of the item's input, bucketed by configured edges (`len:64-256`).
//! - **region**: where the *baseline* embedding lies: the nearest centroid by cosine of a
//!   codebook fitted from shadow logs (`shadowgate slices fit`), or, without one, a
//!   default that depends only on the dimension (see [`DEFAULT_HYPERPLANES`]).
//!
//! At most [`MAX_SLICES`] slices over all sources, fixed when the configuration is
//! loaded: the statistics ([`stats`]) split their error budget over that number.
//!
//! Pure code except [`codebook::Codebook::load`] and the `fit` job ([`fit`]).

pub mod codebook;
pub mod config;
pub mod fit;
pub mod stats;

use std::sync::OnceLock;

use simsimd::SpatialSimilarity;

pub(crate) use crate::ids::mix64;

pub use codebook::Codebook;
pub use config::{FieldConfig, Problem, SlicesConfig};
pub use stats::{PairRef, SliceExample, SliceStats, SliceSummary, WorstSlice};

/// Most slices per model over all sources: every slice is a label value on the per-slice
/// series and four one-sided confidence bounds; 32 keeps both bounded (and a set of
/// slices fits a `u32`).
pub const MAX_SLICES: usize = 32;

/// Hyperplanes of the default regions (no codebook): the signs of the baseline
/// embedding's projections on this many seeded Gaussian directions give a cell (of 2⁸),
/// and a seeded table folds the cells evenly onto the regions.
///
/// Why not one hyperplane per bit of the region index: sentence embeddings sit in a
/// narrow cone around a common mean direction, so a hyperplane through the origin
/// usually has most of the data on one side (average pairwise cosine 0.75–0.9 is common
/// for E5/BGE/OpenAI-style models). Four hyperplanes (16 cells) then leave 1–3 regions
/// with traffic; with eight, the few hyperplanes that do cut the cone still give enough
/// occupied cells to spread over 16 regions. Measured on synthetic cone data (d = 384,
/// 20 topics in an anisotropic residual, 3 000 points; `tests::default_regions_split_a_narrow_cone`):
///
/// | mean pairwise cosine | 0.13 | 0.36 | 0.54 | 0.77 | 0.91 |
/// |---|---|---|---|---|---|
/// | effective regions of 16 (exp entropy), default | 14.9 | 13.5 | 11.3 | 6.2 | 2.3 |
/// | same, 4 plain hyperplanes | 12.0 | 9.4 | 7.2 | 3.9 | 2.0 |
/// | broken topic's share of its best region, default | 0.20 | 0.20 | 0.22 | 0.22 | 0.21 |
/// | same, codebook fitted on the data (k = 16) | 0.76 | 0.77 | 0.77 | 0.78 | 0.78 |
///
/// (A topic is 5 % of traffic, so a region holding a fifth of broken pairs is a
/// fourfold stronger signal than all traffic.) More hyperplanes (12, 16) fill the
/// regions more evenly in a narrow cone but mix topics more; argmax over random
/// centroids did worse than plain hyperplanes. Data-free regions cannot know the cone's
/// axis, so they are a fallback: fit a codebook when the model's embeddings are logged.
pub const DEFAULT_HYPERPLANES: usize = 8;

/// Seed of the default hyperplanes; with the dimension it fixes them, so every pod (and
/// every release: changing it renames what each region holds) computes the same regions.
const HYPERPLANE_SEED: u64 = 0x5EED_51CE_0000_0001;

/// A set of slice indices (into [`Slicer::names`]), at most one per source. `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SliceSet(u32);

impl SliceSet {
    /// No slice.
    pub const EMPTY: SliceSet = SliceSet(0);

    /// Whether slice `i` is in the set.
    pub fn contains(self, i: usize) -> bool {
        i < MAX_SLICES && self.0 & (1 << i) != 0
    }

    /// Number of slices in the set (0 to 3).
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The slice indices, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }

    fn insert(&mut self, i: usize) {
        debug_assert!(i < MAX_SLICES);
        self.0 |= 1 << (i % MAX_SLICES);
    }
}

/// Where the field source reads its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    /// JSON pointer into the request body.
    Pointer(String),
    /// Request header (lower-case name).
    Header(http::HeaderName),
}

#[derive(Debug, Clone)]
struct FieldSlices {
    source: FieldSource,
    /// Listed values, in config order: `field:<value>` is slice `base + i`.
    values: Vec<String>,
    /// Hash buckets instead of values (0 = values mode).
    buckets: usize,
    base: usize,
    /// `field:other`: unlisted or missing values.
    other: usize,
}

#[derive(Debug, Clone)]
struct LengthSlices {
    /// Strictly increasing upper edges in bytes; slice `base + i` holds lengths in
    /// `[edges[i-1], edges[i])`, the last one everything from the last edge up.
    edges: Vec<u64>,
    base: usize,
}

#[derive(Debug)]
enum Regions {
    /// Unit centroids, row-major `k × dim`; nearest by cosine = largest dot product
    /// (the embedding's norm scales every dot alike).
    Codebook {
        dim: usize,
        centroids: Vec<f32>,
        base: usize,
    },
    /// [`DEFAULT_HYPERPLANES`] seeded directions for the first dimension seen.
    Hyperplanes {
        regions: usize,
        planes: OnceLock<(usize, Vec<f32>)>,
        cell_to_region: Box<[u8; 1 << DEFAULT_HYPERPLANES]>,
        base: usize,
    },
}

/// Puts each pair in its slices. Built from a validated [`SlicesConfig`]
/// ([`SlicesConfig::slicer`]); cheap to share (`Send + Sync`, `assign` takes `&self`).
#[derive(Debug)]
pub struct Slicer {
    names: Vec<String>,
    field: Option<FieldSlices>,
    length: Option<LengthSlices>,
    regions: Option<Regions>,
}

impl Slicer {
    /// Label values of the slices, in index order: `field:<value>`… `field:other`,
    /// `len:0-64`… `len:1024+`, `region:0`…. Stable for a given configuration.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of slices (K of the Bonferroni split in [`SliceStats`]).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no source is configured.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether a field source is configured, i.e. whether the caller should extract
    /// [`Slicer::field_value`] at all.
    pub fn wants_field(&self) -> bool {
        self.field.is_some()
    }

    /// The configured field's value in a request, or `None` (no field source, header or
    /// pointer absent, body not JSON, value an object/array/null). Strings give their
    /// text, numbers and booleans their JSON spelling. Parses the body once: call it on
    /// mirrored requests only.
    pub fn field_value(&self, headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
        match &self.field.as_ref()?.source {
            FieldSource::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_string()),
            FieldSource::Pointer(p) => {
                let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
                match doc.pointer(p)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                        Some(v.to_string())
                    }
                    _ => None,
                }
            }
        }
    }

    /// The slices of one pair: `input` is the item's input (its byte length picks the
    /// length slice; `None` = no length slice), `field` the value from
    /// [`Slicer::field_value`] (`None` = `field:other`), `baseline_embedding` the
    /// baseline side's embedding, which picks the region (none when its dimension does
    /// not match the codebook's or it holds NaN).
    pub fn assign(
        &self,
        input: Option<&[u8]>,
        field: Option<&str>,
        baseline_embedding: &[f32],
    ) -> SliceSet {
        let mut set = SliceSet::EMPTY;
        if let Some(f) = &self.field {
            set.insert(f.slice_of(field));
        }
        if let (Some(l), Some(input)) = (&self.length, input) {
            let n = input.len() as u64;
            let i = l.edges.partition_point(|&e| e <= n);
            set.insert(l.base + i);
        }
        if let Some(r) = &self.regions {
            if let Some(i) = r.region_of(baseline_embedding) {
                set.insert(i);
            }
        }
        set
    }
}

impl FieldSlices {
    fn slice_of(&self, value: Option<&str>) -> usize {
        let Some(v) = value else {
            return self.other;
        };
        if self.buckets > 0 {
            return self.base + (fnv1a(v.as_bytes()) % self.buckets as u64) as usize;
        }
        match self.values.iter().position(|x| x == v) {
            Some(i) => self.base + i,
            None => self.other,
        }
    }
}

impl Regions {
    fn region_of(&self, x: &[f32]) -> Option<usize> {
        match self {
            Regions::Codebook {
                dim,
                centroids,
                base,
            } => {
                if x.len() != *dim || *dim == 0 {
                    return None;
                }
                let mut best = f64::NEG_INFINITY;
                let mut arg = None;
                for (j, c) in centroids.chunks_exact(*dim).enumerate() {
                    let s = <f32 as SpatialSimilarity>::dot(c, x).unwrap_or(f64::NAN);
                    if s > best {
                        best = s;
                        arg = Some(j);
                    }
                }
                arg.map(|j| base + j)
            }
            Regions::Hyperplanes {
                regions,
                planes,
                cell_to_region,
                base,
            } => {
                if x.is_empty() || *regions == 0 {
                    return None;
                }
                let (dim, planes) = planes.get_or_init(|| (x.len(), hyperplanes(x.len())));
                if *dim != x.len() {
                    return None;
                }
                let mut cell = 0usize;
                for (i, p) in planes.chunks_exact(*dim).enumerate() {
                    let s = <f32 as SpatialSimilarity>::dot(p, x)?;
                    if s.is_nan() {
                        return None;
                    }
                    cell |= usize::from(s > 0.0) << i;
                }
                Some(base + usize::from(cell_to_region[cell]))
            }
        }
    }
}

/// FNV-1a, 64 bits: a fixed hash (std's is seeded per process, so buckets would differ
/// between pods).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64: small, seedable, identical everywhere.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is below 2⁻³² for any n used here.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Standard normal (Box–Muller; one of the pair is dropped, clarity over speed).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The default hyperplanes for dimension `dim`: `DEFAULT_HYPERPLANES × dim` standard
/// normal values, row-major, from a seed that depends only on `dim`.
fn hyperplanes(dim: usize) -> Vec<f32> {
    let mut rng = SplitMix(HYPERPLANE_SEED ^ mix64(dim as u64));
    (0..DEFAULT_HYPERPLANES * dim)
        .map(|_| rng.normal() as f32)
        .collect()
}

/// Cells (sign patterns) to regions: a seeded shuffle of the cells dealt round-robin, so
/// every region gets the same number of cells (±1) and neighbouring sign patterns land
/// in unrelated regions.
fn cell_table(regions: usize) -> Box<[u8; 1 << DEFAULT_HYPERPLANES]> {
    let mut cells: Vec<usize> = (0..1 << DEFAULT_HYPERPLANES).collect();
    let mut rng = SplitMix(HYPERPLANE_SEED ^ 0xCE11);
    for i in (1..cells.len()).rev() {
        cells.swap(i, rng.below(i + 1));
    }
    let mut table = Box::new([0u8; 1 << DEFAULT_HYPERPLANES]);
    for (rank, &cell) in cells.iter().enumerate() {
        // regions ≤ MAX_SLICES = 32, so the region index fits a u8.
        table[cell] = (rank % regions.max(1)) as u8;
    }
    table
}

#[cfg(test)]
mod tests;
