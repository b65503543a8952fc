#!/usr/bin/env python3
"""Writes golden protobuf messages (unframed) into golden/, encoded by the official protobuf
runtime from the vendored .proto files, for src/grpc/tests.rs to decode: a check of the
hand-written prost field numbers against protoc's. Fields the Rust side leaves out
(parameters maps, metadata) are set, so skipping unknown fields is tested too.

    python3 tests/py/grpc/make_golden.py     # then commit golden/*.binpb

Not needed to run the Rust tests; rerun only when the messages here change.
"""

import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fixture_common as fc  # noqa: E402


def load_tf():
    out = tempfile.mkdtemp(prefix="shadowgate-tf-stubs-")
    files = [
        os.path.join(fc.PROTO_DIR, "tensorflow_serving", "apis", "predict.proto"),
        os.path.join(fc.PROTO_DIR, "tensorflow", "core", "framework", "tensor.proto"),
        os.path.join(fc.PROTO_DIR, "tensorflow", "core", "framework", "tensor_shape.proto"),
        os.path.join(fc.PROTO_DIR, "tensorflow", "core", "framework", "types.proto"),
    ]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{fc.PROTO_DIR}", f"--python_out={out}"] + files,
        check=True,
    )
    sys.path.insert(0, out)
    from tensorflow_serving.apis import predict_pb2
    from tensorflow.core.framework import tensor_pb2, types_pb2

    return predict_pb2, tensor_pb2, types_pb2


def main():
    mods = fc.load_protos()
    oip, tei = mods["oip"], mods["tei"]
    predict_pb2, tensor_pb2, types_pb2 = load_tf()
    golden = {}

    r = oip.ModelInferResponse(model_name="embedder", model_version="3", id="req-7")
    r.parameters["sequence_id"].int64_param = 42
    logits = r.outputs.add(name="logits", datatype="INT64", shape=[2])
    logits.contents.int64_contents.extend([7, 9])
    emb = r.outputs.add(name="embedding", datatype="FP32", shape=[2, 3])
    emb.parameters["binary_data"].bool_param = False
    emb.contents.fp32_contents.extend([0.5, -0.25, 1.0, 2.0, -3.5, 0.125])
    golden["oip_response_fp32_contents"] = r

    r = oip.ModelInferResponse(model_name="embedder", id="req-8")
    r.outputs.add(name="embedding", datatype="BF16", shape=[1, 4])
    r.outputs.add(name="norm", datatype="FP32", shape=[1])
    r.raw_output_contents.append(struct.pack("<4H", 0x3F80, 0xC000, 0x3F00, 0x4040))
    r.raw_output_contents.append(struct.pack("<f", 1.5))
    golden["oip_response_raw_bf16"] = r

    q = oip.ModelInferRequest(model_name="embedder", id="req-9")
    q.parameters["priority"].int64_param = 1
    t = q.inputs.add(name="text", datatype="BYTES", shape=[3])
    t.contents.bytes_contents.extend([b"a", b"bb", b"ccc"])
    q.outputs.add(name="embedding")
    golden["oip_request_bytes3"] = q

    golden["tei_response"] = tei.EmbedResponse(
        embeddings=[0.1, 0.2, -0.3],
        metadata=tei.Metadata(compute_chars=5, compute_tokens=3, total_time_ns=1234),
    )
    golden["tei_request"] = tei.EmbedRequest(inputs="hello", truncate=True, normalize=True, dimensions=3)

    p = predict_pb2.PredictResponse()
    p.model_spec.name = "use"
    p.model_spec.signature_name = "serving_default"
    e = p.outputs["embedding"]
    e.dtype = types_pb2.DT_HALF
    e.tensor_shape.dim.add(size=2)
    e.tensor_shape.dim.add(size=2)
    e.tensor_content = struct.pack("<4e", 1.0, -2.0, 0.5, 65504.0)
    s = p.outputs["scores"]
    s.dtype = types_pb2.DT_FLOAT
    s.tensor_shape.dim.add(size=2)
    s.float_val.extend([0.25, 0.75])
    golden["tfs_response_half_content"] = p

    p = predict_pb2.PredictResponse()
    h = p.outputs["embedding"]
    h.dtype = types_pb2.DT_HALF
    h.tensor_shape.dim.add(size=1)
    h.tensor_shape.dim.add(size=2)
    h.half_val.extend([0x3C00, 0xB555])
    golden["tfs_response_half_val"] = p

    q = predict_pb2.PredictRequest()
    q.model_spec.name = "use"
    ids = q.inputs["input_ids"]
    ids.dtype = types_pb2.DT_INT64
    ids.tensor_shape.dim.add(size=5)
    ids.tensor_shape.dim.add(size=16)
    ids.int64_val.extend(range(80))
    golden["tfs_request_ids5x16"] = q

    out_dir = os.path.join(HERE, "golden")
    os.makedirs(out_dir, exist_ok=True)
    for name, message in golden.items():
        with open(os.path.join(out_dir, f"{name}.binpb"), "wb") as f:
            f.write(message.SerializeToString(deterministic=True))
        print(name, len(message.SerializeToString()))


if __name__ == "__main__":
    main()
