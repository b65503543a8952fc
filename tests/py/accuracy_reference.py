#!/usr/bin/env python3
"""Independent reference values for tests/it/accuracy.rs.

Reads a JSON list of paired tables from stdin,
  [{"both_correct": a, "baseline_only": b, "canary_only": c, "both_wrong": d}, ...]
and writes, per table, the numbers the report must hold, computed without the job's
code: Wilson intervals from scipy (`binomtest(...).proportion_ci("wilson")`), McNemar's
exact p from scipy's two-sided binomial test, and the paired accuracy-ratio score
interval by brute force: the constrained maximum-likelihood estimate from the Lagrange
condition solved numerically (not Tang's closed form), the score statistic from the
per-pair variance sum(p * g^2), and its roots found with Brent's method.
"""
import json
import math
import sys

from scipy.optimize import brentq
from scipy.stats import binomtest, norm

Z = norm.ppf(0.975)


def score(bc, bo, co, bw, th):
    """Score statistic for H0: P(canary right) = th * P(baseline right)."""
    n = bc + bo + co + bw
    # Per pair, Y = [canary right] - th * [baseline right]; its value per cell:
    cells = [(bc, 1.0 - th), (co, 1.0), (bo, -th)]
    q = [(x / n, g) for x, g in cells]
    f = lambda s: sum(qi * g / (1 + s * g) for qi, g in q if qi > 0)
    # Dual feasibility: 1 + s*g >= 0 for every cell; > 0 where there are counts.
    lo = max([-1 / g for _, g in q if g > 0] + [-1e9])
    hi = min([-1 / g for _, g in q if g < 0] + [1e9])
    a = lo + 1e-12 * max(1.0, abs(lo))
    b = hi - 1e-12 * max(1.0, abs(hi))
    if f(a) <= 0:
        s = lo
    elif f(b) >= 0:
        s = hi
    else:
        s = brentq(f, a, b, xtol=1e-300, rtol=1e-15, maxiter=1000)
    probs = [(qi / (1 + s * g), g) for qi, g in q if qi > 0]
    m = sum(p * g for p, g in probs)
    var = sum(p * g * g for p, g in probs)
    if abs(m) > 1e-15:
        # A cell without counts carries the mass that satisfies the constraint.
        for qi, g in q:
            if qi == 0 and g != 0 and -m / g > 0:
                var += (-m / g) * g * g
                break
    u = (bc + co) - th * (bc + bo)
    return u / math.sqrt(n * var)


def ratio_ci(bc, bo, co, bw):
    if bc + bo + co + bw == 0:
        return None, None, None
    canary, baseline = bc + co, bc + bo
    est = canary / baseline if baseline else math.inf
    t = lambda th: score(bc, bo, co, bw, th)
    if canary == 0:
        lower = 0.0
    else:
        top = est * (1 - 1e-12) if math.isfinite(est) else 1e8
        lower = 0.0 if t(1e-8) < Z else brentq(lambda th: t(th) - Z, 1e-8, top, xtol=1e-300, rtol=1e-15)
    if baseline == 0:
        upper = math.inf
    else:
        bottom = est * (1 + 1e-12) if canary else 1e-8
        upper = math.inf if t(1e8) > -Z else brentq(lambda th: t(th) + Z, bottom, 1e8, xtol=1e-300, rtol=1e-15)
    return est, lower, upper


def wilson(k, n):
    if n == 0:
        return None
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [k / n, float(ci.low), float(ci.high)]


def fin(v):
    return v if v is not None and math.isfinite(v) else None


out = []
for t in json.load(sys.stdin):
    bc, bo, co, bw = t["both_correct"], t["baseline_only"], t["canary_only"], t["both_wrong"]
    n = bc + bo + co + bw
    est, lo, up = ratio_ci(bc, bo, co, bw)
    out.append(
        {
            "baseline": wilson(bc + bo, n),
            "canary": wilson(bc + co, n),
            "mcnemar_p_value": float(binomtest(bo, bo + co, 0.5).pvalue) if bo + co else (1.0 if n else None),
            "accuracy_ratio": fin(est),
            "accuracy_ratio_lower": fin(lo),
            "accuracy_ratio_upper": fin(up),
        }
    )
json.dump(out, sys.stdout)
