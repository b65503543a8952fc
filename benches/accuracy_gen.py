#!/usr/bin/env python3
"""Synthetic shadow log + labels for benches/accuracy_vs_duckdb.sh.

Usage: accuracy_gen.py OUT_DIR [ROWS] [FILES]
Writes OUT_DIR/logs/model=<m>/date=2024-05-01/hour=HH/pod-<k>.parquet (DESIGN.md
schema columns the job reads plus a few others, zstd, 64 k-row groups, schema version
metadata) and OUT_DIR/labels/labels-<k>.parquet with labels for every second request
id (plus 1 % duplicate labels with later timestamps). Deterministic (seeded).
"""
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

out = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
files = int(sys.argv[3]) if len(sys.argv) > 3 else 100
per_file = rows // files
rng = np.random.default_rng(7)
classes = np.array([f"class-{i}" for i in range(10)], dtype=object)
models = ["llm-inference", "ranker"]
base_ts = np.datetime64("2024-05-01T00:00:00", "us")

label_ids, label_vals = [], []
for k in range(files):
    model = models[k % len(models)]
    hour = (k // len(models)) % 24
    start = k * per_file
    ids = np.char.mod("req-%012d-0f9a-4c1e-b7d2-5a3e", np.arange(start, start + per_file))
    truth = rng.integers(0, 10, per_file)
    # Baseline right 80 % of the time, canary 83 %; 1 % missing predictions.
    b = np.where(rng.random(per_file) < 0.80, truth, (truth + 1) % 10)
    c = np.where(rng.random(per_file) < 0.83, truth, (truth + 2) % 10)
    bp = classes[b].astype(object)
    cp = classes[c].astype(object)
    bp[rng.random(per_file) < 0.01] = None
    cp[rng.random(per_file) < 0.01] = None
    ts = base_ts + np.int64(hour) * 3_600_000_000 + rng.integers(0, 3_600_000_000, per_file)
    n = per_file
    t = pa.table(
        {
            "request_id": pa.array(ids.astype(object), pa.string()),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "model": pa.array([model] * n, pa.string()),
            "pod": pa.array([f"pod-{k % 4}"] * n, pa.string()),
            "baseline_version": pa.array(["v1"] * n, pa.string()),
            "canary_version": pa.array(["v2"] * n, pa.string()),
            "baseline_prediction": pa.array(bp, pa.string()),
            "canary_prediction": pa.array(cp, pa.string()),
            "cosine_similarity": pa.array(rng.random(n).astype(np.float32)),
            "sample_rate": pa.array(np.full(n, 0.05, np.float32)),
        }
    ).replace_schema_metadata({"shadowgate.schema_version": "1"})
    d = f"{out}/logs/model={model}/date=2024-05-01/hour={hour:02d}"
    os.makedirs(d, exist_ok=True)
    pq.write_table(t, f"{d}/pod-{k:04d}.parquet", compression="zstd", row_group_size=65536)
    half = np.arange(0, n, 2)
    label_ids.append(ids[half])
    label_vals.append(classes[truth[half]])

os.makedirs(f"{out}/labels", exist_ok=True)
ids = np.concatenate(label_ids)
vals = np.concatenate(label_vals)
lts = base_ts + np.int64(86_400_000_000)
chunks = 10
for k, (i, v) in enumerate(zip(np.array_split(ids, chunks), np.array_split(vals, chunks))):
    # 1 % of ids get a second, older label that must lose.
    dup = i[: len(i) // 100]
    t = pa.table(
        {
            "request_id": pa.array(np.concatenate([i, dup]).astype(object), pa.string()),
            "label": pa.array(np.concatenate([v, np.full(len(dup), "stale", object)]).astype(object), pa.string()),
            "ts": pa.array(
                np.concatenate([np.full(len(i), lts), np.full(len(dup), lts - 1)]), pa.timestamp("us", tz="UTC")
            ),
        }
    )
    pq.write_table(t, f"{out}/labels/labels-{k:02d}.parquet", compression="zstd")
print(f"{files * per_file} shadow rows in {files} files, {len(ids)} labels (+1 % stale duplicates) in {out}")
