#!/usr/bin/env python3
"""Smoke test of the gRPC fixture servers: starts each variant on a free loopback port,
calls it with a grpcio client, checks dimensions, values (against fixture_common.embed)
and determinism, and stops it.

    python3 tests/py/grpc/smoke.py      # needs grpcio, grpcio-tools

Prints one line per check and a closing "N passed, M failed"; exits non-zero on failure.
"""

import math
import os
import struct
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import grpc  # noqa: E402

import fixture_common as fc  # noqa: E402

DIM = 8
TEXTS = [b"hello", b"world", "caf\u00e9 \u6f22\u5b57".encode()]


class Server:
    """A fixture server subprocess, up once it printed READY <port>."""

    def __init__(self, script, *flags):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, script), "--port", "0", *flags],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"{script} {flags}: no READY line (got {line!r})")
        self.port = int(line.split()[1])
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        grpc.channel_ready_future(self.channel).result(timeout=10)

    def raw_unary(self, path, request):
        """The answer's bytes, undecoded."""
        call = self.channel.unary_unary(
            path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=None
        )
        return call(request, timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.channel.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def infer_request(pb, texts, raw_bytes=False):
    request = pb.ModelInferRequest(model_name="embedder", id="req-1")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    if raw_bytes:
        request.raw_input_contents.append(b"".join(struct.pack("<I", len(t)) + t for t in texts))
    else:
        tensor.contents.bytes_contents.extend(texts)
    return request


def f32(values):
    """Values rounded to float32, as the servers send them."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def rows_of(response, index=0):
    out = response.outputs[index]
    n, d = out.shape
    if response.raw_output_contents:
        raw = response.raw_output_contents[index]
        if out.datatype == "FP32":
            flat = struct.unpack(f"<{n * d}f", raw)
        elif out.datatype == "FP16":
            flat = struct.unpack(f"<{n * d}e", raw)
        else:
            flat = [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
    else:
        flat = out.contents.fp32_contents
    assert len(flat) == n * d, (len(flat), n, d)
    return [list(flat[i * d:(i + 1) * d]) for i in range(n)]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def check_oip_ok_typed_and_raw(pb, stub_cls, **_):
    with Server("oip_server.py", "--dim", str(DIM)) as typed, Server(
        "oip_server.py", "--dim", str(DIM), "--raw"
    ) as raw:
        a = stub_cls(typed.channel).ModelInfer(infer_request(pb, TEXTS), timeout=10)
        b = stub_cls(typed.channel).ModelInfer(infer_request(pb, TEXTS), timeout=10)
        c = stub_cls(raw.channel).ModelInfer(infer_request(pb, TEXTS, raw_bytes=True), timeout=10)
        assert a.outputs[0].name == "embedding" and a.outputs[0].datatype == "FP32"
        assert list(a.outputs[0].shape) == [3, DIM], a.outputs[0].shape
        assert not a.raw_output_contents and len(c.raw_output_contents) == 1
        assert a.id == "req-1"
        assert rows_of(a) == rows_of(b), "not deterministic across calls"
        assert rows_of(a) == rows_of(c), "raw and typed answers differ"
        for text, row in zip(TEXTS, rows_of(a)):
            assert row == f32(fc.embed(text, DIM)), text
            assert abs(sum(x * x for x in row) - 1.0) < 1e-5
        assert rows_of(a)[0] != rows_of(a)[1]


def check_oip_fp16_bf16(pb, stub_cls, **_):
    for datatype, tol in (("FP16", 1e-3), ("BF16", 1e-2)):
        with Server("oip_server.py", "--dim", str(DIM), "--datatype", datatype) as s:
            r = stub_cls(s.channel).ModelInfer(infer_request(pb, TEXTS[:2]), timeout=10)
            assert r.outputs[0].datatype == datatype
            assert len(r.raw_output_contents[0]) == 2 * 2 * DIM
            for text, row in zip(TEXTS, rows_of(r)):
                want = fc.embed(text, DIM)
                assert max(abs(x - y) for x, y in zip(row, want)) < tol, (datatype, row, want)


def check_oip_health_and_metadata(pb, stub_cls, **_):
    with Server("oip_server.py", "--dim", "16") as s:
        stub = stub_cls(s.channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="embedder"), timeout=10).ready
        md = stub.ModelMetadata(pb.ModelMetadataRequest(name="embedder"), timeout=10)
        assert md.name == "embedder" and md.inputs[0].datatype == "BYTES"
        assert list(md.outputs[0].shape) == [-1, 16]


def check_oip_streams(pb, stream_pb, stream_stub_cls, stub_cls, **_):
    with Server("oip_server.py", "--dim", str(DIM), "--raw") as s:
        batch = rows_of(stub_cls(s.channel).ModelInfer(infer_request(pb, TEXTS), timeout=10))
        streams = stream_stub_cls(s.channel)
        each = list(streams.InferEach(infer_request(pb, TEXTS), timeout=10))
        assert len(each) == 3
        assert [rows_of(r)[0] for r in each] == batch
        assert all(list(r.outputs[0].shape) == [1, DIM] for r in each)
        bidi = list(streams.InferBidi(iter([infer_request(pb, [t]) for t in TEXTS[:2]]), timeout=10))
        assert [rows_of(r)[0] for r in bidi] == batch[:2]


def check_oip_behaviours(pb, stub_cls, **_):
    with Server("oip_server.py", "--dim", str(DIM), "--behaviour", "wrong_dim") as s:
        r = stub_cls(s.channel).ModelInfer(infer_request(pb, TEXTS), timeout=10)
        assert list(r.outputs[0].shape) == [3, DIM + 1]
    with Server("oip_server.py", "--dim", "64", "--behaviour", "noisy", "--noise", "0.05") as s:
        r1 = rows_of(stub_cls(s.channel).ModelInfer(infer_request(pb, TEXTS), timeout=10))
        r2 = rows_of(stub_cls(s.channel).ModelInfer(infer_request(pb, TEXTS), timeout=10))
        assert r1 == r2, "noise is not deterministic"
        for text, row in zip(TEXTS, r1):
            cos = cosine(row, fc.embed(text, 64))
            assert 0.9 < cos < 0.99999, cos
    with Server("oip_server.py", "--behaviour", "error") as s:
        try:
            stub_cls(s.channel).ModelInfer(infer_request(pb, TEXTS), timeout=10)
            raise AssertionError("error behaviour answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INTERNAL, e.code()
    with Server("oip_server.py", "--behaviour", "malformed") as s:
        body = s.raw_unary("/inference.GRPCInferenceService/ModelInfer", infer_request(pb, TEXTS))
        assert body == fc.MALFORMED, body
        try:
            pb.ModelInferResponse.FromString(body)
            raise AssertionError("malformed answer parsed")
        except Exception as e:  # protobuf's DecodeError
            assert "AssertionError" not in type(e).__name__
    with Server("oip_server.py", "--behaviour", "slow", "--delay", "0.3") as s:
        start = time.monotonic()
        stub_cls(s.channel).ModelInfer(infer_request(pb, TEXTS[:1]), timeout=10)
        assert time.monotonic() - start >= 0.3


def check_tei(tei_pb, tei_stub_cls, tei_info_stub_cls, **_):
    with Server("tei_server.py", "--dim", str(DIM)) as s:
        stub = tei_stub_cls(s.channel)
        r1 = stub.Embed(tei_pb.EmbedRequest(inputs="hello"), timeout=10)
        r2 = stub.Embed(tei_pb.EmbedRequest(inputs="hello"), timeout=10)
        assert len(r1.embeddings) == DIM
        assert list(r1.embeddings) == list(r2.embeddings)
        assert list(r1.embeddings) == f32(fc.embed(b"hello", DIM))
        assert r1.metadata.compute_chars == 5
        texts = ["hello", "caf\u00e9 \u6f22\u5b57"]
        streamed = list(stub.EmbedStream(iter([tei_pb.EmbedRequest(inputs=t) for t in texts]), timeout=10))
        assert [list(r.embeddings) for r in streamed] == [
            f32(fc.embed(t.encode(), DIM)) for t in texts
        ]
        info = tei_info_stub_cls(s.channel).Info(tei_pb.InfoRequest(), timeout=10)
        assert info.model_id == "shadowgate/fixture"
    with Server("tei_server.py", "--dim", str(DIM), "--behaviour", "wrong_dim") as s:
        r = tei_stub_cls(s.channel).Embed(tei_pb.EmbedRequest(inputs="hello"), timeout=10)
        assert len(r.embeddings) == DIM + 1
    with Server("tei_server.py", "--behaviour", "error") as s:
        try:
            tei_stub_cls(s.channel).Embed(tei_pb.EmbedRequest(inputs="x"), timeout=10)
            raise AssertionError("error behaviour answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INTERNAL
    with Server("tei_server.py", "--behaviour", "malformed") as s:
        assert s.raw_unary("/tei.v1.Embed/Embed", tei_pb.EmbedRequest(inputs="x")) == fc.MALFORMED


def main():
    mods = fc.load_protos()
    ctx = dict(
        pb=mods["oip"],
        stub_cls=mods["oip_grpc"].GRPCInferenceServiceStub,
        stream_pb=mods["stream"],
        stream_stub_cls=mods["stream_grpc"].InferStreamsStub,
        tei_pb=mods["tei"],
        tei_stub_cls=mods["tei_grpc"].EmbedStub,
        tei_info_stub_cls=mods["tei_grpc"].InfoStub,
    )
    checks = [v for k, v in globals().items() if k.startswith("check_")]
    passed = failed = 0
    for check in checks:
        start = time.monotonic()
        try:
            check(**ctx)
            passed += 1
            print(f"ok   {check.__name__} ({time.monotonic() - start:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {check.__name__}", flush=True)
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
