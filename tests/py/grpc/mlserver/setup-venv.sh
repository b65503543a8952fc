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
check() { "$VENV/bin/python" -c 'import mlserver, grpc_tools, numpy' && "$VENV/bin/python" -c 'import tritonclient.grpc'; }
if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
  echo "venv ready: $VENV"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
# grpcio-tools 1.81 is the newest whose protobuf range meets MLServer's (<7).
timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check \
  'mlserver==1.7.1' 'tritonclient[grpc]==2.73.0' 'grpcio-tools==1.81.1' 'protobuf>=6,<7' numpy
check
echo "venv ready: $VENV"
