#!/usr/bin/env python3
"""MLServer (Open Inference Protocol v2, REST and gRPC) behind the sidecar, driven by
tritonclient, a plain grpcio stub and a plain HTTP/1.1 client: tests/it/grpc_real.rs.

Subcommands (all on 127.0.0.1):

  servers --dir D --server NAME[:noise=X][:shift=Y] ...
      Under the MLServer venv: starts one `mlserver start` per NAME (runtime.Embedder,
      model "embedder"), each with its own REST, gRPC and metrics port; once every one
      answers ready, prints `READY {"NAME": {"http": P, "grpc": P}, ...}`. Stops them
      all when standard input closes (or on SIGTERM).

  drive --proxy HOST:PORT --primary-http P --primary-grpc P --out REPORT.json
      Under the venv: 100 ModelInfer calls (batches of 1-4 strings) through the proxy
      port with tritonclient.grpc (x-request-id g-K) and the same directly to the
      primary; at the same time the same requests with a plain grpcio client, raw
      bytes (b-K, `raw`, then ModelStreamInfer through the proxy and directly), and the
      same inputs as OIP v2 REST through the proxy's HTTP/1.1 (r-K), all on one port.
      Asserts the client's answers are the primary's; writes the requests and what it
      saw to REPORT.json and prints it as one JSON line.

  raw --proxy HOST:PORT --primary-grpc P
      Under the venv (run by drive): the plain grpcio client's part.

  faults --proxy HOST:PORT --primary-grpc P --calls N
      Under the venv: N tritonclient calls through the proxy and directly; asserts the
      answers are the same. Prints a JSON line.

  check-log --log DIR --report REPORT.json --canary-noise X --canary-shift Y
      Under a Python with pyarrow: reads the shadow log; per input, the cosine of its
      gRPC pairs (g-K, b-K) against its REST pair (r-K) and against the cosine computed
      here from embedding.vector. Prints a JSON line.
"""

import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GRPC_DIR = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, GRPC_DIR)

