//! Ground-truth labels: reading Parquet, CSV and JSON-lines files, and the
//! (request id, item) → label table the join probes. A label names the item of a
//! batched request it is for (`item`, optional: missing or null is item 0, as every
//! row of a version-1 shadow log is). Duplicate keys keep the latest label: the
//! greatest timestamp when the files have one, else the last in file order (files
//! sorted by path, rows in order); the superseded rows are counted.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;

use super::columns::{
    item_column, item_from_text, label_ts_column, text_column, StrCol, INVALID_ITEM,
};
use super::files::{has_extension, list_files, parse_timestamp, seconds_to_micros};
use super::stats::Label;
use super::{AccuracyError, SkippedFile};

/// Extensions read from a labels directory.
pub const LABEL_EXTENSIONS: [&str; 5] = ["parquet", "csv", "jsonl", "json", "ndjson"];

/// Which columns of the label files hold what.
#[derive(Debug, Clone)]
pub struct LabelColumns {
    pub id: String,
    pub label: String,
    /// Used when a file has it; otherwise that file's rows are undated.
    pub ts: Option<String>,
    /// The item of a batched request; when a file lacks it (or with `None`), every row
    /// is item 0.
    pub item: Option<String>,
}

/// Counts about the label rows read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelCounts {
    /// Label rows read from all files.
    pub rows: u64,
    /// Rows without an id or a label value, or whose item is not a non-negative
    /// integer: ignored.
    pub invalid: u64,
    /// Valid rows superseded by a later label for the same (id, item).
    pub duplicates: u64,
    /// Distinct (id, item) keys with a label.
    pub distinct: u64,
}

/// The labels of one file, in row order, before deduplication. Ids live in one arena
/// and label values are interned per file, so a row costs no allocation.
#[derive(Default)]
struct Chunk {
    ids: Vec<u8>,
    ends: Vec<usize>,
    items: Vec<u32>,
    /// Index into `values` per row.
    labels: Vec<u32>,
    values: Vec<String>,
    value_index: std::collections::HashMap<String, u32>,
    ts: Vec<Option<i64>>,
    invalid: u64,
}

impl Chunk {
    /// `item` is [`INVALID_ITEM`] when the row's value was not a valid index.
    fn push(&mut self, id: Option<&str>, item: u32, label: Option<&str>, ts: Option<i64>) {
        match (id, label) {
            (Some(id), Some(label)) if item != INVALID_ITEM => {
                self.ids.extend_from_slice(id.as_bytes());
                self.ends.push(self.ids.len());
                self.items.push(item);
                let v = match self.value_index.get(label) {
                    Some(&v) => v,
                    None => {
                        let v = self.values.len() as u32;
                        self.values.push(label.to_owned());
                        self.value_index.insert(label.to_owned(), v);
                        v
                    }
                };
                self.labels.push(v);
                self.ts.push(ts);
            }
            _ => self.invalid += 1,
        }
    }
    fn rows(&self) -> u64 {
        self.ends.len() as u64 + self.invalid
    }
}

/// (Id, item) → label table, radix-partitioned by the top bits of the key's hash (id
/// and item hashed together, so the items of one batch spread like distinct ids): each
/// partition is an open-addressing table small enough to build in cache, and the
/// partitions build in parallel. A slot is 8 bytes (24 tag bits of the hash, 40 bits
/// of arena offset); an arena entry holds everything a hit needs next to the id's
/// bytes (`[index u32][label u32][item u32][len u32][id]`). A lookup miss costs one
/// cache line of slots, a hit one more in the arena; no allocation per key.
pub struct LabelTable {
    parts: Vec<Part>,
    /// Distinct label values (there are usually few classes).
    values: Vec<Label>,
    value_index: std::collections::HashMap<String, u32>,
    pub counts: LabelCounts,
}

#[derive(Default)]
struct Part {
    arena: Vec<u8>,
    /// Per local index: the timestamp of the label kept (deduplication only).
    ts: Vec<Option<i64>>,
    /// 0 = empty, else tag | (arena offset + 1).
    slots: Vec<u64>,
    /// Global index of this partition's first id.
    base: u32,
    duplicates: u64,
}

