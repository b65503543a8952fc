#!/usr/bin/env bash
# Whole-process benchmark: the shadowgate sidecar against nginx, side by side.
#
#   bash benches/proxy_vs_nginx.sh            # full run, ~9 minutes
#   QUICK=1 bash benches/proxy_vs_nginx.sh    # smoke run, ~80 s
#
# What it measures (issue 7): for each row, shadowgate and nginx configured to do the
# same job, loaded by wrk over keep-alive connections, runs interleaved (A B A B ...),
# median of REPS runs per cell:
#   - CPU time per request of the proxy process: utime+stime from /proc/<pid>/stat
#     before and after each run (nginx: master + worker), in µs per client request;
#   - client latency p50/p99 (wrk --latency), requests/s;
#   - what reached the upstreams, per client request, from their own counters (nginx
#     stub_status per upstream, the slow upstream's /__count): requests, and connections
#     opened (nginx `mirror` cannot keep its mirror connections alive: the subrequest is
#     header-only, so the upstream connection is closed before the body is read).
# Rows: plain proxying; mirroring 10% to baseline+canary; 100%; a 50 ms shadow target;
# reuse_primary on/off; plus the Parquet shadow log on at 10%; then the sidecar's memory
# at steady load with 10% sampling.
#
# Core budget: every proxy under test gets ONE core (taskset -c $PROXY_CPU) and one
# worker: nginx `worker_processes 1`, shadowgate `SHADOWGATE_WORKER_THREADS=1` (one
# thread serves requests, on tokio's current-thread runtime). For comparison,
# `SG_THREADS= TOKIO_WORKER_THREADS=1` runs tokio's multi-thread runtime with one
# worker instead: ~8% more CPU per request in a trial (24.2 against 22.3 µs/req). wrk (1 thread) and every upstream share the
# other core ($LOAD_CPU). CPU per request is what is compared; requests/s only says how
# hard each run pushed.
#
# Environment: QUICK=1; DURATION (s per run, 10); REPS (3); CONNS (16); MEM_SECONDS
# (120); SLOW_CONNS (8), SLOW_DELAY_MS (10: wrk pauses this long between a response and
# the next request on a connection, so the 50 ms row is not a saturation test);
# EQUAL_CONNS (32), EQUAL_DELAY_MS (1): row 1 again with that pause, so both proxies get
# the same offered load, about half of what one core serves. Latency is compared there
# too: at saturation the proxy that needs less CPU lets wrk push more requests per
# second through the load core, which wrk and the upstreams share, and its p99 grows
# with that core's queueing, not with the proxy's;
# PROFILE ("sg_plain ng_plain ...": one extra run each under `perf record -e cpu-clock
# --call-graph dwarf`, flat and caller reports to benches/proxy/profile-NAME.txt);
# PROFILE_ONLY=1 (only those runs: no table, no memory run);
# PROXY_CPU (0); LOAD_CPU (1); SLOW_CPU (the 50 ms upstream's CPU, $LOAD_CPU like every
# other upstream: a shadow target is another pod, its CPU is not the proxy's. With
# SLOW_CPU=$PROXY_CPU every shadow send wakes the target on the proxy's core, and the
# client p50 of the mirrored run rose from 1.07x to 1.28x of the unmirrored one in a
# trial of the same binary);
# ROWS ("1 2 3 4": which groups to run; the table shows what ran); MEM_SECONDS=0 skips
# the memory run; MEM_SAMPLE_RATE (0.1) and MEM_SHADOW_LOG (1) vary it, to tell which
# part of the sidecar grows; BASE_PORT (18400); SHADOWGATE ($CARGO_TARGET_DIR or target/, release/shadowgate);
# OUT (benches/proxy/results.md: the table, quoted by BENCHMARKS.md; QUICK=1 writes
# /tmp/shadowgate-bench-quick.md instead); SHADOWGATE_B (a second shadowgate binary:
# row 1 runs it too, interleaved, and the table adds the A/B ratio: how a change is
# measured against the build before it); KEEP=1 keeps the
# work directory (configs, logs, raw wrk output).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE="$ROOT/benches/proxy"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  DURATION=${DURATION:-1}; REPS=${REPS:-3}; MEM_SECONDS=${MEM_SECONDS:-10}
else
  DURATION=${DURATION:-10}; REPS=${REPS:-3}; MEM_SECONDS=${MEM_SECONDS:-120}
fi
CONNS=${CONNS:-16}
SG_THREADS=${SG_THREADS-1}
SLOW_CONNS=${SLOW_CONNS:-8}
SLOW_DELAY_MS=${SLOW_DELAY_MS:-10}
EQUAL_CONNS=${EQUAL_CONNS:-32}
EQUAL_DELAY_MS=${EQUAL_DELAY_MS:-1}
SLOW_TARGET_MS=50
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SLOW_CPU=${SLOW_CPU:-$LOAD_CPU}
ROWS=${ROWS-1 2 3 4}
MEM_SAMPLE_RATE=${MEM_SAMPLE_RATE:-0.1}
MEM_SHADOW_LOG=${MEM_SHADOW_LOG:-1}
BASE_PORT=${BASE_PORT:-18400}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SHADOWGATE=${SHADOWGATE:-$TARGET_DIR/release/shadowgate}
OUT_DEFAULT=$HERE/results.md
[[ $QUICK == 1 ]] && OUT_DEFAULT=${TMPDIR:-/tmp}/shadowgate-bench-quick.md # smoke runs do not replace the published table
OUT=${OUT:-$OUT_DEFAULT}
KEEP=${KEEP:-0}
PROFILE=${PROFILE:-}
PROFILE_ONLY=${PROFILE_ONLY:-0}
SHADOWGATE_B=${SHADOWGATE_B:-}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
[[ -x /usr/bin/time ]] || need_apt+=(time)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v python3 >/dev/null || die "python3 is needed (slow upstream, body generation)"
command -v taskset >/dev/null || die "taskset (util-linux) is needed"
if [[ ! -x $SHADOWGATE ]]; then
  log "building $SHADOWGATE (cargo build --release)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
