#!/usr/bin/env bash
# User-space instructions per unary gRPC call through shadowgate, counted by valgrind's
# callgrind (no cache simulation): a figure that does not move with the VM's noise or
# the price of its syscalls, for comparing builds where CPU time cannot resolve a few
# per cent. The kernel's share (syscalls, wake-ups) is not in it.
#
#   cargo build --release --bin shadowgate --example grpc_model
#   bash benches/grpc_instructions.sh                       # this build, sampling 0 and 0.1
#   SHADOWGATE=/path/to/other/build bash benches/grpc_instructions.sh
#
# Setup as benches/grpc_vs_nginx.sh's sg_plain / sg_m10 (one worker thread; three
# `grpc_model serve` model servers, the canary shifted), CALLS (20000) calls from h2load
# (16 connections x 4 streams) after 2000 warm-up calls; callgrind's counters are zeroed
# after the warm-up and dumped after the run; instructions / calls.
# Environment: SHADOWGATE, GRPC_MODEL, CALLS, RATES ("0.0 0.1"), BASE_PORT (19700),
# KEEP_PROFILE (a directory: callgrind's output files are copied there, for
# `callgrind_annotate --inclusive=yes FILE` or `--tree=caller`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SHADOWGATE=${SHADOWGATE:-$TARGET/release/shadowgate}
GRPC_MODEL=${GRPC_MODEL:-$TARGET/release/examples/grpc_model}
CALLS=${CALLS:-20000}
RATES=${RATES:-0.0 0.1}
B=${BASE_PORT:-19700}
METHOD=/inference.GRPCInferenceService/ModelInfer
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
command -v h2load >/dev/null || apt-get install -y -qq nghttp2-client >/dev/null
WORK=$(mktemp -d /tmp/shadowgate-instr.XXXXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; [[ -z ${KEEP_PROFILE:-} ]] || cp "$WORK"/cg.out.* "$KEEP_PROFILE"/ 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
for p in 1 2 3; do
  "$GRPC_MODEL" serve $((B + p)) $([[ $p == 3 ]] && echo --shift 0.01) >/dev/null 2>&1 &
  PIDS+=($!)
done
"$GRPC_MODEL" request "$WORK/req.bin"
h2() {
  h2load -t1 -c 16 -m 4 -n "$1" -d "$WORK/req.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$((B + 20))$METHOD" 2>&1 | awk '/^requests:/ {print $8}'
}
for rate in $RATES; do
  cat >"$WORK/sg.toml" <<T
[model]
name = "bench"
version = "v2"
[listen]
proxy = "127.0.0.1:$((B + 20))"
admin = "127.0.0.1:$((B + 40))"
[primary]
url = "http://127.0.0.1:9"
http2_url = "h2c://127.0.0.1:$((B + 1))"
[shadow]
sample_rate = $rate
max_per_second = 0
max_in_flight = 64
timeout = "2s"
self_similarity_rate = 0.0
grpc_methods = ["$METHOD"]
[shadow.baseline]
url = "http://127.0.0.1:9"
http2_url = "h2c://127.0.0.1:$((B + 2))"
version = "v1"
[shadow.canary]
url = "http://127.0.0.1:9"
http2_url = "h2c://127.0.0.1:$((B + 3))"
version = "v2"
T
  rm -f "$WORK"/cg.out.*
  SHADOWGATE_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out.%p" -q \
    "$SHADOWGATE" serve --config "$WORK/sg.toml" >"$WORK/sg.log" 2>&1 &
  sg=$!
  for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$((B + 20))") 2>/dev/null && break; sleep 0.2; done
  h2 2000 >/dev/null
  callgrind_control -z "$sg" >/dev/null 2>&1
  n=$(h2 "$CALLS")
  sleep 1 # shadow calls still running after the client's last answer are the sidecar's work too
  callgrind_control -d "$sg" >/dev/null 2>&1
  kill "$sg"; wait "$sg" 2>/dev/null || true
  ir=$(cat "$WORK"/cg.out.* | awk '/^summary:/ {s += $2} END {print s}')
  awk -v ir="$ir" -v n="$n" -v r="$rate" -v b="$SHADOWGATE" \
    'BEGIN {printf "sample_rate %s: %.0f instructions per call (%d calls; %s)\n", r, ir / n, n, b}'
done
