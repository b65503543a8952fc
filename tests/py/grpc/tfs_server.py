#!/usr/bin/env python3
"""Fixture model server: TensorFlow Serving's PredictionService over gRPC.

tensorflow.serving.PredictionService/Predict: inputs["text"] is a DT_STRING tensor of N
strings; outputs["embedding"] (--output-name) is DT_FLOAT of shape [N, dim], in
float_val, or with --tensor-content in tensor_content (little-endian), as TF Serving
answers. Messages from the vendored TF Serving protos (proto/tensorflow_serving), encoded
by the protobuf runtime. Prints READY <port> once listening.

    python3 tests/py/grpc/tfs_server.py --port 0 --dim 8 --tensor-content --behaviour noisy
"""

import struct
import time

import fixture_common as fc


def handlers(args):
    import grpc

    mods = fc.load_protos()
    tfs, tensor, types = mods["tfs"], mods["tensor"], mods["types"]
    dim = fc.effective_dim(args)
    noise = fc.effective_noise(args)

    def predict(request, context):
        if args.behaviour == "slow":
            time.sleep(args.delay)
        if args.behaviour == "error":
            context.abort(grpc.StatusCode.INTERNAL, "fixture error behaviour")
        if args.behaviour == "malformed":
            return fc.MALFORMED
        texts = list(request.inputs["text"].string_val) if "text" in request.inputs else []
        rows = [fc.embed(t, dim, noise) for t in texts]
        out = tensor.TensorProto(dtype=types.DT_FLOAT)
        out.tensor_shape.dim.add(size=len(rows))
        out.tensor_shape.dim.add(size=dim)
        flat = [x for row in rows for x in row]
        if args.tensor_content:
            out.tensor_content = struct.pack(f"<{len(flat)}f", *flat)
        else:
            out.float_val.extend(flat)
        response = tfs.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.outputs[args.output_name].CopyFrom(out)
        return response

    return (
        grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService",
            {
                "Predict": grpc.unary_unary_rpc_method_handler(
                    predict,
                    request_deserializer=tfs.PredictRequest.FromString,
                    response_serializer=fc.serialize,
                ),
            },
        ),
    )


def main():
    p = fc.base_parser(__doc__.splitlines()[0])
    p.add_argument("--tensor-content", action="store_true", help="answer in tensor_content")
    p.add_argument("--output-name", default="embedding")
    args = p.parse_args()
    fc.serve(handlers(args), args)


if __name__ == "__main__":
    main()
