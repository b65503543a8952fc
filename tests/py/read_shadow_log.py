"""Read a shadow-log tree with pyarrow and DuckDB, print what each sees as JSON.

Usage: read_shadow_log.py DIR [REQUEST_ID]
Used by tests/it/shadow_log.rs: both engines must see the tree as one Hive-partitioned
table (partition columns model, date, hour) and never see temporary or quarantined files.
"""

import json
import os
import sys

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def pyarrow_view(root, rid):
    dset = ds.dataset(root, format="parquet", partitioning="hive")
    table = dset.to_table()
    out = {
        "files": sorted(os.path.relpath(f, root) for f in dset.files),
        "rows": table.num_rows,
        "columns": table.column_names,
        "request_ids": sorted(table.column("request_id").to_pylist()) if table.num_rows else [],
        "partitions": [],
        "file_schema": [],
        "file_metadata": {},
        "row": None,
    }
    if not table.num_rows:
        return out
    counts = {}
    for m, d, h in zip(
        table.column("model").to_pylist(),
        table.column("date").to_pylist(),
        table.column("hour").to_pylist(),
    ):
        key = (str(m), str(d), int(h))
        counts[key] = counts.get(key, 0) + 1
    out["partitions"] = sorted([m, d, h, n] for (m, d, h), n in counts.items())
    first = pq.ParquetFile(dset.files[0])
    out["file_schema"] = [[f.name, str(f.type), f.nullable] for f in first.schema_arrow]
    out["file_metadata"] = {
        k.decode(): v.decode()
        for k, v in (first.metadata.metadata or {}).items()
        if k != b"ARROW:schema"
    }
    if rid is not None:
        match = table.filter(ds.field("request_id") == rid).to_pylist()
        if match:
            row = match[0]
            row["ts"] = row["ts"].isoformat()
            out["row"] = row
    return out


def duckdb_view(root, rid):
    con = duckdb.connect()
    src = f"read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    try:
        rows = con.execute(f"select count(*) from {src}").fetchone()[0]
    except duckdb.IOException as e:  # no file matched the glob
        return {"rows": 0, "error": str(e), "request_ids": [], "partitions": [], "columns": []}
    columns = [r[0] for r in con.execute(f"describe select * from {src}").fetchall()]
    ids = [r[0] for r in con.execute(f"select request_id from {src} order by 1").fetchall()]
    parts = con.execute(
        f"select model, cast(date as varchar), cast(hour as integer), count(*) "
        f"from {src} group by all order by all"
    ).fetchall()
    out = {
        "rows": rows,
        "columns": columns,
        "request_ids": ids,
        "partitions": [list(p) for p in parts],
        "row": None,
    }
    if rid is not None:
        r = con.execute(
            f"select cosine_similarity, canary_outcome, sample_rate, epoch_us(ts), input_hash "
            f"from {src} where request_id = ?",
            [rid],
        ).fetchone()
        if r:
            out["row"] = {
                "cosine_similarity": r[0],
                "canary_outcome": r[1],
                "sample_rate": r[2],
                "ts_micros": r[3],
                "input_hash": r[4],
            }
    return out


def main():
    root = sys.argv[1]
    rid = sys.argv[2] if len(sys.argv) > 2 else None
    print(json.dumps({"pyarrow": pyarrow_view(root, rid), "duckdb": duckdb_view(root, rid)}))


if __name__ == "__main__":
    main()
