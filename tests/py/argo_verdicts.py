"""Evaluate Argo Rollouts AnalysisTemplates against a real Prometheus, with Argo's rules.

Usage: argo_verdicts.py PROM_URL TEMPLATE_DIR name=value ...

For every AnalysisTemplate (and ClusterAnalysisTemplate) under TEMPLATE_DIR, every
metric with a Prometheus provider is measured once: its query (with `{{args.NAME}}`
substituted from the template's defaults and the name=value pairs) is sent to
Prometheus's instant-query API, and the result is judged as Argo Rollouts judges a
measurement (argo-rollouts `utils/evaluate.EvaluateResult`):

- a query error, or a condition that fails to evaluate (e.g. `result[0]` of an empty
  vector) -> Error
- neither condition set -> Successful (the trap of the published recipe)
- only successCondition -> Successful if true, else Failed
- only failureCondition -> Failed if true, else Successful
- both -> Failed if failure is true, Successful if success is true, else Inconclusive

The Prometheus provider hands a vector result to the conditions as a list of floats
(`result`), a scalar as a float. Conditions are Argo's expr language; the subset our
templates use (&&, ||, !, comparisons, len(), isNaN(), isInf(), indexing, float
literals, parentheses) is translated to Python and evaluated with no builtins.

Prints JSON: {template: {"metrics": {name: phase}, "verdict": phase}}; a template's
verdict is Failed if any metric failed, else Error if any errored, else Inconclusive if
any was inconclusive, else Successful.
"""

import json
import math
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import yaml


def query(prom, promql):
    url = prom.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] == "vector":
        return [float(s["value"][1]) for s in data["result"]]
    if data["resultType"] == "scalar":
        return float(data["result"][1])
    raise RuntimeError(f"unsupported result type {data['resultType']}")


def to_python(expr):
    """Translate the expr-language subset to a Python expression, or raise."""
    if re.search(r"[^\w\s\.\[\]\(\)<>=!&|+\-*/,]", expr):
        raise ValueError(f"unsupported characters in condition: {expr!r}")
    out = expr.replace("&&", " and ").replace("||", " or ")
    out = re.sub(r"!(?!=)", " not ", out)
    out = re.sub(r"\bisNaN\(", "_isnan(", out)
    out = re.sub(r"\bisInf\(", "_isinf(", out)
    out = re.sub(r"\blen\(", "_len(", out)
    return out


def condition(expr, result):
    env = {
        "__builtins__": {},
        "result": result,
        "_isnan": lambda x: isinstance(x, float) and math.isnan(x),
        "_isinf": lambda x: isinstance(x, float) and math.isinf(x),
        "_len": len,
        "true": True,
        "false": False,
    }
    value = eval(to_python(expr), env)  # noqa: S307 - restricted env, our own templates
    if not isinstance(value, bool):
        raise ValueError(f"condition {expr!r} gave {value!r}, not a boolean")
    return value


def judge(metric, result):
    success = metric.get("successCondition", "")
    failure = metric.get("failureCondition", "")
    try:
        s = condition(success, result) if success else False
        f = condition(failure, result) if failure else False
    except Exception as e:  # noqa: BLE001 - Argo turns evaluation errors into Error
        return "Error", str(e)
    if not success and not failure:
        return "Successful", "no condition"
    if success and not failure:
        return ("Successful" if s else "Failed"), ""
    if failure and not success:
        return ("Failed" if f else "Successful"), ""
    if f:
        return "Failed", ""
    if s:
        return "Successful", ""
    return "Inconclusive", ""


def substitute(text, args):
    def repl(m):
        name = m.group(1)
        if name not in args:
            raise KeyError(f"template arg {name} has no value")
        return str(args[name])

    return re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", repl, text)


def main():
    prom, tdir = sys.argv[1], Path(sys.argv[2])
    overrides = dict(a.split("=", 1) for a in sys.argv[3:])
    json.dump(clean(evaluate(prom, tdir, overrides)), sys.stdout)


def evaluate(prom, tdir, overrides):
    """One measurement of every template under `tdir`: {name: {metrics, details, verdict}}."""
    report = {}
    for path in sorted(tdir.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
                continue
            name = doc["metadata"]["name"]
            args = {a["name"]: a.get("value") for a in doc["spec"].get("args", [])}
            args.update({k: v for k, v in overrides.items() if k in args})
            phases, details = {}, {}
            for metric in doc["spec"]["metrics"]:
                prov = metric.get("provider", {}).get("prometheus")
                if prov is None:
                    continue
                try:
                    promql = substitute(prov["query"], args)
                    result = query(prom, promql)
                    phase, why = judge(metric, result)
                except Exception as e:  # noqa: BLE001
                    phase, why, result = "Error", str(e), None
                phases[metric["name"]] = phase
                details[metric["name"]] = {"result": result, "why": why}
            ph = set(phases.values())
            verdict = (
                "Failed" if "Failed" in ph else "Error" if "Error" in ph
                else "Inconclusive" if "Inconclusive" in ph else "Successful"
            )
            report[name] = {"metrics": phases, "details": details, "verdict": verdict}
    return report


def clean(x):
    """NaN and infinities as strings: JSON has no literal for them."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


if __name__ == "__main__":
    main()
