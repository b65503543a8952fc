"""Markdown table of criterion results (target/criterion/*/new), medians, for
BENCHMARKS.md: time per iteration and throughput, one line per benchmark, and per group
the ratio of each function to the one named in RATIO_TO (when present). Next to the
median, the fastest sample (criterion's sample.json: time / iterations of each sample):
on a shared VM the medians swing with other work while the fastest samples hold still,
so both are printed.

usage: python3 criterion_table.py TARGET_DIR GROUP... [--ratio-to FUNCTION]
"""

import json
import os
import sys

args = sys.argv[1:]
ratio_to = None
if "--ratio-to" in args:
    i = args.index("--ratio-to")
    ratio_to = args[i + 1]
    del args[i : i + 2]
root, groups = args[0], args[1:]


def human_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return "%.3g %s" % (ns / scale, unit)
    return "%.3g ns" % ns


def human_rate(per_s, unit):
    if unit == "Bytes":
        return "%.2f GiB/s" % (per_s / 2**30) if per_s >= 2**30 else "%.0f MiB/s" % (per_s / 2**20)
    if unit == "BytesDecimal":
        return "%.1f GB/s" % (per_s / 1e9)
    return "%.3g M elem/s" % (per_s / 1e6)


rows = []
for group in groups:
    gdir = os.path.join(root, group)
    results = {}
    for func in sorted(os.listdir(gdir)):
        fdir = os.path.join(gdir, func)
        if func == "report" or not os.path.isdir(fdir):
            continue
        params = [p for p in os.listdir(fdir) if os.path.isdir(os.path.join(fdir, p, "new"))]
        if os.path.isdir(os.path.join(fdir, "new")):
            params = [""]
        for param in params:
            d = os.path.join(fdir, param, "new")
            est = json.load(open(os.path.join(d, "estimates.json")))
            bench = json.load(open(os.path.join(d, "benchmark.json")))
            ns = est["median"]["point_estimate"]
            sample = json.load(open(os.path.join(d, "sample.json")))
            fastest = min(t / n for t, n in zip(sample["times"], sample["iters"]))
            tp = bench.get("throughput") or {}
            unit, amount = next(iter(tp.items())) if tp else (None, None)
            results[(func, param)] = (ns, fastest, unit, amount)
    params = sorted({p for _, p in results}, key=lambda p: (len(p), p))
    for param in params:
        base = results.get((ratio_to, param)) if ratio_to else None
        for (func, p), (ns, fastest, unit, amount) in sorted(results.items()):
            if p != param:
                continue
            rate = human_rate(amount / (ns * 1e-9), unit) if unit else ""
            ratio = ratio_fastest = ""
            if base and func != ratio_to:
                ratio = "%.2f×" % (ns / base[0])
                ratio_fastest = "%.2f×" % (fastest / base[1])
            rows.append(
                (group, func, param, human_time(ns), rate, ratio, human_time(fastest), ratio_fastest)
            )

base = ratio_to or "-"
print(
    "| group | function | param | median time | throughput | time ÷ %s | fastest sample | fastest ÷ %s's |"
    % (base, base)
)
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %s |" % " | ".join(r))
