"""The embedding of the MLServer test runtime (runtime.py), without MLServer: the
checker of the shadow log (e2e.py check-log) computes the expected cosines with it under
a Python that has no MLServer.

vector(text) is fixture_common.embed (tests/py/grpc/fixture_common.py: unit length, a
function of the input's bytes alone, deterministic per-input noise of scale `noise`) plus
`shift` on every element, as float32 (what the runtime answers, FP32).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fixture_common as fc  # noqa: E402

DIM = 32


def vector(text: bytes, dim: int = DIM, noise: float = 0.0, shift: float = 0.0):
    import numpy as np

    v = np.asarray(fc.embed(text, dim, noise), dtype=np.float64) + shift
    return v.astype(np.float32)


def cosine(a, b) -> float:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
