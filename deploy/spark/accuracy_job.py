#!/usr/bin/env python3
"""shadowgate's batch accuracy job on Apache Spark.

The same job as `shadowgate accuracy`, for shadow logs that outgrow one machine: it
reads the same Hive-partitioned shadow-log tree and the same label files, joins them by
(request id, item), and writes the same JSON report (same keys, same numbers; a test
checks that both agree on shared fixtures, intervals within 1e-9).

Items: a row of a schema-version-2 shadow log is one item (input) of a possibly batched
request, numbered by its `item` column; version-1 files have no such column and every
row is item 0. Such a tree mixes both, and Spark reading them as one DataFrame takes the
schema of one file (a version-1 schema drops `item` from every row; a version-2 one
reads version-1 rows as null) unless every footer is merged (`mergeSchema`). The job
already reads every footer on the driver, so it reads the files with and without
`item` as two DataFrames (the second with item 0) and unions them. Labels name their
item in an optional `item` column (--label-item-column); missing, null or empty is 0.

    spark-submit deploy/spark/accuracy_job.py --logs s3a://bucket/shadow \
        --labels s3a://bucket/labels --json /tmp/accuracy.json
    python3 deploy/spark/accuracy_job.py --master 'local[4]' --logs DIR --labels DIR --json out.json

Options mirror the Rust command: --model, --since, --until, --label-id-column,
--label-column, --label-item-column, --label-ts-column, --skip-bad-files. The JSON is written on the driver
(a local path). Files are listed and their footers checked on the driver through the
Hadoop FileSystem API, so any Hadoop file system works; the join and counting run on
the executors; the statistics are computed on the driver from a few counters per
(model, baseline, canary) group, with the same algorithms, operation for operation, as
`src/accuracy/stats.rs`.
"""
import argparse
import datetime as dt
import json
import math
import os
import re
import sys

Z_95 = 1.959963984540054
RATIO_MIN = 1e-10
RATIO_MAX = 1e10
SCHEMA_VERSION_KEY = "shadowgate.schema_version"
SCHEMA_VERSION = 2
REPORT_VERSION = 1
UNKNOWN = "unknown"
LABEL_EXTENSIONS = ["parquet", "csv", "jsonl", "json", "ndjson"]
REQUIRED = ["request_id", "baseline_version", "canary_version", "baseline_prediction", "canary_prediction"]
# A plain decimal literal, as stats::parse_decimal accepts (\z: no trailing newline).
DECIMAL_JAVA = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\z"
DECIMAL_PY = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# Largest item index (the shadow log's `item` is an int32), as columns::MAX_ITEM.
MAX_ITEM = 2**31 - 1
# An item written as text: digits only, as columns::item_from_text.
ITEM_JAVA = r"^[0-9]+\z"



class JobError(Exception):
    pass


class BadFile(JobError):
    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# ---------------------------------------------------------------- statistics (stats.rs)


def wilson(k, n, z):
    if n == 0:
        return (math.nan, math.nan, math.nan)
    kf, nf = float(k), float(n)
    z2 = z * z
    center = (kf + z2 / 2.0) / (nf + z2)
    half = z * math.sqrt(kf * (nf - kf) / nf + z2 / 4.0) / (nf + z2)
    return (kf / nf, max(center - half, 0.0), min(center + half, 1.0))


def stirlerr(n):
    s0, s1, s2, s3, s4 = 1.0 / 12.0, 1.0 / 360.0, 1.0 / 1260.0, 1.0 / 1680.0, 1.0 / 1188.0
    if n <= 15.0:
        fact = 1.0
        i = 2.0
        while i <= n:
            fact *= i
            i += 1.0
        return math.log(fact) - (n + 0.5) * math.log(n) + n - 0.5 * math.log(2.0 * math.pi)
    nn = n * n
    if n > 500.0:
        return (s0 - s1 / nn) / n
    if n > 80.0:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35.0:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


