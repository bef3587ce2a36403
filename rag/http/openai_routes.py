"""OpenAI's models and embeddings, so any OpenAI client (and LangChain, LlamaIndex...) works
unchanged: each index is a "model", and its encoder makes the embeddings. Chat is in chat.py."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, Request

from rag.http.access import Access, access
from rag.http.deadline import in_thread
from rag.http.protocol import ApiError, EmbeddingsRequest, model_card

models_router = APIRouter(tags=["openai"])
embeddings_router = APIRouter(tags=["openai"])


@models_router.get("/v1/models", summary="The indexes this key may read")
async def models(who: Access = Depends(access)):
    return {"object": "list", "data": [model_card(n) for n in who.readable()]}


@models_router.get("/v1/models/{name}", summary="One index, as an OpenAI model")
async def model(name: str, who: Access = Depends(access)):
    who.index(name)
    return model_card(name)


@embeddings_router.post("/v1/embeddings", summary="Vectors from the index's encoder")
async def embeddings(body: EmbeddingsRequest, request: Request, who: Access = Depends(access)):
    rag = who.index(body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    s = who.state.settings
    if not texts or len(texts) > s.serve_max_embed_inputs:
        raise ApiError(422, f"input: give 1 to {s.serve_max_embed_inputs} texts", "invalid_value", "input")
    if any(len(t) > s.serve_max_embed_chars for t in texts):
        raise ApiError(422, f"input: each text at most {s.serve_max_embed_chars} characters", "input_too_long",
                       "input")
    vectors = await in_thread(who.state.search_pool, request,
                              lambda: rag.embed(texts, query=body.input_type == "query"))
    data = []
    for i, v in enumerate(vectors):
        v = np.asarray(v, dtype="<f4")
        emb = base64.b64encode(v.tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(len(t.split()) for t in texts)
    return {"object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
