#!/usr/bin/env bash
# Sustained load through the real sidecar (sampling 10 %, shadow log on) for SECONDS
# (default 3600), printing RSS, open fds, shadow-log queue depth and dropped rows every
# 5 s, and failing if RSS or fds grow after warm-up. CI runs the same test for 120 s.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS="${1:-3600}" cargo nextest run --release --test it --no-capture soak::