def bd0(x, np_):
    if abs(x - np_) < 0.1 * (x + np_):
        v = (x - np_) / (x + np_)
        s = (x - np_) * v
        ej = 2.0 * x * v
        v *= v
        j = 1.0
        while True:
            ej *= v
            s1 = s + ej / (2.0 * j + 1.0)
            if s1 == s:
                return s1
            s = s1
            j += 1.0
    return x * math.log(x / np_) + np_ - x


def dbinom_half(x, n):
    xf, nf = float(x), float(n)
    if x == 0 or x == n:
        return math.exp(-nf * math.log(2.0))
    half = nf / 2.0
    lc = stirlerr(nf) - stirlerr(xf) - stirlerr(nf - xf) - bd0(xf, half) - bd0(nf - xf, half)
    lf = math.log(2.0 * math.pi) + math.log(xf) + math.log1p(-xf / nf)
    return math.exp(lc - 0.5 * lf)


def mcnemar_exact(b, c):
    n = b + c
    k = min(b, c)
    if n == 0 or 2 * k == n:
        return 1.0
    term = dbinom_half(k, n)
    total = term
    j = k
    while j > 0:
        term *= float(j) / float(n - j + 1)
        total += term
        if term <= total * 1e-17:
            break
        j -= 1
    return min(2.0 * total, 1.0)


def tang_score(bc, bo, co, bw, phi):
    n11, n12, n21 = float(bc), float(co), float(bo)
    n = float(bc + bo + co + bw)
    a = n * (1.0 + phi)
    b = (n11 + n21) * phi * phi - (n11 + n12 + 2.0 * n21)
    c = n21 * (1.0 - phi) * (n11 + n12 + n21) / n
    disc = max(b * b - 4.0 * a * c, 0.0)
    p21 = (-b + math.sqrt(disc)) / (2.0 * a)
    var = n * (1.0 + phi) * p21 + (n11 + n12 + n21) * (phi - 1.0)
    denom = math.sqrt(max(var, 0.0))
    num = (n11 + n12) - (n11 + n21) * phi
    if denom == 0.0:
        # IEEE division, as Rust does it.
        if num == 0.0 or math.isnan(num):
            return math.nan
        return math.copysign(math.inf, num)
    return num / denom


def bisect_log(lo, hi, f):
    a, b = math.log(lo), math.log(hi)
    for _ in range(200):
        m = 0.5 * (a + b)
        if m <= a or m >= b:
            break
        if f(math.exp(m)) > 0.0:
            a = m
        else:
            b = m
    return math.exp(0.5 * (a + b))


def ratio_interval(bc, bo, co, bw, z):
    n = bc + bo + co + bw
    if n == 0:
        return (math.nan, math.nan, math.nan)
    canary = float(bc + co)
    baseline = float(bc + bo)
    if baseline == 0.0:
        estimate = math.nan if canary == 0.0 else math.inf
    else:
        estimate = canary / baseline
    score = lambda phi: tang_score(bc, bo, co, bw, phi)
    if canary == 0.0 or score(RATIO_MIN) < z:
        lower = 0.0
    else:
        hi = estimate if math.isfinite(estimate) else RATIO_MAX
        lower = bisect_log(RATIO_MIN, hi, lambda phi: score(phi) - z)
    if baseline == 0.0 or score(RATIO_MAX) > -z:
        upper = math.inf
    else:
        lo = RATIO_MIN if canary == 0.0 else estimate
        upper = bisect_log(lo, RATIO_MAX, lambda phi: score(phi) + z)
    return (estimate, lower, upper)


# ---------------------------------------------------------------- paths and time (files.rs)

MICROS_PER_HOUR = 3600 * 1_000_000
MICROS_PER_DAY = 24 * MICROS_PER_HOUR
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def parse_date(s):
    if len(s) != 10 or s[4] != "-" or s[7] != "-":
        return None
    y, m, d = s[0:4], s[5:7], s[8:10]
    if not (y.isdigit() and m.isdigit() and d.isdigit() and y.isascii()):
        return None
    try:
        day = dt.date(int(y), int(m), int(d))
    except ValueError:
        return None
    return (day - dt.date(1970, 1, 1)).days * MICROS_PER_DAY


