"""pyarrow writing the rows of benches/shadow_write.rs with the same schema and settings.

Same values (splitmix64 of the row index, same embedding pool), same schema (dictionary
outcomes, list<float not null> embeddings, schema version metadata), zstd level 1, the
same row-group size, dictionary only on the low-cardinality columns, BYTE_STREAM_SPLIT on
embedding floats, one file per --rows-per-file rows written under a hidden name, fsynced
and renamed, in the same Hive directory.

--mode table (default): only writing is timed; each file's Arrow table is built before
its clock starts (pyarrow's best case, comparable to the Rust "encode" line).
--mode rows: each file's rows are Python dicts before the clock starts; the timed part
is `Table.from_pylist` + writing (what a Python sidecar holding records would do,
comparable to the Rust writer end to end).

Prints JSON: {"rows", "seconds", "cpu_seconds", "bytes", "files"}.
"""

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BASE_TS = 1_793_880_000_000_000
POOL = 4096
DICTIONARY_COLUMNS = [
    "model",
    "pod",
    "baseline_version",
    "canary_version",
    "baseline_prediction",
    "canary_prediction",
    "baseline_outcome",
    "canary_outcome",
]
# Same as the Rust writer: no min/max statistics on hashes, free text, labels, embeddings.
NO_STATISTICS = {
    "input_hash",
    "input",
    "baseline_prediction",
    "canary_prediction",
    "baseline_embedding",
    "canary_embedding",
}
OUTCOMES = ["ok", "error", "timeout", "invalid_embedding"]

def splitmix64(x):
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit(x):
    return (splitmix64(x) >> np.uint64(40)).astype(np.float32) / np.float32(16_777_216.0)


def u(i, k):
    return unit(i.astype(np.uint64) * np.uint64(8) + np.uint64(k))


def schema():
    item = pa.field("item", pa.float32(), nullable=False)
    emb = pa.list_(item)
    outcome = pa.dictionary(pa.int8(), pa.string())
    s = lambda n: pa.field(n, pa.string())
    f = lambda n: pa.field(n, pa.float32())
    return pa.schema(
        [
            pa.field("request_id", pa.string(), nullable=False),
            pa.field("item", pa.int32(), nullable=False),
            pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
            s("model"), s("pod"), s("baseline_version"), s("canary_version"),
            s("input_hash"), s("input"), s("baseline_prediction"), s("canary_prediction"),
            f("cosine_similarity"), f("baseline_norm"), f("canary_norm"),
            f("baseline_latency_ms"), f("canary_latency_ms"),
            pa.field("baseline_outcome", outcome), pa.field("canary_outcome", outcome),
            pa.field("sample_rate", pa.float32(), nullable=False),
            pa.field("baseline_embedding", emb), pa.field("canary_embedding", emb),
        ],
        metadata={"shadowgate.schema_version": "2"},
    )


def embedding_column(pool, idx, valid, dim, typ):
    n = len(idx)
    if dim == 0:
        return pa.nulls(n, typ)
    lengths = np.where(valid, dim, 0).astype(np.int32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = pool[idx[valid] % POOL].reshape(-1)
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(values, pa.float32()), type=typ, mask=pa.array(~valid)
    )


