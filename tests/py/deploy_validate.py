"""Offline checks of deploy/ that need no cluster (run by scripts/validate-deploy.sh).

- Core Kubernetes objects against the Kubernetes OpenAPI schemas, strictly (unknown
  fields are errors), with kubernetes-validate; the Rollout's pod template too, inside a
  Deployment of the same selector and template. (The custom resources are checked by
  tests/js/deploy_validate_crds.mjs.)
- The kustomization lists every manifest and nothing missing.
- References hold: Rollout -> AnalysisTemplates, their required args, Services, Ingress,
  ConfigMap, claims; Services' and PodMonitor's ports and selectors -> the pod.
- The ConfigMap's shadowgate.toml passes `shadowgate check-config` (SHADOWGATE_BIN), its
  shadow targets are the Services' model port, and its [gates] equal the templates'.
- Every AnalysisTemplate metric states both conditions, guards `len(result)` so that an
  empty result is Inconclusive rather than an Error, has interval, count, failureLimit
  and inconclusiveLimit, and failureLimit + inconclusiveLimit < count, so that a run of
  Inconclusive measurements can never add up to Successful.
- The PrometheusRule's groups equal deploy/alerts/shadowgate-rules.yml (promtool's input;
  `deploy_validate.py --write-rules` regenerates it from the PrometheusRule).
- The Grafana dashboard parses, its panel ids are unique, every target has an expression
  and uses only defined variables.
Prints one line per check and exits 1 if any failed.
"""

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = os.environ.get("SHADOWGATE_K8S_VERSION", "1.30.0")
CORE_API = {"v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "policy/v1"}

failures = []


def check(ok, what, why=""):
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {why}"))
    if not ok:
        failures.append(what)


def load_all():
    docs = []
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        if {"spark", "s3"} & set(path.relative_to(DEPLOY).parts):
            continue
        for i, d in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(d, dict) and "kind" in d and "apiVersion" in d:
                docs.append((path, i, d))
    return docs


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for _, _, d in docs if d["kind"] == kind}


def validate_core(docs):
    for path, i, d in docs:
        if d["apiVersion"] not in CORE_API:
            continue
        what = f"{path.relative_to(ROOT)}#{i} {d['kind']}/{d['metadata']['name']} (Kubernetes {K8S_VERSION}, strict)"
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            check(True, what)
        except Exception as e:  # noqa: BLE001 - report every kind of validation error
            check(False, what, str(e).splitlines()[0][:400])
    for name, r in by_kind(docs, "Rollout").items():
        # The pod template of a Rollout is a core PodTemplateSpec: validate it in the
        # Deployment it replaces.
        dep = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"selector": r["spec"]["selector"], "template": r["spec"]["template"]},
        }
        what = f"Rollout/{name} pod template as a Deployment (Kubernetes {K8S_VERSION}, strict)"
        try:
            kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
            check(True, what)
        except Exception as e:  # noqa: BLE001
            check(False, what, str(e).splitlines()[0][:400])


def check_kustomization(docs):
    k = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = {(DEPLOY / r).resolve() for r in k.get("resources", [])}
    missing = [str(p) for p in listed if not p.exists()]
    check(not missing, "kustomization resources exist", f"missing {missing}")
    manifests = {p.resolve() for p, _, d in docs if d["kind"] != "Kustomization"}
    unlisted = sorted(str(p.relative_to(DEPLOY)) for p in manifests - listed)
    check(not unlisted, "kustomization lists every manifest", f"not listed: {unlisted}")