def _digits(s):
    return int(s) if s and s.isascii() and s.isdigit() else None


def parse_timestamp(s):
    """Same grammar as files::parse_timestamp."""
    s = s.strip()
    if len(s) == 10:
        return parse_date(s)
    if len(s) < 16:
        return None
    date = parse_date(s[:10])
    if date is None or s[10] not in "Tt ":
        return None
    rest = s[11:]
    offset = 0
    if rest[-1:] in ("Z", "z"):
        time = rest[:-1]
    elif max(rest.rfind("+"), rest.rfind("-")) >= 0:
        pos = max(rest.rfind("+"), rest.rfind("-"))
        time, zone = rest[:pos], rest[pos:]
        sign = -1 if zone[0] == "-" else 1
        zone = zone[1:]
        if ":" in zone:
            hh, mm = zone.split(":", 1)
            hh, mm = _digits(hh), _digits(mm)
        elif len(zone) == 4:
            hh, mm = _digits(zone[:2]), _digits(zone[2:])
        elif len(zone) == 2:
            hh, mm = _digits(zone), 0
        else:
            return None
        if hh is None or mm is None or hh > 23 or mm > 59:
            return None
        offset = sign * (hh * 3600 + mm * 60) * 1_000_000
    else:
        time = rest
    parts = time.split(":", 2)
    if len(parts) < 2:
        return None
    hh, mm = _digits(parts[0]), _digits(parts[1])
    ss, frac = 0, 0
    if len(parts) == 3:
        sec = parts[2]
        whole, _, fr = sec.partition(".")
        ss = _digits(whole)
        if ss is None:
            return None
        if fr:
            if not (fr.isascii() and fr.isdigit()):
                return None
            fr6 = fr[:6]
            frac = sum(int(ch) * 10 ** (5 - i) for i, ch in enumerate(fr6))
        elif "." in sec:
            return None
    if hh is None or mm is None or hh > 23 or mm > 59 or ss > 60:
        return None
    return date + (hh * 3600 + mm * 60 + ss) * 1_000_000 + frac - offset


def percent_decode(v):
    if "%" not in v:
        return v
    b = v.encode()
    out = bytearray()
    i = 0
    hexd = "0123456789abcdefABCDEF"
    while i < len(b):
        if b[i] == 0x25 and i + 2 < len(b) and chr(b[i + 1]) in hexd and chr(b[i + 2]) in hexd:
            out.append(int(b[i + 1 : i + 3].decode(), 16))
            i += 3
            continue
        out.append(b[i])
        i += 1
    return out.decode("utf-8", "replace")


def partition_of(path):
    """(model, start_micros, span_micros) from the key=value directories of path."""
    model = day = hour = None
    for comp in path.split("/")[:-1]:
        if "=" not in comp:
            continue
        k, v = comp.split("=", 1)
        v = percent_decode(v)
        if k == "model":
            model = v
        elif k == "date":
            day = parse_date(v)
        elif k == "hour":
            try:
                h = int(v)
                hour = h if 0 <= h < 24 and v.strip() == v else None
            except ValueError:
                hour = None
    if day is not None and hour is not None:
        return model, day + hour * MICROS_PER_HOUR, MICROS_PER_HOUR
    if day is not None:
        return model, day, MICROS_PER_DAY
    return model, None, 0


def may_match(part, model, since, until):
    pmodel, start, span = part
    if model is not None and pmodel is not None and model != pmodel:
        return False
    if start is not None:
        end = start + span
        if (since is not None and end <= since) or (until is not None and start >= until):
            return False
    return True


def has_extension(name, ext):
    return len(name) > len(ext) + 1 and name[-len(ext) - 1] == "." and name[-len(ext):].lower() == ext