SLOW_UPSTREAM=$TARGET_DIR/release/examples/slow_upstream
if [[ ! -x $SLOW_UPSTREAM || $ROOT/examples/slow_upstream.rs -nt $SLOW_UPSTREAM ]]; then
  log "building $SLOW_UPSTREAM (cargo build --release --example slow_upstream)"
  (cd "$ROOT" && cargo build --release --quiet --example slow_upstream)
fi
NGINX=$(command -v nginx)
NCPU=$(nproc)
((PROXY_CPU < NCPU && LOAD_CPU < NCPU)) || die "PROXY_CPU/LOAD_CPU beyond the $NCPU CPUs"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- processes and cleanup
WORK=$(mktemp -d /tmp/shadowgate-bench.XXXXXX)
PIDS=()      # everything we started, stopped on exit by pid
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ $KEEP == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_http() { # url: until it answers or 10 s
  for _ in $(seq 100); do curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "nothing answers at $1"
}

P_PRIMARY=$((BASE_PORT + 1)); P_BASELINE=$((BASE_PORT + 2)); P_CANARY=$((BASE_PORT + 3))
P_SLOW=$((BASE_PORT + 4))
for p in $(seq "$BASE_PORT" $((BASE_PORT + 79))); do
  port_free "$p" || die "port $p is in use; set BASE_PORT"
done

python3 "$HERE/make_body.py" 0 >"$WORK/body_baseline.json"
python3 "$HERE/make_body.py" 1 >"$WORK/body_canary.json"
REQ_BODY='{"input":"The quick brown fox jumps over the lazy dog while the model computes an embedding.","model":"m"}'
cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$REQ_BODY'
wrk.headers["Content-Type"] = "application/json"
EOF
cp "$WORK/post.lua" "$WORK/post_paced.lua"
echo "function delay() return $SLOW_DELAY_MS end" >>"$WORK/post_paced.lua"
cp "$WORK/post.lua" "$WORK/post_equal.lua"
echo "function delay() return $EQUAL_DELAY_MS end" >>"$WORK/post_equal.lua"

# One nginx instance: own prefix, pid file, error log, loopback port; `daemon off` so
# the pid we hold is the master's. $1 name, $2 cpu, $3 http{} body.
start_nginx() {
  local name=$1 cpu=$2 body=$3 dir="$WORK/nginx-$1"
  mkdir -p "$dir/logs" "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
daemon off;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
$body
}
EOF
  taskset -c "$cpu" "$NGINX" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" \
    >"$dir/logs/stdout.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$name=$!"
}

# Model-server upstreams: a fixed ~2.6 KB embeddings answer; stub_status counts requests.
upstream_server() { # port body-file
  cat <<EOF
  server {
    listen 127.0.0.1:$1 reuseport backlog=4096;
    location = /__status { stub_status; }
    location / { default_type application/json; return 200 '$(cat "$2")'; }
  }
EOF
}
start_nginx up_primary "$LOAD_CPU" "$(upstream_server "$P_PRIMARY" "$WORK/body_baseline.json")"
start_nginx up_baseline "$LOAD_CPU" "$(upstream_server "$P_BASELINE" "$WORK/body_baseline.json")"
start_nginx up_canary "$LOAD_CPU" "$(upstream_server "$P_CANARY" "$WORK/body_canary.json")"
taskset -c "$SLOW_CPU" "$SLOW_UPSTREAM" "$P_SLOW" "$SLOW_TARGET_MS" "$WORK/body_canary.json" >"$WORK/slow_upstream.log" 2>&1 &
PIDS+=($!)

# nginx as the proxy under test. Keep-alive to every upstream (the strongest nginx setup,
# stronger than the stock `mirror` example, which opens a connection per mirrored
# request); request ids as shadowgate does them (to the upstreams and back to the client).
NGINX_UPSTREAMS="
  upstream primary  { server 127.0.0.1:$P_PRIMARY;  keepalive 64; }
  upstream baseline { server 127.0.0.1:$P_BASELINE; keepalive 64; }
  upstream canary   { server 127.0.0.1:$P_CANARY;   keepalive 64; }
  upstream slow     { server 127.0.0.1:$P_SLOW;     keepalive 256; }
  proxy_http_version 1.1;
  split_clients \"\${request_id}\" \$sampled { 10% 1; * \"\"; }"
