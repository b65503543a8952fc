"""Table 3's streams made exchangeable, ours only: per seed a fresh 750/750 re-split of the
`doc` vectors (as part `seqsplit` of benches/reference_fl.py), a stream of W - 1 + L = 249
held-out vectors drawn without replacement, and shifted copies of it (each sample
replaced, with probability `share`, by one of the shift pool). Ours with the default long
window (10 W = 500: never full within the stream, so only the window's parts score)
against long windows of 100 and 200 that fill within it; W = 50, ERT = 4000 throughout.
Alarm rate within the stream and median samples to the first alarm.

    FL_CACHE=DIR SHADOWGATE=target/release/shadowgate python3 benches/reference/sequential_split_long.py 0 2 &
    FL_CACHE=DIR SHADOWGATE=target/release/shadowgate python3 benches/reference/sequential_split_long.py 1 2
    FL_CACHE=DIR python3 benches/reference/sequential_split_long.py report

(PART PARTS: the seeds this process runs, so two run side by side; ~10 min on 2 cores.)
Results: $FL_CACHE/ssl*.jsonl; the report is markdown on stdout.
"""
import os, sys, json, subprocess, statistics
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import reference_fl as fl

SEEDS = int(os.environ.get("SSL_SEEDS", 100))
LONGS = [None, 100, 200]
CELLS = [("null", 0.0), ("topic", 0.5), ("truncation", 0.5), ("language", 0.1), ("typos", 0.1), ("topic", 0.1)]


def report():
    rows = [json.loads(l) for f in sorted(os.listdir(fl.CACHE)) if f.startswith("ssl") and f.endswith(".jsonl")
            for l in open(os.path.join(fl.CACHE, f))]
    by = {}
    for r in rows:
        by.setdefault((r["long"], r["case"], r["share"]), []).append(r["run"])
    print("| long window | " + " | ".join(f"{c} {int(s * 100)}%" for c, s in CELLS) + " |")
    print("|---|" + "---:|" * len(CELLS))
    for long in LONGS:
        cells = []
        for c, s in CELLS:
            v = by.get((long, c, s), [])
            a = [x for x in v if x is not None]
            med = f", median {statistics.median(a):.0f}" if a else ""
            cells.append(f"{len(a) / len(v):.2f} ({len(a)}/{len(v)}){med}" if v else "–")
        print(f"| {long or 'default (500)'} | " + " | ".join(cells) + " |")


if sys.argv[1] == "report":
    report()
    sys.exit(0)
part, parts = int(sys.argv[1]), int(sys.argv[2])
pools = fl.load_pools()
alldocs = np.concatenate([pools["ref"], pools["null"]])
n_stream = fl.SEQ_W - 1 + fl.SEQ_L
d = os.path.join(fl.CACHE, f"ssl{part}")
os.makedirs(d, exist_ok=True)
out = open(os.path.join(fl.CACHE, f"ssl{part}.jsonl"), "a")
for seed in range(part, SEEDS, parts):
    perm = np.random.default_rng([9, seed]).permutation(len(alldocs))
    np.save(f"{d}/ref.npy", alldocs[perm[:750]])
    held = alldocs[perm[750:750 + n_stream]]
    for long in LONGS:
        refjson = f"{d}/ref_{long}.json"
        subprocess.run([fl.SG, "reference", "build", "--logs", f"{d}/ref.npy", "--model", "minilm", "--out", refjson,
                        "--window", str(fl.SEQ_W), "--ert", str(fl.SEQ_ERT)] + fl.long_args(long), check=True, capture_output=True)
        for case, share in CELLS:
            x = held.copy()
            if share:
                r = np.random.default_rng([10, seed, fl.CASE_ID[case], int(share * 100)])
                take = r.random(n_stream) < share
                x[take] = pools[case][r.integers(0, len(pools[case]), int(take.sum()))]
            s, _ = fl.replay(refjson, np.ascontiguousarray(x), f"{d}/s.npy")
            out.write(json.dumps({"seed": seed, "long": long, "case": case, "share": share,
                                  "run": None if s["first_alarm"] is None else s["first_alarm"] + 1}) + "\n")
            out.flush()