def is_hidden(name):
    return name.startswith(".") or name.startswith("_")


def display_path(p):
    """Local paths as the Rust job prints them."""
    s = p.toString()
    if s.startswith("file:"):
        s = s[len("file:") :]
        while s.startswith("//"):
            s = s[1:]
    return s


# ---------------------------------------------------------------- Spark side


class Job:
    def __init__(self, spark, args):
        self.spark = spark
        self.args = args
        self.jvm = spark.sparkContext._jvm
        self.conf = spark.sparkContext._jsc.hadoopConfiguration()

    def path(self, s):
        return self.jvm.org.apache.hadoop.fs.Path(s)

    def list_files(self, inputs, extensions):
        """Like files::list_files: a named file is taken as is; directories are walked,
        hidden names skipped, only the given extensions kept; sorted by path."""
        out = []
        for inp in inputs:
            p = self.path(inp)
            fs = p.getFileSystem(self.conf)
            if not fs.exists(p):
                raise JobError(f"{inp}: No such file or directory")
            st = fs.getFileStatus(p)
            if st.isDirectory():
                self._walk(fs, p, extensions, out)
            else:
                out.append((display_path(st.getPath()), st.getPath().toString()))
        out = sorted(set(out))
        return out

    def _walk(self, fs, p, extensions, out):
        for st in fs.listStatus(p):
            name = st.getPath().getName()
            if is_hidden(name):
                continue
            if st.isDirectory():
                self._walk(fs, st.getPath(), extensions, out)
            elif any(has_extension(name, e) for e in extensions):
                out.append((display_path(st.getPath()), st.getPath().toString()))

    def check_footer(self, shown, uri, need_ts):
        """Schema version and required columns, from the footer (as logs::open).
        Returns whether the file has an `item` column."""
        j = self.jvm
        try:
            f = j.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(self.path(uri), self.conf)
            reader = j.org.apache.parquet.hadoop.ParquetFileReader.open(f)
            try:
                meta = reader.getFooter().getFileMetaData()
                kv = meta.getKeyValueMetaData()
                schema = meta.getSchema()
                names = [schema.getFieldName(i) for i in range(schema.getFieldCount())]
                item_type = None
                if "item" in names:
                    t = schema.getType("item")
                    item_type = (
                        t.asPrimitiveType().getPrimitiveTypeName().toString() if t.isPrimitive() else "group"
                    )
            finally:
                reader.close()
        except Exception as e:  # py4j wraps every Java exception
            raise BadFile(shown, f"not a readable Parquet file: {str(e).splitlines()[0]}")
        version = kv.get(SCHEMA_VERSION_KEY) if kv is not None else None
        if version is not None:
            try:
                n = int(version.strip())
            except ValueError:
                n = None
            if n is None or n > SCHEMA_VERSION:
                raise JobError(
                    f"{shown}: shadow-log schema version {version} is not supported "
                    f"(this job reads up to {SCHEMA_VERSION})"
                )
        for c in REQUIRED + (["ts"] if need_ts else []):
            if c not in names:
                raise BadFile(shown, f"no column `{c}`")
        if item_type is not None and item_type not in ("INT32", "INT64"):
            raise BadFile(shown, f"column `item` is {item_type}, expected an integer")
        return item_type is not None

    def read_labels(self, skipped):
        from pyspark.sql import functions as F

        a = self.args
        files = self.list_files(a.labels, LABEL_EXTENSIONS)
        frames = []
        for idx, (shown, uri) in enumerate(files):
            name = uri.rsplit("/", 1)[-1]
            try:
                if has_extension(name, "parquet"):
                    df = self.spark.read.parquet(uri)
                elif has_extension(name, "csv"):
                    df = (
                        self.spark.read.option("header", True)
                        .option("multiLine", True)
                        .option("escape", '"')
                        .option("mode", "FAILFAST")
                        .csv(uri)
                    )
                else:
                    df = self.spark.read.option("mode", "FAILFAST").json(uri)
                cols = df.columns
            except Exception as e:
                if a.skip_bad_files:
                    skipped.append({"path": shown, "error": str(e).splitlines()[0]})
                    continue
                raise BadFile(shown, str(e).splitlines()[0])
            for c in (a.label_id_column, a.label_column):
                if c not in cols:
                    raise JobError(f"{shown}: no column `{c}` (see --label-id-column / --label-column)")
            item = F.lit(0).cast("long")
            if a.label_item_column and a.label_item_column in cols:
                dtype = df.schema[a.label_item_column].dataType
                item = self.label_item(dtype, F.col(f"`{a.label_item_column}`"), has_extension(name, "parquet"))
                if item is None:
                    # Parquet: a type the Rust job refuses too (columns::item_column).
                    problem = f"column `{a.label_item_column}` has an unsupported type {dtype.simpleString()}"
                    if a.skip_bad_files:
                        skipped.append({"path": shown, "error": problem})
                        continue
                    raise BadFile(shown, problem)
            ts = F.lit(None).cast("long")
            if a.label_ts_column and a.label_ts_column in cols:
                ts = self.label_ts(df.schema[a.label_ts_column].dataType, F.col(f"`{a.label_ts_column}`"))
            frames.append(
                df.select(
                    F.col(f"`{a.label_id_column}`").cast("string").alias("id"),
                    F.col(f"`{a.label_column}`").cast("string").alias("label"),
                    item.alias("item"),
                    ts.alias("label_ts"),
                    F.lit(idx).alias("file_idx"),
                    F.monotonically_increasing_id().alias("pos"),
                )
            )
        if not frames:
            from pyspark.sql.types import LongType, StringType, StructField, StructType

            schema = StructType(
                [
                    StructField("id", StringType()),
                    StructField("label", StringType()),
                    StructField("item", LongType()),
                    StructField("label_ts", LongType()),
                    StructField("file_idx", LongType()),
                    StructField("pos", LongType()),
                ]
            )
            return self.spark.createDataFrame([], schema)
        out = frames[0]
        for f in frames[1:]:
            out = out.unionByName(f)
        return out

    @staticmethod
    def label_item(dtype, col, parquet):
        """The label's item as labels.rs reads it: null is item 0; an integer in
        0..=MAX_ITEM, or such digits as text, is that item; anything else is null (the
        row is invalid). None for a type the Rust job refuses in a Parquet file.

        JSON lines: Spark infers one type per file, so where one row's item is a
        fraction (invalid) the whole column is double and every non-null item of that
        file is invalid here, while the Rust job still takes the integral ones."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import IntegralType, NullType, StringType

        invalid = F.lit(None).cast("long")
        if isinstance(dtype, NullType):
            return F.lit(0).cast("long")
        if isinstance(dtype, IntegralType):
            v = col.cast("long")
            return F.when(col.isNull(), F.lit(0).cast("long")).when((v >= 0) & (v <= MAX_ITEM), v).otherwise(invalid)
        if isinstance(dtype, StringType):
            # Casting 20+ digits to long gives null with ANSI mode off: invalid, as in Rust.
            v = col.cast("long")
            return (
                F.when(col.isNull() | (col == ""), F.lit(0).cast("long"))
                .when(col.rlike(ITEM_JAVA) & v.isNotNull() & (v <= MAX_ITEM), v)
                .otherwise(invalid)
            )
        if parquet:
            return None
        # JSON booleans, fractions, objects, arrays.
        return F.when(col.isNull(), F.lit(0).cast("long")).otherwise(invalid)

    @staticmethod
    def label_ts(dtype, col):
        """columns::label_ts_column: timestamps as they are, numbers as seconds since the
        epoch, text as a number of seconds or RFC 3339."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import NumericType, StringType, TimestampNTZType, TimestampType

        seconds = lambda c: F.round(c.cast("double") * F.lit(1e6)).cast("long")
        if isinstance(dtype, (TimestampType, TimestampNTZType)):
            return F.unix_micros(col.cast("timestamp"))
        if isinstance(dtype, NumericType):
            return seconds(col)
        if isinstance(dtype, StringType):
            # With ANSI mode off an unparseable timestamp casts to NULL.
            return F.when(col.rlike(DECIMAL_JAVA), seconds(col)).otherwise(F.unix_micros(col.cast("timestamp")))
        return F.lit(None).cast("long")

    def run(self):
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        a = self.args
        since = parse_flag_time("since", a.since)
        until = parse_flag_time("until", a.until)
        if since is not None and until is not None and since >= until:
            raise JobError("--since must be before --until")
        skipped = []
        labels_raw = self.read_labels(skipped)

        files = self.list_files(a.logs, ["parquet"])
        kept, pruned = [], 0
        for shown, uri in files:
            if may_match(partition_of(shown), a.model, since, until):
                kept.append((shown, uri))
            else:
                pruned += 1
        need_ts = since is not None or until is not None
        readable = []  # (shown, uri, has an item column)
        for shown, uri in kept:
            try:
                has_item = self.check_footer(shown, uri, need_ts)
                readable.append((shown, uri, has_item))
            except BadFile as e:
                if not a.skip_bad_files:
                    raise
                skipped.append({"path": e.path, "error": e.problem})
        skipped.sort(key=lambda s: s["path"])

        # Labels: keep the latest per (id, item) (greatest ts, undated last; then later
        # file, later row). A null item is an invalid one (a missing item is 0 by now).
        ok = F.col("id").isNotNull() & F.col("label").isNotNull() & F.col("item").isNotNull()
        valid = labels_raw.where(ok)
        w = Window.partitionBy("id", "item").orderBy(
            F.col("label_ts").desc_nulls_last(), F.col("file_idx").desc(), F.col("pos").desc()
        )
        labels = (
            valid.withColumn("rn", F.row_number().over(w))
            .where("rn = 1")
            .select("id", F.col("item").alias("label_item"), "label")
            .cache()
        )
        label_counts = labels_raw.agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(F.when(ok, 0).otherwise(1)).alias("invalid"),
        ).collect()[0]
        distinct = labels.count()
        label_rows = label_counts["rows"] or 0
        invalid = label_counts["invalid"] or 0

        groups = {}
        matched = 0
        if readable:
            part_model = F.regexp_extract(F.input_file_name(), r"/model=([^/]*)/", 1)

            def read(uris, has_item):
                df = self.spark.read.parquet(*uris)
                model_col = F.col("model") if "model" in df.columns else F.lit(None).cast("string")
                # Version 2 writes item not null; a null (hand-made file) is item 0, as in Rust.
                item = F.coalesce(F.col("item").cast("long"), F.lit(0)) if has_item else F.lit(0).cast("long")
                return df.select(
                    "request_id",
                    item.alias("item"),
                    F.coalesce(model_col, F.when(part_model != "", part_model), F.lit(UNKNOWN)).alias("m"),
                    F.coalesce(F.col("baseline_version"), F.lit(UNKNOWN)).alias("b"),
                    F.coalesce(F.col("canary_version"), F.lit(UNKNOWN)).alias("c"),
                    F.col("baseline_prediction").alias("bp"),
                    F.col("canary_prediction").alias("cp"),
                    *([F.unix_micros(F.col("ts").cast("timestamp")).alias("t")] if need_ts else []),
                )

            # Files with and without `item` (schema versions 2 and 1) as separate reads:
            # one read of both would take one file's schema for all (see the docstring).
            parts = [
                read([uri for _, uri, h in readable if h == has_item], has_item)
                for has_item in (True, False)
                if any(h == has_item for _, _, h in readable)
            ]
            logs = parts[0]
            for p in parts[1:]:
                logs = logs.unionByName(p)
            if need_ts:
                logs = logs.where(F.col("t").isNotNull())
                if since is not None:
                    logs = logs.where(F.col("t") >= F.lit(since))
                if until is not None:
                    logs = logs.where(F.col("t") < F.lit(until))
            if a.model is not None:
                logs = logs.where(F.col("m") == F.lit(a.model))
            key = (logs["request_id"] == labels["id"]) & (logs["item"] == labels["label_item"])
            j = logs.join(labels, key, "left")

            def same(x, y):
                num = x.rlike(DECIMAL_JAVA) & y.rlike(DECIMAL_JAVA) & (x.cast("double") == y.cast("double"))
                return (x == y) | num

            lab = F.col("label")
            has_label = lab.isNotNull()
            b_ok = has_label & F.col("bp").isNotNull() & same(F.col("bp"), lab)
            c_ok = has_label & F.col("cp").isNotNull() & same(F.col("cp"), lab)
            both = F.col("bp").isNotNull() & F.col("cp").isNotNull()
            i = lambda cond: F.sum(F.when(cond, 1).otherwise(0))
            agg = (
                j.groupBy("m", "b", "c")
                .agg(
                    F.count(F.lit(1)).alias("rows"),
                    i(has_label).alias("labeled"),
                    i(has_label & b_ok & c_ok).alias("both_correct"),
                    i(has_label & b_ok & ~c_ok).alias("baseline_only"),
                    i(has_label & ~b_ok & c_ok).alias("canary_only"),
                    i(has_label & ~b_ok & ~c_ok).alias("both_wrong"),
                    i(both).alias("compared"),
                    i(both & same(F.col("bp"), F.col("cp"))).alias("agreed"),
                    i(F.col("bp").isNull()).alias("baseline_missing"),
                    i(F.col("cp").isNull()).alias("canary_missing"),
                )
                .collect()
            )
            for r in agg:
                groups[(r["m"], r["b"], r["c"])] = r.asDict()
            matched = j.where(has_label).select("id", "label_item").distinct().count()
        labels.unpersist()
        return build_report(
            groups,
            {
                "rows": label_rows,
                "invalid": invalid,
                "duplicates": label_rows - invalid - distinct,
                "distinct": distinct,
            },
            matched,
            len(readable),
            pruned,
            skipped,
        )


