#!/usr/bin/env bash
# Whole-process benchmark of the HTTP/2 (h2c) path: shadowgate against nginx for unary
# Open Inference Protocol v2 gRPC calls (ModelInfer), side by side.
#
#   cargo build --release --bin shadowgate --example grpc_model
#   bash benches/grpc_vs_nginx.sh               # ~10 min of rounds + MEM_SECONDS (600)
#   QUICK=1 bash benches/grpc_vs_nginx.sh       # smoke run, ~2 min, writes to /tmp
#
# Load: h2load (nghttp2-client) POSTs one framed ModelInferRequest (one BYTES input, one
# string; `grpc_model request`) with `content-type: application/grpc` and `te: trailers`.
# Model servers: `examples/grpc_model.rs` (hyper HTTP/2, one current-thread runtime),
# answering a fixed 768-dim FP32 `raw_output_contents` per input and `grpc-status: 0`.
# h2load counts HTTP statuses only, so every contestant is also called once with a real
# HTTP/2 client (`grpc_model check`: status, trailers, decoded answer) before and after
# the rounds, and the model servers' own call counters are read after every run.
#
# Contestants (one core each, as in benches/proxy_vs_nginx.sh: the proxy pinned to
# PROXY_CPU with one worker; h2load, wrk and every model server share LOAD_CPU):
#   direct     the primary model server itself (its own CPU is reported);
#   ng_plain   nginx `grpc_pass` (h2c listener, `listen ... http2`; keep-alive upstream);
#   sg_plain   shadowgate, `primary.http2_url`, sample_rate 0;
#   ng_m10     nginx `mirror` x2 with `grpc_pass` in the mirror locations, sampled 10%
#              by `split_clients "${request_id}"` (as the HTTP/1.1 benchmark does);
#   sg_m10     shadowgate, sample_rate 0.1, baseline + canary over h2c;
#   sg_slow    shadowgate, sample_rate 1.0 to baseline + canary that answer after 50 ms
#              (client p50 against sg_plain at the same offered load);
#   sg_ctl     sg_plain again, while a second h2load on LOAD_CPU calls the two 50 ms
#              model servers directly at sg_slow's shadow rate: the control. The shadow
#              targets share the load core with h2load and the primary here (in a pod
#              they run elsewhere), so sg_slow's client latency also carries their work
#              on that core; sg_ctl carries the same work (plus the second h2load's own),
#              and sg_slow against sg_ctl is what the sidecar adds.
# Measured per run: CPU time of the proxy process (utime+stime of /proc/PID/stat, nginx
# master + worker) per completed call; client p50/p99 from h2load's --log-file; calls
# reaching each model server per client call, connections the primary accepted during
# the run (primary_conns: one of them is the counter's own previous call), and model
# calls with another path or a body that is not one ModelInferRequest (bad_model_calls:
# 0 means every mirrored call, nginx's too, carried the method and the whole message).
# Groups, each interleaved (A B C ... A B C ...), REPS rounds:
#   sat    saturation: CONNS connections x STREAMS concurrent streams;
#   rate   fixed offered rate: RATE_CONNS connections x RATE_RPS calls/s each;
#   slow   SLOW_CONNS x SLOW_RPS: sg_plain against sg_slow (the 50 ms shadow targets).
# Then memory: a separate shadowgate at sample_rate MEM_SAMPLE_RATE on both paths, under
# h2load (gRPC) and wrk (HTTP/1.1, `primary.url` is an nginx answering a fixed OpenAI
# embeddings body) at once for MEM_SECONDS; RSS every 5 s.
#
# Environment: QUICK, DURATION (10 s per run), REPS (3), CONNS (16), STREAMS (4),
# RATE_CONNS (16), RATE_RPS (400: 6400 calls/s), SLOW_CONNS (8), SLOW_RPS (100),
# MEM_SECONDS (600; 0 skips), MEM_SAMPLE_RATE (0.1), BENCH_GROUPS ("sat rate slow"),
# PROXY_CPU (0), LOAD_CPU (1), BASE_PORT (18600), SHADOWGATE, GRPC_MODEL (binaries;
# default $CARGO_TARGET_DIR or target/, release), SHADOWGATE_B (a second shadowgate
# binary: the sat and rate groups then also run it as sgB_plain and sgB_m10, interleaved, for an
# A/B of two builds in one machine state), OUT_DIR (benches/grpc; QUICK=1:
# /tmp/shadowgate-grpc-quick), KEEP=1 keeps the work directory.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE="$ROOT/benches/proxy"
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  DURATION=${DURATION:-2}; REPS=${REPS:-2}; MEM_SECONDS=${MEM_SECONDS:-10}
  OUT_DIR=${OUT_DIR:-/tmp/shadowgate-grpc-quick}
