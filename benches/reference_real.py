#!/usr/bin/env python3
"""Input drift with a real encoder: the reference detector against shifts of real text.

all-MiniLM-L6-v2 (fixtures/real_models, numpy) embeds the corpus (fixtures/real_models/
corpus.txt, ~20 languages). The reference is built from half of the `doc` lines; the
other half are the null stream's source. Shifts, each applied to 10 %, 50 % or 100 % of a
stream's samples (the rest drawn from the null source):

  topic        English man pages instead of docs            (category man_en)
  language     man pages in other languages                 (category man_i18n)
  truncation   the same held-out docs, cut to 16 tokens     (variant np-trunc16)
  typos        the held-out docs with 1 char in 8 replaced  (re-embedded)
  norm         the held-out docs without L2 normalisation   (variant np-nonorm)

Streams of W - 1 + L samples (window W = 50, L = 200), ERT = L / alpha (alpha = 0.05), so
the calibrated bound on a false alarm within a stream is alpha. Reported per case: the
share of 200 seeded streams with an alarm, and the median samples to the first alarm.
Peer on the same streams: per-dimension two-sample Kolmogorov-Smirnov with Bonferroni
(scipy) between the stream's first n = 100 samples and the reference sample, at alpha.
Alibi Detect and Evidently are not run (Alibi's MMD detectors need TensorFlow or PyTorch).

    cargo build --release --bin shadowgate
    RM_VENVS=... python3 benches/reference_real.py   # writes benches/reference/real.md
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RM = os.path.join(ROOT, "fixtures", "real_models")
SG = os.environ.get("SHADOWGATE", os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "shadowgate"))
W, L, ALPHA, STREAMS = 50, 200, 0.05, 200
ERT = L / ALPHA


def start(variant, port):
    out = subprocess.run([os.path.join(RM, "start.sh"), variant, str(port)], check=True,
                         capture_output=True, text=True).stdout
    pid = int([l for l in out.splitlines() if l.startswith("PID")][0].split()[1])
    return pid


def embed(port, texts):
    out = []
    for i in range(0, len(texts), 64):
        body = json.dumps({"model": "m", "input": texts[i:i + 64]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            data = json.load(r)["data"]
        out += [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]
    return np.array(out, dtype=np.float32)


def typos(text, rng):
    chars = list(text)
    for i in range(len(chars)):
        if chars[i].isalpha() and rng.random() < 1 / 8:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def embed_pools(ref_texts, held, by_cat, rng, port):
    """The reference, the null source and the five shift pools, embedded by the model
    servers started on port, port + 1 (truncating to 16 tokens) and port + 2 (no L2
    normalisation). Also used by reference_fl.py."""
    pids = []
    try:
        pids.append(start("np-fp32", port))
        pids.append(start("np-trunc16", port + 1))
        pids.append(start("np-nonorm", port + 2))
        return {
            "ref": embed(port, ref_texts),
            "null": embed(port, held),
            "topic": embed(port, by_cat["man_en"]),
            "language": embed(port, by_cat["man_i18n"]),
            "truncation": embed(port + 1, held),
            "typos": embed(port, [typos(t, rng) for t in held]),
            "norm": embed(port + 2, held),
        }
    finally:
        for p in pids:
            try:
                os.kill(p, 15)
            except OSError:
                pass


def main():
    lines = open(os.path.join(RM, "corpus.txt"), encoding="utf-8").read().split("\n")
    meta = [l.split("\t") for l in open(os.path.join(RM, "corpus.meta.tsv")).read().splitlines()[1:]]
    by_cat = {}
    for (n, cat, _chars) in meta:
        text = lines[int(n) - 1].strip()
        if text:
            by_cat.setdefault(cat, []).append(text)
    rng = random.Random(7)
    docs = by_cat["doc"][:]
    rng.shuffle(docs)
    ref_texts, held = docs[: len(docs) // 2], docs[len(docs) // 2:]
    t0 = time.time()
    sources = embed_pools(ref_texts, held, by_cat, rng, 18301)
    ref = sources.pop("ref")
    print(f"embedded {len(ref)} reference + {sum(len(v) for v in sources.values())} stream inputs in {time.time() - t0:.0f} s", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="sg-ref-real-")
    np.save(os.path.join(work, "ref.npy"), ref)
    refjson = os.path.join(work, "ref.json")
    subprocess.run([SG, "reference", "build", "--logs", os.path.join(work, "ref.npy"), "--model", "minilm",
                    "--out", refjson, "--window", str(W), "--ert", str(ERT)], check=True, capture_output=True)
    rows = []
    n_stream = W - 1 + L
    for case in ["null", "topic", "language", "truncation", "typos", "norm"]:
        for share in ([0.0] if case == "null" else [0.1, 0.5, 1.0]):
            alarms, delays, ks_hits = 0, [], 0
            t_replay = 0.0
            for s in range(STREAMS):
                r = np.random.default_rng(1000 * s + int(share * 100) + hash(case) % 997)
                null = sources["null"][r.integers(0, len(sources["null"]), n_stream)]
                shifted = sources[case][r.integers(0, len(sources[case]), n_stream)]
                take = r.random(n_stream) < share
                x = np.where(take[:, None], shifted, null).astype(np.float32)
                path = os.path.join(work, "s.npy")
                np.save(path, x)
                t = time.time()
                out = subprocess.run([SG, "reference", "replay", "--reference", refjson, "--input", path],
                                     check=True, capture_output=True, text=True).stdout
                t_replay += time.time() - t
                summary = json.loads(out.strip().splitlines()[-1])
                if summary["first_alarm"] is not None:
                    alarms += 1
                    delays.append(summary["first_alarm"] + 1)
                # Peer: per-dimension KS with Bonferroni, first 100 samples vs the reference.
                first = x[:100]
                p = min(stats.ks_2samp(first[:, j], ref[:, j]).pvalue for j in range(ref.shape[1]))
                if p < ALPHA / ref.shape[1]:
                    ks_hits += 1
            rows.append((case, share, alarms / STREAMS, float(np.median(delays)) if delays else None, ks_hits / STREAMS))
            print(rows[-1], file=sys.stderr)
    out = [f"Real encoder: all-MiniLM-L6-v2 (numpy, fixtures/real_models); reference from {len(ref)} `doc` lines;",
           f"window {W}, ERT {ERT:.0f} (false alarm within L = {L} samples at most {ALPHA}); {STREAMS} seeded streams per row.",
           "KS: per-dimension two-sample KS, Bonferroni over 384 dimensions, first 100 samples vs the reference sample.", "",
           "| shift | share of samples shifted | alarm within L (shadowgate) | median samples to alarm | KS+Bonferroni rejects (n = 100) |",
           "|---|---:|---:|---:|---:|"]
    for case, share, rate, med, ks in rows:
        out.append(f"| {case} | {share:.0%} | {rate:.3f} | {'' if med is None else f'{med:.0f}'} | {ks:.3f} |")
    path = os.path.join(ROOT, "benches", "reference", "real.md")
    open(path, "w").write("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
