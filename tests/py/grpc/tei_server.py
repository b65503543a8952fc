#!/usr/bin/env python3
"""Fixture model server: Hugging Face text-embeddings-inference over gRPC.

tei.v1.Embed: Embed (unary: one input string, its embedding in `embeddings`) and
EmbedStream (bidirectional, from tei.proto: one answer per request message);
tei.v1.Info: Info. Prints READY <port> once listening.

    python3 tests/py/grpc/tei_server.py --port 0 --dim 8 --behaviour ok
"""

import time

import fixture_common as fc


def handlers(args):
    import grpc

    mods = fc.load_protos()
    pb = mods["tei"]
    dim = fc.effective_dim(args)
    noise = fc.effective_noise(args)

    def embed(request, context):
        if args.behaviour == "slow":
            time.sleep(args.delay)
        if args.behaviour == "error":
            context.abort(grpc.StatusCode.INTERNAL, "fixture error behaviour")
        if args.behaviour == "malformed":
            return fc.MALFORMED
        text = request.inputs.encode("utf-8")
        return pb.EmbedResponse(
            embeddings=fc.embed(text, dim, noise),
            metadata=pb.Metadata(compute_chars=len(request.inputs), compute_tokens=len(text)),
        )

    def embed_stream(requests, context):
        for request in requests:
            yield embed(request, context)

    def info(request, context):
        return pb.InfoResponse(
            version="fixture", model_id="shadowgate/fixture", model_dtype="float32",
            max_client_batch_size=1,
        )

    embed_service = grpc.method_handlers_generic_handler(
        "tei.v1.Embed",
        {
            "Embed": grpc.unary_unary_rpc_method_handler(
                embed,
                request_deserializer=pb.EmbedRequest.FromString,
                response_serializer=fc.serialize,
            ),
            "EmbedStream": grpc.stream_stream_rpc_method_handler(
                embed_stream,
                request_deserializer=pb.EmbedRequest.FromString,
                response_serializer=fc.serialize,
            ),
        },
    )
    info_service = grpc.method_handlers_generic_handler(
        "tei.v1.Info",
        {
            "Info": grpc.unary_unary_rpc_method_handler(
                info,
                request_deserializer=pb.InfoRequest.FromString,
                response_serializer=fc.serialize,
            ),
        },
    )
    return (embed_service, info_service)


def main():
    args = fc.base_parser(__doc__.splitlines()[0]).parse_args()
    fc.serve(handlers(args), args)


if __name__ == "__main__":
    main()
