"""Prototype (numpy), not the shipped detector: does a spread term beside the centres'
make the long window's mean test stronger? (Format 8's `M_L`.)

Reads the cached all-MiniLM-L6-v2 embeddings of benches/reference_fl.py (FL_CACHE,
default /work/fl). The windows are those of reference_fl.py part `resplit`, extended to
more seeds: per seed the 1500 `doc` vectors are re-split at random into a 750 reference
and a 750 held-out half (exchangeable), the window is the first n held-out vectors, each
replaced with probability `share` by a vector of a shift pool. Statistics against the
seed's reference, with z the window standardised by the reference's mean and deviation
per coordinate (each statistic thresholded at its own 95 % quantile over the null seeds:
rates at a matched 5 % false-alarm rate):
  centre   n * sum_j mean(z_j)^2: format 7's mean test (unquantised);
  spread   n * sum_j (mean(z_j^2) - q_j)^2, q_j the reference's mean z^2 (= 1);
  both     centre + spread / 2: per coordinate the score test for a change of centre
           and scale of a normal variable, summed: format 8's M_L;
  both1    centre + spread;  bothstd: the spread term over the reference's var(z^2).
Run 2026-12-06 (1000 null / 400 shifted seeds; rates), n = 500:
  topic 10 %       centre 0.32 spread 0.18 both 0.37 both1 0.35 bothstd 0.37
  truncation 10 %  centre 0.09 spread 0.07 both 0.09 both1 0.08 bothstd 0.08
  language 10 %    centre 0.99 spread 1.00 both 1.00 both1 1.00 bothstd 1.00
  typos 10 %       centre 0.68 spread 0.91 both 0.94 both1 0.95 bothstd 0.87
  truncation 50 %  centre 0.61 spread 0.22 both 0.60 both1 0.56 bothstd 0.58
n = 200: topic 0.17 / 0.14 / 0.20, language 0.79 / 0.99 / 0.98, typos 0.31 / 0.64 / 0.61,
truncation 50 % 0.28 / 0.13 / 0.28 (centre / spread / both); n = 100: language 0.49 /
0.93 / 0.92, typos 0.19 / 0.45 / 0.41. The Euclidean distance between the means
(Evidently's `distance`) on the same windows at n = 500: topic 0.32, truncation 10 %
0.07, typos 0.46, language 0.94.
    python3 benches/reference/prototype_spread_test.py [null seeds, default 1000] [shifted, 400]
"""
import os
import sys

import numpy as np

CACHE = os.environ.get("FL_CACHE", "/work/fl")
P = {k: np.load(os.path.join(CACHE, f"emb_{k}.npy")).astype(np.float64)
     for k in ["ref", "null", "topic", "language", "truncation", "typos"]}
ALL = np.concatenate([P["ref"], P["null"]])
CASE_ID = {"null": 0, "topic": 1, "language": 2, "truncation": 3, "typos": 4, "norm": 5}


def stats(R, X):
    mu, sd = R.mean(0), R.std(0)
    ZR, Z = (R - mu) / sd, (X - mu) / sd
    n = len(X)
    centre = n * np.sum(Z.mean(0) ** 2)
    d2 = (Z ** 2).mean(0) - (ZR ** 2).mean(0)
    spread = n * np.sum(d2 ** 2)
    return {"centre": centre, "spread": spread, "both": centre + spread / 2,
            "both1": centre + spread, "bothstd": centre + n * np.sum(d2 ** 2 / (ZR ** 2).var(0)),
            "distance": np.sum((X.mean(0) - mu) ** 2)}


def windows(case, share, n, seeds):
    """reference_fl.py part `resplit`'s windows (the same for seeds < its seed count)."""
    for seed in range(seeds):
        perm = np.random.default_rng([7, seed]).permutation(len(ALL))
        R, H = ALL[perm[:750]], ALL[perm[750:]]
        x = H[:n].copy()
        if case != "null":
            r = np.random.default_rng([8, seed, CASE_ID[case], int(round(share * 100)), n])
            take = r.random(n) < share
            x[take] = P[case][r.integers(0, len(P[case]), int(take.sum()))]
        yield R, x


def run(case, share, n, seeds):
    rows = [stats(R, x) for R, x in windows(case, share, n, seeds)]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


null_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
shift_seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 400
for n in (100, 200, 500):
    thr = {k: np.quantile(v, 0.95) for k, v in run("null", 0, n, null_seeds).items()}
    for case, share in [("topic", .1), ("truncation", .1), ("language", .1), ("typos", .1), ("truncation", .5)]:
        sh = run(case, share, n, shift_seeds)
        print(f"n={n} {case} {share:.0%}", " ".join(f"{k}={np.mean(sh[k] > thr[k]):.2f}" for k in sh), flush=True)