else
  DURATION=${DURATION:-10}; REPS=${REPS:-3}; MEM_SECONDS=${MEM_SECONDS:-600}
  OUT_DIR=${OUT_DIR:-$ROOT/benches/grpc}
fi
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-4}
RATE_CONNS=${RATE_CONNS:-16}
RATE_RPS=${RATE_RPS:-400}
SLOW_CONNS=${SLOW_CONNS:-8}
SLOW_RPS=${SLOW_RPS:-100}
MEM_SAMPLE_RATE=${MEM_SAMPLE_RATE:-0.1}
GROUPS_TO_RUN=${BENCH_GROUPS:-sat rate slow}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18600}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SHADOWGATE=${SHADOWGATE:-$TARGET/release/shadowgate}
SHADOWGATE_B=${SHADOWGATE_B:-}
GRPC_MODEL=${GRPC_MODEL:-$TARGET/release/examples/grpc_model}
KEEP=${KEEP:-0}
METHOD_PATH=/inference.GRPCInferenceService/ModelInfer

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
need_apt=()
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
[[ -x $SHADOWGATE ]] || (cd "$ROOT" && cargo build --release --quiet --bin shadowgate)
if [[ ! -x $GRPC_MODEL || $ROOT/examples/grpc_model.rs -nt $GRPC_MODEL ]]; then
  (cd "$ROOT" && cargo build --release --quiet --example grpc_model)