def check_references(docs):
    rollouts = by_kind(docs, "Rollout")
    templates = by_kind(docs, "AnalysisTemplate")
    services = by_kind(docs, "Service")
    ingresses = by_kind(docs, "Ingress")
    configmaps = by_kind(docs, "ConfigMap")
    claims = by_kind(docs, "PersistentVolumeClaim")
    for name, r in rollouts.items():
        canary = r["spec"]["strategy"]["canary"]
        pod = r["spec"]["template"]
        labels = pod["metadata"]["labels"]
        ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        for role in ("stableService", "canaryService"):
            svc = services.get(canary.get(role))
            check(svc is not None, f"Rollout/{name} {role} {canary.get(role)} exists")
            if svc:
                sel = svc["spec"]["selector"]
                check(all(labels.get(k) == v for k, v in sel.items()), f"Service/{svc['metadata']['name']} selects the Rollout's pods")
                for p in svc["spec"]["ports"]:
                    check(p["targetPort"] in ports or p["targetPort"] in ports.values(),
                          f"Service/{svc['metadata']['name']} port {p['name']} targets a container port", f"{p['targetPort']} not in {ports}")
        nginx = canary.get("trafficRouting", {}).get("nginx")
        if nginx:
            ing = ingresses.get(nginx["stableIngress"])
            check(ing is not None, f"Rollout/{name} stableIngress {nginx['stableIngress']} exists")
            if ing:
                backends = {p["backend"]["service"]["name"] for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]}
                check(backends == {canary["stableService"]}, f"Ingress/{ing['metadata']['name']} routes to the stable Service", str(backends))
        weights = []
        for step in canary["steps"]:
            if "setWeight" in step:
                weights.append(step["setWeight"])
            if "analysis" in step:
                passed = {a["name"] for a in step["analysis"].get("args", [])}
                for t in step["analysis"]["templates"]:
                    tpl = templates.get(t["templateName"])
                    check(tpl is not None, f"Rollout/{name} uses AnalysisTemplate {t['templateName']}, which exists")
                    if tpl:
                        need = {a["name"] for a in tpl["spec"].get("args", []) if "value" not in a and "valueFrom" not in a}
                        check(need <= passed, f"Rollout/{name} passes every arg {t['templateName']} needs", f"missing {need - passed}")
        check(weights == [1, 5, 20, 50, 100], f"Rollout/{name} stages are 1%, 5%, 20%, 50%, 100%", str(weights))
        check(any("pause" in s and not s["pause"] for s in canary["steps"]), f"Rollout/{name} waits for manual approval")
        for v in pod["spec"].get("volumes", []):
            if "configMap" in v:
                check(v["configMap"]["name"] in configmaps, f"Rollout/{name} volume {v['name']}: ConfigMap exists")
            if "persistentVolumeClaim" in v:
                check(v["persistentVolumeClaim"]["claimName"] in claims, f"Rollout/{name} volume {v['name']}: claim exists")
        side = next(c for c in pod["spec"]["containers"] if c["name"] == "shadowgate")
        env = {e["name"]: e for e in side.get("env", [])}
        version_ref = env.get("SHADOWGATE_MODEL__VERSION", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
        m = re.fullmatch(r"metadata\.labels\['(.+)'\]", version_ref)
        check(bool(m) and m.group(1) in labels, f"Rollout/{name} sidecar version comes from a pod label (downward API)", version_ref)
        check("POD_NAME" in env, f"Rollout/{name} sidecar gets POD_NAME")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            got = side.get(probe, {}).get("httpGet", {})
            check(got.get("path") == path and got.get("port") in ("admin", 9090), f"Rollout/{name} sidecar {probe} on {path} of the admin port", str(got))
    for name, pm in by_kind(docs, "PodMonitor").items():
        sel = pm["spec"]["selector"]["matchLabels"]
        for rname, r in rollouts.items():
            labels = r["spec"]["template"]["metadata"]["labels"]
            ports = {p["name"] for c in r["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            check(all(labels.get(k) == v for k, v in sel.items()), f"PodMonitor/{name} selects Rollout/{rname}'s pods")
            for ep in pm["spec"]["podMetricsEndpoints"]:
                check(ep["port"] in ports, f"PodMonitor/{name} scrapes port {ep['port']}, which the pod has")


def check_config(docs):
    cm = by_kind(docs, "ConfigMap").get("shadowgate")
    check(cm is not None, "ConfigMap/shadowgate exists")
    if cm is None:
        return
    toml_text = cm["data"]["shadowgate.toml"]
    binary = os.environ.get("SHADOWGATE_BIN", str(ROOT / "target/debug/shadowgate"))
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWGATE_")}
    p = subprocess.run([binary, "check-config", f.name], capture_output=True, text=True, env=env)
    os.unlink(f.name)
    check(p.returncode == 0, "ConfigMap/shadowgate shadowgate.toml passes `shadowgate check-config`", p.stderr.strip()[:600])
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return
    cfg = tomllib.loads(toml_text)
    services = by_kind(docs, "Service")
    for side in ("baseline", "canary"):
        url = cfg["shadow"][side]["url"]
        m = re.fullmatch(r"http://([\w-]+):(\d+)", url)
        ok = bool(m) and m.group(1) in services and any(
            p["port"] == int(m.group(2)) and p["targetPort"] == "model" for p in services[m.group(1)]["spec"]["ports"])
        check(ok, f"[shadow.{side}].url {url} is a Service's model port (shadow calls bypass the sidecars)")
    gates = cfg.get("gates", {})
    templates = by_kind(docs, "AnalysisTemplate")
    p99 = gates.get("max_p99", "")
    p99_s = float(p99[:-2]) / 1000 if p99.endswith("ms") else float(p99.rstrip("s") or "nan")
    expect = {
        "shadowgate-error-rate": gates.get("max_error_rate"),
        "shadowgate-latency-p99": p99_s,
        "shadowgate-embedding-drift": gates.get("cosine_threshold"),
        "shadowgate-accuracy-ratio": gates.get("accuracy_ratio"),
        "shadowgate-conversion-ratio": gates.get("conversion_ratio"),
    }
    for tname, value in expect.items():
        t = templates.get(tname)
        conds = " ".join(m.get("successCondition", "") for m in (t or {}).get("spec", {}).get("metrics", []))
        nums = {float(x) for x in re.findall(r"(?<![\w\[])\d+\.\d+|(?<![\w\[])\d+(?![\w\]])", conds)}
        check(value in nums, f"[gates] threshold {value} is the one {tname} uses", f"numbers in its conditions: {sorted(nums)}")
    drift = templates.get("shadowgate-embedding-drift", {})
    conds = " ".join(m.get("successCondition", "") for m in drift.get("spec", {}).get("metrics", []))
    check(str(gates.get("low_similarity_budget")) in conds, "[gates] low_similarity_budget is the one shadowgate-embedding-drift uses")


# The condition language our templates keep to: what tests/py/argo_verdicts.py evaluates.
CONDITION_CHARS = re.compile(r"[^\w\s\.\[\]\(\)<>=!&|+\-*/,]")


def check_templates(docs):
    for name, t in by_kind(docs, "AnalysisTemplate").items():
        for m in t["spec"]["metrics"]:
            what = f"AnalysisTemplate/{name} metric {m['name']}"
            s, f = m.get("successCondition", ""), m.get("failureCondition", "")
            check(bool(s) and bool(f), f"{what} states successCondition and failureCondition",
                  "with one missing, Argo reads the other's negation; with both missing, always Successful")
            for label, c in (("success", s), ("failure", f)):
                check("len(result)" in c, f"{what} {label} condition checks len(result) first",
                      "result[0] of an empty vector is an Error, not Inconclusive")
                check("isNaN(" in c, f"{what} {label} condition says what NaN means")
                check(not CONDITION_CHARS.search(c), f"{what} {label} condition uses the plain expr subset", c)
            for key in ("interval", "count", "failureLimit", "inconclusiveLimit"):
                check(key in m, f"{what} sets {key}")
            if all(k in m for k in ("count", "failureLimit", "inconclusiveLimit")):
                check(int(m["failureLimit"]) + int(m["inconclusiveLimit"]) < int(m["count"]),
                      f"{what}: failureLimit + inconclusiveLimit < count (a run needs at least one success)")
            check("prometheus" in m.get("provider", {}), f"{what} queries Prometheus")


def check_rules():
    pr = yaml.safe_load((DEPLOY / "alerts/prometheusrule.yaml").read_text())
    raw = yaml.safe_load((DEPLOY / "alerts/shadowgate-rules.yml").read_text())
    check(pr["spec"] == raw, "PrometheusRule spec == alerts/shadowgate-rules.yml",
          "edit prometheusrule.yaml and regenerate the raw file (see its header)")
    for g in raw["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            what = f"alert {r['alert']}"
            check("for" in r, f"{what} has a for: duration")
            check(r.get("labels", {}).get("severity") in ("critical", "warning", "info"), f"{what} has a severity")
            ann = r.get("annotations", {})
            check(bool(ann.get("summary")) and "Look at" in ann.get("description", ""),
                  f"{what} has a summary and says where to look")


GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms", "__from", "__to", "datasource"}


def check_dashboard():
    d = json.loads((DEPLOY / "grafana/shadowgate.json").read_text())
    variables = {v["name"] for v in d["templating"]["list"]}
    panels = d["panels"]
    ids = [p["id"] for p in panels]
    check(len(ids) == len(set(ids)), "dashboard panel ids are unique")
    exprs = 0
    for p in panels:
        for t in p.get("targets", []):
            exprs += 1
            e = t.get("expr", "")
            used = set(re.findall(r"\$\{?(\w+)", e))
            check(bool(e) and used <= variables | GRAFANA_BUILTINS,
                  f"dashboard panel '{p['title']}' {t['refId']} has an expression with defined variables", f"{used - variables - GRAFANA_BUILTINS}")
    check(exprs > 0, f"dashboard has {exprs} PromQL targets")


RULES_HEADER = (
    "# Raw Prometheus rules file: the `spec` of prometheusrule.yaml, for a Prometheus without the\n"
    "# Operator (`rule_files:`) and for promtool. Keep identical (scripts/validate-deploy.sh checks).\n"
)


def write_rules():
    """Regenerates alerts/shadowgate-rules.yml from alerts/prometheusrule.yaml."""

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, data):
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    spec = yaml.safe_load((DEPLOY / "alerts/prometheusrule.yaml").read_text())["spec"]
    out = RULES_HEADER + yaml.dump(spec, Dumper=Dumper, sort_keys=False, width=1000, allow_unicode=True)
    (DEPLOY / "alerts/shadowgate-rules.yml").write_text(out)


def json_patch(doc, ops):
    """RFC 6902 add/replace/remove, the operations the overlays use."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            if last == "-":
                node.append(op["value"])
            elif op["op"] == "add":
                node.insert(int(last), op["value"])
            else:
                node[int(last)] = op["value"]
        else:
            if op["op"] == "replace" and last not in node:
                raise KeyError(f"replace of missing {op['path']}")
            node[last] = op["value"]
    return doc


def check_s3_overlay(docs):
    """deploy/s3/: the overlay's resources and patches applied as kustomize would, the
    patched Rollout and CronJob validated, their ServiceAccount's IRSA annotation, and
    the sidecar's configuration with the overlay's environment through check-config."""
    overlay = DEPLOY / "s3"
    k = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    check((overlay / k["resources"][0]).resolve() == DEPLOY.resolve(), "deploy/s3 builds on deploy/")
    extra = [d for r in k["resources"][1:] for d in yaml.safe_load_all((overlay / r).read_text())]
    for d in extra:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            check(True, f"deploy/s3 {d['kind']}/{d['metadata']['name']} (strict)")
        except Exception as e:  # noqa: BLE001
            check(False, f"deploy/s3 {d['kind']}/{d['metadata']['name']}", str(e).splitlines()[0][:400])
    sas = {d["metadata"]["name"]: d for d in extra if d["kind"] == "ServiceAccount"}
    patched = {}
    deleted = set()
    for p in k["patches"]:
        if "path" in p:
            target = p["target"]
            base = by_kind(docs, target["kind"])[target["name"]]
            ops = yaml.safe_load((overlay / p["path"]).read_text())
            try:
                patched[target["kind"]] = json_patch(base, ops)
                check(True, f"deploy/s3 {p['path']} applies to {target['kind']}/{target['name']}")
            except (KeyError, IndexError, ValueError) as e:
                check(False, f"deploy/s3 {p['path']} applies to {target['kind']}/{target['name']}", repr(e))
        else:
            d = yaml.safe_load(p["patch"])
            deleted.add((d["kind"], d["metadata"]["name"]))
            check(d["metadata"]["name"] in by_kind(docs, d["kind"]), f"deploy/s3 deletes {d['kind']}/{d['metadata']['name']}, which deploy/ has")
    rollout, cron = patched.get("Rollout"), patched.get("CronJob")
    if not rollout or not cron:
        return
    pods = [("Rollout", rollout["spec"]["template"]), ("CronJob", cron["spec"]["jobTemplate"]["spec"]["template"])]
    for kind, tmpl in pods:
        dep = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": kind.lower()}, "spec": tmpl["spec"]}
        try:
            kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
            check(True, f"deploy/s3 patched {kind} pod spec (strict)")
        except Exception as e:  # noqa: BLE001
            check(False, f"deploy/s3 patched {kind} pod spec", str(e).splitlines()[0][:400])
        sa = sas.get(tmpl["spec"].get("serviceAccountName"), {})
        check("eks.amazonaws.com/role-arn" in sa.get("metadata", {}).get("annotations", {}),
              f"deploy/s3 {kind} runs as a ServiceAccount with an IRSA role")
        claims = [v["persistentVolumeClaim"]["claimName"] for v in tmpl["spec"]["volumes"] if "persistentVolumeClaim" in v]
        check(not any(("PersistentVolumeClaim", c) in deleted for c in claims), f"deploy/s3 {kind} mounts no deleted claim")
        mounts = {m["name"] for c in tmpl["spec"]["containers"] for m in c.get("volumeMounts", [])}
        check(mounts <= {v["name"] for v in tmpl["spec"]["volumes"]}, f"deploy/s3 {kind}: every mount has its volume")
    sidecar = next(c for c in rollout["spec"]["template"]["spec"]["containers"] if c["name"] == "shadowgate")
    env = {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}
    check(env.get("SHADOWGATE_SHADOW_LOG__DIR", "").startswith("s3://"), "deploy/s3 sidecar writes to s3://")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    check(args[args.index("--logs") + 1] == env.get("SHADOWGATE_SHADOW_LOG__DIR"), "deploy/s3 accuracy job reads the tree the sidecars write")
    # The sidecar's configuration with the overlay's environment. No AWS endpoint is
    # reachable here: check-config says so and does not hold it against the file.
    cm = by_kind(docs, "ConfigMap")["shadowgate"]
    binary = os.environ.get("SHADOWGATE_BIN", str(ROOT / "target/debug/shadowgate"))
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(cm["data"]["shadowgate.toml"])
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("SHADOWGATE_", "AWS_"))}
    run_env.update(env)
    run_env.update({"AWS_ACCESS_KEY_ID": "validate", "AWS_SECRET_ACCESS_KEY": "validate",
                    "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ALLOW_HTTP": "true"})
    p = subprocess.run([binary, "check-config", f.name], capture_output=True, text=True, env=run_env, timeout=60)
    os.unlink(f.name)
    check(p.returncode == 0 and "s3://" in p.stdout, "deploy/s3 shadowgate.toml with the overlay's environment passes `shadowgate check-config`",
          (p.stderr or p.stdout).strip()[:600])


def main():
    if sys.argv[1:] == ["--write-rules"]:
        write_rules()
        return
    docs = load_all()
    check(bool(docs), f"{len(docs)} manifests under deploy/")
    validate_core(docs)
    check_kustomization(docs)
    check_references(docs)
    check_config(docs)
    check_s3_overlay(docs)
    check_templates(docs)
    check_rules()
    check_dashboard()
    print(f"deploy_validate: {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
