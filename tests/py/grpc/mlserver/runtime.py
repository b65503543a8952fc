"""A custom MLServer runtime (mlserver.MLModel, numpy only): one FP32 embedding of
embedding.DIM values per string of the BYTES input tensor, output "embedding" with shape
[N, dim]. Its model-settings.json `parameters.extra` may set `noise` (deterministic per
input) and `shift` (added to every element): a canary that differs from the baseline
(cosine < 1); without them, an identical one.

Serves ModelInfer (REST and gRPC) and ModelStreamInfer (one answer per request of the
stream).
"""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

import embedding


class Embedder(MLModel):
    async def load(self) -> bool:
        params = self.settings.parameters
        extra = (params.extra if params is not None else None) or {}
        self.dim = int(extra.get("dim", embedding.DIM))
        self.noise = float(extra.get("noise", 0.0))
        self.shift = float(extra.get("shift", 0.0))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        rows = [
            embedding.vector(
                t.encode("utf-8") if isinstance(t, str) else bytes(t),
                self.dim,
                self.noise,
                self.shift,
            )
            for t in texts
        ]
        out = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("embedding", out)],
        )

    async def predict_stream(self, payloads):
        async for payload in payloads:
            yield await self.predict(payload)