def parse_flag_time(flag, v):
    if v is None:
        return None
    t = parse_timestamp(v)
    if t is None:
        raise JobError(f"--{flag} {v!r}: expected RFC 3339 (2024-05-01T12:00:00Z) or YYYY-MM-DD")
    return t


# ---------------------------------------------------------------- report (report.rs)


def fin(v):
    return v if isinstance(v, float) and math.isfinite(v) or isinstance(v, int) else None


def version_accuracy(version, correct, labeled):
    est, lo, up = wilson(correct, labeled, Z_95)
    return {
        "version": version,
        "labeled": labeled,
        "correct": correct,
        "accuracy": fin(est),
        "accuracy_lower": fin(lo),
        "accuracy_upper": fin(up),
    }


def build_report(groups, label_counts, matched, files_read, files_pruned, skipped):
    by_model = {}
    for (m, b, c), g in groups.items():
        by_model.setdefault(m, {})[(b, c)] = g
    models = []
    rows_total = labeled_total = 0
    for m in sorted(by_model, key=lambda s: s.encode()):
        pairs = by_model[m]
        total = dict.fromkeys(["rows", "labeled", "both_correct", "baseline_only", "canary_only", "both_wrong"], 0)
        versions = {}
        pair_reports = []
        for (b, c) in sorted(pairs, key=lambda k: (k[0].encode(), k[1].encode())):
            g = pairs[(b, c)]
            for k in total:
                total[k] += g[k]
            bc, bo, co, bw = g["both_correct"], g["baseline_only"], g["canary_only"], g["both_wrong"]
            vb = versions.setdefault(b, [0, 0])
            vb[0] += bc + bo
            vb[1] += g["labeled"]
            vc = versions.setdefault(c, [0, 0])
            vc[0] += bc + co
            vc[1] += g["labeled"]
            est, lo, up = ratio_interval(bc, bo, co, bw, Z_95)
            pair_reports.append(
                {
                    "baseline_version": b,
                    "canary_version": c,
                    "rows": g["rows"],
                    "labeled_rows": g["labeled"],
                    "baseline": version_accuracy(b, bc + bo, g["labeled"]),
                    "canary": version_accuracy(c, bc + co, g["labeled"]),
                    "paired": {"both_correct": bc, "baseline_only": bo, "canary_only": co, "both_wrong": bw},
                    "mcnemar_p_value": fin(math.nan if g["labeled"] == 0 else mcnemar_exact(bo, co)),
                    "accuracy_ratio": fin(est),
                    "accuracy_ratio_lower": fin(lo),
                    "accuracy_ratio_upper": fin(up),
                    "predictions_compared": g["compared"],
                    "predictions_agreed": g["agreed"],
                    "agreement_rate": fin(g["agreed"] / g["compared"] if g["compared"] else math.nan),
                    "baseline_missing": g["baseline_missing"],
                    "canary_missing": g["canary_missing"],
                }
            )
        rows_total += total["rows"]
        labeled_total += total["labeled"]
        models.append(
            {
                "model": m,
                "rows": total["rows"],
                "labeled_rows": total["labeled"],
                "versions": [
                    version_accuracy(v, versions[v][0], versions[v][1])
                    for v in sorted(versions, key=lambda s: s.encode())
                ],
                "paired": {k: total[k] for k in ["both_correct", "baseline_only", "canary_only", "both_wrong"]},
                "pairs": pair_reports,
            }
        )
    return {
        "report_version": REPORT_VERSION,
        "confidence_level": 0.95,
        "ratio_interval_method": "tang_score",
        "inputs": {
            "files_read": files_read,
            "files_pruned": files_pruned,
            "files_skipped": skipped,
            "rows": rows_total,
            "labeled_rows": labeled_total,
            "unlabeled_rows": rows_total - labeled_total,
        },
        "labels": {
            "rows": label_counts["rows"],
            "invalid": label_counts["invalid"],
            "duplicates": label_counts["duplicates"],
            "distinct": label_counts["distinct"],
            "matched": matched,
            "unmatched": label_counts["distinct"] - matched,
        },
        "models": models,
    }


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--logs", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", required=True)
    p.add_argument("--json", required=True, help="where the driver writes the JSON report")
    p.add_argument("--model")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--label-id-column", default="request_id")
    p.add_argument("--label-column", default="label")
    p.add_argument("--label-item-column", default="item", help="empty to ignore the labels' item column")
    p.add_argument("--label-ts-column", default="ts")
    p.add_argument("--skip-bad-files", action="store_true")
    p.add_argument("--master", help="Spark master when not run through spark-submit, e.g. local[2]")
    p.add_argument("--shuffle-partitions", type=int, help="spark.sql.shuffle.partitions")
    return p


def session(master=None, shuffle_partitions=None):
    from pyspark.sql import SparkSession

    b = (
        SparkSession.builder.appName("shadowgate-accuracy")
        # Label strings without a zone are UTC, as in the Rust job.
        .config("spark.sql.session.timeZone", "UTC")
        # Unparseable values become NULL (as in the Rust job) instead of failing the job.
        .config("spark.sql.ansi.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master:
        b = b.master(master).config("spark.ui.enabled", "false")
    if shuffle_partitions:
        b = b.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_job(spark, args):
    """Runs one report for parsed `args` in `spark` and writes args.json."""
    report = Job(spark, args).run()
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.json)
    return report


def main(argv=None):
    args = parser().parse_args(argv)
    spark = session(args.master, args.shuffle_partitions)
    try:
        run_job(spark, args)
    except JobError as e:
        print(f"accuracy_job: {e}", file=sys.stderr)
        return 65
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
