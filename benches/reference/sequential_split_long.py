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
MMDDriftOnline on the same streams, its threshold bootstrapped per seed (~70 s a seed on one core,
~9 GB; with the FL venv's python, which has torch and alibi-detect):

    FL_CACHE=DIR PYTHON_WITH_TORCH_AND_ALIBI benches/reference/sequential_split_long.py online 0 1
Results: $FL_CACHE/ssl*.jsonl; $FL_CACHE/ssl_online*.jsonl; the report is markdown on stdout.
"""
import os, sys, json, subprocess, statistics
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import reference_fl as fl

SEEDS = int(os.environ.get("SSL_SEEDS", 100))
LONGS = [None if v == "default" else int(v) for v in os.environ.get("SSL_LONGS", "default,100,200").split(",")]
# A variant of ours (rows keyed by it too): another ERT, extra `reference build` flags, or
# another binary (SHADOWGATE), named by SSL_VARIANT.
VARIANT = os.environ.get("SSL_VARIANT", "")
ERT = float(os.environ.get("SSL_ERT", fl.SEQ_ERT))
FLAGS = os.environ.get("SSL_FLAGS", "").split()
CELLS = [("null", 0.0), ("topic", 0.5), ("truncation", 0.5), ("language", 0.1), ("typos", 0.1), ("topic", 0.1)]
# The rest of table 3's cells (SSL_ALL_CELLS=1; runs before 2026-12-06 09:00 had the six
# above only).
if os.environ.get("SSL_ALL_CELLS"):
    CELLS += [(c, s) for c in ["topic", "language", "truncation", "typos", "norm"] for s in [0.1, 0.5, 1.0]
              if (c, s) not in CELLS]


def report():
    """Markdown: per cell, per detector, the alarm rate within the stream, the median
    samples to the first alarm over the streams that alarmed, and over all streams (a
    stream without an alarm counts as longer than the stream: `>249` when fewer than half
    alarmed); and per variant of ours, paired with MMDDriftOnline stream for stream, the
    streams where ours alarmed first and where it alarmed later (or not at all). Over
    the seeds every detector shown ran for that cell (SSL_SHOW: a comma list of
    `long/variant` keys, e.g. `default/sqrt2,online/`; default all)."""
    rows = [json.loads(l) for f in sorted(os.listdir(fl.CACHE)) if f.startswith("ssl") and f.endswith(".jsonl")
            for l in open(os.path.join(fl.CACHE, f))]
    key = lambda r: (f"{r['long'] or 'default'}/{r.get('variant', '')}")
    runs = {}
    for r in rows:
        runs.setdefault((key(r), r["case"], r["share"]), {})[r["seed"]] = r["run"]
    dets = sorted({key(r) for r in rows}, key=lambda k: (k.startswith("online"), k))
    if os.environ.get("SSL_SHOW"):
        dets = os.environ["SSL_SHOW"].split(",")
    n_stream = fl.SEQ_W - 1 + fl.SEQ_L
    big = n_stream + 1   # a stream without an alarm
    cells = sorted({(r["case"], r["share"]) for r in rows},
                   key=lambda c: (["null", "topic", "language", "truncation", "typos", "norm"].index(c[0]), c[1]))
    name = lambda k: "MMDDriftOnline" if k.startswith("online") else f"ours, long {k.replace('/', ' ').strip()}"
    # Paired, stream for stream (the same streams for every detector): the streams where
    # ours alarms before MMDDriftOnline and after it (no alarm: after every alarm).
    peer = next((d for d in dets if d.startswith("online")), None)
    mine = [d for d in dets if d != peer] if peer else []
    print("| shift | share | seeds | " + " | ".join(name(d) for d in dets)
          + "".join(f" | {name(d)}: earlier / later than the peer" for d in mine) + " |")
    print("|---|---:|---:|" + "---:|" * (len(dets) + len(mine)))
    for c, sh in cells:
        have = [runs.get((d, c, sh), {}) for d in dets]
        seeds = set.intersection(*(set(h) for h in have)) if all(have) else set()
        if not seeds:
            continue
        out = []
        for h in have:
            v = [h[s] for s in seeds]
            a = sorted(x for x in v if x is not None)
            med = f"{statistics.median(a):.0f}" if a else "–"
            allv = sorted(x if x is not None else big for x in v)
            mall = statistics.median(allv)
            mall = f">{n_stream}" if mall > n_stream else f"{mall:.0f}"
            out.append(f"{len(a) / len(v):.2f}, {med} / {mall}")
        for d, h in zip(dets, have):
            if d in mine:
                p = runs[(peer, c, sh)]
                a = [(h[s] or big, p[s] or big) for s in seeds]
                out.append(f"{sum(x < y for x, y in a)} / {sum(x > y for x, y in a)}")
        print(f"| {c} | {int(sh * 100)}% | {len(seeds)} | " + " | ".join(out) + " |")


def streams(pools, held, seed):
    """The cells' streams of one seed: the held-out stream, each sample replaced with
    probability `share` by one of the shift pool (the same streams for every detector)."""
    for case, share in CELLS:
        x = held.copy()
        if share:
            r = np.random.default_rng([10, seed, fl.CASE_ID[case], int(share * 100)])
            take = r.random(len(x)) < share
            x[take] = pools[case][r.integers(0, len(pools[case]), int(take.sum()))]
        yield case, share, np.ascontiguousarray(x)


def resplit(alldocs, seed, n_stream):
    perm = np.random.default_rng([9, seed]).permutation(len(alldocs))
    return alldocs[perm[:750]], alldocs[perm[750:750 + n_stream]]


def online(part, parts):
    """Alibi Detect's MMDDriftOnline on the same streams, its threshold bootstrapped
    afresh from each seed's 750 reference vectors (as in part `online` of
    reference_fl.py: ERT 4000, window 50, n_bootstraps 2 x ERT, torch on one thread).
    ~2.5 min per seed, almost all of it the threshold bootstrap."""
    import time
    import torch
    torch.set_num_threads(1)
    from alibi_detect.cd import MMDDriftOnline
    out = open(os.path.join(fl.CACHE, f"ssl_online{part}.jsonl"), "a")
    done = set()
    for f in os.listdir(fl.CACHE):
        if f.startswith("ssl_online") and f.endswith(".jsonl"):
            done |= {json.loads(l)["seed"] for l in open(os.path.join(fl.CACHE, f))}
    for seed in range(part, SEEDS, parts):
        if seed in done:
            continue
        ref, held = resplit(alldocs, seed, n_stream)
        t = time.time()
        det = MMDDriftOnline(ref, ert=fl.SEQ_ERT, window_size=fl.SEQ_W, backend="pytorch",
                             n_bootstraps=fl.ONLINE_BOOT, verbose=False)
        init = time.time() - t
        rows = []
        for case, share, x in streams(pools, held, seed):
            det.reset_state()
            run = None
            for i in range(n_stream):
                if det.predict(x[i], return_test_stat=False)["data"]["is_drift"]:
                    run = i + 1
                    break
            rows.append({"seed": seed, "long": "online", "case": case, "share": share, "run": run, "init_s": init})
        # a seed is written whole or not at all, so a killed run resumes cleanly
        out.write("".join(json.dumps(r) + "\n" for r in rows))
        out.flush()
        fl.log("ssl online seed", seed, f"init {init:.0f}s, {time.time() - t:.0f}s")


if sys.argv[1] == "report":
    report()
    sys.exit(0)
pools = fl.load_pools()
alldocs = np.concatenate([pools["ref"], pools["null"]])
n_stream = fl.SEQ_W - 1 + fl.SEQ_L
if sys.argv[1] == "online":
    online(int(sys.argv[2]), int(sys.argv[3]))
    sys.exit(0)
part, parts = int(sys.argv[1]), int(sys.argv[2])
d = os.path.join(fl.CACHE, f"ssl{part}")
os.makedirs(d, exist_ok=True)
path = os.path.join(fl.CACHE, f"ssl{part}{VARIANT}.jsonl")
done = set()
if os.path.exists(path):
    for l in open(path):
        r = json.loads(l)
        done.add((r["seed"], r["long"], r["case"], r["share"]))
out = open(path, "a")
for seed in range(part, SEEDS, parts):
    ref, held = resplit(alldocs, seed, n_stream)
    np.save(f"{d}/ref.npy", ref)
    for long in LONGS:
        if all((seed, long, c, sh) in done for c, sh in CELLS):
            continue
        refjson = f"{d}/ref_{long}.json"
        subprocess.run([fl.SG, "reference", "build", "--logs", f"{d}/ref.npy", "--model", "minilm", "--out", refjson,
                        "--window", str(fl.SEQ_W), "--ert", str(ERT)] + fl.long_args(long) + FLAGS,
                       check=True, capture_output=True)
        for case, share, x in streams(pools, held, seed):
            if (seed, long, case, share) in done:
                continue
            s, _ = fl.replay(refjson, x, f"{d}/s.npy")
            out.write(json.dumps({"seed": seed, "long": long, "variant": VARIANT, "case": case, "share": share,
                                  "run": None if s["first_alarm"] is None else s["first_alarm"] + 1}) + "\n")
            out.flush()
