"""`POST /v1/embeddings` (and the shared embedding step of Ollama's `/api/embed`).

Inputs longer than the model's limit (256 tokens for all-MiniLM-L6-v2) are truncated, as
sentence-transformers does. Token-id inputs are decoded with the embedding model's tokenizer.
"""

from __future__ import annotations

import base64
import struct

from fastapi import Request

from jongleur.api.errors import bad_request
from jongleur.api.openai.embeddings_protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from jongleur.catalog.served import ServedModel
from jongleur.embeddings import EmbeddingResult


def input_texts(value: str | list[str] | list[int] | list[list[int]], served: ServedModel, limit: int,
                param: str = "input") -> list[str]:
    if isinstance(value, str):
        texts = [value]
    elif not value:
        raise bad_request(f"{param} is empty", param=param)
    elif all(isinstance(v, str) for v in value):
        texts = list(value)  # type: ignore[arg-type]
    else:
        rows = [value] if all(isinstance(v, int) for v in value) else value
        tokenizer = served.embedder.tokenizer  # type: ignore[union-attr]
        vocab = tokenizer.get_vocab_size()
        texts = []
        for row in rows:
            if any(not 0 <= t < vocab for t in row):  # type: ignore[union-attr]
                raise bad_request(f"token ids in {param} must be in [0, {vocab})", param=param)
            texts.append(tokenizer.decode(list(row), skip_special_tokens=True))  # type: ignore[arg-type]
    if len(texts) > limit:
        raise bad_request(f"at most {limit} inputs per request", param=param)
    return texts


async def run_embeddings(served: ServedModel, texts: list[str]) -> EmbeddingResult:
    if served.embedder is None:
        raise bad_request(f"the model {served.name!r} cannot embed", param="model")
    return await served.embedder.embed_async(texts)


async def create_embeddings(request: Request, req: EmbeddingRequest) -> EmbeddingResponse:
    state = request.app.state
    served = state.registry.resolve(req.model, "embedding")
    texts = input_texts(req.input, served, state.settings.embedding_max_batch)
    dims = served.embedder.dimensions  # type: ignore[union-attr]
    if req.dimensions is not None and req.dimensions != dims:
        raise bad_request(f"this model produces {dims} dimensions", param="dimensions")
    result = await run_embeddings(served, texts)
    data = []
    for i, vec in enumerate(result.vectors):
        emb: list[float] | str = vec
        if req.encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append(EmbeddingData(index=i, embedding=emb))
    usage = EmbeddingUsage(prompt_tokens=result.total_tokens, total_tokens=result.total_tokens)
    return EmbeddingResponse(data=data, model=served.name, usage=usage)