nginx_proxy() { # port mirror(none|10|100|slow)
  local port=$1 mode=$2 mirrors="" locations="" b=baseline c=canary gate=""
  [[ $mode == slow ]] && { b=slow; c=slow; }
  [[ $mode == 10 ]] && gate='if ($sampled = "") { return 204; }'
  if [[ $mode != none ]]; then
    mirrors="mirror /_baseline; mirror /_canary;"
    for side in baseline canary; do
      local target=$b; [[ $side == canary ]] && target=$c
      locations+="
    location = /_$side {
      internal;
      $gate
      proxy_set_header Connection \"\";
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Shadowgate-Shadow 1;
      proxy_pass http://$target\$request_uri;
    }"
    done
  fi
  cat <<EOF
$NGINX_UPSTREAMS
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      $mirrors
      proxy_set_header Connection "";
      proxy_set_header X-Request-Id \$request_id;
      add_header X-Request-Id \$request_id always;
      proxy_pass http://primary;
    }$locations
  }
EOF
}

# shadowgate under test. $1 name, $2 proxy port, $3 admin port, $4 sample rate,
# $5 reuse_primary, $6 baseline/canary url, $7 shadow log dir ("" = off), $8 binary
# ("" = $SHADOWGATE), $9 more TOML appended to the config.
start_shadowgate() {
  local name=$1 version=v2 dir="$WORK/sg-$1"
  mkdir -p "$dir"
  [[ $5 == true ]] && version=v1 # this pod serves the baseline's version: reuse it
  # With [[routes]] in $9, each route names its sides and [shadow] keeps none.
  local pair
  pair=$(printf '[shadow.baseline]\nurl = "%s"\nversion = "v1"\n[shadow.canary]\nurl = "%s"\nversion = "v2"' "$6" "${6/$P_BASELINE/$P_CANARY}")
  [[ ${9:-} == *"[[routes]]"* ]] && pair=""
  cat >"$dir/shadowgate.toml" <<EOF
[model]
name = "bench"
version = "$version"
[listen]
proxy = "127.0.0.1:$2"
admin = "127.0.0.1:$3"
[primary]
url = "http://127.0.0.1:$P_PRIMARY"
[shadow]
sample_rate = $4
max_per_second = 0
max_in_flight = 64
timeout = "2s"
self_similarity_rate = 0.0
reuse_primary = $5
$pair
[shadow_log]
dir = "$7"
[limits]
shutdown_grace = "2s"
${9:-}
EOF
  SHADOWGATE_WORKER_THREADS=$SG_THREADS taskset -c "$PROXY_CPU" "${8:-$SHADOWGATE}" serve --config "$dir/shadowgate.toml" \
    >"$dir/stdout.log" 2>"$dir/stderr.log" &
  PIDS+=($!)
  eval "PID_$name=$!"
  eval "ADMIN_$name=$3"
}

# ---------------------------------------------------------------- the contestants
# name -> port, and a one-line description for the table
declare -A PORT DESC
add() { PORT[$1]=$2; DESC[$1]=$3; }
n=10
for spec in "ng_plain none" "ng_m10 10" "ng_m100 100" "ng_slow slow"; do
  set -- $spec
  start_nginx "$1" "$PROXY_CPU" "$(nginx_proxy $((BASE_PORT + n)) "$2")"
  PORT[$1]=$((BASE_PORT + n)); n=$((n + 1))
done
DESC[ng_plain]="nginx keep-alive reverse proxy"
DESC[ng_m10]="nginx mirror x2 + split_clients 10%"
DESC[ng_m100]="nginx mirror x2 (100%)"
DESC[ng_slow]="nginx mirror x2 (100%) to the 50 ms target"
FAST="http://127.0.0.1:$P_BASELINE"
SLOW="http://127.0.0.1:$P_SLOW"
n=20
for spec in "sg_plain 0.0 false $FAST -" "sg_m10 0.1 false $FAST -" "sg_m10log 0.1 false $FAST log" \
  "sg_m100 1.0 false $FAST -" "sg_m100reuse 1.0 true $FAST -" "sg_slow 1.0 false $SLOW -"; do
  set -- $spec
  logdir=""; [[ $5 == log ]] && logdir="$WORK/sg-$1/shadowlog"
  start_shadowgate "$1" $((BASE_PORT + n)) $((BASE_PORT + n + 20)) "$2" "$3" "$4" "$logdir"
  PORT[$1]=$((BASE_PORT + n)); n=$((n + 1))
done
DESC[sg_plain]="shadowgate, sampling off"
DESC[sg_m10]="shadowgate, 10% to baseline+canary"
DESC[sg_m10log]="shadowgate, 10%, Parquet shadow log on"
DESC[sg_m100]="shadowgate, 100% (reuse_primary off)"
DESC[sg_m100reuse]="shadowgate, 100%, reuse_primary on"
DESC[sg_slow]="shadowgate, 100% to the 50 ms target"
DESC[sg_paced]="shadowgate, sampling off (same paced load)"
# Plain proxying with the input-drift detector on ([reference], 10 % of answers scored
# on its own thread, pinned to the same core): a reference of the answers' dimension,
# built by `shadowgate reference build` from seeded Gaussian vectors (the score is not
# what is measured, its cost is).
python3 - "$WORK/body_baseline.json" "$WORK/ref.npy" <<'PY'
import json, sys
import numpy as np
dim = len(json.load(open(sys.argv[1]))["data"][0]["embedding"])
np.save(sys.argv[2], np.random.default_rng(7).standard_normal((2000, dim)).astype(np.float32))
PY
"$SHADOWGATE" reference build --logs "$WORK/ref.npy" --model bench --out "$WORK/ref.json" >/dev/null
start_shadowgate sg_ref $((BASE_PORT + n)) $((BASE_PORT + n + 20)) 0.0 false "$FAST" "" "" \
  "$(printf '[reference]\npath = "%s"\nsample_rate = 0.1' "$WORK/ref.json")"
