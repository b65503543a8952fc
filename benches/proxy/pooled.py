#!/usr/bin/env python3
"""Pool the paired rounds of several runs of benches/proxy_vs_nginx.sh.

    python3 benches/proxy/pooled.py benches/proxy/runs/*.runs.csv

For each pair of cells (shadowgate against nginx, saturated and at the same offered
load), every round in which both ran gives one paired ratio per column; this prints the
median of those ratios and in how many rounds shadowgate was lower. One run has 3-7
rounds, and the p99 of one cell swings between rounds by more than the proxies differ;
pooling the runs of one build is how to read it.
"""
import csv
import statistics
import sys

PAIRS = {
    "saturated": ("sg_plain", "ng_plain"),
    "same offered load": ("sg_eq", "ng_eq"),
}
COLUMNS = [("p99_ms", "p99"), ("p50_ms", "p50"), ("cpu_us_per_req", "CPU/req"), ("rps", "req/s")]


def main(paths):
    pooled = {pair: [] for pair in PAIRS}
    for path in paths:
        rounds = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row["round"] != "warm":
                    rounds.setdefault(row["round"], {})[row["name"]] = row
        for pair, (a, b) in PAIRS.items():
            for cells in rounds.values():
                if a in cells and b in cells:
                    pooled[pair].append(
                        {c: float(cells[a][c]) / float(cells[b][c]) for c, _ in COLUMNS}
                    )
    print("| plain proxying | rounds | " + " | ".join(
        f"{label}: median paired ratio | lower than nginx's" for _, label in COLUMNS) + " |")
    print("|---|---:|" + "---:|---:|" * len(COLUMNS))
    for pair, ratios in pooled.items():
        if not ratios:
            continue
        cells = []
        for c, _ in COLUMNS:
            values = [r[c] for r in ratios]
            cells.append(f"{statistics.median(values):.2f}×")
            cells.append(f"{sum(v < 1 for v in values)} of {len(values)}")
        print(f"| {pair} | {len(ratios)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