MODEL = "embedder"
# Response headers the sidecar adds to a gRPC answer: the request id (README, "Request
# ids"), nothing else.
SIDECAR_ADDS = ("x-request-id",)
# The three clients of `drive` start together once all are ready.
START = threading.Barrier(3)
WORDS = [
    "shadow", "canary", "baseline", "embedding", "naïve café", "третий", "日本語のテキスト",
    "model", "drift", "cosine", "🚀 launch", "gRPC", "über", "query", "ø",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- servers


def cmd_servers(args):
    import urllib.request

    mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, GRPC_DIR, env.get("PYTHONPATH", "")])
    procs, ports = {}, {}
    for spec in args.server:
        name, *opts = spec.split(":")
        extra = {"dim": 32}
        for o in opts:
            k, v = o.split("=")
            extra[k] = float(v)
        root = os.path.join(args.dir, name)
        os.makedirs(os.path.join(root, MODEL), exist_ok=True)
        http, grpc_port, metrics = free_port(), free_port(), free_port()
        with open(os.path.join(root, "settings.json"), "w") as f:
            json.dump({
                "debug": False,
                "host": "127.0.0.1",
                "http_port": http,
                "grpc_port": grpc_port,
                "metrics_port": metrics,
                "parallel_workers": 0,
                "server_name": f"mlserver-{name}",
            }, f)
        with open(os.path.join(root, MODEL, "model-settings.json"), "w") as f:
            json.dump({
                "name": MODEL,
                "implementation": "runtime.Embedder",
                "parameters": {"extra": extra},
            }, f)
        log = open(os.path.join(args.dir, f"{name}.log"), "wb")
        procs[name] = subprocess.Popen(
            [mlserver, "start", root], env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        ports[name] = {"http": http, "grpc": grpc_port}

    def stop(*_):
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for p in procs.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    deadline = time.time() + args.timeout
    pending = dict(ports)
    while pending:
        for name in list(pending):
            if procs[name].poll() is not None:
                stop()
                with open(os.path.join(args.dir, f"{name}.log"), "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
                sys.exit(f"mlserver {name} exited ({procs[name].returncode}):\n{tail}")
            url = f"http://127.0.0.1:{pending[name]['http']}/v2/models/{MODEL}/ready"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    ok = r.status == 200
            except OSError:
                ok = False
            if ok:
                try:
                    socket.create_connection(("127.0.0.1", pending[name]["grpc"]), 1).close()
                    del pending[name]
                except OSError:
                    pass
        if time.time() > deadline:
            stop()
            sys.exit(f"mlserver not ready after {args.timeout}s: {sorted(pending)}")
        time.sleep(0.1)
    print("READY " + json.dumps(ports), flush=True)
    sys.stdin.read()  # until the test closes it (or dies)
    stop()


# ---------------------------------------------------------------- clients


def batches(n, seed):
    rng = random.Random(seed)
    out = []
    for k in range(n):
        size = 1 + rng.randrange(4)
        out.append([f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{k}.{i}" for i in range(size)])
    return out


def triton_input(texts):
    import numpy as np
    import tritonclient.grpc as tc

    inp = tc.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return inp


def raw_request(pb, texts, rid):
    """The ModelInferRequest tritonclient sends: BYTES in raw_input_contents (each
    element a 4-byte little-endian length, then its bytes)."""
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    req = pb.ModelInferRequest(model_name=MODEL, id=rid)
    t = req.inputs.add()
    t.name, t.datatype = "text", "BYTES"
    t.shape.append(len(texts))
    req.raw_input_contents.append(raw)
    return req


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def grpc_path(args, reqs, result):
    """tritonclient.grpc calls through the proxy and directly.

    (Not ModelStreamInfer: MLServer's answers on that stream are ModelInferResponse
    messages, tritonclient reads ModelStreamInferResponse, Triton's wrapper, and takes
    the model name for an error message, directly as through the sidecar. The raw
    client streams instead.)"""
    import numpy as np
    import tritonclient.grpc as tc

    through = tc.InferenceServerClient(url=args.proxy)
    direct = tc.InferenceServerClient(url=f"127.0.0.1:{args.primary_grpc}")
    START.wait(30)
    result["grpc_started"] = time.time()
    items = 0
    for k, texts in enumerate(reqs):
        a = through.infer(MODEL, [triton_input(texts)], request_id=f"k{k}",
                          headers={"x-request-id": f"g-{k}"}, client_timeout=20)
        b = direct.infer(MODEL, [triton_input(texts)], request_id=f"k{k}", client_timeout=20)
        ea, eb = a.as_numpy("embedding"), b.as_numpy("embedding")
        check(ea.shape == (len(texts), 32) and ea.dtype == np.float32, f"g-{k}: {ea.shape}")
        check(np.array_equal(ea, eb), f"g-{k}: tritonclient outputs differ")
        check(a.get_response() == b.get_response(), f"g-{k}: response messages differ")
        items += len(texts)
    result["grpc_finished"] = time.time()
    result["grpc_items"] = items

    through.close()
    direct.close()


def raw_path(args, reqs, result):
    """The raw-bytes client, in a process of its own (its stubs and tritonclient's both
    define the protobuf package `inference`, which one process refuses). Once it has
    its stubs and channels it says LOADED; then all three clients start together."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "raw", "--proxy", args.proxy,
         "--primary-grpc", str(args.primary_grpc), "--calls", str(args.calls),
         "--seed", str(args.seed)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        if line.strip() != "LOADED":
            proc.kill()
            check(False, f"raw client: {line!r} {proc.stderr.read()}")
        START.wait(30)
        out, err = proc.communicate("go\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    check(proc.returncode == 0, f"raw client failed:\n{err}\n{out}")
    result.update(json.loads(out.strip().splitlines()[-1]))


def cmd_raw(args):
    """A plain grpcio client (stubs generated from proto/oip): each request's raw answer
    bytes, status and metadata, through the proxy (x-request-id b-K) and directly."""
    import grpc

    import fixture_common as fc

    reqs = batches(args.calls, args.seed)
    pb = fc.load_protos()["oip"]
    grpc_stubs = fc.load_protos()["oip_grpc"]
    ch_through = grpc.insecure_channel(args.proxy)
    ch_direct = grpc.insecure_channel(f"127.0.0.1:{args.primary_grpc}")
    method = "/inference.GRPCInferenceService/ModelInfer"
    raw_through = ch_through.unary_unary(method)  # bytes in, bytes out
    raw_direct = ch_direct.unary_unary(method)
    for ch in (ch_through, ch_direct):
        grpc.channel_ready_future(ch).result(timeout=20)
    print("LOADED", flush=True)
    sys.stdin.readline()  # go
    result = {"raw_started": time.time(), "raw_bytes": 0}
    items = 0
    for k, texts in enumerate(reqs):
        body = raw_request(pb, texts, f"k{k}").SerializeToString()
        ra, ca = raw_through.with_call(body, metadata=[("x-request-id", f"b-{k}")], timeout=20)
        rb, cb = raw_direct.with_call(body, timeout=20)
        check(ra == rb, f"b-{k}: raw answers differ ({len(ra)} vs {len(rb)} bytes)")
        check((ca.code(), ca.details()) == (cb.code(), cb.details()), f"b-{k}: status differs")
        check(ca.code() == grpc.StatusCode.OK, f"b-{k}: {ca.code()}")
        check(list(ca.trailing_metadata()) == list(cb.trailing_metadata()),
              f"b-{k}: trailing metadata {ca.trailing_metadata()} vs {cb.trailing_metadata()}")
        # Initial metadata: the primary's, plus the request id the sidecar returns (as
        # documented).
        added = {m.key: m.value for m in ca.initial_metadata() if m.key in SIDECAR_ADDS}
        kept = [tuple(m) for m in ca.initial_metadata() if m.key not in SIDECAR_ADDS]
        check(kept == [tuple(m) for m in cb.initial_metadata()],
              f"b-{k}: initial metadata {ca.initial_metadata()} vs {cb.initial_metadata()}")
        check(added.get("x-request-id") == f"b-{k}", f"b-{k}: request id {added}")
        decoded = pb.ModelInferResponse.FromString(ra)
        check(list(decoded.outputs[0].shape) == [len(texts), 32], f"b-{k}: shape")
        result["raw_bytes"] += len(ra)
        items += len(texts)
        if k == 0:
            result["raw_status"] = str(ca.code())
            result["raw_trailing_metadata"] = [list(m) for m in ca.trailing_metadata()]
            result["raw_initial_metadata"] = [list(m) for m in ca.initial_metadata()]
    result["raw_finished"] = time.time()
    result["raw_calls"] = len(reqs)
    result["raw_items"] = items
    # ModelStreamInfer (bidirectional): five requests on one stream, the answers'
    # bytes and status through the proxy as directly; not mirrored (the test counts).
    stream = "/inference.GRPCInferenceService/ModelStreamInfer"
    answers = []
    for ch, md in [(ch_through, [("x-request-id", "b-stream")]), (ch_direct, [])]:
        bodies = [raw_request(pb, texts, f"s{j}").SerializeToString()
                  for j, texts in enumerate(reqs[:5])]
        call = ch.stream_stream(stream)(iter(bodies), metadata=md, timeout=20)
        answers.append((list(call), call.code(), list(call.trailing_metadata())))
    check(answers[0] == answers[1], f"stream answers differ: {answers}")
    check(answers[0][1] == grpc.StatusCode.OK, f"stream: {answers[0][1]}")
    shapes = []
    for j, m in enumerate(answers[0][0]):
        r = pb.ModelInferResponse.FromString(m)
        # (MLServer gives every answer of a stream the first request's id.)
        check(list(r.outputs[0].shape) == [len(reqs[j]), 32], f"stream answer {j}: {r}")
        shapes.append([r.id, list(r.outputs[0].shape)])
    result["stream_answers"] = shapes
    result["stream_messages"] = len(answers[0][0])
    # The generated stub too: ServerReady and ModelReady through the proxy (not mirrored).
    stub = grpc_stubs.GRPCInferenceServiceStub(ch_through)
    result["server_ready"] = stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    result["model_ready"] = stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=10).ready
    print(json.dumps(result), flush=True)


def rest_path(args, reqs, result):
    """The same inputs as OIP v2 REST through the proxy's HTTP/1.1, and directly."""
    import http.client

    through = http.client.HTTPConnection(*args.proxy.split(":"), timeout=20)
    direct = http.client.HTTPConnection("127.0.0.1", args.primary_http, timeout=20)
    START.wait(30)
    result["rest_started"] = time.time()
    items = 0
    for k, texts in enumerate(reqs):
        body = json.dumps({"id": f"k{k}", "inputs": [
            {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]})
        answers = []
        for conn, hdrs in [(through, {"x-request-id": f"r-{k}"}), (direct, {})]:
            conn.request("POST", f"/v2/models/{MODEL}/infer", body=body.encode(),
                         headers={"content-type": "application/json", **hdrs})
            resp = conn.getresponse()
            answers.append((resp.status, resp.read()))
        check(answers[0][0] == 200, f"r-{k}: HTTP {answers[0][0]} {answers[0][1][:200]}")
        a, b = (json.loads(x[1]) for x in answers)
        check(a == b, f"r-{k}: REST answers differ")
        check(a["outputs"][0]["shape"] == [len(texts), 32], f"r-{k}: {a['outputs'][0]['shape']}")
        items += len(texts)
    result["rest_finished"] = time.time()
    result["rest_items"] = items


def cmd_drive(args):
    reqs = batches(args.calls, args.seed)
    result = {"requests": reqs}
    errors = []

    def run(f):
        try:
            f(args, reqs, result)
        except BaseException as e:  # noqa: BLE001
            import traceback
            errors.append(f"{f.__name__}: {e}\n{traceback.format_exc()}")

    threads = [threading.Thread(target=run, args=(f,)) for f in (grpc_path, raw_path, rest_path)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("\n".join(errors))
    # Both clients were on the proxy port at the same time.
    result["overlap_seconds"] = (
        min(result["grpc_finished"], result["raw_finished"], result["rest_finished"])
        - max(result["grpc_started"], result["raw_started"], result["rest_started"]))
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(json.dumps({k: v for k, v in result.items() if k != "requests"}), flush=True)


def cmd_faults(args):
    import numpy as np
    import tritonclient.grpc as tc

    reqs = batches(args.calls, args.seed)
    through = tc.InferenceServerClient(url=args.proxy)
    direct = tc.InferenceServerClient(url=f"127.0.0.1:{args.primary_grpc}")
    items, slowest = 0, 0.0
    for k, texts in enumerate(reqs):
        started = time.time()
        a = through.infer(MODEL, [triton_input(texts)], request_id=f"k{k}",
                          headers={"x-request-id": f"f-{k}"}, client_timeout=20)
        slowest = max(slowest, time.time() - started)
        b = direct.infer(MODEL, [triton_input(texts)], request_id=f"k{k}", client_timeout=20)
        check(np.array_equal(a.as_numpy("embedding"), b.as_numpy("embedding")),
              f"f-{k}: outputs differ")
        check(a.get_response() == b.get_response(), f"f-{k}: response messages differ")
        items += len(texts)
    print(json.dumps({"calls": len(reqs), "items": items, "slowest_call_seconds": slowest}),
          flush=True)


# ---------------------------------------------------------------- shadow log


def cmd_check_log(args):
    import pyarrow.dataset as ds

    import embedding

    with open(args.report) as f:
        report = json.load(f)
    table = ds.dataset(args.log, format="parquet", partitioning="hive").to_table(
        columns=["request_id", "item", "cosine_similarity", "baseline_outcome",
                 "canary_outcome"])
    rows = {}
    for rid, item, cos in zip(table.column("request_id").to_pylist(),
                              table.column("item").to_pylist(),
                              table.column("cosine_similarity").to_pylist()):
        rows[(rid, item)] = cos
    counts = {p: sum(1 for (rid, _) in rows if rid.startswith(p + "-")) for p in "gbr"}
    missing, diff_rest, diff_py = [], 0.0, 0.0
    compared = 0
    for k, texts in enumerate(report["requests"]):
        for i, t in enumerate(texts):
            want = embedding.cosine(
                embedding.vector(t.encode()),
                embedding.vector(t.encode(), noise=args.canary_noise, shift=args.canary_shift))
            got = {p: rows.get((f"{p}-{k}", i)) for p in "gbr"}
            if any(v is None for v in got.values()):
                missing.append([k, i, got])
                continue
            compared += 1
            diff_rest = max(diff_rest, abs(got["g"] - got["r"]), abs(got["b"] - got["r"]))
            diff_py = max(diff_py, *(abs(v - want) for v in got.values()))
    cosines = [v for v in rows.values() if v is not None]
    print(json.dumps({
        "rows": len(rows),
        "rows_by_path": counts,
        "inputs_compared": compared,
        "missing": missing[:10],
        "max_abs_cos_grpc_minus_rest": diff_rest,
        "max_abs_cos_minus_python": diff_py,
        "min_cosine": min(cosines) if cosines else None,
        "max_cosine": max(cosines) if cosines else None,
    }), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("servers")
    s.add_argument("--dir", required=True)
    s.add_argument("--server", action="append", required=True)
    s.add_argument("--timeout", type=float, default=90)
    d = sub.add_parser("drive")
    d.add_argument("--proxy", required=True)
    d.add_argument("--primary-http", type=int, required=True)
    d.add_argument("--primary-grpc", type=int, required=True)
    d.add_argument("--calls", type=int, default=100)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--out", required=True)
    w = sub.add_parser("raw")
    w.add_argument("--proxy", required=True)
    w.add_argument("--primary-grpc", type=int, required=True)
    w.add_argument("--calls", type=int, default=100)
    w.add_argument("--seed", type=int, default=7)
    f = sub.add_parser("faults")
    f.add_argument("--proxy", required=True)
    f.add_argument("--primary-grpc", type=int, required=True)
    f.add_argument("--calls", type=int, default=10)
    f.add_argument("--seed", type=int, default=11)
    c = sub.add_parser("check-log")
    c.add_argument("--log", required=True)
    c.add_argument("--report", required=True)
    c.add_argument("--canary-noise", type=float, default=0.0)
    c.add_argument("--canary-shift", type=float, default=0.0)
    args = p.parse_args()
    {"servers": cmd_servers, "drive": cmd_drive, "raw": cmd_raw, "faults": cmd_faults,
     "check-log": cmd_check_log}[args.cmd](args)


if __name__ == "__main__":
    main()
