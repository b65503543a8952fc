"""Write the fixed OpenAI-style embeddings answer the benchmark upstreams return:
{"object":"list","data":[{"object":"embedding","index":0,"embedding":[...DIM floats...]}],"model":"m"}
Values are deterministic (splitmix64 of the index and SEED), 3 decimals: ~2.6 KB at 384.

usage: python3 make_body.py SEED [DIM] > body.json
"""

import sys

SEED = int(sys.argv[1])
DIM = int(sys.argv[2]) if len(sys.argv) > 2 else 384
MASK = (1 << 64) - 1


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def value(i):
    # The canary (seed 1) is the baseline (seed 0) plus a little noise: cosine ~0.99.
    base = (splitmix64(i) >> 11) / float(1 << 53) * 0.2 - 0.1
    noise = (splitmix64(i + (SEED << 32)) >> 11) / float(1 << 53) * 0.02 - 0.01
    return base + (noise if SEED else 0.0)


floats = ",".join("%.3f" % value(i) for i in range(DIM))
sys.stdout.write(
    '{"object":"list","data":[{"object":"embedding","index":0,"embedding":[%s]}],'
    '"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}' % floats
)
