"""More shifted windows for chosen cells of reference_fl.py part `resplit`, one look:
ours (`reference build --one-look n`) and Evidently's `distance` and `mmd` on the same
windows, seeds past the harness's 100 (its windows exactly: the same re-split and shift
draws). Rows go to FL_CACHE/res_more.jsonl (one per detector, cell and seed); rates at
the harness's matched false-alarm rate come from its null rows (`report` in this file).

    FL_CACHE=DIR SHADOWGATE=target/release/shadowgate python3 benches/reference/more_windows.py run 100 400
    FL_CACHE=DIR python3 benches/reference/more_windows.py report
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CACHE = os.environ.get("FL_CACHE", "/work/fl")
SG = os.environ.get("SHADOWGATE", "target/release/shadowgate")
CASE_ID = {"null": 0, "topic": 1, "language": 2, "truncation": 3, "typos": 4, "norm": 5}
# FL_MORE_CELLS="topic:0.1 truncation:0.5": the cells (default the two below).
CELLS = [(c.split(":")[0], float(c.split(":")[1]))
         for c in os.environ.get("FL_MORE_CELLS", "topic:0.1 truncation:0.1").split()]
PEERS = ["ev_distance", "ev_mmd", "ks"]
N = 500
OUT = os.path.join(CACHE, "res_more.jsonl")


def pools():
    return {k: np.load(os.path.join(CACHE, f"emb_{k}.npy")).astype(np.float32)
            for k in ["ref", "null", "topic", "language", "truncation", "typos", "norm"]}


def run(first, last):
    import pandas as pd
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import distance, mmd
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from reference_fl import KS
    ev = {"ev_distance": distance(), "ev_mmd": mmd()}
    P = pools()
    alldocs = np.concatenate([P["ref"], P["null"]])
    done = set()
    if os.path.exists(OUT):
        done = {(r["det"], r["case"], r["share"], r["seed"]) for r in map(json.loads, open(OUT))}
    out = open(OUT, "a")
    tmp = tempfile.mkdtemp()
    for seed in range(first, last):
        perm = np.random.default_rng([7, seed]).permutation(len(alldocs))
        ref, held = alldocs[perm[:750]], alldocs[perm[750:]]
        x = np.ascontiguousarray(held[:N])
        refnpy, refjson, xs_npy = (os.path.join(tmp, f) for f in ("ref.npy", "ref.json", "x.npy"))
        built = False
        for case, share in CELLS:
            r = np.random.default_rng([8, seed, CASE_ID[case], int(round(share * 100)), N])
            xs = x.copy()
            take = r.random(N) < share
            xs[take] = P[case][r.integers(0, len(P[case]), int(take.sum()))]
            if ("ours_end", case, share, seed) not in done:
                if not built:
                    np.save(refnpy, ref)
                    subprocess.run([SG, "reference", "build", "--logs", refnpy, "--model", "minilm", "--out",
                                    refjson, "--window", "100", "--one-look", str(N)], check=True, capture_output=True)
                    built = True
                np.save(xs_npy, xs)
                p = subprocess.run([SG, "reference", "replay", "--reference", refjson, "--input", xs_npy],
                                   check=True, capture_output=True, text=True)
                last_score = json.loads(p.stdout.strip().splitlines()[-1])["last_score"]
                out.write(json.dumps({"det": "ours_end", "case": case, "share": share, "n": N, "seed": seed,
                                      "alarm": int(last_score >= 1.0), "stat": last_score}) + "\n")
            for name, f in ev.items():
                if (name, case, share, seed) in done:
                    continue
                score, _, _ = f(pd.DataFrame(xs), pd.DataFrame(ref))
                out.write(json.dumps({"det": name, "case": case, "share": share, "n": N, "seed": seed,
                                      "stat": float(score)}) + "\n")
            if ("ks", case, share, seed) not in done:
                # Per-dimension KS with Bonferroni, as the harness scores it (-log10 p).
                p_min, _ = KS(ref).test(xs)
                out.write(json.dumps({"det": "ks", "case": case, "share": share, "n": N, "seed": seed,
                                      "stat": -np.log10(max(p_min, 1e-300))}) + "\n")
        out.flush()
        print("seed", seed, flush=True)


def report():
    rows = [json.loads(l) for l in open(os.path.join(CACHE, "res_resplit.jsonl"))]
    more = [json.loads(l) for l in open(OUT)] if os.path.exists(OUT) else []
    null = lambda d: np.array([r["stat"] for r in rows if r["det"] == d and r["n"] == N and r["case"] == "null"])
    ours_null = null("ours_end")
    far = float(np.mean(ours_null >= 1.0))
    print(f"n = {N}, one look; ours' null: {far:.3f} ({int((ours_null >= 1).sum())}/{len(ours_null)}); "
          f"peers at that false-alarm rate over their own {len(null('ev_distance'))} null windows")
    for case, share in CELLS:
        line = [f"{case} {share:.0%}:"]
        for d in ["ours_end"] + PEERS:
            z = np.sort(null(d))[::-1]
            k = int(np.floor(far * len(z) + 1e-9))
            thr = z[k] if k < len(z) else -np.inf
            st = [r for r in rows + more if r["det"] == d and r["n"] == N and r["case"] == case and r["share"] == share]
            if not st:
                continue
            hit = [(r["stat"] >= 1.0) if d == "ours_end" else (r["stat"] > thr) for r in st]
            rate = float(np.mean(hit))
            se = (rate * (1 - rate) / len(hit)) ** 0.5
            line.append(f"{d} {rate:.3f} ± {se:.3f} ({sum(hit)}/{len(hit)})")
        print("  ".join(line))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(int(sys.argv[2]), int(sys.argv[3]))
    else:
        report()