PORT[sg_ref]=$((BASE_PORT + n)); n=$((n + 1))
DESC[sg_ref]="shadowgate, sampling off, input-drift detector on (10%)"
# 10 % mirrored again, through three routes chosen by the body's `model` (the requests
# name the third), against sg_m10's one [shadow] pair: the cost of routing.
routes3=""
for m in alpha beta m; do
  routes3+=$(printf '\n[[routes]]\nmodel = "%s"\nbaseline = { url = "%s", version = "v1" }\ncandidates = [{ url = "%s", version = "v2", share = 0.1 }]\n' \
    "$m" "$FAST" "${FAST/$P_BASELINE/$P_CANARY}")
done
start_shadowgate sg_routes3 $((BASE_PORT + n)) $((BASE_PORT + n + 20)) 0.1 false "$FAST" "" "" "$routes3"
PORT[sg_routes3]=$((BASE_PORT + n)); n=$((n + 1))
DESC[sg_routes3]="shadowgate, 10%, three routes by body model"
if [[ -n $SHADOWGATE_B ]]; then # A/B of two builds: row 1 runs this one too, interleaved
  start_shadowgate sgB_plain $((BASE_PORT + n)) $((BASE_PORT + n + 20)) 0.0 false "$FAST" "" "$SHADOWGATE_B"
  PORT[sgB_plain]=$((BASE_PORT + n)); DESC[sgB_plain]="shadowgate B ($SHADOWGATE_B), sampling off"
fi
PORT[sg_paced]=${PORT[sg_plain]}; PID_sg_paced=$PID_sg_plain
# Plain proxying again, at the same offered load for both (below saturation).
PORT[sg_eq]=${PORT[sg_plain]}; PID_sg_eq=$PID_sg_plain
PORT[ng_eq]=${PORT[ng_plain]}; PID_ng_eq=$PID_ng_plain
DESC[sg_eq]="shadowgate, sampling off, same offered load"
DESC[ng_eq]="nginx keep-alive reverse proxy, same offered load"

for p in "$P_PRIMARY" "$P_BASELINE" "$P_CANARY"; do wait_http "http://127.0.0.1:$p/__status"; done
wait_http "http://127.0.0.1:$P_SLOW/__count"
for name in "${!PORT[@]}"; do
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X POST -d "$REQ_BODY" \
    "http://127.0.0.1:${PORT[$name]}/v1/embeddings" 2>/dev/null || true)
  for _ in $(seq 100); do
    [[ $code == 200 ]] && break
    sleep 0.1
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X POST -d "$REQ_BODY" \
      "http://127.0.0.1:${PORT[$name]}/v1/embeddings" 2>/dev/null || true)
  done
  [[ $code == 200 ]] || die "$name (port ${PORT[$name]}) does not answer 200 (got $code); see $WORK"
done
threads=$(awk '/^Threads/ {print $2}' "/proc/$PID_sg_plain/status")
log "shadowgate runs $threads threads (SHADOWGATE_WORKER_THREADS=$SG_THREADS, pinned to CPU $PROXY_CPU)"

