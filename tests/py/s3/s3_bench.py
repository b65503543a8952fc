"""pyarrow's side of benches/s3_vs_pyarrow.sh, and the shared input files.

  s3_bench.py gen DIR [--small N --small-rows R --large N --large-rows R --dim D]
      Writes shadow-log Parquet files (rows, schema and writer settings of
      benches/shadow_write_pyarrow.py: zstd 1, dictionary only on low-cardinality
      columns, BYTE_STREAM_SPLIT embeddings) in the Hive layout
      model=llm-inference/date=2026-11-05/hour=HH/bench-pod-0-<seq>.parquet.
  s3_bench.py copy DIR BUCKET/PREFIX [--no-threads]
      pyarrow.fs.copy_files(DIR, BUCKET/PREFIX, destination_filesystem=S3FileSystem):
      the same bytes, upload only. use_threads=True (default) is pyarrow's own setting:
      several files at once; --no-threads sends one file at a time.
  s3_bench.py write DIR BUCKET/PREFIX
      Each file of DIR read into an Arrow table before the clock, then
      pq.write_table(table, BUCKET/PREFIX/<rel>, filesystem=s3) with the same settings:
      encode + upload, one file at a time.
  s3_bench.py encode DIR
      The same write_table into memory (no network): pyarrow's encode cost.
  s3_bench.py verify DIR BUCKET/PREFIX
      Exits 1 unless every file of DIR is under BUCKET/PREFIX with the same size
      (pyarrow's copy_files only logs failed part uploads, it does not raise).

The store comes from the environment: AWS_ENDPOINT_URL (http://host:port),
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION. Prints one JSON line
{"files", "bytes", "seconds", "mb_s"} (MB = 10^6 bytes; bytes = input file bytes for
copy, bytes written for write/encode).
"""

import argparse
import io
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benches"))
import shadow_write_pyarrow as sw  # noqa: E402

ROW_GROUP = 65_536


def files_under(d):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in names if n.endswith(".parquet")]
    return sorted(out)


def s3fs():
    ep = os.environ["AWS_ENDPOINT_URL"]
    scheme, host = ep.split("://", 1)
    return pafs.S3FileSystem(
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region=os.environ.get("AWS_REGION", "us-east-1"),
        endpoint_override=host,
        scheme=scheme,
    )


def write_opts(sch, dim):
    enc = None
    if dim:
        enc = {f"{c}.list.element": "BYTE_STREAM_SPLIT" for c in ("baseline_embedding", "canary_embedding")}
    return dict(
        compression="zstd",
        compression_level=1,
        use_dictionary=sw.DICTIONARY_COLUMNS,
        column_encoding=enc,
        write_statistics=[f.name for f in sch if f.name not in sw.NO_STATISTICS],
        row_group_size=ROW_GROUP,
    )


def has_embeddings(table):
    col = table.column("baseline_embedding")
    return col.null_count < len(col)


def gen(a):
    sch = sw.schema()
    pool = None
    if a.dim:
        k = np.arange(sw.POOL * a.dim, dtype=np.uint64) + np.uint64(0x5EED00000000)
        pool = (sw.unit(k) * np.float32(2) - np.float32(1)).reshape(sw.POOL, a.dim)
    lo, seq, sizes = 0, 0, []
    for count, rows in ((a.small, a.small_rows), (a.large, a.large_rows)):
        for _ in range(count):
            table = sw.chunk(lo, lo + rows, a.dim, pool, sch)
            lo += rows
            part = os.path.join(a.dir, "model=llm-inference", "date=2026-11-05", f"hour={seq % 24:02d}")
            os.makedirs(part, exist_ok=True)
            path = os.path.join(part, f"bench-pod-0-1793880000-{seq:06d}.parquet")
            pq.write_table(table, path, **write_opts(sch, a.dim))
            sizes.append(os.path.getsize(path))
            seq += 1
    print(json.dumps({"files": len(sizes), "bytes": sum(sizes), "min": min(sizes), "max": max(sizes)}))


def emit(files, nbytes, secs):
    print(json.dumps({"files": files, "bytes": nbytes, "seconds": secs, "mb_s": nbytes / 1e6 / secs}))


def copy(a):
    files = files_under(a.dir)
    nbytes = sum(os.path.getsize(f) for f in files)
    fs = s3fs()
    t0 = time.perf_counter()
    pafs.copy_files(os.path.abspath(a.dir), a.dest, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs, use_threads=not a.no_threads)
    emit(len(files), nbytes, time.perf_counter() - t0)


def load(d):
    out = []
    for f in files_under(d):
        t = pq.read_table(f)
        out.append((os.path.relpath(f, d), t))
    return out


def write(a):
    tables = load(a.dir)
    fs = s3fs()
    nbytes, t0 = 0, time.perf_counter()
    for rel, t in tables:
        key = f"{a.dest}/{rel}"
        pq.write_table(t, key, filesystem=fs, **write_opts(t.schema, has_embeddings(t)))
    secs = time.perf_counter() - t0
    for rel, _ in tables:
        nbytes += fs.get_file_info(f"{a.dest}/{rel}").size
    emit(len(tables), nbytes, secs)


def encode(a):
    tables = load(a.dir)
    nbytes, secs = 0, 0.0
    for _, t in tables:
        buf = io.BytesIO()
        t0 = time.perf_counter()
        pq.write_table(t, buf, **write_opts(t.schema, has_embeddings(t)))
        secs += time.perf_counter() - t0
        nbytes += buf.tell()
    emit(len(tables), nbytes, secs)


def verify(a):
    fs = s3fs()
    want = {os.path.relpath(f, a.dir): os.path.getsize(f) for f in files_under(a.dir)}
    infos = fs.get_file_info(pafs.FileSelector(a.dest, recursive=True))
    got = {os.path.relpath(i.path, a.dest): i.size for i in infos if i.type == pafs.FileType.File}
    bad = sorted(k for k in want if got.get(k) != want[k])
    if bad:
        print(json.dumps({"ok": False, "missing_or_wrong": len(bad), "first": bad[0]}))
        sys.exit(1)
    print(json.dumps({"ok": True, "files": len(want), "bytes": sum(want.values())}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--small", type=int, default=40)
    g.add_argument("--small-rows", type=int, default=415)
    g.add_argument("--large", type=int, default=4)
    g.add_argument("--large-rows", type=int, default=16_500)
    g.add_argument("--dim", type=int, default=384)
    c = sub.add_parser("copy")
    c.add_argument("dir")
    c.add_argument("dest")
    c.add_argument("--no-threads", action="store_true")
    w = sub.add_parser("write")
    w.add_argument("dir")
    w.add_argument("dest")
    e = sub.add_parser("encode")
    e.add_argument("dir")
    v = sub.add_parser("verify")
    v.add_argument("dir")
    v.add_argument("dest")
    a = ap.parse_args()
    {"gen": gen, "copy": copy, "write": write, "encode": encode, "verify": verify}[a.cmd](a)


if __name__ == "__main__":
    main()
