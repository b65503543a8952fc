//! The shadow log's Arrow schema, its Parquet writer settings, and records → `RecordBatch`.

use std::sync::{Arc, OnceLock};

use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::types::Int8Type;
use arrow_array::{
    new_null_array, ArrayRef, DictionaryArray, Float32Array, Int32Array, Int8Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use super::record::{ShadowRecord, TargetOutcome};

/// Key of the schema version in each file's Parquet key-value metadata.
pub const SCHEMA_VERSION_KEY: &str = "shadowgate.schema_version";
/// Bump when a column changes meaning or type; readers branch on it.
/// Version 2 added `item` (the input's index in a batched request; every row of a
/// version-1 file is item 0).
pub const SCHEMA_VERSION: &str = "2";

/// Row-group cap in bytes (estimated, encoded): with 768-dim embeddings a 64 k-row group
/// would hold ~400 MB in memory before it is flushed; this keeps each open file's buffer
/// bounded whatever `row_group_rows` says. 8 MiB keeps the sidecar inside its 64 MiB
/// budget (issue 7) while column chunks stay large enough for scans (~1 MiB each).
pub const ROW_GROUP_MAX_BYTES: usize = 8 * 1024 * 1024;

/// zstd level 1: what pyarrow and Spark use by default; higher levels cost several times
/// the CPU for a few percent on this data.
const ZSTD_LEVEL: i32 = 1;

/// Values (levels) the column writer takes per step. The default 1024 means about one
/// row per step for a 768-float embedding column; 8192 cuts that per-step overhead and
/// still checks the 1 MB page limit every 32 KB of floats.
const WRITE_BATCH_SIZE: usize = 8192;

/// Dictionary values of `baseline_outcome` / `canary_outcome`, indexed by
/// [`outcome_key`].
const OUTCOME_VALUES: [&str; 4] = ["ok", "error", "timeout", "invalid_embedding"];

fn outcome_key(o: TargetOutcome) -> i8 {
    match o {
        TargetOutcome::Ok => 0,
        TargetOutcome::Error => 1,
        TargetOutcome::Timeout => 2,
        TargetOutcome::InvalidEmbedding => 3,
    }
}

/// Columns with few distinct values per file: Parquet dictionary encoding on.
const DICTIONARY_COLUMNS: [&str; 8] = [
    "model",
    "pod",
    "baseline_version",
    "canary_version",
    "baseline_prediction",
    "canary_prediction",
    "baseline_outcome",
    "canary_outcome",
];

const EMBEDDING_COLUMNS: [&str; 2] = ["baseline_embedding", "canary_embedding"];

/// Columns nobody filters by range (hashes, free text, labels, embedding floats): their
/// min/max statistics cost a comparison per value and prune nothing. The others keep
/// page-level statistics and the page index (`ts`, `request_id` ranges, cosine floors).
const NO_STATISTICS_COLUMNS: [&str; 4] = [
    "input_hash",
    "input",
    "baseline_prediction",
    "canary_prediction",
];

fn embedding_item() -> FieldRef {
    // Elements are never null (an embedding with a hole is rejected upstream); a
    // required child saves a definition level per float.
    Arc::new(Field::new_list_field(DataType::Float32, false))
}

fn embedding_type() -> DataType {
    DataType::List(embedding_item())
}

fn outcome_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
}

/// The schema of every shadow-log file (DESIGN.md, "Shadow log"). `input` and the two
/// embedding columns are always present and are all null unless `store_inputs` /
/// `store_embeddings` are on, so that every file of the tree has the same schema. The
/// schema metadata carries [`SCHEMA_VERSION_KEY`].
pub fn arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        let utf8 = |name: &str| Field::new(name, DataType::Utf8, true);
        let f32 = |name: &str| Field::new(name, DataType::Float32, true);
        let fields = vec![
            Field::new("request_id", DataType::Utf8, false),
            Field::new("item", DataType::Int32, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            utf8("model"),
            utf8("pod"),
            utf8("baseline_version"),
            utf8("canary_version"),
            utf8("input_hash"),
            utf8("input"),
            utf8("baseline_prediction"),
            utf8("canary_prediction"),
            f32("cosine_similarity"),
            f32("baseline_norm"),
            f32("canary_norm"),
            f32("baseline_latency_ms"),
            f32("canary_latency_ms"),
            Field::new("baseline_outcome", outcome_type(), true),
            Field::new("canary_outcome", outcome_type(), true),
            Field::new("sample_rate", DataType::Float32, false),
            Field::new("baseline_embedding", embedding_type(), true),
            Field::new("canary_embedding", embedding_type(), true),
        ];
        let metadata = std::collections::HashMap::from([(
            SCHEMA_VERSION_KEY.to_owned(),
            SCHEMA_VERSION.to_owned(),
        )]);
        Arc::new(Schema::new_with_metadata(fields, metadata))
    }))
}

