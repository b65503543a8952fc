//! `[slices]`: which slices a model's pairs are grouped into, validated into a
//! [`Slicer`] with every problem reported at once (key and fix).

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::{
    cell_table, codebook, Codebook, FieldSlices, FieldSource, LengthSlices, Regions, Slicer,
    MAX_SLICES,
};

/// Input-length edges in bytes: a few words (queries, labels), a sentence or two, a
/// paragraph, a document. Long inputs are where truncation and context-window changes
/// break a new model first.
pub const DEFAULT_LENGTH_EDGES: [u64; 3] = [64, 256, 1024];

/// Regions without a codebook: 1/16 of traffic is small enough to isolate a topic or
/// language of a few percent, large enough that each region reaches `drift.min_pairs`
/// within minutes, and 4 length + 16 regions leave 12 slices for a field.
pub const DEFAULT_REGIONS: usize = 16;

/// One problem in `[slices]`: the key's full path (`slices.codebook`) and the fix. The
/// configuration reports it with the rest of the file's problems.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// `[slices]`: group pairs by request field, input length and embedding region; each
/// group gets its own statistics, and the worst one is what a gate reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlicesConfig {
    /// Upper edges (bytes of the item's input) of the length slices, strictly
    /// increasing: `[64, 256, 1024]` gives `len:0-64`, `len:64-256`, `len:256-1024`,
    /// `len:1024+`. `[]` turns length slices off.
    pub length_edges: Vec<u64>,
    /// Number of embedding regions when no codebook is given (seeded hyperplanes that
    /// depend only on the dimension; identical on every pod). 0 turns region slices off.
    /// Ignored with `codebook` / `centroids`, whose centroid count is the region count.
    pub regions: usize,
    /// Codebook JSON written by `shadowgate slices fit`: regions are the nearest
    /// centroid (cosine) of the baseline embedding. `""` = none. Read at start.
    pub codebook: PathBuf,
    /// The same centroids inline (one list of floats per region), instead of a file.
    pub centroids: Vec<Vec<f32>>,
    /// Slices by a request field or header (off unless `pointer` or `header` is set).
    pub field: FieldConfig,
}

impl Default for SlicesConfig {
    fn default() -> Self {
        Self {
            length_edges: DEFAULT_LENGTH_EDGES.to_vec(),
            regions: DEFAULT_REGIONS,
            codebook: PathBuf::new(),
            centroids: Vec::new(),
            field: FieldConfig::default(),
        }
    }
}

/// `[slices.field]`: a request field or header whose values name slices. Values must
/// be listed (or hashed into buckets) so that every pod exports the same slices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FieldConfig {
    /// JSON pointer into the request body, e.g. `"/metadata/language"`. `""` = none.
    pub pointer: String,
    /// Request header, e.g. `"x-tenant"` (instead of `pointer`). `""` = none.
    pub header: String,
    /// Values with their own slice (`field:<value>`); any other or missing value is
    /// `field:other`. Exact, case-sensitive match.
    pub values: Vec<String>,
    /// Instead of `values`: hash every value (FNV-1a) into this many buckets,
    /// `field:bucket0`…; a missing value is `field:other`. Stable but unreadable labels,
    /// and a bucket mixes values: prefer listing the values that matter.
    pub buckets: usize,
}