/// One chunk's rows of one partition, in row order.
#[derive(Default)]
struct Bucket {
    ids: Vec<u8>,
    ends: Vec<usize>,
    items: Vec<u32>,
    hashes: Vec<u64>,
    labels: Vec<u32>,
    ts: Vec<Option<i64>>,
}

const PART_BITS: u32 = 8;
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const HEADER: usize = 16;

#[inline]
fn u32_at(a: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&a[i..i + 4]);
    u32::from_le_bytes(b)
}

/// Hash bits 16..40 in the slot's top 24 bits: independent of the partition (top
/// bits) and of the slot position (low bits).
#[inline]
fn tag(h: u64) -> u64 {
    (h >> 16) << OFFSET_BITS
}

#[inline]
fn part_of(h: u64) -> usize {
    (h >> (64 - PART_BITS)) as usize
}

impl Part {
    fn with_capacity(n: usize) -> Part {
        Part {
            slots: vec![0; (n.max(8) * 2).next_power_of_two()],
            ..Default::default()
        }
    }

    /// Arena offset of the entry for (`id`, `item`) (hash `h`), or the empty slot where
    /// it would go.
    #[inline]
    fn probe(&self, id: &[u8], item: u32, h: u64, mut s: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut pos = (h as usize) & mask;
        loop {
            if s == 0 {
                return Err(pos);
            }
            if s & !OFFSET_MASK == tag(h) {
                let off = ((s & OFFSET_MASK) - 1) as usize;
                let len = u32_at(&self.arena, off + 12) as usize;
                if u32_at(&self.arena, off + 8) == item
                    && self.arena.get(off + HEADER..off + HEADER + len) == Some(id)
                {
                    return Ok(off);
                }
            }
            pos = (pos + 1) & mask;
            s = self.slots[pos];
        }
    }

    #[inline]
    fn first(&self, h: u64) -> u64 {
        self.slots[(h as usize) & (self.slots.len() - 1)]
    }

    fn insert(&mut self, id: &[u8], item: u32, h: u64, v: u32, ts: Option<i64>) {
        match self.probe(id, item, h, self.first(h)) {
            Ok(off) => {
                self.duplicates += 1;
                let idx = u32_at(&self.arena, off) as usize;
                // Later rows win ties, and an undated row loses to a dated one.
                if ts >= self.ts[idx] {
                    self.arena[off + 4..off + 8].copy_from_slice(&v.to_le_bytes());
                    self.ts[idx] = ts;
                }
            }
            Err(pos) => {
                let off = self.arena.len();
                let idx = self.ts.len() as u32;
                self.arena.extend_from_slice(&idx.to_le_bytes());
                self.arena.extend_from_slice(&v.to_le_bytes());
                self.arena.extend_from_slice(&item.to_le_bytes());
                self.arena
                    .extend_from_slice(&(id.len() as u32).to_le_bytes());
                self.arena.extend_from_slice(id);
                self.ts.push(ts);
                self.slots[pos] = tag(h) | (off as u64 + 1);
                if self.ts.len() * 2 > self.slots.len() {
                    self.grow();
                }
            }
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let mut slots = vec![0u64; size];
        let mut off = 0;
        // Entries are back to back in the arena.
        while off < self.arena.len() {
            let len = u32_at(&self.arena, off + 12) as usize;
            let item = u32_at(&self.arena, off + 8);
            let h = hash_key(&self.arena[off + HEADER..off + HEADER + len], item);
            let mut pos = (h as usize) & (size - 1);
            while slots[pos] != 0 {
                pos = (pos + 1) & (size - 1);
            }
            slots[pos] = tag(h) | (off as u64 + 1);
            off += HEADER + len;
        }
        self.slots = slots;
    }
}

impl Default for LabelTable {
    fn default() -> Self {
        LabelTable {
            parts: (0..1usize << PART_BITS)
                .map(|_| Part::with_capacity(0))
                .collect(),
            values: Vec::new(),
            value_index: Default::default(),
            counts: LabelCounts::default(),
        }
    }
}

impl LabelTable {
    /// Number of distinct (id, item) keys.
    pub fn len(&self) -> usize {
        self.counts.distinct as usize
    }

