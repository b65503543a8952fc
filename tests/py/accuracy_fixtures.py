#!/usr/bin/env python3
"""Shadow logs and label files with known answers for tests/accuracy.rs and the Spark
job's test. Usage: accuracy_fixtures.py OUT_DIR

Writes, under OUT_DIR:
  logs/      the main Hive tree (models llm and ranker), in the DESIGN.md schema
  labels/    a_labels.csv (with ts), b_labels.jsonl (no ts), c_labels.parquet (with ts)
  bad/logs/  one good file, one corrupt file, one non-Parquet file named .parquet
  newer/logs a file whose shadowgate.schema_version is 3 (newer than any reader here)
  nolabelid/labels.csv  a label file without the request_id column
  empty/logs, empty/labels  empty directories

Expected numbers (asserted in tests/accuracy.rs), model llm:
  pair v1 -> v2: both_correct 46, baseline_only 15, canary_only 31, both_wrong 7,
                 labeled 99, rows 119, compared 110, agreed 66, missing b 6 / c 5
  pair v2 -> v3: 12 / 5 / 5 / 8, labeled 30, rows 30, compared 30, agreed 20
model ranker, pair v1 -> v2: 7 / 0 / 3 / 0, labeled 10, rows 10 (+ an empty file)
labels: rows 4 + 52 + ... (see LABEL_* below)
"""
import datetime as dt
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

UTC = dt.timezone.utc

SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("model", pa.string()),
        pa.field("pod", pa.string()),
        pa.field("baseline_version", pa.string()),
        pa.field("canary_version", pa.string()),
        pa.field("input_hash", pa.string()),
        pa.field("input", pa.string()),
        pa.field("baseline_prediction", pa.string()),
        pa.field("canary_prediction", pa.string()),
        pa.field("cosine_similarity", pa.float32()),
        pa.field("baseline_norm", pa.float32()),
        pa.field("canary_norm", pa.float32()),
        pa.field("baseline_latency_ms", pa.float32()),
        pa.field("canary_latency_ms", pa.float32()),
        pa.field("baseline_outcome", pa.dictionary(pa.int32(), pa.string())),
        pa.field("canary_outcome", pa.dictionary(pa.int32(), pa.string())),
        pa.field("sample_rate", pa.float32(), nullable=False),
        pa.field("baseline_embedding", pa.list_(pa.float32())),
        pa.field("canary_embedding", pa.list_(pa.float32())),
    ]
)


def table(rows, version="1"):
    """rows: list of dicts with request_id, ts, model, baseline_version, canary_version,
    baseline_prediction, canary_prediction."""
    n = len(rows)
    cols = {
        "request_id": [r["request_id"] for r in rows],
        "ts": [r["ts"] for r in rows],
        "model": [r["model"] for r in rows],
        "pod": ["pod-0"] * n,
        "baseline_version": [r["baseline_version"] for r in rows],
        "canary_version": [r["canary_version"] for r in rows],
        "input_hash": ["%016x" % i for i in range(n)],
        "input": [None] * n,
        "baseline_prediction": [r["baseline_prediction"] for r in rows],
        "canary_prediction": [r["canary_prediction"] for r in rows],
        "cosine_similarity": [0.99] * n,
        "baseline_norm": [1.0] * n,
        "canary_norm": [1.0] * n,
        "baseline_latency_ms": [3.0] * n,
        "canary_latency_ms": [4.0] * n,
        "baseline_outcome": ["ok"] * n,
        "canary_outcome": ["ok"] * n,
        "sample_rate": [0.05] * n,
        "baseline_embedding": [None] * n,
        "canary_embedding": [None] * n,
    }
    t = pa.Table.from_pydict(cols, schema=SCHEMA)
    return t.replace_schema_metadata({"shadowgate.schema_version": version})


def write(path, rows, version="1", row_group_size=16):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table(rows, version), path, row_group_size=row_group_size)


def at(day, hour, minute=0):
    return dt.datetime(2024, 5, day, hour, minute, tzinfo=UTC)


