"""Every PromQL expression in deploy/, ready to send to Prometheus (tests/it/deploy.rs).

Usage: deploy_promql.py name=value ...

Prints a JSON list of {"kind", "source", "expr", "needs"} for
- each Prometheus query of each AnalysisTemplate metric under deploy/argo/, with
  `{{args.NAME}}` replaced by the name=value pairs, else the template's default;
- each `expr` of deploy/alerts/shadowgate-rules.yml;
- each target of deploy/grafana/shadowgate.json, with `$name` / `${name}` replaced by
  the name=value pairs, else the dashboard's constant variables, and
  `$__rate_interval` by the pair `__rate_interval=...` (default 1m).
A name with no value is an error: an expression is never sent half-substituted.
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def main():
    values = dict(a.split("=", 1) for a in sys.argv[1:])
    out = []
    for path in sorted((DEPLOY / "argo").glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
                continue
            args = {a["name"]: a.get("value") for a in doc["spec"].get("args", [])}
            args.update({k: v for k, v in values.items() if k in args})
            for m in doc["spec"]["metrics"]:
                q = m["provider"]["prometheus"]["query"]

                def arg(mm):
                    v = args.get(mm.group(1))
                    if v is None:
                        raise SystemExit(f"{path.name}: arg {mm.group(1)} has no value")
                    return str(v)

                out.append({
                    "kind": "template",
                    "source": f"{path.relative_to(ROOT)} {doc['metadata']['name']}/{m['name']}",
                    "expr": re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", arg, q),
                })
    rules = yaml.safe_load((DEPLOY / "alerts/shadowgate-rules.yml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            out.append({
                "kind": "alert",
                "source": f"deploy/alerts/shadowgate-rules.yml {r.get('alert') or r.get('record')}",
                "expr": r["expr"],
            })
    dash = json.loads((DEPLOY / "grafana/shadowgate.json").read_text())
    dvars = {v["name"]: v.get("query") for v in dash["templating"]["list"] if v["type"] == "constant"}
    dvars["__rate_interval"] = "1m"
    dvars.update(values)
    for p in dash["panels"]:
        for t in p.get("targets", []):

            def var(mm):
                v = dvars.get(mm.group(1) or mm.group(2))
                if v is None:
                    raise SystemExit(f"dashboard variable {mm.group(0)} has no value")
                return str(v)

            out.append({
                "kind": "dashboard",
                "source": f"deploy/grafana/shadowgate.json '{p['title']}' {t['refId']} ({t.get('legendFormat', '')})",
                "expr": re.sub(r"\$\{(\w+)\}|\$(\w+)", var, t["expr"]),
            })
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
