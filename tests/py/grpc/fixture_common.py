"""Shared parts of the gRPC fixture model servers (oip_server.py, tei_server.py).

Stubs are generated at run time from the vendored protos (proto/ at the repo root, and
stream_test.proto beside this file) with grpc_tools.protoc into a temporary directory:
nothing generated is checked in. Needs grpcio and grpcio-tools (pip).

Embeddings are deterministic functions of the input's bytes, so a test can compute what a
server answers (embed()) and two servers with the same flags answer the same.
"""

import argparse
import atexit
import hashlib
import importlib
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
PROTO_DIR = os.path.join(REPO, "proto")

BEHAVIOURS = ("ok", "slow", "error", "malformed", "wrong_dim", "noisy")

# Bytes that are not a valid protobuf message of any type: field 5, length-delimited,
# declared 16 bytes long with 1 byte following.
MALFORMED = b"\x2a\x10\x00"

_loaded = {}


def load_protos():
    """Generates and imports the stubs once per process; returns a dict of modules."""
    if _loaded:
        return _loaded
    from grpc_tools import protoc  # noqa: F401  (fails early with a clear ImportError)
    import grpc_tools

    out = tempfile.mkdtemp(prefix="shadowgate-grpc-stubs-")
    atexit.register(shutil.rmtree, out, True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [
        os.path.join(PROTO_DIR, "oip", "open_inference_grpc.proto"),
        os.path.join(PROTO_DIR, "tei", "tei.proto"),
        os.path.join(HERE, "stream_test.proto"),
        os.path.join(PROTO_DIR, "tensorflow", "core", "framework", "types.proto"),
        os.path.join(PROTO_DIR, "tensorflow", "core", "framework", "tensor_shape.proto"),
        os.path.join(PROTO_DIR, "tensorflow", "core", "framework", "tensor.proto"),
        os.path.join(PROTO_DIR, "tensorflow_serving", "apis", "predict.proto"),
    ]
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_DIR}", f"-I{HERE}", f"-I{well_known}",
        f"--python_out={out}", f"--grpc_python_out={out}",
    ] + files
    subprocess.run(cmd, check=True)
    sys.path.insert(0, out)
    for key, name in [
        ("oip", "oip.open_inference_grpc_pb2"),
        ("oip_grpc", "oip.open_inference_grpc_pb2_grpc"),
        ("tei", "tei.tei_pb2"),
        ("tei_grpc", "tei.tei_pb2_grpc"),
        ("stream", "stream_test_pb2"),
        ("stream_grpc", "stream_test_pb2_grpc"),
        ("types", "tensorflow.core.framework.types_pb2"),
        ("tensor", "tensorflow.core.framework.tensor_pb2"),
        ("tfs", "tensorflow_serving.apis.predict_pb2"),
    ]:
        _loaded[key] = importlib.import_module(name)
    return _loaded


def _unit_stream(seed: bytes, n: int):
    """n floats in [-1, 1) from blake2b in counter mode."""
    out = []
    counter = 0
    while len(out) < n:
        block = hashlib.blake2b(seed + counter.to_bytes(8, "little"), digest_size=64).digest()
        for (v,) in struct.iter_unpack("<I", block):
            out.append(v / 2**31 - 1.0)
        counter += 1
    return out[:n]


def _normalise(v):
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def embed(text: bytes, dim: int, noise: float = 0.0):
    """The fixtures' embedding of one input: unit length, a function of the bytes alone.

    With noise > 0, a perturbation of that scale per element (also a function of the
    bytes, so repeated calls agree) is added before normalising.
    """
    v = _unit_stream(b"embed:" + text, dim)
    if noise > 0.0:
        # Box-Muller on a second stream: roughly N(0, noise) per element.
        u = _unit_stream(b"noise:" + text, 2 * dim)
        for i in range(dim):
            u1 = (u[2 * i] + 1.0) / 2.0 or 1e-12
            u2 = (u[2 * i + 1] + 1.0) / 2.0
            v[i] += noise * math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)
    return _normalise(v)


def effective_dim(args):
    """wrong_dim answers one float more than --dim."""
    return args.dim + 1 if args.behaviour == "wrong_dim" else args.dim


def effective_noise(args):
    return args.noise if args.behaviour == "noisy" else 0.0


def base_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--behaviour", choices=BEHAVIOURS, default="ok",
                   help="ok; slow (sleep --delay first); error (INTERNAL status); "
                        "malformed (bytes that are not protobuf); wrong_dim (dim+1 "
                        "floats); noisy (embedding plus noise of scale --noise)")
    p.add_argument("--noise", type=float, default=0.05, help="noise scale for noisy")
    p.add_argument("--delay", type=float, default=0.5, help="seconds, for slow")
    return p


def serialize(message):
    """Response serializer that lets a handler send raw bytes (the malformed behaviour)."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()


def add_health_and_reflection(server):
    """grpc.health.v1.Health (SERVING) and server reflection (v1 and v1alpha) for the
    services of the loaded protos, as production servers offer them to grpcurl and probes.
    Skipped when grpcio-health-checking / grpcio-reflection are not installed."""
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection
    except ImportError:
        return
    protos = load_protos()
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    for key in ("oip", "tei", "stream", "tfs"):
        for service in protos[key].DESCRIPTOR.services_by_name.values():
            names.append(service.full_name)
            checker.set(service.full_name, health_pb2.HealthCheckResponse.SERVING)
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(names, server)


def serve(handlers, args):
    """Serves the generic handlers on args.host:args.port; prints READY <port>; blocks
    until SIGTERM or SIGINT."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(handlers)
    add_health_and_reflection(server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        sys.exit(f"could not bind {args.host}:{args.port}")
    server.start()

    def stop(*_):
        server.stop(grace=0.5)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"READY {port}", flush=True)
    server.wait_for_termination()