    pub fn is_empty(&self) -> bool {
        self.counts.distinct == 0
    }

    #[inline]
    fn entry(&self, p: &Part, off: usize) -> (u32, &Label) {
        let idx = p.base + u32_at(&p.arena, off);
        (idx, &self.values[u32_at(&p.arena, off + 4) as usize])
    }

    /// The key's index (dense, `0..len()`) and label, if labeled.
    pub fn find(&self, id: &str, item: u32) -> Option<(u32, &Label)> {
        let h = hash_key(id.as_bytes(), item);
        let p = &self.parts[part_of(h)];
        let off = p.probe(id.as_bytes(), item, h, p.first(h)).ok()?;
        Some(self.entry(p, off))
    }

    /// [`LabelTable::find`] for a batch of (`ids[i]`, `items[i]`), into `out` (cleared
    /// first). The probe side of the join is bound by cache misses on the table;
    /// gathering every key's first slot (and then the arena line of each tag hit) in
    /// loops of independent loads lets the CPU overlap the misses instead of taking
    /// them one by one.
    pub fn find_many<'s>(
        &'s self,
        ids: &[Option<&str>],
        items: &[u32],
        out: &mut Vec<Option<(u32, &'s Label)>>,
    ) {
        out.clear();
        debug_assert_eq!(ids.len(), items.len());
        let mut hashes = Vec::with_capacity(ids.len());
        let mut first = Vec::with_capacity(ids.len());
        for (id, &item) in ids.iter().zip(items) {
            let h = id.map_or(0, |s| hash_key(s.as_bytes(), item));
            hashes.push(h);
            first.push(if id.is_some() {
                self.parts[part_of(h)].first(h)
            } else {
                0
            });
        }
        let mut sink = 0u8;
        for (&s, &h) in first.iter().zip(&hashes) {
            if s != 0 && s & !OFFSET_MASK == tag(h) {
                sink ^= self.parts[part_of(h)].arena[((s & OFFSET_MASK) - 1) as usize];
            }
        }
        std::hint::black_box(sink);
        for (i, id) in ids.iter().enumerate() {
            let found = match id {
                Some(id) if first[i] != 0 => {
                    let p = &self.parts[part_of(hashes[i])];
                    p.probe(id.as_bytes(), items[i], hashes[i], first[i])
                        .ok()
                        .map(|off| self.entry(p, off))
                }
                _ => None,
            };
            out.push(found);
        }
    }

    fn intern(&mut self, label: &str) -> u32 {
        if let Some(&v) = self.value_index.get(label) {
            return v;
        }
        let v = self.values.len() as u32;
        self.values.push(Label::new(label));
        self.value_index.insert(label.to_owned(), v);
        v
    }