def main(out):
    labels = {}  # id -> label, only for the "plain" labels (one per id)
    rows_a, rows_b = [], []  # llm v1->v2 rows, split over two hour partitions

    def llm12(rid, b, c, label):
        row = dict(
            request_id=rid,
            model="llm",
            baseline_version="v1",
            canary_version="v2",
            baseline_prediction=b,
            canary_prediction=c,
        )
        (rows_a if len(rows_a) <= len(rows_b) else rows_b).append(row)
        if label is not None:
            labels[rid] = label

    for i in range(40):
        llm12(f"bc-{i}", "cat", "cat", "cat")
    for i in range(6):  # numeric equality: "1.0" == "1"
        llm12(f"num-{i}", "1.0", "1", "1")
    for i in range(10):
        llm12(f"bo-{i}", "dog", "cat", "dog")
    for i in range(3):  # canary prediction missing: wrong
        llm12(f"cmiss-{i}", "cat", None, "cat")
    for i in range(25):
        llm12(f"co-{i}", "dog", "cat", "cat")
    for i in range(4):  # baseline prediction missing: wrong
        llm12(f"bmiss-{i}", None, "cat", "cat")
    for i in range(5):
        llm12(f"bw-{i}", "bird", "fish", "cat")
    for i in range(2):
        llm12(f"nomiss-{i}", None, None, "cat")
    for i in range(20):  # unlabeled
        llm12(f"unl-{i}", "cat", "cat", None)
    # Duplicate-label ids (labels written below): X1, X3 -> "dog", X2, X4 -> "cat".
    for x in ["X1", "X2", "X3", "X4"]:
        llm12(x, "cat", "dog", None)

    for i, r in enumerate(rows_a):
        r["ts"] = at(1, 10, i % 60)
    for i, r in enumerate(rows_b):
        r["ts"] = at(1, 11, i % 60)
    write(f"{out}/logs/model=llm/date=2024-05-01/hour=10/pod-0-1-0.parquet", rows_a)
    write(f"{out}/logs/model=llm/date=2024-05-01/hour=11/pod-0-2-0.parquet", rows_b)

    # llm v2 -> v3: a tie in discordant pairs (5 vs 5); both-wrong rows agree.
    rows = []
    spec = [(12, "a", "a", "a"), (5, "a", "b", "a"), (5, "b", "a", "a"), (8, "c", "c", "a")]
    for k, (n, b, c, label) in enumerate(spec):
        for i in range(n):
            rid = f"p23-{k}-{i}"
            rows.append(
                dict(
                    request_id=rid,
                    ts=at(2, 0, len(rows)),
                    model="llm",
                    baseline_version="v2",
                    canary_version="v3",
                    baseline_prediction=b,
                    canary_prediction=c,
                )
            )
            labels[rid] = label
    write(f"{out}/logs/model=llm/date=2024-05-02/hour=00/pod-1-1-0.parquet", rows)

    # ranker: numeric labels, rows at 10:00 .. 10:09, plus an empty file.
    rows = []
    for i in range(10):
        rid = f"rk-{i}"
        c = str(i % 4)
        b = c if i < 7 else "9"
        rows.append(
            dict(
                request_id=rid,
                ts=at(1, 10, i),
                model="ranker",
                baseline_version="v1",
                canary_version="v2",
                baseline_prediction=b,
                canary_prediction=c + ".0",
            )
        )
        labels[rid] = c
    write(f"{out}/logs/model=ranker/date=2024-05-01/hour=10/pod-2-1-0.parquet", rows)
    write(f"{out}/logs/model=ranker/date=2024-05-01/hour=10/pod-2-1-1.parquet", [])
    # Hidden files that must never be read.
    with open(f"{out}/logs/model=ranker/date=2024-05-01/hour=10/.pod-2-1-2.parquet.tmp", "w") as f:
        f.write("half-written")
    with open(f"{out}/logs/model=ranker/date=2024-05-01/hour=10/.pod-2-1-3.parquet", "w") as f:
        f.write("half-written")
    with open(f"{out}/logs/_SUCCESS", "w") as f:
        f.write("")

    # Labels. Plain labels are spread over the three files; 7 labels have no shadow row;
    # one CSV row has an empty label (invalid).
    ids = sorted(labels)
    csv_ids, jsonl_ids, pq_ids = ids[0::3], ids[1::3], ids[2::3]
    os.makedirs(f"{out}/labels", exist_ok=True)

    def csv_field(s):
        if any(ch in s for ch in ',"\n\r'):
            return '"' + s.replace('"', '""') + '"'
        return s

    with open(f"{out}/labels/a_labels.csv", "w", newline="") as f:
        f.write("note,request_id,label,ts\r\n")
        for i, rid in enumerate(csv_ids):
            note = 'has "quotes", commas' if i % 2 else "multi\nline"
            f.write(f"{csv_field(note)},{csv_field(rid)},{csv_field(labels[rid])},{1000 + i}\r\n")
        f.write('x,"X1",dog,2024-05-03T00:00:00Z\r\n')
        f.write("x,X2,dog,2024-05-03T00:00:00Z\r\n")
        f.write("x,X4,cat,10\r\n")
        f.write("x,orphan-csv-1,cat,1\r\n")
        f.write("x,orphan-csv-2,cat,1\r\n")
        f.write("x,empty-label,,1\r\n")
    with open(f"{out}/labels/b_labels.jsonl", "w") as f:
        for rid in jsonl_ids:
            lab = labels[rid]
            # Numeric labels as JSON numbers where they are numbers.
            val = int(lab) if lab.isdigit() else lab
            f.write(json.dumps({"request_id": rid, "label": val}) + "\n")
        f.write(json.dumps({"request_id": "X3", "label": "cat"}) + "\n")
        f.write("\n")
        f.write(json.dumps({"request_id": "X3", "label": "dog"}) + "\n")
        f.write(json.dumps({"request_id": "X4", "label": "dog"}) + "\n")
        f.write(json.dumps({"request_id": "orphan-json-1", "label": "cat"}) + "\n")
        f.write(json.dumps({"request_id": "orphan-json-2", "label": "dog"}) + "\n")
    pq_rows = [(rid, labels[rid], dt.datetime(2024, 5, 3, tzinfo=UTC)) for rid in pq_ids]
    pq_rows += [
        ("X1", "cat", dt.datetime(2024, 5, 2, tzinfo=UTC)),  # older than the CSV's: loses
        ("X2", "cat", dt.datetime(2024, 5, 3, tzinfo=UTC)),  # tie with the CSV's: later file wins
        ("orphan-pq-1", "cat", dt.datetime(2024, 5, 3, tzinfo=UTC)),
        ("orphan-pq-2", "cat", dt.datetime(2024, 5, 3, tzinfo=UTC)),
        ("orphan-pq-3", "dog", dt.datetime(2024, 5, 3, tzinfo=UTC)),
    ]
    pq.write_table(
        pa.table(
            {
                "request_id": [r[0] for r in pq_rows],
                "label": [r[1] for r in pq_rows],
                "ts": pa.array([r[2] for r in pq_rows], pa.timestamp("ms", tz="UTC")),
            }
        ),
        f"{out}/labels/c_labels.parquet",
    )
    counts = {
        "csv_rows": len(csv_ids) + 6,
        "jsonl_rows": len(jsonl_ids) + 5,
        "parquet_rows": len(pq_rows),
        "plain_labels": len(labels),
    }

    # Bad inputs.
    good = [
        dict(
            request_id=f"g-{i}",
            ts=at(1, 10),
            model="llm",
            baseline_version="v1",
            canary_version="v2",
            baseline_prediction="cat",
            canary_prediction="cat" if i else "dog",
        )
        for i in range(4)
    ]
    write(f"{out}/bad/logs/model=llm/date=2024-05-01/hour=10/good.parquet", good)
    with open(f"{out}/bad/logs/model=llm/date=2024-05-01/hour=10/text.parquet", "w") as f:
        f.write("request_id,label\nnot,parquet\n")
    # A real Parquet file cut short: footer gone.
    full = f"{out}/bad/logs/model=llm/date=2024-05-01/hour=11/cut.parquet"
    write(full, good)
    data = open(full, "rb").read()
    with open(full, "wb") as f:
        f.write(data[: len(data) // 2])
    os.makedirs(f"{out}/bad/labels", exist_ok=True)
    with open(f"{out}/bad/labels/l.csv", "w") as f:
        f.write("request_id,label\n" + "".join(f"g-{i},cat\n" for i in range(4)))

    write(f"{out}/newer/logs/model=llm/date=2024-05-01/hour=10/v2.parquet", good, version="3")

    os.makedirs(f"{out}/nolabelid", exist_ok=True)
    with open(f"{out}/nolabelid/labels.csv", "w") as f:
        f.write("id,label\nbc-0,cat\n")

    os.makedirs(f"{out}/empty/logs", exist_ok=True)
    os.makedirs(f"{out}/empty/labels", exist_ok=True)
    json.dump(counts, open(f"{out}/counts.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1])