fi
NGINX=$(command -v nginx)
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$OUT_DIR/raw"
rm -f "$OUT_DIR"/raw/*

WORK=$(mktemp -d /tmp/shadowgate-grpc.XXXXXX)
PIDS=()
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
for p in $(seq "$BASE_PORT" $((BASE_PORT + 59))); do
  port_free "$p" || die "port $p is in use; set BASE_PORT"
done

# Does this nginx have the gRPC module? (`grpc_pass` is refused by `nginx -t` otherwise.)
printf 'events {}\nhttp { server { listen 127.0.0.1:%s http2; location / { grpc_pass grpc://127.0.0.1:1; } } }\n' \
  "$BASE_PORT" >"$WORK/grpc-probe.conf"
"$NGINX" -t -p "$WORK" -c "$WORK/grpc-probe.conf" >"$WORK/grpc-probe.log" 2>&1 ||
  die "this nginx has no ngx_http_grpc_module (grpc_pass): $(cat "$WORK/grpc-probe.log")"

# ---------------------------------------------------------------- upstreams
P_PRIMARY=$((BASE_PORT + 1)); P_BASELINE=$((BASE_PORT + 2)); P_CANARY=$((BASE_PORT + 3))
P_SLOW_B=$((BASE_PORT + 4)); P_SLOW_C=$((BASE_PORT + 5)); P_H1=$((BASE_PORT + 6))
P_H1_B=$((BASE_PORT + 7)); P_H1_C=$((BASE_PORT + 8))
start_model() { # port args...
  local port=$1; shift
  taskset -c "$LOAD_CPU" "$GRPC_MODEL" serve "$port" "$@" >"$WORK/model-$port.log" 2>&1 &
  PIDS+=($!)
  eval "PID_model_$port=$!"
}
start_model "$P_PRIMARY"
start_model "$P_BASELINE"
start_model "$P_CANARY" --shift 0.01
start_model "$P_SLOW_B" --delay-ms 50
start_model "$P_SLOW_C" --delay-ms 50 --shift 0.01
"$GRPC_MODEL" request "$WORK/req.bin"

start_nginx() { # name cpu http-body
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
  http2_max_concurrent_streams 1024;
$body
}
EOF
  taskset -c "$cpu" "$NGINX" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" \
    >"$dir/logs/stdout.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$name=$!"
}
# HTTP/1.1 model answers for shadowgate's required `url`s and the memory run's wrk load.
python3 "$HERE/make_body.py" 0 >"$WORK/body_baseline.json"
python3 "$HERE/make_body.py" 1 >"$WORK/body_canary.json"
h1_server() { # port body-file
  printf '  server { listen 127.0.0.1:%s reuseport backlog=4096; location / { default_type application/json; return 200 '"'"'%s'"'"'; } }\n' "$1" "$(cat "$2")"
}
start_nginx up_h1 "$LOAD_CPU" "$(h1_server "$P_H1" "$WORK/body_baseline.json")
$(h1_server "$P_H1_B" "$WORK/body_baseline.json")
$(h1_server "$P_H1_C" "$WORK/body_canary.json")"

# ---------------------------------------------------------------- contestants
declare -A PORT DESC ADMIN
PORT[direct]=$P_PRIMARY; eval "PID_direct=\$PID_model_$P_PRIMARY"
DESC[direct]="model server directly (its own CPU)"

NG_UPSTREAMS="
  upstream g_primary  { server 127.0.0.1:$P_PRIMARY;  keepalive 64; }
  upstream g_baseline { server 127.0.0.1:$P_BASELINE; keepalive 64; }
  upstream g_canary   { server 127.0.0.1:$P_CANARY;   keepalive 64; }
  split_clients \"\${request_id}\" \$sampled { 10% 1; * \"\"; }"
nginx_grpc() { # port mirror(none|10)
  local mirrors="" locations=""
  if [[ $2 == 10 ]]; then
    mirrors="mirror /_baseline; mirror /_canary; mirror_request_body on;"
    for side in baseline canary; do
      # The subrequest's URI is /_$side; `rewrite ... break` sends the call's own path.
      locations+="
    location = /_$side {
      internal;
      if (\$sampled = \"\") { return 204; }
      rewrite ^ $METHOD_PATH break;
      grpc_set_header X-Request-Id \$request_id;
      grpc_pass grpc://g_$side;
    }"
    done
  fi
  cat <<EOF
$NG_UPSTREAMS
  server {
    listen 127.0.0.1:$1 http2 backlog=4096;
    location / {
      $mirrors
      grpc_set_header X-Request-Id \$request_id;
      grpc_pass grpc://g_primary;
    }$locations
  }
EOF
}
start_nginx ng_plain "$PROXY_CPU" "$(nginx_grpc $((BASE_PORT + 10)) none)"
PORT[ng_plain]=$((BASE_PORT + 10)); DESC[ng_plain]="nginx grpc_pass (keep-alive upstream)"
start_nginx ng_m10 "$PROXY_CPU" "$(nginx_grpc $((BASE_PORT + 11)) 10)"
PORT[ng_m10]=$((BASE_PORT + 11)); DESC[ng_m10]="nginx mirror x2 + split_clients 10%, grpc_pass"

start_shadowgate() { # name port admin sample_rate baseline_h2 canary_h2 max_in_flight [binary]
  local name=$1 dir="$WORK/sg-$1" bin=${8:-$SHADOWGATE}
  mkdir -p "$dir"
  cat >"$dir/shadowgate.toml" <<EOF
[model]
name = "bench"
version = "v2"
[listen]
proxy = "127.0.0.1:$2"
admin = "127.0.0.1:$3"
[primary]
url = "http://127.0.0.1:$P_H1"
http2_url = "h2c://127.0.0.1:$P_PRIMARY"
[shadow]
sample_rate = $4
max_per_second = 0
max_in_flight = $7
timeout = "2s"
self_similarity_rate = 0.0
grpc_methods = ["$METHOD_PATH"]
[shadow.baseline]
url = "http://127.0.0.1:$P_H1_B"
http2_url = "h2c://127.0.0.1:$5"
version = "v1"
[shadow.canary]
url = "http://127.0.0.1:$P_H1_C"
http2_url = "h2c://127.0.0.1:$6"
version = "v2"
[limits]
shutdown_grace = "2s"
EOF
  SHADOWGATE_WORKER_THREADS=1 taskset -c "$PROXY_CPU" "$bin" serve --config "$dir/shadowgate.toml" \
    >"$dir/stdout.log" 2>"$dir/stderr.log" &
  PIDS+=($!)
  eval "PID_$name=$!"
  PORT[$name]=$2; ADMIN[$name]=$3
}
start_shadowgate sg_plain $((BASE_PORT + 20)) $((BASE_PORT + 40)) 0.0 "$P_BASELINE" "$P_CANARY" 64
DESC[sg_plain]="shadowgate, primary.http2_url, sampling off"
start_shadowgate sg_m10 $((BASE_PORT + 21)) $((BASE_PORT + 41)) 0.1 "$P_BASELINE" "$P_CANARY" 64
DESC[sg_m10]="shadowgate, 10% to baseline+canary (h2c)"
start_shadowgate sg_slow $((BASE_PORT + 22)) $((BASE_PORT + 42)) 1.0 "$P_SLOW_B" "$P_SLOW_C" 256
DESC[sg_slow]="shadowgate, 100% to baseline+canary answering after 50 ms"
if [[ -n $SHADOWGATE_B ]]; then
  start_shadowgate sgB_plain $((BASE_PORT + 24)) $((BASE_PORT + 44)) 0.0 "$P_BASELINE" "$P_CANARY" 64 "$SHADOWGATE_B"
  DESC[sgB_plain]="shadowgate B ($SHADOWGATE_B), sampling off"
  start_shadowgate sgB_m10 $((BASE_PORT + 25)) $((BASE_PORT + 45)) 0.1 "$P_BASELINE" "$P_CANARY" 64 "$SHADOWGATE_B"
  DESC[sgB_m10]="shadowgate B ($SHADOWGATE_B), 10% to baseline+canary (h2c)"
fi
PORT[sg_ctl]=${PORT[sg_plain]}; PID_sg_ctl=$PID_sg_plain
DESC[sg_ctl]="sg_plain while the 50 ms model servers take sg_slow's shadow calls directly (control)"

# ---------------------------------------------------------------- checks with a real client
grpc_check() { # name -> 0 if HTTP 200, grpc-status 0 in trailers, a decodable answer
  "$GRPC_MODEL" check "http://127.0.0.1:${PORT[$1]}" "check-$1-$RANDOM" >"$WORK/check.txt" 2>&1
}
CHECKS="$OUT_DIR/raw/checks.txt"
for name in direct ng_plain ng_m10 sg_plain sg_m10 sg_slow ${SHADOWGATE_B:+sgB_plain sgB_m10}; do
  for _ in $(seq 100); do grpc_check "$name" && break; sleep 0.1; done
  grpc_check "$name" || die "$name: $(cat "$WORK/check.txt")"
  { echo "== $name (${DESC[$name]}), before the rounds: grpc_model check"; cat "$WORK/check.txt"; } >>"$CHECKS"
done
log "every contestant answers HTTP 200 with grpc-status 0 in the trailers (grpc_model check)"

# ---------------------------------------------------------------- measurement
proc_ticks() { # pid: utime+stime of the process and its children (nginx's worker)
  local pid=$1 t=0 c
  for c in $pid $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    [[ -r /proc/$c/stat ]] || continue
    t=$((t + $(sed 's/^.*) //' "/proc/$c/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}
model_calls() { # port -> "calls connections bad" (bad: other paths + undecodable bodies;
  # the /__count call's own connection is subtracted)
  "$GRPC_MODEL" count "http://127.0.0.1:$1" |
    awk '/^header x-calls:/ {a = $3} /^header x-connections:/ {b = $3} /^header x-(other-paths|invalid):/ {c += $3} END {print a, b - 1, c + 0}'
}
counters() { # primary baseline canary slow_b slow_c (calls), primary connections, other paths
  local p b c sb sc
  p=($(model_calls "$P_PRIMARY")); b=($(model_calls "$P_BASELINE")); c=($(model_calls "$P_CANARY"))
  sb=($(model_calls "$P_SLOW_B")); sc=($(model_calls "$P_SLOW_C"))
  echo "${p[0]} ${b[0]} ${c[0]} ${sb[0]} ${sc[0]} ${p[1]} $((p[2] + b[2] + c[2] + sb[2] + sc[2]))"
}

RUNS="$OUT_DIR/runs.csv"
echo "group,round,name,calls_per_s,done,non2xx,failed,cpu_us_per_call,p50_ms,p99_ms,primary,baseline,canary,slow_b,slow_c,primary_conns,bad_model_calls" >"$RUNS"

# One h2load run; appends to runs.csv. $5.. are h2load's load options.
measure() { # group round name duration load-options...
  local group=$1 round=$2 name=$3 dur=$4; shift 4
  local pidvar="PID_$name" pid port=${PORT[$name]} c0 c1 out before after
  pid=${!pidvar}
  before=($(counters))
  rm -f "$WORK/lat.tsv" # h2load appends to its --log-file
  local bg=()
  if [[ $name == sg_ctl ]]; then
    for p in "$P_SLOW_B" "$P_SLOW_C"; do
      # Streams enough for the rate at 50 ms a call (-m 1 would cap a connection at 20/s).
      taskset -c "$LOAD_CPU" h2load -t1 -c "$SLOW_CONNS" -m 16 --rps "$SLOW_RPS" -D "$dur" -d "$WORK/req.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$p$METHOD_PATH" >/dev/null 2>&1 &
      bg+=($!)
    done
  fi
  c0=$(proc_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" h2load -t1 "$@" -D "$dur" -d "$WORK/req.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' --log-file "$WORK/lat.tsv" \
    "http://127.0.0.1:$port$METHOD_PATH" 2>&1) || die "h2load against $name: $out"
  sleep 0.3 # shadow work still running after the client run ends is the proxy's cost too
  c1=$(proc_ticks "$pid")
  ((${#bg[@]} == 0)) || wait "${bg[@]}" || true
  after=($(counters))
  [[ $round == warm ]] && return 0
  { echo "== $group round $round $name: h2load -t1 $* -D $dur ..."; echo "$out"; } >>"$OUT_DIR/raw/h2load-$group.txt"
  local done non2xx failed rps d deltas="" i
  done=$(awk '/^requests:/ {print $8}' <<<"$out")
  failed=$(awk '/^requests:/ {print $12 + $14}' <<<"$out")
  non2xx=$(awk '/^status codes:/ {print $5 + $7 + $9}' <<<"$out")
  [[ -n $done && $done -gt 0 ]] || die "h2load against $name: $out"
  rps=$(awk -v n="$done" -v d="$dur" 'BEGIN {printf "%.0f", n / d}')
  for i in 0 1 2 3 4 5 6; do d=$((after[i] - before[i])); deltas+=",$d"; done
  local cpu p50 p99
  cpu=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$done" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  read -r p50 p99 < <(awk -F'\t' '{print $3}' "$WORK/lat.tsv" | sort -n |
    awk '{v[NR] = $1} END {printf "%.3f %.3f\n", v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000}')
  echo "$group,$round,$name,$rps,$done,$non2xx,$failed,$cpu,$p50,$p99$deltas" >>"$RUNS"
  log "  $group $name: $rps calls/s, $cpu µs CPU/call, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, failed $failed, model calls p/b/c/slow_b/slow_c,primary conns,bad calls ${deltas#,}"
}
group() { # group names... (uses LOADOPTS)
  local g=$1 name r; shift
  log "group $g: ${LOADOPTS[*]}, $REPS rounds of $*"
  for name in "$@"; do measure "$g" warm "$name" 1 "${LOADOPTS[@]}"; done
  for r in $(seq "$REPS"); do
    for name in "$@"; do measure "$g" "$r" "$name" "$DURATION" "${LOADOPTS[@]}"; done
  done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# The VM's state: the cost of a bare syscall (perf's getppid loop). Days when every
# contestant costs ~2x per call came with dearer syscalls, which flatters the sidecar's
# fewer syscalls against nginx's; the figure lets a later reader tell such a day.
SYSCALL_NS=n/a
if command -v perf >/dev/null; then
  SYSCALL_NS=$(perf bench syscall basic 2>/dev/null | awk '/usecs\/op/ {printf "%.0f", $1 * 1000}')
  SYSCALL_NS=${SYSCALL_NS:-n/a}
fi
for g in $GROUPS_TO_RUN; do
  case $g in
    sat) LOADOPTS=(-c "$CONNS" -m "$STREAMS"); group sat direct ng_plain sg_plain ng_m10 sg_m10 ${SHADOWGATE_B:+sgB_plain sgB_m10} ;;
    rate) LOADOPTS=(-c "$RATE_CONNS" -m 1 --rps "$RATE_RPS"); group rate direct ng_plain sg_plain ng_m10 sg_m10 ${SHADOWGATE_B:+sgB_plain sgB_m10} ;;
    slow) LOADOPTS=(-c "$SLOW_CONNS" -m 1 --rps "$SLOW_RPS"); group slow sg_plain sg_ctl sg_slow ;;
    *) die "unknown group $g" ;;
  esac
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

for name in direct ng_plain ng_m10 sg_plain sg_m10 sg_slow; do
  grpc_check "$name" || die "$name after the rounds: $(cat "$WORK/check.txt")"
  { echo "== $name, after the rounds: grpc_model check"; cat "$WORK/check.txt"; } >>"$CHECKS"
done
for name in sg_plain sg_m10 sg_slow; do
  { echo "== $name /metrics after the rounds (selected)"
    curl -fsS "http://127.0.0.1:${ADMIN[$name]}/metrics" |
      grep -E '^(model_inference_errors_total|model_embedding_pairs_total|shadowgate_shadow_requests_total|shadowgate_shadow_(dropped|skipped)[a-z_]*|model_requests_total)' || true
  } >>"$CHECKS"
done
for name in ng_plain ng_m10; do
  { echo "== $name error log"; cat "$WORK/nginx-$name/logs/error.log"; } >>"$CHECKS"
done

# ---------------------------------------------------------------- memory
MEM="$OUT_DIR/memory.csv"
if ((MEM_SECONDS > 0)); then
  start_shadowgate sg_mem $((BASE_PORT + 23)) $((BASE_PORT + 43)) "$MEM_SAMPLE_RATE" "$P_BASELINE" "$P_CANARY" 64
  for _ in $(seq 100); do grpc_check sg_mem && break; sleep 0.1; done
  grpc_check sg_mem || die "sg_mem: $(cat "$WORK/check.txt")"
  echo "seconds,rss_kib,hwm_kib" >"$MEM"
  mem_sample() { awk -v t="$1" '/^VmRSS/ {r = $2} /^VmHWM/ {h = $2} END {print t "," r "," h}' "/proc/$PID_sg_mem/status" >>"$MEM"; }
  # Where the resident memory is, by kind of mapping ([heap]: the main malloc arena;
  # anon: other arenas, thread stacks, large allocations; file: the binary and libraries),
  # with the mappings counted: a growth that is all arenas and mappings is the allocator's.
  echo "seconds,heap_kib,anon_kib,file_kib,anon_mappings" >"$OUT_DIR/memory-maps.csv"
  maps_sample() {
    awk -v t="$1" '/^[0-9a-f]+-[0-9a-f]+ / {kind = ($6 == "[heap]") ? "heap" : ($6 == "" ? "anon" : "file"); if (kind == "anon") n++}
      /^Rss:/ {rss[kind] += $2}
      END {print t "," rss["heap"] + 0 "," rss["anon"] + 0 "," rss["file"] + 0 "," n + 0}' \
      "/proc/$PID_sg_mem/smaps" >>"$OUT_DIR/memory-maps.csv"
  }
  log "memory: ${MEM_SECONDS}s of h2load (-c $CONNS -m $STREAMS) + wrk (-c $CONNS) on shadowgate at sample_rate $MEM_SAMPLE_RATE"
  mem_sample 0
  taskset -c "$LOAD_CPU" h2load -t1 -c "$CONNS" -m "$STREAMS" -D "$MEM_SECONDS" -d "$WORK/req.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:${PORT[sg_mem]}$METHOD_PATH" >"$OUT_DIR/raw/memory-h2load.txt" 2>&1 &
  H2PID=$!
  REQ_BODY='{"input":"The quick brown fox jumps over the lazy dog while the model computes an embedding.","model":"m"}'
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'$REQ_BODY'" >"$WORK/post.lua"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${MEM_SECONDS}s" -s "$WORK/post.lua" \
    "http://127.0.0.1:${PORT[sg_mem]}/v1/embeddings" >"$OUT_DIR/raw/memory-wrk.txt" 2>&1 &
  WRKPID=$!
  for t in $(seq 5 5 "$MEM_SECONDS"); do
    sleep 5; mem_sample "$t"
    ((t % 30)) || maps_sample "$t"
  done
  wait "$H2PID" "$WRKPID" || true
  { echo "== sg_mem /metrics after the memory run (selected)"
    curl -fsS "http://127.0.0.1:${ADMIN[sg_mem]}/metrics" |
      grep -E '^(model_inference_errors_total|model_embedding_pairs_total|shadowgate_shadow_requests_total|model_requests_total|shadowgate_shadow_in_flight|shadowgate_feedback_[a-z_]*)' || true
  } >>"$CHECKS"
fi

# ---------------------------------------------------------------- summary
python3 - "$RUNS" "$MEM" "$OUT_DIR/results.md" "$LOAD_START" "$LOAD_END" "$(git -C "$ROOT" rev-parse --short HEAD)" "$SYSCALL_NS" "$SHADOWGATE" "$SHADOWGATE_B" <<'EOF'
import csv, os, statistics, sys
runs, mem, out, load0, load1, commit, syscall_ns, sg_a, sg_b = sys.argv[1:10]
rows = list(csv.DictReader(open(runs)))
def cell(g, n, k):
    return [float(r[k]) for r in rows if r["group"] == g and r["name"] == n]
def med(v): return statistics.median(v) if v else float("nan")
lines = [f"Run of commit {commit}; load average {load0} at start, {load1} at end; "
         f"a bare syscall (perf bench syscall basic) {syscall_ns} ns; shadowgate {sg_a}"
         + (f", shadowgate B {sg_b}" if sg_b else "") + ".", ""]
lines += ["| group | contestant | calls/s | CPU µs/call (runs) | p50 ms | p99 ms | model calls per client call p/b/c/slow | non-2xx+failed |",
          "|---|---|---:|---|---:|---:|---|---:|"]
groups = []
for r in rows:
    if (r["group"], r["name"]) not in groups: groups.append((r["group"], r["name"]))
for g, n in groups:
    sel = [r for r in rows if r["group"] == g and r["name"] == n]
    done = sum(float(r["done"]) for r in sel)
    per = lambda k: sum(float(r[k]) for r in sel) / done
    cpu = cell(g, n, "cpu_us_per_call")
    lines.append(f"| {g} | {n} | {med(cell(g, n, 'calls_per_s')):.0f} | {med(cpu):.2f} ({', '.join(f'{c:.2f}' for c in cpu)}) | "
                 f"{med(cell(g, n, 'p50_ms')):.3f} | {med(cell(g, n, 'p99_ms')):.3f} | "
                 f"{per('primary'):.3f}/{per('baseline'):.3f}/{per('canary'):.3f}/{(per('slow_b') + per('slow_c')) / 2:.3f} | "
                 f"{sum(int(r['non2xx']) + int(r['failed']) for r in sel)} |")
def ratio(g, a, b, k):
    ra = {r["round"]: float(r[k]) for r in rows if r["group"] == g and r["name"] == a}
    rb = {r["round"]: float(r[k]) for r in rows if r["group"] == g and r["name"] == b}
    v = [ra[x] / rb[x] for x in ra if x in rb and rb[x] > 0]
    if not v: return None
    return f"{med(v):.2f}× (rounds {min(v):.2f}–{max(v):.2f}; medians {med(list(ra.values())):.2f} vs {med(list(rb.values())):.2f})"
lines += ["", "Ratios, per round (same round, interleaved), median and range:", ""]
for g, a, b, k, what in [
    ("sat", "sg_plain", "ng_plain", "cpu_us_per_call", "CPU/call, shadowgate plain vs nginx grpc_pass, saturation"),
    ("rate", "sg_plain", "ng_plain", "cpu_us_per_call", "CPU/call, shadowgate plain vs nginx grpc_pass, fixed rate"),
    ("sat", "sg_m10", "ng_m10", "cpu_us_per_call", "CPU/call, shadowgate 10% vs nginx mirror 10%, saturation"),
    ("rate", "sg_m10", "ng_m10", "cpu_us_per_call", "CPU/call, shadowgate 10% vs nginx mirror 10%, fixed rate"),
    ("sat", "sg_m10", "sg_plain", "cpu_us_per_call", "CPU/call, shadowgate 10% vs its own plain, saturation"),
    ("rate", "sg_m10", "sg_plain", "cpu_us_per_call", "CPU/call, shadowgate 10% vs its own plain, fixed rate"),
    ("sat", "ng_m10", "ng_plain", "cpu_us_per_call", "CPU/call, nginx mirror 10% vs nginx grpc_pass, saturation"),
    ("sat", "sgB_plain", "ng_plain", "cpu_us_per_call", "CPU/call, shadowgate B plain vs nginx grpc_pass, saturation"),
    ("sat", "sgB_m10", "ng_m10", "cpu_us_per_call", "CPU/call, shadowgate B 10% vs nginx mirror 10%, saturation"),
    ("sat", "sg_plain", "sgB_plain", "cpu_us_per_call", "CPU/call, shadowgate plain vs shadowgate B plain, saturation"),
    ("sat", "sg_m10", "sgB_m10", "cpu_us_per_call", "CPU/call, shadowgate 10% vs shadowgate B 10%, saturation"),
    ("rate", "sgB_plain", "ng_plain", "cpu_us_per_call", "CPU/call, shadowgate B plain vs nginx grpc_pass, fixed rate"),
    ("rate", "sgB_m10", "ng_m10", "cpu_us_per_call", "CPU/call, shadowgate B 10% vs nginx mirror 10%, fixed rate"),
    ("rate", "sg_plain", "sgB_plain", "cpu_us_per_call", "CPU/call, shadowgate plain vs shadowgate B plain, fixed rate"),
    ("rate", "sg_m10", "sgB_m10", "cpu_us_per_call", "CPU/call, shadowgate 10% vs shadowgate B 10%, fixed rate"),
    ("sat", "sg_plain", "ng_plain", "p50_ms", "client p50, shadowgate plain vs nginx, saturation"),
    ("sat", "sg_plain", "ng_plain", "p99_ms", "client p99, shadowgate plain vs nginx, saturation"),
    ("rate", "sg_plain", "ng_plain", "p50_ms", "client p50, shadowgate plain vs nginx, fixed rate"),
    ("rate", "sg_plain", "ng_plain", "p99_ms", "client p99, shadowgate plain vs nginx, fixed rate"),
    ("slow", "sg_slow", "sg_plain", "p50_ms", "client p50, shadowgate 100% to 50 ms targets vs no shadow"),
    ("slow", "sg_slow", "sg_plain", "p99_ms", "client p99, shadowgate 100% to 50 ms targets vs no shadow"),
    ("slow", "sg_slow", "sg_ctl", "p50_ms", "client p50, shadowgate 100% to 50 ms targets vs no shadow with the targets' load on the load core (control)"),
    ("slow", "sg_slow", "sg_ctl", "p99_ms", "client p99, shadowgate 100% to 50 ms targets vs the control"),
    ("slow", "sg_slow", "sg_plain", "cpu_us_per_call", "CPU/call, shadowgate 100% to 50 ms targets vs no shadow"),
]:
    r = ratio(g, a, b, k)
    if r: lines.append(f"- {what}: {r}")
if os.path.exists(mem) and os.path.getsize(mem) > 30:
    m = [(float(r["seconds"]), float(r["rss_kib"]) / 1024, float(r["hwm_kib"]) / 1024) for r in csv.DictReader(open(mem))]
    def slope(pts):
        n = len(pts); mx = sum(p[0] for p in pts) / n; my = sum(p[1] for p in pts) / n
        sxx = sum((p[0] - mx) ** 2 for p in pts)
        return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx * 60 if sxx else 0.0
    loaded = [p for p in m if p[0] > 0]
    half = [p for p in loaded if p[0] >= m[-1][0] / 2]
    lines += ["", f"Memory (shadowgate, mixed h2c + HTTP/1.1 load, {m[-1][0]:.0f} s, RSS every 5 s): "
              f"idle {m[0][1]:.1f} MiB, first loaded sample {loaded[0][1]:.1f} MiB, end {m[-1][1]:.1f} MiB, "
              f"max {max(p[1] for p in m):.1f} MiB (VmHWM {m[-1][2]:.1f} MiB); slope {slope(loaded):+.3f} MiB/min "
              f"over the run, {slope(half):+.3f} MiB/min over its second half."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "results: $OUT_DIR/results.md, $RUNS, raw outputs in $OUT_DIR/raw"