    /// Builds the table from chunks in file order. Each chunk's rows are scattered by
    /// partition into contiguous buckets (one sequential pass), then each partition
    /// replays its buckets in file order, partitions in parallel: every step reads and
    /// writes memory sequentially or within one cache-sized partition.
    fn build(&mut self, chunks: Vec<Chunk>) {
        let globals: Vec<Vec<u32>> = chunks
            .iter()
            .map(|c| c.values.iter().map(|v| self.intern(v)).collect())
            .collect();
        for c in &chunks {
            self.counts.rows += c.rows();
            self.counts.invalid += c.invalid;
        }
        let nparts = self.parts.len();
        let bucketed: Vec<Vec<Bucket>> = chunks
            .into_par_iter()
            .zip(globals)
            .map(|(c, global)| {
                let mut buckets: Vec<Bucket> = (0..nparts).map(|_| Bucket::default()).collect();
                let mut start = 0;
                for (r, &end) in c.ends.iter().enumerate() {
                    let id = &c.ids[start..end];
                    let h = hash_key(id, c.items[r]);
                    let b = &mut buckets[part_of(h)];
                    b.ids.extend_from_slice(id);
                    b.ends.push(b.ids.len());
                    b.items.push(c.items[r]);
                    b.hashes.push(h);
                    b.labels.push(global[c.labels[r] as usize]);
                    b.ts.push(c.ts[r]);
                    start = end;
                }
                buckets
            })
            .collect();
        self.parts = (0..nparts)
            .into_par_iter()
            .map(|p| {
                let n = bucketed.iter().map(|b| b[p].hashes.len()).sum();
                let mut part = Part::with_capacity(n);
                part.arena.reserve(
                    bucketed
                        .iter()
                        .map(|b| b[p].ids.len() + HEADER * b[p].hashes.len())
                        .sum(),
                );
                for chunk in &bucketed {
                    let b = &chunk[p];
                    let mut start = 0;
                    for (r, &end) in b.ends.iter().enumerate() {
                        part.insert(
                            &b.ids[start..end],
                            b.items[r],
                            b.hashes[r],
                            b.labels[r],
                            b.ts[r],
                        );
                        start = end;
                    }
                }
                part
            })
            .collect();
        let mut base = 0u32;
        for part in &mut self.parts {
            part.base = base;
            base += part.ts.len() as u32;
        }
        self.counts.distinct = u64::from(base);
        self.counts.duplicates = self.parts.iter().map(|p| p.duplicates).sum();
    }
}

/// FxHash-style mixing of the id's 8-byte words, seeded with its length and the item,
/// with a murmur3 finalizer: fast on short ids and well spread in the low bits the
/// table uses (item `k` of one request lands as far from item `k + 1` as two ids do).
/// No more work per key than the id alone. Not DoS-resistant, which a batch job over
/// its own logs does not need.
#[inline]
fn hash_key(b: &[u8], item: u32) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = b.len() as u64 ^ (u64::from(item) << 32);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut w = [0u8; 8];
        w[..rem.len()].copy_from_slice(rem);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Reads every label file under `inputs` (files in parallel, merged in path order).
/// Corrupt files are an error, or skipped and returned when `skip_bad` is set; a file
/// without the id or label column is always an error.
pub fn load(
    inputs: &[PathBuf],
    cols: &LabelColumns,
    skip_bad: bool,
) -> Result<(LabelTable, Vec<SkippedFile>), AccuracyError> {
    let files = list_files(inputs, &LABEL_EXTENSIONS)?;
    let chunks: Vec<Result<Chunk, AccuracyError>> =
        files.par_iter().map(|f| read_file(f, cols)).collect();
    let mut good = Vec::new();
    let mut skipped = Vec::new();
    for (path, chunk) in files.iter().zip(chunks) {
        match chunk {
            Ok(c) => good.push(c),
            Err(e @ AccuracyError::BadFile { .. }) if skip_bad => skipped.push(SkippedFile {
                path: path.clone(),
                error: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    let mut table = LabelTable::default();
    table.build(good);
    Ok((table, skipped))
}

/// A column of ids or labels: strings read in place, other types rendered once.
enum TextCol<'a> {
    Str(StrCol<'a>),
    Owned(Vec<Option<String>>),
}

impl<'a> TextCol<'a> {
    fn new(a: &'a arrow_array::ArrayRef) -> Option<Self> {
        match StrCol::new(a) {
            Some(s) => Some(TextCol::Str(s)),
            None => text_column(a).map(TextCol::Owned),
        }
    }
    fn get(&self, i: usize) -> Option<&str> {
        match self {
            TextCol::Str(s) => s.get(i),
            TextCol::Owned(v) => v[i].as_deref(),
        }
    }
}

fn bad(path: &Path, problem: impl std::fmt::Display) -> AccuracyError {
    AccuracyError::BadFile {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

fn missing(path: &Path, column: &str) -> AccuracyError {
    AccuracyError::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
    }
}

fn read_file(path: &Path, cols: &LabelColumns) -> Result<Chunk, AccuracyError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if has_extension(name, "parquet") {
        read_parquet(path, cols)
    } else if has_extension(name, "csv") {
        let bytes = read_bytes(path)?;
        read_csv(path, &bytes, cols)
    } else if has_extension(name, "jsonl")
        || has_extension(name, "json")
        || has_extension(name, "ndjson")
    {
        let bytes = read_bytes(path)?;
        read_json_lines(path, &bytes, cols)
    } else {
        Err(AccuracyError::Usage(format!(
            "{}: unknown label file type (use .parquet, .csv or .jsonl)",
            path.display()
        )))
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, AccuracyError> {
    std::fs::read(path).map_err(|e| AccuracyError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn read_parquet(path: &Path, cols: &LabelColumns) -> Result<Chunk, AccuracyError> {
    let file = File::open(path).map_err(|e| AccuracyError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(path, format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let idx = |c: &str| schema.index_of(c).ok();
    let id_i = idx(&cols.id).ok_or_else(|| missing(path, &cols.id))?;
    let label_i = idx(&cols.label).ok_or_else(|| missing(path, &cols.label))?;
    let ts_i = cols.ts.as_deref().and_then(idx);
    let item_i = cols.item.as_deref().and_then(idx);
    let mut roots = vec![id_i, label_i];
    roots.extend(ts_i);
    roots.extend(item_i);
    roots.sort_unstable();
    roots.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| bad(path, e))?;
    let pos = |i: usize| roots.iter().position(|&r| r == i).unwrap_or(0);
    let mut chunk = Chunk::default();
    for batch in reader {
        let batch = batch.map_err(|e| bad(path, e))?;
        let type_err = |c: &str| {
            bad(
                path,
                format!(
                    "column `{c}` has an unsupported type {}",
                    schema
                        .field_with_name(c)
                        .map(|f| f.data_type().to_string())
                        .unwrap_or_default()
                ),
            )
        };
        let ids = TextCol::new(batch.column(pos(id_i))).ok_or_else(|| type_err(&cols.id))?;
        let labels =
            TextCol::new(batch.column(pos(label_i))).ok_or_else(|| type_err(&cols.label))?;
        let ts = match ts_i {
            Some(t) => Some(
                label_ts_column(batch.column(pos(t)))
                    .ok_or_else(|| type_err(cols.ts.as_deref().unwrap_or("ts")))?,
            ),
            None => None,
        };
        let items = match item_i {
            Some(i) => {
                let a = batch.column(pos(i));
                match (item_column(a), StrCol::new(a)) {
                    (Some(v), _) => Some(v),
                    (None, Some(s)) => Some(
                        (0..batch.num_rows())
                            .map(|r| item_from_text(s.get(r)))
                            .collect(),
                    ),
                    (None, None) => return Err(type_err(cols.item.as_deref().unwrap_or("item"))),
                }
            }
            None => None,
        };
        for r in 0..batch.num_rows() {
            let t = ts.as_ref().and_then(|t| t[r]);
            let item = items.as_ref().map_or(0, |v| v[r]);
            chunk.push(ids.get(r), item, labels.get(r), t);
        }
    }
    Ok(chunk)
}

/// Timestamp of a text value in a CSV field: a number is seconds since the epoch,
/// anything else RFC 3339.
fn text_ts(s: &str) -> Option<i64> {
    match super::stats::parse_decimal(s) {
        Some(v) => seconds_to_micros(v),
        None => parse_timestamp(s),
    }
}

fn read_csv(path: &Path, bytes: &[u8], cols: &LabelColumns) -> Result<Chunk, AccuracyError> {
    let text = std::str::from_utf8(bytes).map_err(|e| bad(path, format!("not UTF-8: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = CsvRecords::new(text);
    let header = match records.next() {
        None => return Err(missing(path, &cols.id)),
        Some(r) => r.map_err(|e| bad(path, e))?,
    };
    let find = |c: &str| header.iter().position(|h| h == c);
    let id_i = find(&cols.id).ok_or_else(|| missing(path, &cols.id))?;
    let label_i = find(&cols.label).ok_or_else(|| missing(path, &cols.label))?;
    let ts_i = cols.ts.as_deref().and_then(find);
    let item_i = cols.item.as_deref().and_then(find);
    let mut chunk = Chunk::default();
    for rec in records {
        let rec = rec.map_err(|e| bad(path, e))?;
        // An empty field is a missing value, as Spark's CSV reader reads it.
        let field = |i: usize| rec.get(i).map(String::as_str).filter(|s| !s.is_empty());
        let ts = ts_i.and_then(field).and_then(text_ts);
        let item = item_from_text(item_i.and_then(field));
        chunk.push(field(id_i), item, field(label_i), ts);
    }
    Ok(chunk)
}

/// RFC 4180 records: fields separated by commas, optionally in double quotes (which may
/// hold commas, newlines and `""` for a quote); lines end in LF or CRLF. Blank lines
/// are skipped.
struct CsvRecords<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> CsvRecords<'a> {
    fn new(text: &'a str) -> Self {
        CsvRecords {
            s: text.as_bytes(),
            text,
            pos: 0,
            line: 1,
        }
    }
}

impl Iterator for CsvRecords<'_> {
    type Item = Result<Vec<String>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.s;
        // Skip blank lines.
        while self.pos < s.len() && (s[self.pos] == b'\n' || s[self.pos] == b'\r') {
            if s[self.pos] == b'\n' {
                self.line += 1;
            }
            self.pos += 1;
        }
        if self.pos >= s.len() {
            return None;
        }
        let start_line = self.line;
        let mut fields = Vec::new();
        loop {
            // One field starting at self.pos.
            if self.pos < s.len() && s[self.pos] == b'"' {
                self.pos += 1;
                let mut field = String::new();
                let mut seg = self.pos;
                loop {
                    if self.pos >= s.len() {
                        return Some(Err(format!("line {start_line}: unterminated quoted field")));
                    }
                    match s[self.pos] {
                        b'"' if s.get(self.pos + 1) == Some(&b'"') => {
                            field.push_str(&self.text[seg..=self.pos]);
                            self.pos += 2;
                            seg = self.pos;
                        }
                        b'"' => {
                            field.push_str(&self.text[seg..self.pos]);
                            self.pos += 1;
                            break;
                        }
                        b'\n' => {
                            self.line += 1;
                            self.pos += 1;
                        }
                        _ => self.pos += 1,
                    }
                }
                fields.push(field);
                match s.get(self.pos) {
                    None | Some(b',') | Some(b'\n') => {}
                    Some(b'\r') if matches!(s.get(self.pos + 1), None | Some(b'\n')) => {}
                    Some(_) => {
                        return Some(Err(format!(
                            "line {}: text after a closing quote",
                            self.line
                        )))
                    }
                }
            } else {
                let start = self.pos;
                while self.pos < s.len() && !matches!(s[self.pos], b',' | b'\n' | b'\r') {
                    self.pos += 1;
                }
                fields.push(self.text[start..self.pos].to_owned());
            }
            match s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'\r') => {
                    self.pos += 1;
                    if s.get(self.pos) == Some(&b'\n') {
                        self.pos += 1;
                    }
                    self.line += 1;
                    return Some(Ok(fields));
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    return Some(Ok(fields));
                }
                _ => return Some(Ok(fields)),
            }
        }
    }
}

fn read_json_lines(path: &Path, bytes: &[u8], cols: &LabelColumns) -> Result<Chunk, AccuracyError> {
    use serde_json::Value;
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut chunk = Chunk::default();
    let mut saw_id = false;
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value =
            serde_json::from_slice(line).map_err(|e| bad(path, format!("line {}: {e}", n + 1)))?;
        let Value::Object(o) = v else {
            return Err(bad(path, format!("line {}: not a JSON object", n + 1)));
        };
        let id = o.get(&cols.id);
        saw_id |= id.is_some();
        let ts = cols
            .ts
            .as_deref()
            .and_then(|c| o.get(c))
            .and_then(|v| match v {
                Value::Number(n) => n.as_f64().and_then(seconds_to_micros),
                Value::String(s) => parse_timestamp(s),
                _ => None,
            });
        // An integer literal (or its digits as a string); null or absent is item 0.
        let item = match cols.item.as_deref().and_then(|c| o.get(c)) {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|&v| v <= u64::from(super::columns::MAX_ITEM))
                .map_or(INVALID_ITEM, |v| v as u32),
            Some(Value::String(s)) => item_from_text(Some(s)),
            Some(_) => INVALID_ITEM,
        };
        chunk.push(
            id.and_then(text).as_deref(),
            item,
            o.get(&cols.label).and_then(text).as_deref(),
            ts,
        );
    }
    if !saw_id && chunk.rows() > 0 {
        return Err(missing(path, &cols.id));
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(s: &str) -> Vec<Vec<String>> {
        CsvRecords::new(s).map(|r| r.expect("record")).collect()
    }

    #[test]
    fn csv_handles_quotes_commas_and_crlf() {
        let recs = csv("a,b,c\r\n\"x,1\",\"say \"\"hi\"\"\",\r\n\"multi\nline\",2,3\n\n4,,\"\"\n");
        assert_eq!(
            recs,
            vec![
                vec!["a", "b", "c"],
                vec!["x,1", "say \"hi\"", ""],
                vec!["multi\nline", "2", "3"],
                vec!["4", "", ""],
            ]
        );
        assert!(CsvRecords::new("\"open").next().is_some_and(|r| r.is_err()));
        assert!(CsvRecords::new("\"a\"b").next().is_some_and(|r| r.is_err()));
    }

    #[test]
    fn latest_label_wins_by_timestamp_then_order() {
        let mut t = LabelTable::default();
        let mut c = Chunk::default();
        c.push(Some("r1"), 0, Some("a"), Some(10));
        c.push(Some("r1"), 0, Some("b"), Some(5)); // older: ignored
        c.push(Some("r2"), 0, Some("x"), None);
        c.push(Some("r2"), 0, Some("y"), None); // later in order: wins
        c.push(Some("r3"), 0, Some("p"), Some(7));
        c.push(Some("r3"), 0, Some("q"), Some(7)); // tie: later wins
        c.push(None, 0, Some("z"), None);
        t.build(vec![c]);
        let get = |id: &str| t.find(id, 0).map(|(_, l)| l.text.to_string());
        assert_eq!(get("r1").as_deref(), Some("a"));
        assert_eq!(get("r2").as_deref(), Some("y"));
        assert_eq!(get("r3").as_deref(), Some("q"));
        assert_eq!(get("r4"), None);
        assert_eq!(
            t.counts,
            LabelCounts {
                rows: 7,
                invalid: 1,
                duplicates: 3,
                distinct: 3
            }
        );
    }

    #[test]
    fn items_of_one_request_are_distinct_keys() {
        let mut t = LabelTable::default();
        let mut c = Chunk::default();
        c.push(Some("r1"), 0, Some("a"), None);
        c.push(Some("r1"), 1, Some("b"), None);
        c.push(Some("r1"), 2, Some("c"), Some(5));
        c.push(Some("r1"), 2, Some("d"), Some(4)); // older, same key: superseded
        c.push(Some("r1"), 1, Some("e"), None); // later, same key: wins
        c.push(Some("r1"), INVALID_ITEM, Some("f"), None); // invalid
        c.push(Some("r2"), 7, Some("g"), None);
        t.build(vec![c]);
        let get = |id: &str, item| t.find(id, item).map(|(_, l)| l.text.to_string());
        assert_eq!(get("r1", 0).as_deref(), Some("a"));
        assert_eq!(get("r1", 1).as_deref(), Some("e"));
        assert_eq!(get("r1", 2).as_deref(), Some("c"));
        assert_eq!(get("r1", 3), None);
        assert_eq!(get("r2", 7).as_deref(), Some("g"));
        assert_eq!(get("r2", 0), None, "no label for item 0 of r2");
        assert_eq!(
            t.counts,
            LabelCounts {
                rows: 7,
                invalid: 1,
                duplicates: 2,
                distinct: 4
            }
        );
        let mut out = Vec::new();
        t.find_many(
            &[Some("r1"), Some("r1"), Some("r2"), None, Some("r1")],
            &[2, 9, 7, 0, INVALID_ITEM],
            &mut out,
        );
        let labels: Vec<Option<&str>> = out.iter().map(|f| f.map(|(_, l)| &*l.text)).collect();
        assert_eq!(labels, [Some("c"), None, Some("g"), None, None]);
    }

    #[test]
    fn label_files_carry_an_optional_item() {
        let cols = LabelColumns {
            id: "request_id".into(),
            label: "label".into(),
            ts: None,
            item: Some("item".into()),
        };
        let p = Path::new("l.csv");
        let c = read_csv(
            p,
            b"request_id,item,label\na,,x\na,1,y\na,-1,z\na,1.5,z\nb,2,w\n",
            &cols,
        )
        .expect("csv");
        assert_eq!((c.items.clone(), c.invalid), (vec![0, 1, 2], 2));
        // Without the column every row is item 0.
        let c = read_csv(p, b"request_id,label\na,x\n", &cols).expect("csv");
        assert_eq!(c.items, [0]);
        let c = read_json_lines(
            Path::new("l.jsonl"),
            concat!(
                r#"{"request_id":"a","label":"x"}"#,
                "\n",
                r#"{"request_id":"a","label":"x","item":null}"#,
                "\n",
                r#"{"request_id":"a","label":"x","item":3}"#,
                "\n",
                r#"{"request_id":"a","label":"x","item":"4"}"#,
                "\n",
                r#"{"request_id":"a","label":"x","item":-3}"#,
                "\n",
                r#"{"request_id":"a","label":"x","item":2.0}"#,
                "\n",
                r#"{"request_id":"a","label":"x","item":true}"#,
                "\n",
                r#"{"request_id":"a","label":"x","item":4294967296}"#,
                "\n",
            )
            .as_bytes(),
            &cols,
        )
        .expect("jsonl");
        assert_eq!((c.items.clone(), c.invalid), (vec![0, 0, 3, 4], 4));
    }

    #[test]
    fn table_grows_and_finds_every_id() {
        let mut t = LabelTable::default();
        let mut c = Chunk::default();
        for i in 0..10_000 {
            c.push(
                Some(&format!("id-{i}")),
                (i % 2) as u32,
                Some(&(i % 3).to_string()),
                None,
            );
        }
        t.build(vec![c]);
        assert_eq!(t.len(), 10_000);
        let mut seen = vec![false; 10_000];
        let mut index = vec![0u32; 10_000];
        for (i, slot) in index.iter_mut().enumerate() {
            let (k, l) = t.find(&format!("id-{i}"), (i % 2) as u32).expect("present");
            assert!(t.find(&format!("id-{i}"), 1 - (i % 2) as u32).is_none());
            assert_eq!(l.text.as_ref(), (i % 3).to_string());
            assert!(!seen[k as usize], "indices are distinct and dense");
            seen[k as usize] = true;
            *slot = k;
        }
        assert!(t.find("id-10000", 0).is_none());
        let ids: Vec<String> = (9_990..10_010).map(|i| format!("id-{i}")).collect();
        let ids: Vec<Option<&str>> = ids.iter().map(|s| Some(s.as_str())).chain([None]).collect();
        let items: Vec<u32> = (9_990..10_011).map(|i| (i % 2) as u32).collect();
        let mut out = Vec::new();
        t.find_many(&ids, &items, &mut out);
        let want: Vec<Option<u32>> = (9_990..10_010usize)
            .map(|i| (i < 10_000).then(|| index[i]))
            .chain([None])
            .collect();
        assert_eq!(
            out.iter().map(|f| f.map(|(k, _)| k)).collect::<Vec<_>>(),
            want
        );
    }
}