def chunk(lo, hi, dim, pool, sch):
    i = np.arange(lo, hi, dtype=np.int64)
    n = hi - lo
    ok = (i % 100) != 0
    rep = lambda v: pa.array([v] * n, pa.string())
    labels = [f"label_{k}" for k in range(10)]
    canary_label = (i + (i % 20 == 0)) % 10
    cols = {
        "request_id": pa.array([f"req-{k:010d}" for k in range(lo, hi)]),
        "item": pa.array(i % 8, pa.int32()),
        "ts": pa.array(BASE_TS + i * 1000, pa.timestamp("us", tz="UTC")),
        "model": rep("llm-inference"),
        "pod": rep("bench-pod-0"),
        "baseline_version": rep("v1"),
        "canary_version": rep("v2"),
        "input_hash": pa.array([f"{x:016x}" for x in splitmix64(i).tolist()]),
        "input": pa.array(
            [f"summarize ticket {k}: customer cannot log in after password reset" for k in range(lo, hi)]
        ),
        "baseline_prediction": pa.array([labels[k] for k in (i % 10).tolist()]),
        "canary_prediction": pa.array(
            [labels[k] if v else None for k, v in zip(canary_label.tolist(), ok.tolist())]
        ),
        "cosine_similarity": pa.array(np.float32(1) - np.float32(0.05) * u(i, 1), mask=~ok),
        "baseline_norm": pa.array(np.float32(1) + u(i, 2)),
        "canary_norm": pa.array(np.float32(1) + u(i, 3), mask=~ok),
        "baseline_latency_ms": pa.array(np.float32(5) + np.float32(50) * u(i, 4)),
        "canary_latency_ms": pa.array(np.float32(5) + np.float32(50) * u(i, 5)),
        "baseline_outcome": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int8)), pa.array(OUTCOMES)
        ),
        "canary_outcome": pa.DictionaryArray.from_arrays(
            pa.array(np.where(ok, 0, 1).astype(np.int8)), pa.array(OUTCOMES)
        ),
        "sample_rate": pa.array(np.full(n, 0.05, dtype=np.float32)),
        "baseline_embedding": embedding_column(
            pool, i, np.ones(n, dtype=bool), dim, sch.field("baseline_embedding").type
        ),
        "canary_embedding": embedding_column(
            pool, i + POOL // 2, ok, dim, sch.field("canary_embedding").type
        ),
    }
    return pa.Table.from_arrays([cols[f.name] for f in sch], schema=sch)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=0)
    ap.add_argument("--rows-per-file", type=int, default=100_000)
    ap.add_argument("--row-group", type=int, default=65_536)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", choices=["table", "rows"], default="table")
    a = ap.parse_args()

    pool = None
    if a.dim:
        k = np.arange(POOL * a.dim, dtype=np.uint64) + np.uint64(0x5EED00000000)
        pool = (unit(k) * np.float32(2) - np.float32(1)).reshape(POOL, a.dim)
    sch = schema()
    part = os.path.join(a.dir, "model=llm-inference", "date=2026-11-05", "hour=12")
    os.makedirs(part, exist_ok=True)
    encodings = {}
    if a.dim:
        encodings = {
            f"{c}.list.element": "BYTE_STREAM_SPLIT"
            for c in ("baseline_embedding", "canary_embedding")
        }

    seconds = 0.0
    cpu_seconds = 0.0
    total_bytes = 0
    files = 0
    for lo in range(0, a.rows, a.rows_per_file):
        hi = min(lo + a.rows_per_file, a.rows)
        table = chunk(lo, hi, a.dim, pool, sch)
        rows = None
        if a.mode == "rows":
            rows = table.drop_columns(["baseline_embedding", "canary_embedding"]).to_pylist()
            for col in ("baseline_embedding", "canary_embedding"):
                # numpy vectors, not lists of Python floats: a sidecar's embeddings
                # would be arrays, and 1536 float objects a row do not fit in memory.
                arr = table.column(col).combine_chunks()
                flat = arr.flatten().to_numpy()
                offsets = arr.offsets.to_numpy()
                valid = arr.is_valid().to_numpy(zero_copy_only=False)
                for k, row in enumerate(rows):
                    row[col] = flat[offsets[k] : offsets[k + 1]] if valid[k] else None
            table = None
        final = os.path.join(part, f"pyarrow-{files + 1:06d}.parquet")
        temp = os.path.join(part, f".pyarrow-{files + 1:06d}.parquet.tmp")
        t0 = time.perf_counter()
        c0 = time.process_time()
        if rows is not None:
            table = pa.Table.from_pylist(rows, schema=sch)
        with open(temp, "wb") as sink:
            w = pq.ParquetWriter(
                sink,
                sch,
                compression="zstd",
                compression_level=1,
                use_dictionary=DICTIONARY_COLUMNS,
                column_encoding=encodings or None,
                write_statistics=[f.name for f in sch if f.name not in NO_STATISTICS],
            )
            w.write_table(table, row_group_size=a.row_group)
            w.close()
            sink.flush()
            os.fsync(sink.fileno())
        os.rename(temp, final)
        seconds += time.perf_counter() - t0
        cpu_seconds += time.process_time() - c0
        total_bytes += os.path.getsize(final)
        files += 1
    print(json.dumps({"rows": a.rows, "seconds": seconds, "cpu_seconds": cpu_seconds, "bytes": total_bytes, "files": files}))


if __name__ == "__main__":
    main()
