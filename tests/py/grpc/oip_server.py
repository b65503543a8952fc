#!/usr/bin/env python3
"""Fixture model server: KServe / Open Inference Protocol v2 over gRPC.

inference.GRPCInferenceService: ModelInfer (one embedding per element of inputs[0], a
BYTES tensor given as contents.bytes_contents or raw_input_contents), ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata. Also shadowgate.test.InferStreams
(stream_test.proto): InferEach (server streaming) and InferBidi (bidirectional).

Answers output "embedding" (--output-name), shape [N, dim], FP32 in
contents.fp32_contents, or with --raw in raw_output_contents (little-endian; --datatype
FP16 or BF16 also imply raw). Prints READY <port> once listening.

    python3 tests/py/grpc/oip_server.py --port 0 --dim 8 --raw --behaviour noisy --noise 0.1
"""

import struct
import time

import fixture_common as fc

MODEL = "embedder"


def parse_args():
    p = fc.base_parser(__doc__.splitlines()[0])
    p.add_argument("--raw", action="store_true", help="answer in raw_output_contents")
    p.add_argument("--datatype", choices=("FP32", "FP16", "BF16"), default="FP32")
    p.add_argument("--output-name", default="embedding")
    p.add_argument("--model", default=MODEL)
    args = p.parse_args()
    if args.datatype != "FP32":
        args.raw = True
    return args


def request_texts(request):
    """The strings of inputs[0]: typed bytes_contents, or Triton's raw BYTES layout
    (each element a 4-byte little-endian length, then its bytes)."""
    if not request.inputs:
        return []
    if request.raw_input_contents:
        raw = request.raw_input_contents[0]
        texts, at = [], 0
        while at + 4 <= len(raw):
            (n,) = struct.unpack_from("<I", raw, at)
            texts.append(bytes(raw[at + 4:at + 4 + n]))
            at += 4 + n
        return texts
    return list(request.inputs[0].contents.bytes_contents)


def pack(values, datatype):
    if datatype == "FP32":
        return struct.pack(f"<{len(values)}f", *values)
    if datatype == "FP16":
        return struct.pack(f"<{len(values)}e", *values)
    # BF16: the top half of each f32, rounded to nearest even.
    out = bytearray()
    for (bits,) in struct.iter_unpack("<I", struct.pack(f"<{len(values)}f", *values)):
        bits += 0x7FFF + ((bits >> 16) & 1)
        out += struct.pack("<H", (bits >> 16) & 0xFFFF)
    return bytes(out)


class Model:
    def __init__(self, args, pb):
        self.args = args
        self.pb = pb
        self.dim = fc.effective_dim(args)
        self.noise = fc.effective_noise(args)

    def infer(self, request, context):
        """The ModelInferResponse for one request (or bytes, or an abort)."""
        import grpc

        args = self.args
        if args.behaviour == "slow":
            time.sleep(args.delay)
        if args.behaviour == "error":
            context.abort(grpc.StatusCode.INTERNAL, "fixture error behaviour")
        if args.behaviour == "malformed":
            return fc.MALFORMED
        texts = request_texts(request)
        if not texts:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "inputs[0] holds no strings")
        flat = [x for t in texts for x in fc.embed(t, self.dim, self.noise)]
        out = self.pb.ModelInferResponse.InferOutputTensor(
            name=args.output_name, datatype=args.datatype, shape=[len(texts), self.dim]
        )
        response = self.pb.ModelInferResponse(
            model_name=args.model, model_version="1", id=request.id
        )
        if args.raw:
            response.outputs.append(out)
            response.raw_output_contents.append(pack(flat, args.datatype))
        else:
            out.contents.fp32_contents.extend(flat)
            response.outputs.append(out)
        return response


def handlers(args):
    import grpc

    mods = fc.load_protos()
    pb = mods["oip"]
    model = Model(args, pb)

    def unary(fn, request_type):
        return grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=request_type.FromString,
            response_serializer=fc.serialize,
        )

    def model_metadata(request, context):
        tm = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=args.model,
            versions=["1"],
            platform="shadowgate-fixture",
            inputs=[tm(name="text", datatype="BYTES", shape=[-1])],
            outputs=[tm(name=args.output_name, datatype=args.datatype, shape=[-1, model.dim])],
        )

    def infer_each(request, context):
        for i in range(len(request_texts(request))):
            one = pb.ModelInferRequest()
            one.CopyFrom(request)
            del one.raw_input_contents[:]
            one.inputs[0].ClearField("contents")
            one.inputs[0].contents.bytes_contents.append(request_texts(request)[i])
            one.inputs[0].shape[:] = [1]
            yield model.infer(one, context)

    def infer_bidi(requests, context):
        for request in requests:
            yield model.infer(request, context)

    service = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ServerLive": unary(lambda r, c: pb.ServerLiveResponse(live=True), pb.ServerLiveRequest),
            "ServerReady": unary(lambda r, c: pb.ServerReadyResponse(ready=True), pb.ServerReadyRequest),
            "ModelReady": unary(
                lambda r, c: pb.ModelReadyResponse(ready=r.name == args.model), pb.ModelReadyRequest
            ),
            "ServerMetadata": unary(
                lambda r, c: pb.ServerMetadataResponse(name="shadowgate-oip-fixture", version="1"),
                pb.ServerMetadataRequest,
            ),
            "ModelMetadata": unary(model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": unary(model.infer, pb.ModelInferRequest),
        },
    )
    streams = grpc.method_handlers_generic_handler(
        "shadowgate.test.InferStreams",
        {
            "InferEach": grpc.unary_stream_rpc_method_handler(
                infer_each,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=fc.serialize,
            ),
            "InferBidi": grpc.stream_stream_rpc_method_handler(
                infer_bidi,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=fc.serialize,
            ),
        },
    )
    return (service, streams)


def main():
    args = parse_args()
    fc.serve(handlers(args), args)


if __name__ == "__main__":
    main()