# ---------------------------------------------------------------- measurement
proc_ticks() { # pid: utime+stime of the process and (nginx) its children
  local pid=$1 t=0 c
  for c in $pid $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    [[ -r /proc/$c/stat ]] || continue
    t=$((t + $(sed 's/^.*) //' "/proc/$c/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}
# Upstream counters as "requests connections"; each stub_status call is itself one
# request on one new connection (curl does not reuse), subtracted below.
upstream_count() { # port
  curl -fsS --max-time 2 "http://127.0.0.1:$1/__status" | awk '/^ *[0-9]+ +[0-9]+ +[0-9]+/ {print $3, $1; exit}'
}
slow_count() { curl -fsS --max-time 2 "http://127.0.0.1:$P_SLOW/__count"; }
counters() { # -> "primary baseline canary slow" requests, then the same connections
  local p b c s
  p=($(upstream_count "$P_PRIMARY")); b=($(upstream_count "$P_BASELINE"))
  c=($(upstream_count "$P_CANARY")); s=($(slow_count))
  echo "${p[0]} ${b[0]} ${c[0]} ${s[0]} ${p[1]} ${b[1]} ${c[1]} ${s[1]}"
}
to_ms() { # wrk duration (12.3us, 1.2ms, 1.5s, 2.0m) -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
    printf "%.3f", n }'
}

RUNS="$WORK/runs.csv"
echo "round,name,rps,requests,cpu_us_per_req,p50_ms,p99_ms,load_us_per_req,errors,primary,baseline,canary,slow,conns_primary,conns_baseline,conns_canary,conns_slow" >"$RUNS"

# The scoring thread of sg_ref (the input-drift detector's, named `reference`): its CPU
# time in ns (schedstat) and the answers it scored, so that its own cost per scored
# answer is measured directly, not only as the difference of two noisy process totals.
SCORING="$WORK/scoring.csv"
echo "round,thread_ns,answers,requests" >"$SCORING"
scoring_now() { # -> "ns answers"
  local t ns=0
  for t in /proc/"$PID_sg_ref"/task/*; do
    [[ $(cat "$t/comm" 2>/dev/null) == reference ]] && ns=$(awk '{print $1}' "$t/schedstat")
  done
  echo "$ns $(curl -fsS --max-time 2 "http://127.0.0.1:$ADMIN_sg_ref/metrics" | awk '/^shadowgate_reference_samples_total/ {print $2}')"
}

# One wrk run against one contestant; appends a line to runs.csv.
measure() { # round name duration script conns
  local round=$1 name=$2 dur=$3 script=$4 conns=$5
  local pidvar="PID_$name" pid port=${PORT[$name]}
  pid=${!pidvar}
  local c0 c1 u0 u1 out before after
  before=($(counters))
  local s0=() s1=()
  [[ $name == sg_ref ]] && s0=($(scoring_now))
  c0=$(proc_ticks "$pid")
  u0=$(proc_ticks "$PID_up_primary")
  # The load core's work per request too: wrk's own CPU (GNU time) and the primary
  # upstream's. At saturation a proxy that needs less CPU lets more requests through
  # that core, and latency queues there.
  out=$(taskset -c "$LOAD_CPU" /usr/bin/time -f "%U %S" -o "$WORK/wrk-time.txt" \
    wrk -t1 -c"$conns" -d"${dur}s" --latency -s "$script" \
    "http://127.0.0.1:$port/v1/embeddings" 2>&1)
  u1=$(proc_ticks "$PID_up_primary")
  # shadow work still running after the client run ends is the proxy's cost too
  sleep 0.3
  c1=$(proc_ticks "$pid")
  [[ $name == sg_ref ]] && s1=($(scoring_now))
  after=($(counters))
  local deltas="" i d
  for i in 0 1 2 3 4 5 6 7; do
    d=$((after[i] - before[i]))
    ((i != 3 && i != 7)) && d=$((d - 1)) # the stub_status call itself
    deltas+=",$d"
  done
  [[ $round == warm ]] && return 0
  echo "$out" >>"$WORK/wrk-$name.txt"
  local requests rps p50 p99 errors
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  errors=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
  [[ -n $requests && $requests -gt 0 ]] || die "wrk against $name: $out"
  local cpu load
  cpu=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  load=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$requests" '{ u = $1; s = $2 } END { printf "%.2f", (u + s + t / hz) * 1e6 / n }' "$WORK/wrk-time.txt")
  echo "$round,$name,$rps,$requests,$cpu,$p50,$p99,$load,$errors$deltas" >>"$RUNS"
  if [[ $name == sg_ref ]]; then
    echo "$round,$((s1[0] - s0[0])),$((s1[1] - s0[1])),$requests" >>"$SCORING"
    log "  sg_ref scoring thread: $(awk -v ns=$((s1[0] - s0[0])) -v n=$((s1[1] - s0[1])) 'BEGIN { printf "%.2f", ns / 1000 / (n > 0 ? n : 1) }') µs CPU per scored answer ($((s1[1] - s0[1])) answers)"
  fi
  log "  $name: $rps req/s, $cpu µs CPU/req, p50 $p50 ms, p99 $p99 ms, load core $load µs/req (wrk + primary), errors $errors, upstream requests,connections p/b/c/slow ${deltas#,}"
}

# A group of contestants measured in turn (A B C A B C ...), after a 1 s warm-up each.
group() { # script conns names...
  local script=$1 conns=$2; shift 2
  local name r
  for name in "$@"; do measure warm "$name" 1 "$script" "$conns"; done
  for r in $(seq "$REPS"); do
    for name in "$@"; do measure "$r" "$name" "$DURATION" "$script" "$conns"; done
  done
}

# One run under perf (CPU clock: this VM has no hardware counters), all the proxy's
# processes; reports next to the table.
profile_run() { # name script conns
  local name=$1 pidvar="PID_$1" pid pids data="$WORK/perf-$1.data" rep="$HERE/profile-$1.txt"
  pid=${!pidvar}
  pids=$(echo "$pid" $(cat /proc/"$pid"/task/*/children 2>/dev/null) | tr ' ' ',')
  measure warm "$name" 1 "$2" "$3"
  perf record -q -e cpu-clock -F 1999 --call-graph dwarf,8192 -p "$pids" -o "$data" -- sleep 4 \
    >/dev/null 2>&1 &
  local perf_pid=$!
  taskset -c "$LOAD_CPU" wrk -t1 -c"$3" -d5s -s "$2" "http://127.0.0.1:${PORT[$name]}/v1/embeddings" \
    >"$WORK/wrk-profile-$name.txt" 2>&1
  wait "$perf_pid" || true
  {
    echo "# perf record -e cpu-clock --call-graph dwarf, 4 s of ${DESC[$name]} under wrk -c$3"
    echo "## self time by binary"
    perf report -i "$data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | sed 's/ *$//'
    echo "## inclusive time of the proxy's own frames (inlined frames counted)"
    perf script -i "$data" -F ip,sym,dso 2>/dev/null |
      python3 "$HERE/perf_inclusive.py" 45 'shadowgate::|hyper::proto|hyper_util::client|uuid|prometheus|parquet|simsimd|tokio::time|ngx_http_[a-z_]*(handler|mirror|proxy|upstream|request)|getrandom|malloc|free'
  } >"$rep"
  log "profile of $name: $rep"
}
strace_run() { # name script conns: syscalls per client request, from strace -c
  local name=$1 pidvar="PID_$1" pid pids rep="$HERE/syscalls-$1.txt" reqs
  pid=${!pidvar}
  pids=$(echo "$pid" $(cat /proc/"$pid"/task/*/children 2>/dev/null))
  measure warm "$name" 1 "$2" "$3"
  local args=()
  for p in $pids; do args+=(-p "$p"); done
  strace -f -c -o "$WORK/strace-$1.txt" "${args[@]}" &
  local strace_pid=$!
  sleep 0.5
  taskset -c "$LOAD_CPU" wrk -t1 -c"$3" -d3s -s "$2" "http://127.0.0.1:${PORT[$name]}/v1/embeddings" \
    >"$WORK/wrk-strace-$name.txt" 2>&1
  sleep 0.2
  kill -INT "$strace_pid"; wait "$strace_pid" || true
  reqs=$(awk '/requests in/ { print $1 }' "$WORK/wrk-strace-$name.txt")
  {
    echo "# strace -c -f, 3 s of ${DESC[$name]} under wrk -c$3: $reqs requests"
    echo "# calls per request, then strace's own table"
    awk -v r="$reqs" '$1 ~ /^[0-9.]+$/ && NF >= 5 { printf "%8.3f  %s\n", $4 / r, $NF }' "$WORK/strace-$1.txt"
    cat "$WORK/strace-$1.txt"
  } >"$rep"
  log "syscalls of $name: $rep"
}
if [[ -n ${STRACE:-} ]]; then
  for name in $STRACE; do strace_run "$name" "$WORK/post.lua" "$CONNS"; done
  [[ $PROFILE_ONLY == 1 ]] && exit 0
fi
if [[ -n $PROFILE ]]; then
  command -v perf >/dev/null || die "PROFILE needs perf (linux-perf)"
  for name in $PROFILE; do
    script="$WORK/post.lua"; conns=$CONNS
    [[ $name == sg_slow || $name == ng_slow || $name == sg_paced ]] && { script="$WORK/post_paced.lua"; conns=$SLOW_CONNS; }
    profile_run "$name" "$script" "$conns"
  done
  [[ $PROFILE_ONLY == 1 ]] && exit 0
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date +%s)
log "load average at start: $LOAD_START; $REPS runs of ${DURATION}s per cell, $CONNS connections"
has_row() { [[ " $ROWS " == *" $1 "* ]]; }
if has_row 1; then
  log "row 1: plain proxying"; group "$WORK/post.lua" "$CONNS" sg_plain ng_plain sg_ref ${SHADOWGATE_B:+sgB_plain}
  log "sg_ref scored $(curl -fsS --max-time 2 "http://127.0.0.1:$ADMIN_sg_ref/metrics" | awk '/^shadowgate_reference_samples_total/ {print $2}') answers"
  log "row 1, same offered load: $EQUAL_CONNS connections, ${EQUAL_DELAY_MS} ms pause"
  group "$WORK/post_equal.lua" "$EQUAL_CONNS" sg_eq ng_eq
fi
if has_row 2; then log "row 2: 10% mirrored (+ shadow log)"; group "$WORK/post.lua" "$CONNS" sg_m10 ng_m10 sg_m10log sg_routes3; fi
if has_row 3; then log "rows 3+5: 100% mirrored, reuse_primary"; group "$WORK/post.lua" "$CONNS" sg_m100 ng_m100 sg_m100reuse; fi
if has_row 4; then log "row 4: 50 ms shadow target, paced load"; group "$WORK/post_paced.lua" "$SLOW_CONNS" sg_slow sg_paced ng_slow; fi

# ---------------------------------------------------------------- memory at steady load
# A fresh sidecar (10% sampled, shadow log on, defaults otherwise), /metrics scraped every
# 5 s as Prometheus would, VmRSS/VmHWM sampled every 5 s.
MEM="$WORK/memory.csv"
echo "seconds,vmrss_kib,vmhwm_kib" >"$MEM"
MEM_RPS=""
if ((MEM_SECONDS > 0)); then
  MEM_PORT=$((BASE_PORT + 30))
  memlog=""; [[ $MEM_SHADOW_LOG == 1 ]] && memlog="$WORK/sg-sg_mem/shadowlog"
  start_shadowgate sg_mem "$MEM_PORT" $((MEM_PORT + 20)) "$MEM_SAMPLE_RATE" false "$FAST" "$memlog"
  PORT[sg_mem]=$MEM_PORT
  wait_http "http://127.0.0.1:$((MEM_PORT + 20))/healthz"
  log "memory: ${MEM_SECONDS}s of load on a fresh sidecar, sample rate $MEM_SAMPLE_RATE, shadow log $MEM_SHADOW_LOG"
  mem_sample() { awk -v t="$1" '/^VmRSS/ {r = $2} /^VmHWM/ {h = $2} END {print t "," r "," h}' "/proc/$PID_sg_mem/status" >>"$MEM"; }
  mem_sample 0
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${MEM_SECONDS}s" -s "$WORK/post.lua" \
    "http://127.0.0.1:$MEM_PORT/v1/embeddings" >"$WORK/wrk-sg_mem.txt" 2>&1 &
  WRK_MEM=$!
  PIDS+=($WRK_MEM)
  for t in $(seq 5 5 "$MEM_SECONDS"); do
    sleep 5
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$((MEM_PORT + 20))/metrics" || true
    mem_sample "$t"
  done
  wait "$WRK_MEM" || true
  MEM_RPS=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$WORK/wrk-sg_mem.txt")
  curl -fsS --max-time 2 "http://127.0.0.1:$((MEM_PORT + 20))/metrics" >"$WORK/metrics-sg_mem.txt" || true
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - STARTED))

# ---------------------------------------------------------------- the table
median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ran() { awk -F, -v n="$1" '$2 == n { f = 1 } END { exit !f }' "$RUNS"; }
col() { # name column -> median over rounds
  awk -F, -v n="$1" -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next } $2 == n { print $k }' "$RUNS" | median
}
per_req() { # name column -> median over rounds of column / requests
  awk -F, -v n="$1" -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == c) k = i; if ($i == "requests") r = i }; next }
    $2 == n { printf "%.3f\n", $k / $r }' "$RUNS" | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.2f", a / b }'; }
fmt() { awk -v v="$1" -v d="${2:-2}" 'BEGIN { printf "%." d "f", v }'; }
verdict() { awk -v v="$1" -v lim="$2" 'BEGIN { print (v != "nan" && v + 0 <= lim + 0) ? "met" : "**missed**" }'; }
paired() { # a-name b-name column -> median over rounds of a/b within the same round
  awk -F, -v a="$1" -v b="$2" -v c="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
    $2 == a { x[$1] = $k } $2 == b { y[$1] = $k }
    END { for (r in x) if ((r in y) && y[r] + 0 != 0) printf "%.4f\n", x[r] / y[r] }' "$RUNS" | median
}
compare() { # label a-name b-name column digits target-text limit
  ran "$2" && ran "$3" || return 0
  local a b r p
  a=$(col "$2" "$4"); b=$(col "$3" "$4"); r=$(ratio "$a" "$b"); p=$(fmt "$(paired "$2" "$3" "$4")")
  echo "| $1 | $(fmt "$a" "$5") | $(fmt "$b" "$5") | $r | $p | $6 | $( [[ -n $7 ]] && verdict "$r" "$7") |"
}

CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
  echo "<!-- written by benches/proxy_vs_nginx.sh; do not edit by hand -->"
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ), ${ELAPSED}s: $NCPU × $CPU_MODEL, Linux $(uname -r), $("$NGINX" -v 2>&1 | sed 's/.*: //'), wrk $(wrk --version 2>&1 | head -1 | awk '{print $2}'), shadowgate $("$SHADOWGATE" --version 2>/dev/null | awk '{print $2}') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))."
  echo "Load average (1/5/15 min) at start $LOAD_START, at end $LOAD_END (other work was running on the machine)."
  echo "Each proxy pinned to CPU $PROXY_CPU with one worker; wrk (1 thread) and the upstreams on CPU $LOAD_CPU (50 ms upstream: CPU $SLOW_CPU)."
  echo "$REPS interleaved runs of ${DURATION}s per cell, medians; $CONNS keep-alive connections (same offered load: $EQUAL_CONNS, ${EQUAL_DELAY_MS} ms pause between requests; 50 ms rows: $SLOW_CONNS, ${SLOW_DELAY_MS} ms pause)."
  echo
  echo "| config | req/s | CPU µs/req | p50 ms | p99 ms | load core µs/req (wrk + primary) | upstream calls per request (primary / baseline / canary / 50 ms) | new upstream connections per request | errors |"
  echo "|---|---:|---:|---:|---:|---:|---|---:|---:|"
  for name in sg_plain ng_plain sg_ref sgB_plain sg_eq ng_eq sg_m10 ng_m10 sg_m10log sg_routes3 sg_m100 ng_m100 sg_m100reuse sg_slow sg_paced ng_slow; do
    ran "$name" || continue
    conns=$(awk -v a="$(per_req "$name" conns_primary)" -v b="$(per_req "$name" conns_baseline)" \
      -v c="$(per_req "$name" conns_canary)" -v d="$(per_req "$name" conns_slow)" 'BEGIN { printf "%.2f", a + b + c + d }')
    printf '| %s | %s | %s | %s | %s | %s | %s / %s / %s / %s | %s | %s |\n' "${DESC[$name]}" \
      "$(fmt "$(col "$name" rps)" 0)" "$(fmt "$(col "$name" cpu_us_per_req)" 1)" \
      "$(fmt "$(col "$name" p50_ms)" 2)" "$(fmt "$(col "$name" p99_ms)" 2)" \
      "$(fmt "$(col "$name" load_us_per_req)" 1)" \
      "$(fmt "$(per_req "$name" primary)")" "$(fmt "$(per_req "$name" baseline)")" \
      "$(fmt "$(per_req "$name" canary)")" "$(fmt "$(per_req "$name" slow)")" \
      "$conns" "$(fmt "$(col "$name" errors)" 0)"
  done
  echo
  echo "| row | shadowgate | peer | ratio of medians | median of paired ratios | target | |"
  echo "|---|---:|---:|---:|---:|---|---|"
  compare "plain proxying: CPU µs/req" sg_plain ng_plain cpu_us_per_req 1 "≤ 1.0 × nginx" 1.0
  compare "A/B: shadowgate against shadowgate B, CPU µs/req" sg_plain sgB_plain cpu_us_per_req 1 "" ""
  compare "plain proxying, input-drift detector on (10%): CPU µs/req" sg_ref ng_plain cpu_us_per_req 1 "≤ 1.0 × nginx" 1.0
  compare "input-drift detector on vs off: CPU µs/req" sg_ref sg_plain cpu_us_per_req 1 "" ""
  if ran sg_ref; then
    per_answer=$(awk -F, 'NR > 1 && $3 > 0 { print $2 / 1000 / $3 }' "$SCORING" | median)
    per_req_scoring=$(awk -F, 'NR > 1 && $4 > 0 { print $2 / 1000 / $4 }' "$SCORING" | median)
    share=$(awk -F, 'NR > 1 { a += $3; r += $4 } END { printf "%.3f", a / (r > 0 ? r : 1) }' "$SCORING")
    printf '| input-drift detector: its scoring thread, CPU µs per scored answer (per request) | %s (%s) | | | | | %s answers per request |\n' \
      "$(fmt "$per_answer" 2)" "$(fmt "$per_req_scoring" 2)" "$share"
  fi
  compare "A/B: shadowgate B against nginx, CPU µs/req" sgB_plain ng_plain cpu_us_per_req 1 "" ""
  compare "plain proxying, saturated: p99 ms" sg_plain ng_plain p99_ms 2 "≤ nginx" 1.0
  compare "plain proxying, same offered load: p99 ms" sg_eq ng_eq p99_ms 2 "≤ nginx" 1.0
  compare "plain proxying, same offered load: CPU µs/req" sg_eq ng_eq cpu_us_per_req 1 "≤ 1.0 × nginx" 1.0
  compare "10% mirrored: CPU µs/req" sg_m10 ng_m10 cpu_us_per_req 1 "≤ 0.8 × nginx" 0.8
  compare "10% mirrored, shadow log on: CPU µs/req" sg_m10log ng_m10 cpu_us_per_req 1 "≤ 0.8 × nginx" 0.8
  compare "three routes vs one (10% mirrored): CPU µs/req" sg_routes3 sg_m10 cpu_us_per_req 1 "≤ 1.05" 1.05
  compare "100% mirrored: CPU µs/req" sg_m100 ng_m100 cpu_us_per_req 1 "≤ 0.5 × nginx" 0.5
  compare "50 ms shadow target: client p50 ms, vs shadowgate without shadow" sg_slow sg_paced p50_ms 2 "≤ 1.10" 1.10
  compare "50 ms shadow target: client p50 ms, vs nginx mirror" sg_slow ng_slow p50_ms 2 "nginx ≈ 50 ms − pause" ""
  compare "reuse_primary on vs off (100%): CPU µs per sample" sg_m100reuse sg_m100 cpu_us_per_req 1 "< 1" 0.999
  if ran sg_m100reuse && ran sg_m100; then
    a=$(awk -v b="$(per_req sg_m100reuse baseline)" -v c="$(per_req sg_m100reuse canary)" 'BEGIN { print b + c }')
    b=$(awk -v b="$(per_req sg_m100 baseline)" -v c="$(per_req sg_m100 canary)" 'BEGIN { print b + c }')
    echo "| reuse_primary on vs off: shadow calls per sample (upstream counters) | $(fmt "$a") | $(fmt "$b") | $(ratio "$a" "$b") | | 1 vs 2 | $(awk -v a="$a" 'BEGIN { print (a > 0.98 && a < 1.02) ? "met" : "**missed**" }') |"
  fi
  if ((MEM_SECONDS > 0)); then
    echo
    awk -F, -v s="$MEM_SECONDS" -v rps="$MEM_RPS" -v rate="$MEM_SAMPLE_RATE" -v lg="$([[ $MEM_SHADOW_LOG == 1 ]] && echo on || echo off)" 'NR > 1 { r = $2; h = $3; if ($1 == 5) r5 = $2 }
      NR > 1 && $1 >= s / 2 && !rh { rh = $2 }
      END { printf "Memory (fresh sidecar, sample rate %s, shadow log %s, %s s at %s req/s, /metrics scraped every 5 s): VmRSS %.1f MiB at 5 s, %.1f MiB at half time, %.1f MiB at the end; VmHWM %.1f MiB. Target: ≤ 64 MiB and flat.\n", rate, lg, s, rps, r5 / 1024, rh / 1024, r / 1024, h / 1024 }' "$MEM"
    echo
    echo "VmRSS every 5 s (MiB): $(awk -F, 'NR > 1 { printf "%s%.1f", (NR > 2 ? " " : ""), $2 / 1024 }' "$MEM")"
  fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cp "$RUNS" "${OUT%.md}.runs.csv"
((MEM_SECONDS > 0)) && cp "$MEM" "${OUT%.md}.memory.csv"
ran sg_ref && cp "$SCORING" "${OUT%.md}.scoring.csv"
cat "$OUT"
log "table written to $OUT (raw runs: ${OUT%.md}.runs.csv); ${ELAPSED}s"
