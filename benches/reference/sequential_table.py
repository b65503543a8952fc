#!/usr/bin/env python3
"""Table 3 of the Failing-Loudly benchmark (samples to alarm on streams) for ours alone,
with the MMDDriftOnline columns quoted from an earlier report on the same streams.

`benches/reference_fl.py online` runs MMDDriftOnline only when torch and alibi-detect are
installed (a ~2 GB install, and ~10 CPU-hours for its 3200 streams). The streams are
seeded by (case, share, seed) and drawn from the cached embeddings, so every run of the
harness replays the same streams; this script takes ours from $FL_CACHE/res_online.jsonl
(parts `online` and `seqsplit`) and the peer's alarm rate and median from table 3 of
PEER_MD (default benches/reference/failing_loudly.md, the run that had torch).

    FL_CACHE=/work/fl python3 benches/reference/sequential_table.py > OUT.md
"""

import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("FL_CACHE", "/work/fl")
PEER_MD = os.environ.get("PEER_MD", os.path.join(HERE, "failing_loudly.md"))


def peer_table(path):
    """{(case, share%): (alarm-rate cell, median cell)} from the MMDDriftOnline columns."""
    text = open(path, encoding="utf-8").read()
    start = text.index("## 3. Samples to alarm")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) < 6 or not re.fullmatch(r"\d+%", cols[1]):
            continue
        rows[(cols[0], cols[1])] = (cols[-2], cols[-1])
    return rows


def cell(rows):
    alarms = [r for r in rows if r["alarm"]]
    rate = f"{len(alarms) / len(rows):.3f} ({len(alarms)}/{len(rows)})" if rows else "–"
    median = f"{statistics.median(r['run'] for r in alarms):.0f}" if alarms else "–"
    return rate, median


def main():
    rows = [json.loads(l) for l in open(os.path.join(CACHE, "res_online.jsonl")) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault((r["exp"], r["det"], r["case"], r["share"]), []).append(r)
    peer = peer_table(PEER_MD)
    keys = sorted({(r["case"], r["share"]) for r in rows if r["exp"] == "seq"},
                  key=lambda k: (["null", "topic", "language", "truncation", "typos", "norm"].index(k[0]), k[1]))
    out = ["| shift | share | ours: alarm rate | ours: median samples to alarm | ours, matched: alarm rate "
           "| ours, matched: median | MMDDriftOnline: alarm rate | MMDDriftOnline: median samples to alarm |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case, share in keys:
        pct = f"{share * 100:.0f}%"
        o = cell(by.get(("seq", "ours", case, share), []))
        m = cell(by.get(("seq", "ours_matched", case, share), []))
        p = peer.get((case, pct), ("–", "–"))
        out.append(f"| {case} | {pct} | {o[0]} | {o[1]} | {m[0]} | {m[1]} | {p[0]} | {p[1]} |")
    split = by.get(("seqsplit", "ours", "null", 0.0), [])
    if split:
        r, med = cell(split)
        out.append("")
        out.append(f"Exchangeable null (part `seqsplit`, a fresh 750/750 re-split per stream, drawn without "
                   f"replacement): ours {r}, median {med}.")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
