"""Inclusive and self time per function from `perf script` output (read on stdin), with
inlined frames counted, tokio/std plumbing and the kernel folded into a few buckets.

usage: perf script -i perf.data -F ip,sym,dso | python3 perf_inclusive.py [TOP] [FILTER]
FILTER: a regular expression; only frames matching it are listed (e.g. "shadowgate::").
"""

import collections
import re
import sys

TOP = int(sys.argv[1]) if len(sys.argv) > 1 else 60
FILTER = sys.argv[2] if len(sys.argv) > 2 else ""

inclusive = collections.Counter()
self_time = collections.Counter()
samples = 0
stack = []


def short(sym):
    sym = re.sub(r"<[^<>]*>", "", sym)  # strip one level of generics, repeatedly
    for _ in range(6):
        sym2 = re.sub(r"<[^<>]*>", "", sym)
        if sym2 == sym:
            break
        sym = sym2
    return sym.replace(" (inlined)", "").strip()[:140]


def flush():
    global samples
    if not stack:
        return
    samples += 1
    seen = set()
    for i, (sym, dso) in enumerate(stack):
        name = short(sym) if sym and sym != "[unknown]" else "[%s]" % dso
        if "kernel" in dso:
            name = "[kernel] " + name
        if i == 0:
            self_time[name] += 1
        if name not in seen:
            seen.add(name)
            inclusive[name] += 1
    stack.clear()


for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        flush()
        continue
    m = re.match(r"\s+([0-9a-f]+)\s+(.*)\s+\((.*)\)$", line)
    if m:
        stack.append((m.group(2), m.group(3)))
    else:
        flush()
flush()

print("samples:", samples)
print("## inclusive %")
for name, n in inclusive.most_common():
    if FILTER and not re.search(FILTER, name):
        continue
    print("%6.2f%%  %s" % (100.0 * n / samples, name))
    TOP -= 1
    if TOP <= 0:
        break
print("## self % (top 25)")
for name, n in self_time.most_common(25):
    print("%6.2f%%  %s" % (100.0 * n / samples, name))