/// Parquet settings: zstd everywhere, dictionary only where values repeat,
/// BYTE_STREAM_SPLIT for embedding floats (≈10 % smaller under zstd, PITFALLS.md),
/// row groups of `row_group_rows` rows or [`ROW_GROUP_MAX_BYTES`], whichever is first.
pub fn writer_properties(row_group_rows: usize) -> WriterProperties {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default();
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(zstd))
        .set_dictionary_enabled(false)
        .set_write_batch_size(WRITE_BATCH_SIZE)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(ROW_GROUP_MAX_BYTES))
        .set_created_by(format!("shadowgate {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_VERSION_KEY.to_owned(),
            SCHEMA_VERSION.to_owned(),
        )]));
    for col in DICTIONARY_COLUMNS {
        b = b.set_column_dictionary_enabled(ColumnPath::from(col), true);
    }
    for col in NO_STATISTICS_COLUMNS {
        b = b.set_column_statistics_enabled(ColumnPath::from(col), EnabledStatistics::None);
    }
    for col in EMBEDDING_COLUMNS {
        // arrow-rs writes a list as `<col>.list.item` (PITFALLS.md: pyarrow says `element`).
        let leaf = ColumnPath::new(vec![col.to_owned(), "list".to_owned(), "item".to_owned()]);
        b = b
            .set_column_encoding(leaf.clone(), Encoding::BYTE_STREAM_SPLIT)
            .set_column_statistics_enabled(leaf, EnabledStatistics::None);
    }
    b.build()
}

/// Builds one `RecordBatch` of [`arrow_schema`] from `records`. With `store_inputs` /
/// `store_embeddings` off, those columns are all null whatever the records hold.
/// With [`writer_properties`], what a tool needs to write files exactly as the writer does.
pub fn records_to_batch(
    records: &[ShadowRecord],
    store_inputs: bool,
    store_embeddings: bool,
) -> Result<RecordBatch, ArrowError> {
    let n = records.len();
    let strings = |get: &dyn Fn(&ShadowRecord) -> Option<&str>| -> ArrayRef {
        let bytes = records.iter().map(|r| get(r).map_or(0, str::len)).sum();
        let mut b = StringBuilder::with_capacity(n, bytes);
        for r in records {
            b.append_option(get(r));
        }
        Arc::new(b.finish())
    };
    let floats = |get: &dyn Fn(&ShadowRecord) -> Option<f32>| -> ArrayRef {
        Arc::new(records.iter().map(get).collect::<Float32Array>())
    };
    let outcomes = |get: &dyn Fn(&ShadowRecord) -> TargetOutcome| -> Result<ArrayRef, ArrowError> {
        let keys: Int8Array = records.iter().map(|r| outcome_key(get(r))).collect();
        let values: ArrayRef = Arc::new(StringArray::from(OUTCOME_VALUES.to_vec()));
        Ok(Arc::new(DictionaryArray::<Int8Type>::try_new(
            keys, values,
        )?))
    };
    let embeddings = |get: &dyn Fn(&ShadowRecord) -> Option<&[f32]>| -> ArrayRef {
        if store_embeddings {
            embedding_array(records, get)
        } else {
            new_null_array(&embedding_type(), n)
        }
    };

    let input: ArrayRef = if store_inputs {
        strings(&|r| r.input.as_deref())
    } else {
        new_null_array(&DataType::Utf8, n)
    };
    let ts = TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| r.ts_micros))
        .with_timezone("UTC");
    let sample_rate = Float32Array::from_iter_values(records.iter().map(|r| r.sample_rate));

    let columns: Vec<ArrayRef> = vec![
        strings(&|r| Some(&r.request_id)),
        Arc::new(Int32Array::from_iter_values(
            records
                .iter()
                .map(|r| i32::try_from(r.item).unwrap_or(i32::MAX)),
        )),
        Arc::new(ts),
        strings(&|r| Some(&r.model)),
        strings(&|r| Some(&r.pod)),
        strings(&|r| Some(&r.baseline_version)),
        strings(&|r| Some(&r.canary_version)),
        strings(&|r| Some(&r.input_hash)),
        input,
        strings(&|r| r.baseline_prediction.as_deref()),
        strings(&|r| r.canary_prediction.as_deref()),
        floats(&|r| r.cosine_similarity),
        floats(&|r| r.baseline_norm),
        floats(&|r| r.canary_norm),
        floats(&|r| r.baseline_latency_ms),
        floats(&|r| r.canary_latency_ms),
        outcomes(&|r| r.baseline_outcome)?,
        outcomes(&|r| r.canary_outcome)?,
        Arc::new(sample_rate),
        embeddings(&|r| r.baseline_embedding.as_deref()),
        embeddings(&|r| r.canary_embedding.as_deref()),
    ];
    RecordBatch::try_new(arrow_schema(), columns)
}

/// One `list<f32>` column; the floats are copied once, straight into the values buffer.
fn embedding_array(
    records: &[ShadowRecord],
    get: &dyn Fn(&ShadowRecord) -> Option<&[f32]>,
) -> ArrayRef {
    let total: usize = records.iter().map(|r| get(r).map_or(0, <[f32]>::len)).sum();
    let mut b = ListBuilder::with_capacity(Float32Builder::with_capacity(total), records.len())
        .with_field(embedding_item());
    for r in records {
        match get(r) {
            Some(e) => {
                b.values().append_slice(e);
                b.append(true);
            }
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}
