"""Prototype (numpy, offline), not the shipped detector: how should the detector's four
parts share the false-alarm budget?

Reads the per-sample traces that `FL_TRACE=DIR benches/reference_fl.py resplit` keeps
(DIR/resplit_<case>_<share>_<n>_<seed>.npy: n x 5, the parts kernel, coordinates,
coordinates_long, mean_long, each over its null scale, and the line). A window's
statistic under weights `a` is the larger of its two phases, each over its own line:
before the long window is full (window parts only) and after; each phase's line is the
95 % quantile of its maxima over the null windows, and the combined statistic is then
held to its own 95 % null quantile (matched 5 % false alarms). `a = 1` reproduces the
shipped weighting up to the lines (the shipped ones come from the build's bootstrap).

Run 2026-12-05 on the format-6 traces (200 null and 100 shifted windows per cell;
rates at matched 5 %; `shipped` is the streaming row of table 2c):
  n=500          shipped  1,1,1,1  late long x1.2  late KL only  late M only
  topic 10 %       0.16     0.27        0.25           0.14          0.27
  language 10 %    0.74     0.88        0.88           0.51          0.90
  truncation 50 %  0.74     0.89        0.89           0.93          0.47
  typos 10 %       0.18     0.35        0.33           0.24          0.35
  n=200: language 10 % 0.31 -> 0.54, truncation 50 % 0.19 -> 0.27, typos 0.07 -> 0.15.
What moves the rates is the lines, not the weights: the shipped late line holds for
H = n - W + 1 looks after the long window fills, and in a window of n = L samples there
is one. Re-weighting the parts moves no cell by more than its noise (about 0.04), and
each part alone loses somewhere. Hence table 2d of failing_loudly.md: ours built for one
look (ERT = 1/alpha, so H = 1) and read at the window's end.

    python3 benches/reference/prototype_weights.py /work/fl9/trace
"""
import os
import sys

import numpy as np

DIR = sys.argv[1] if len(sys.argv) > 1 else "/work/fl9/trace"
CELLS = [(c, s) for c in ["topic", "language", "truncation", "typos", "norm"] for s in (0.1, 0.5)]


def load(case, share, n):
    out = []
    for seed in range(1000):
        p = os.path.join(DIR, f"resplit_{case}_{share}_{n}_{seed}.npy")
        if not os.path.exists(p):
            break
        t = np.load(p)
        late = t[:, 4] != t[0, 4]
        if not late.any() and (t[:, 2:4] > 0).any():
            late[:] = True
        early = ~late
        em = t[early, :2].max(0) if early.any() else np.zeros(2)
        lm = t[late, :4].max(0) if late.any() else np.zeros(4)
        shipped = (t[:, :4].max(1) / t[:, 4]).max()
        out.append((em, lm, shipped))
    return out


def q95(v):
    return np.quantile(v, 0.95, method="higher")


def stat(rows, a_early, a_late, lines=None):
    e = np.array([max((r[0] * a_early).max(), 0) for r in rows])
    f = np.array([max((r[1] * a_late).max(), 0) for r in rows])
    return e, f


def power(null, shifted, a_early, a_late):
    e0, f0 = stat(null, a_early, a_late)
    le, lf = q95(e0) or 1.0, q95(f0) or 1.0
    c0 = np.maximum(e0 / le, f0 / lf)
    thr = q95(c0)
    e1, f1 = stat(shifted, a_early, a_late)
    c1 = np.maximum(e1 / le, f1 / lf)
    return np.mean(c1 > thr)


def shipped_power(null, shifted):
    thr = q95(np.array([r[2] for r in null]))
    return np.mean(np.array([r[2] for r in shifted]) > thr)


WEIGHTS = {
    "1,1,1,1": ([1, 1], [1, 1, 1, 1]),
    "late long x1.1": ([1, 1], [1, 1, 1.1, 1.1]),
    "late long x1.2": ([1, 1], [1, 1, 1.2, 1.2]),
    "late long x1.35": ([1, 1], [1, 1, 1.35, 1.35]),
    "late long only": ([1, 1], [0, 0, 1, 1]),
    "late KL only": ([1, 1], [0, 0, 1, 0]),
    "late M only": ([1, 1], [0, 0, 0, 1]),
    "late K,KL,M": ([1, 1], [0, 1, 1, 1]),
}

for n in (100, 200, 500):
    null = load("null", 0.0, n)
    if not null:
        continue
    print(f"n={n} ({len(null)} null windows)")
    print("  " + "cell".ljust(18) + "shipped " + " ".join(k[:14].rjust(14) for k in WEIGHTS))
    for case, share in CELLS:
        sh = load(case, share, n)
        if not sh:
            continue
        row = [shipped_power(null, sh)] + [power(null, sh, np.array(a), np.array(b)) for a, b in WEIGHTS.values()]
        print("  " + f"{case} {share}".ljust(18) + f"{row[0]:7.2f} " + " ".join(f"{v:14.2f}" for v in row[1:]))

