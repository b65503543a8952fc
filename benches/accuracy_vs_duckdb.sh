#!/usr/bin/env bash
# Whole-process benchmark of `shadowgate accuracy` against DuckDB running the
# equivalent SQL (dedupe labels latest-by-ts, left join on request_id, per-group
# paired counts, agreement, matched label ids) on the same Parquet files.
#
#   benches/accuracy_vs_duckdb.sh            # 10 M rows in 200 files, labels for half
#   ROWS=2000000 FILES=50 RUNS=5 benches/accuracy_vs_duckdb.sh
#
# Needs python3 with pyarrow, numpy and duckdb (scripts/test.sh installs pyarrow and
# duckdb) and GNU time (/usr/bin/time). Data is generated once into $BENCH_DIR
# (default target/accuracy-bench) and reused. Each engine gets one untimed warm-up run
# (page cache), then RUNS interleaved timed runs; the table shows medians of wall time
# and peak RSS as measured by `/usr/bin/time -v` (DuckDB's includes the python3
# process that hosts it, ~0.1 s and ~40 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-10000000}
FILES=${FILES:-200}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-target/accuracy-bench}
TIME=/usr/bin/time

[ -x "$TIME" ] || { echo "needs GNU time at $TIME (apt-get install time)" >&2; exit 1; }
python3 -c 'import pyarrow, numpy, duckdb' 2>/dev/null ||
  { echo "needs python3 -m pip install pyarrow numpy duckdb" >&2; exit 1; }

echo "==> cargo build --release" >&2
cargo build --release --quiet
BIN=target/release/shadowgate

stamp="$DIR/.generated-$ROWS-$FILES"
if [ ! -f "$stamp" ]; then
  echo "==> generating $ROWS rows in $FILES files under $DIR" >&2
  rm -rf "$DIR"
  python3 benches/accuracy_gen.py "$DIR" "$ROWS" "$FILES" >&2
  touch "$stamp"
fi

cat > "$DIR/query.sql" <<SQL
WITH lab AS (
  SELECT request_id AS id, arg_max(label, ts) AS label
  FROM read_parquet('$DIR/labels/*.parquet')
  GROUP BY request_id
),
j AS (
  SELECT s.model AS m, s.baseline_version AS b, s.canary_version AS c,
         s.baseline_prediction AS bp, s.canary_prediction AS cp, lab.id, lab.label
  FROM read_parquet('$DIR/logs/**/*.parquet', hive_partitioning = false) AS s
  LEFT JOIN lab ON s.request_id = lab.id
),
k AS (
  SELECT *, label IS NOT NULL AS l,
    coalesce(bp = label OR TRY_CAST(bp AS DOUBLE) = TRY_CAST(label AS DOUBLE), false) AS bok,
    coalesce(cp = label OR TRY_CAST(cp AS DOUBLE) = TRY_CAST(label AS DOUBLE), false) AS cok,
    bp IS NOT NULL AND cp IS NOT NULL AS cmp,
    coalesce(bp = cp OR TRY_CAST(bp AS DOUBLE) = TRY_CAST(cp AS DOUBLE), false) AS agree
  FROM j
)
SELECT m, b, c, count(*) AS rows, count(label) AS labeled,
  count_if(l AND bok AND cok) AS both_correct,
  count_if(l AND bok AND NOT cok) AS baseline_only,
  count_if(l AND NOT bok AND cok) AS canary_only,
  count_if(l AND NOT bok AND NOT cok) AS both_wrong,
  count_if(cmp) AS compared, count_if(cmp AND agree) AS agreed,
  count(DISTINCT id) AS matched_ids
FROM k GROUP BY m, b, c ORDER BY m, b, c
SQL

run_shadowgate() {
  "$BIN" accuracy --quiet --logs "$DIR/logs" --labels "$DIR/labels" --json "$DIR/shadowgate.json"
}
run_duckdb() {
  python3 -c 'import duckdb, sys; c = duckdb.connect(); c.execute("SET enable_progress_bar = false"); print(c.sql(open(sys.argv[1]).read()).fetchall())' "$DIR/query.sql"
}

# measure NAME: runs run_NAME under GNU time; appends "wall_s rss_kib" to $DIR/NAME.times
measure() {
  local name=$1 tfile="$DIR/$1.time"
  $TIME -v -o "$tfile" bash -c "$(declare -f "run_$name"); BIN=$BIN DIR=$DIR run_$name" \
    > "$DIR/$name.out" 2> "$DIR/$name.err" || { cat "$DIR/$name.err" >&2; exit 1; }
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; wall = s }
    /Maximum resident set size/ { rss = $2 }
    END { print wall, rss }' "$tfile" >> "$DIR/$name.times"
}

rm -f "$DIR"/*.times
echo "==> warm-up" >&2
measure shadowgate; measure duckdb
rm -f "$DIR"/*.times
for i in $(seq "$RUNS"); do
  echo "==> run $i/$RUNS" >&2
  measure shadowgate
  measure duckdb
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
sg_wall=$(cut -d' ' -f1 "$DIR/shadowgate.times" | median)
sg_rss=$(cut -d' ' -f2 "$DIR/shadowgate.times" | median)
db_wall=$(cut -d' ' -f1 "$DIR/duckdb.times" | median)
db_rss=$(cut -d' ' -f2 "$DIR/duckdb.times" | median)

echo
echo "rows=$ROWS files=$FILES labels=half runs=$RUNS cores=$(nproc)"
printf '%-12s %12s %16s\n' engine "wall s (med)" "peak RSS MiB"
printf '%-12s %12.2f %16.0f\n' shadowgate "$sg_wall" "$(echo "$sg_rss / 1024" | bc -l)"
printf '%-12s %12.2f %16.0f\n' duckdb "$db_wall" "$(echo "$db_rss / 1024" | bc -l)"
printf '%-12s %12.2f %16.2f\n' "duckdb/sg" "$(echo "$db_wall / $sg_wall" | bc -l)" "$(echo "$db_rss / $sg_rss" | bc -l)"
echo
echo "per-run (wall s, RSS KiB): shadowgate: $(tr '\n' ';' < "$DIR/shadowgate.times") duckdb: $(tr '\n' ';' < "$DIR/duckdb.times")"
echo "duckdb result: $(cat "$DIR/duckdb.out")"
python3 - "$DIR/shadowgate.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for m in r["models"]:
    for p in m["pairs"]:
        t = p["paired"]
        print(f"shadowgate {m['model']} {p['baseline_version']}->{p['canary_version']}: rows {p['rows']} labeled {p['labeled_rows']} "
              f"paired {t['both_correct']}/{t['baseline_only']}/{t['canary_only']}/{t['both_wrong']} "
              f"compared {p['predictions_compared']} agreed {p['predictions_agreed']}")
print(f"shadowgate matched label ids: {r['labels']['matched']}")
PY