impl SlicesConfig {
    /// Checks the section and builds the [`Slicer`]; reads the codebook file if one is
    /// named. Every problem comes back at once, keyed `slices.<key>`.
    pub fn slicer(&self) -> Result<Slicer, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: format!("slices.{key}"),
                message,
            });
        };
        let mut names = Vec::new();

        let field = self.field_slices(&mut names, &mut bad);

        let length = if self.length_edges.is_empty() {
            None
        } else if self.length_edges[0] == 0 || self.length_edges.windows(2).any(|w| w[0] >= w[1]) {
            bad(
                "length_edges",
                format!(
                    "{:?} must be strictly increasing byte counts above 0, e.g. [64, 256, 1024] ([] turns length slices off)",
                    self.length_edges
                ),
            );
            None
        } else {
            let base = names.len();
            let mut lo = 0;
            for &e in &self.length_edges {
                names.push(format!("len:{lo}-{e}"));
                lo = e;
            }
            names.push(format!("len:{lo}+"));
            Some(LengthSlices {
                edges: self.length_edges.clone(),
                base,
            })
        };

        let regions = self.regions(names.len(), &mut bad);
        let count = match &regions {
            Some(Regions::Codebook { dim, centroids, .. }) => centroids.len() / dim,
            Some(Regions::Hyperplanes { regions, .. }) => *regions,
            None => 0,
        };
        names.extend((0..count).map(|i| format!("region:{i}")));

        if names.len() > MAX_SLICES {
            let field_n = field
                .as_ref()
                .map_or(0, |f| f.values.len().max(f.buckets) + 1);
            let len_n = length.as_ref().map_or(0, |l| l.edges.len() + 1);
            bad(
                "regions",
                format!(
                    "{} slices configured ({field_n} field + {len_n} length + {count} regions); at most {MAX_SLICES}: list fewer slices.field.values, fewer slices.length_edges, or fewer regions (slices.regions, or `slices fit --k`)",
                    names.len()
                ),
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Slicer {
            names,
            field,
            length,
            regions,
        })
    }

    fn field_slices(
        &self,
        names: &mut Vec<String>,
        bad: &mut impl FnMut(&str, String),
    ) -> Option<FieldSlices> {
        let f = &self.field;
        let source = match (f.pointer.is_empty(), f.header.is_empty()) {
            (true, true) => {
                if !f.values.is_empty() || f.buckets > 0 {
                    bad(
                        "field",
                        "values or buckets are set but no source: set slices.field.pointer (e.g. \"/metadata/language\") or slices.field.header (e.g. \"x-tenant\")".into(),
                    );
                }
                return None;
            }
            (false, false) => {
                bad(
                    "field.header",
                    "set either slices.field.pointer or slices.field.header, not both".into(),
                );
                return None;
            }
            (false, true) => {
                if !f.pointer.starts_with('/') {
                    bad(
                        "field.pointer",
                        format!(
                            "{:?} is not a JSON pointer, e.g. \"/metadata/language\"",
                            f.pointer
                        ),
                    );
                    return None;
                }
                FieldSource::Pointer(f.pointer.clone())
            }
            (true, false) => match http::HeaderName::from_bytes(f.header.trim().as_bytes()) {
                Ok(h) => FieldSource::Header(h),
                Err(_) => {
                    bad(
                        "field.header",
                        format!("{:?} is not a header name, e.g. \"x-tenant\"", f.header),
                    );
                    return None;
                }
            },
        };
        let mut ok = true;
        match (f.values.is_empty(), f.buckets) {
            (true, 0) => {
                bad("field.values", "list the values that get their own slice, e.g. [\"en\", \"de\", \"ja\"] (or set slices.field.buckets): values seen first on one pod differ from another's, so they cannot be picked at run time".into());
                ok = false;
            }
            (false, b) if b > 0 => {
                bad(
                    "field.buckets",
                    "set either slices.field.values or slices.field.buckets, not both".into(),
                );
                ok = false;
            }
            _ => {}
        }
        for (i, v) in f.values.iter().enumerate() {
            if v.is_empty() || v == "other" || f.values[..i].contains(v) {
                bad(
                    &format!("field.values[{i}]"),
                    format!("{v:?}: values must be non-empty, distinct, and not \"other\" (the slice of every unlisted value)"),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let base = names.len();
        if f.buckets > 0 {
            names.extend((0..f.buckets).map(|i| format!("field:bucket{i}")));
        } else {
            names.extend(f.values.iter().map(|v| format!("field:{v}")));
        }
        let other = names.len();
        names.push("field:other".into());
        Some(FieldSlices {
            source,
            values: f.values.clone(),
            buckets: f.buckets,
            base,
            other,
        })
    }

    fn regions(&self, base: usize, bad: &mut impl FnMut(&str, String)) -> Option<Regions> {
        let has_file = !self.codebook.as_os_str().is_empty();
        if has_file && !self.centroids.is_empty() {
            bad(
                "centroids",
                "set either slices.codebook (a file) or slices.centroids (inline), not both".into(),
            );
            return None;
        }
        let (key, centroids) = if has_file {
            match Codebook::load(&self.codebook) {
                Ok(cb) => ("codebook", cb.centroids),
                Err(e) => {
                    bad("codebook", format!("{e}; write one with `shadowgate slices fit --logs DIR --out codebook.json`, or set slices.codebook = \"\" for the default regions"));
                    return None;
                }
            }
        } else if !self.centroids.is_empty() {
            ("centroids", self.centroids.clone())
        } else if self.regions == 0 {
            return None;
        } else if self.regions > MAX_SLICES {
            bad(
                "regions",
                format!(
                    "{} is more than {MAX_SLICES} slices; use e.g. {DEFAULT_REGIONS} (0 turns region slices off)",
                    self.regions
                ),
            );
            return None;
        } else {
            return Some(Regions::Hyperplanes {
                regions: self.regions,
                planes: OnceLock::new(),
                cell_to_region: cell_table(self.regions),
                base,
            });
        };
        match codebook::unit_rows(&centroids) {
            Ok((dim, flat)) => Some(Regions::Codebook {
                dim,
                centroids: flat,
                base,
            }),
            Err(e) => {
                bad(key, e);
                None
            }
        }
    }
}
