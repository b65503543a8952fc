"""Prototype (numpy), not the shipped detector: which statistic over a long window
catches a tenth of the traffic shifted, where the binned per-coordinate KS does not?

Reads the cached all-MiniLM-L6-v2 embeddings of benches/reference_fl.py (FL_CACHE,
default /work/fl). Per seed, the 1500 `doc` vectors (emb_ref + emb_null) are re-split at
random into a 750 reference and a 750 held-out half (exchangeable: a valid test's false
alarms are at most alpha); a window is n held-out vectors drawn without replacement,
each replaced with probability `share` by a vector of a shift pool. Statistics against
the seed's reference (each thresholded at its own 95 % quantile over the null seeds, so
rates are at a matched 5 % false-alarm rate):
  ksbin   the shipped long-window KS gap: max over coordinates and the 15 sixteenths of
          |F_window - k/16| at the reference's quantiles;
  rankz   sum over coordinates of the squared standardised mean bin index;
  nscore  the same with each bin's normal score (van der Waerden): what shipped (M_L);
  lin     squared distance between the means (Evidently's `distance` in spirit);
  diagz   the same with each coordinate standardised by the reference's deviation.
Run 2026-12-05 (160 null / 80 shifted seeds; rates):
  n=200 language 10 %: ksbin 0.05 nscore 0.70 rankz 0.65 lin 0.62 diagz 0.78
  n=500 language 10 %: ksbin 0.59 nscore 0.97 rankz 0.97 lin 0.97 diagz 1.00
  n=500 typos 10 %:    ksbin 0.34 nscore 0.60 rankz 0.59 lin 0.44 diagz 0.65
  n=500 topic 10 %:    ksbin 0.10 nscore 0.38 rankz 0.41 lin 0.34 diagz 0.35
  n=500 truncation 50 %: ksbin 0.96 nscore 0.66 (the KS gap stays: max-combined)
Run 2026-12-06 on the re-embedded cache (/work/fl10; 200 null / 100 shifted seeds), n=500:
  language 10 %: ksbin 0.35 nscore 0.93 lin 0.92 diagz 0.98; typos 10 %: 0.22 / 0.50 /
  0.41 / 0.58; topic 10 %: 0.12 / 0.31 / 0.30 / 0.28; truncation 10 %: 0.08 / 0.03 /
  0.05 / 0.03 (nothing here catches it).
The first run read the bins' normal scores (no state but a sum per coordinate) as strong
as the raw standardised means; the second did not, and with 64 bins the normal scores
reach 0.93, each bin's mean raw value 0.93 (16 bins) and 0.95 (64): the tails carry the
signal. Hence format 7's mean test on each coordinate's value kept to a sixteenth of its
bin, standardised (coords::Levels): the same one byte per coordinate.
    python3 benches/reference/prototype_mean_test.py [null seeds, default 160]
"""
import os
import sys

import numpy as np
from scipy.stats import norm

CACHE = os.environ.get("FL_CACHE", "/work/fl")
P = {k: np.load(os.path.join(CACHE, f"emb_{k}.npy")).astype(np.float64)
     for k in ["ref", "null", "topic", "language", "truncation", "typos"]}
ALL = np.vstack([P["ref"], P["null"]])
SCORES = norm.ppf((np.arange(16) + 0.5) / 16)
SCORES = (SCORES - SCORES.mean()) / SCORES.std()


def stats(R, X):
    q = np.quantile(R, np.arange(1, 16) / 16, axis=0)
    F = (X[:, None, :] <= q[None]).mean(0)
    B = (X[:, None, :] > q[None]).sum(1)
    mu, sd = R.mean(0), R.std(0)
    return {
        "ksbin": np.abs(F - np.arange(1, 16)[:, None] / 16).max(),
        "rankz": np.sum((B.mean(0) - 7.5) ** 2) / (21.25 / len(X)),
        "nscore": np.sum(SCORES[B].mean(0) ** 2) * len(X),
        "lin": np.sum((X.mean(0) - mu) ** 2),
        "diagz": np.sum(((X.mean(0) - mu) / sd) ** 2),
    }


def run(case, share, n, seeds):
    out = []
    for s in range(seeds):
        r = np.random.default_rng([s, n, int(share * 100), sum(map(ord, case))])
        perm = r.permutation(len(ALL))
        R, H = ALL[perm[:750]], ALL[perm[750:]]
        X = H[r.choice(750, n, replace=False)].copy()
        if case != "null":
            take = r.random(n) < share
            X[take] = P[case][r.integers(0, len(P[case]), take.sum())]
        out.append(stats(R, X))
    return {k: np.array([d[k] for d in out]) for k in out[0]}


seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 160
for n in (200, 500):
    thr = {k: np.quantile(v, 0.95) for k, v in run("null", 0, n, seeds).items()}
    for case, share in [("topic", .1), ("language", .1), ("typos", .1), ("truncation", .1), ("truncation", .5)]:
        sh = run(case, share, n, seeds // 2)
        print(n, case, share, " ".join(f"{k}={np.mean(sh[k] > thr[k]):.2f}" for k in thr), flush=True)
