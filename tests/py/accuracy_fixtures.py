#!/usr/bin/env python3
"""Shadow logs and label files with known answers for tests/it/accuracy.rs and the Spark
job's test. Usage: accuracy_fixtures.py OUT_DIR

Writes, under OUT_DIR:
  logs/      the main Hive tree (models llm and ranker), in the DESIGN.md schema
  labels/    a_labels.csv (with ts), b_labels.jsonl (no ts), c_labels.parquet (with ts)
  bad/logs/  one good file, one corrupt file, one non-Parquet file named .parquet
  newer/logs a file whose shadowgate.schema_version is 3 (newer than any reader here)
  items/     schema-version-2 logs (an `item` column; batched requests of 4 items) and a
             version-1 file in one tree, with labels per item (see items() below);
             items/bad/logs a file whose `item` is a string
  nolabelid/labels.csv  a label file without the request_id column
  empty/logs, empty/labels  empty directories

Expected numbers (asserted in tests/it/accuracy.rs), model llm:
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


# Schema version 2: `item` (int32, not null) right after `request_id`.
SCHEMA_V2 = SCHEMA.insert(1, pa.field("item", pa.int32(), nullable=False))


def table(rows, version="1"):
    """rows: list of dicts with request_id, ts, model, baseline_version, canary_version,
    baseline_prediction, canary_prediction (and item, from version 2 on)."""
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
    schema = SCHEMA
    if version == "2":
        cols["item"] = [r["item"] for r in rows]
        schema = SCHEMA_V2
    t = pa.Table.from_pydict(cols, schema=schema)
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
    items(out)


def items(out):
    """items/: model emb, pair v1 -> v2, in one tree
      hour=00/old.parquet    version 1 (no item column): old-0..old-9 (10 rows)
      hour=01/batch.parquet  version 2: b-0..b-9 with items 0..3 each (40 rows), then
                             s-0..s-4 single-input (item 0) (5 rows)
    The older version-1 file sorts first, as in a real tree: Spark reading both files at
    once takes its schema and loses `item` on every row.
    and labels per (request_id, item) over three files (CSV, JSON lines, Parquet), with
    `item` missing, empty or null (item 0) on some rows.

    Per item of b-k: 0 both correct, 1 canary only, 2 both wrong, 3 baseline only;
    b-0..b-5 have labels for every item, b-6..b-9 for items 1 and 3 only.
    s-0..s-3: both correct ("1" vs "1.0", label "1"); s-4 unlabeled; a label for
    (s-0, 1) has no row. old-0..old-6: canary only (labels without item); old-7 has a
    label for item 1 only (a version-1 row is item 0: unlabeled); old-8 baseline only
    (label with item 0 written out); old-9 unlabeled.

    Expected: rows 55, labeled 44; paired 10 / 11 / 17 / 6; compared 55, agreed 25.
    Labels: rows 55, invalid 5, duplicates 4, distinct 46, matched 44, unmatched 2.
    A join by request id alone would give other numbers (items share ids).
    """
    base = dict(model="emb", baseline_version="v1", canary_version="v2")
    # (baseline, canary, label) per item position of b-k.
    per_item = [("cat", "cat", "cat"), ("cat", "dog", "dog"), ("dog", "dog", "cat"), ("cat", "dog", "cat")]
    rows, labels = [], []  # labels: (id, item or None, label)
    for k in range(10):
        for i, (b, c, truth) in enumerate(per_item):
            rows.append(dict(base, request_id=f"b-{k}", item=i, ts=at(3, 1, len(rows) % 60),
                             baseline_prediction=b, canary_prediction=c))
            if k < 6 or i in (1, 3):
                labels.append((f"b-{k}", i, truth))
    for k in range(5):
        rows.append(dict(base, request_id=f"s-{k}", item=0, ts=at(3, 1, 50 + k),
                         baseline_prediction="1", canary_prediction="1.0"))
        if k < 4:
            labels.append((f"s-{k}", None, "1"))
    labels.append(("s-0", 1, "1"))
    write(f"{out}/items/logs/model=emb/date=2024-05-03/hour=01/batch.parquet", rows, version="2")

    rows = []
    for k in range(10):
        rows.append(dict(base, request_id=f"old-{k}", ts=at(3, 0, k),
                         baseline_prediction="cat", canary_prediction="dog"))
    for k in range(7):
        labels.append((f"old-{k}", None, "dog"))
    labels.append(("old-7", 1, "dog"))
    labels.append(("old-8", 0, "cat"))
    write(f"{out}/items/logs/model=emb/date=2024-05-03/hour=00/old.parquet", rows, version="1")

    csv_l, json_l, pq_l = labels[0::3], labels[1::3], labels[2::3]
    d = f"{out}/items/labels"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/a.csv", "w") as f:
        f.write("request_id,item,label,ts\n")
        for rid, item, lab in csv_l:
            f.write(f"{rid},{'' if item is None else item},{lab},1000\n")
        # (b-0, 1): older than the Parquet file's label for it, which wins.
        f.write("b-0,1,cat,100\n")
        f.write("b-0,-1,cat,1000\n")  # invalid item
        f.write("b-0,1.5,cat,1000\n")  # invalid item
    with open(f"{d}/b.jsonl", "w") as f:
        for rid, item, lab in json_l:
            o = {"request_id": rid, "label": lab}
            if item is not None:
                o["item"] = item
            elif rid.startswith("s-"):
                o["item"] = None
            f.write(json.dumps(o) + "\n")
        # (b-1, 2): two undated labels, both lose to the dated one in a.csv ("cat").
        f.write(json.dumps({"request_id": "b-1", "item": 2, "label": "dog"}) + "\n")
        f.write(json.dumps({"request_id": "b-1", "item": 2, "label": "cat"}) + "\n")
        f.write(json.dumps({"request_id": "b-1", "item": "x", "label": "cat"}) + "\n")  # invalid
        f.write(json.dumps({"request_id": "b-1", "item": -2, "label": "cat"}) + "\n")  # invalid
    ids = [r[0] for r in pq_l] + ["b-0", "b-2"]
    its = [r[1] for r in pq_l] + [1, -3]  # (b-2, -3): invalid
    labs = [r[2] for r in pq_l] + ["dog", "cat"]
    pq.write_table(
        pa.table(
            {
                "request_id": ids,
                "item": pa.array(its, pa.int32()),
                "label": labs,
                "ts": pa.array([2000] * len(ids), pa.int64()),
            }
        ),
        f"{d}/c.parquet",
    )

    # A shadow log whose `item` is a string: a bad file.
    bad = pa.table(
        {
            "request_id": ["b-0"],
            "item": ["0"],
            "baseline_version": ["v1"],
            "canary_version": ["v2"],
            "baseline_prediction": ["cat"],
            "canary_prediction": ["cat"],
        }
    ).replace_schema_metadata({"shadowgate.schema_version": "2"})
    os.makedirs(f"{out}/items/bad/logs", exist_ok=True)
    pq.write_table(bad, f"{out}/items/bad/logs/item.parquet")


if __name__ == "__main__":
    main(sys.argv[1])
