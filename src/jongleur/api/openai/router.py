"""Routes of the OpenAI dialect (and its extensions). Bodies are parsed strictly (`api.body`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from jongleur.api.body import parse_body
from jongleur.api.openai import chat_serving, completions_serving, embeddings_serving, models, tokenize
from jongleur.api.openai.chat_protocol import ChatCompletionRequest
from jongleur.api.openai.completions_protocol import CompletionRequest
from jongleur.api.openai.embeddings_protocol import EmbeddingRequest, EmbeddingResponse
from jongleur.api.security import PrincipalDep, get_principal


def _body_doc(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(by_alias=True)}}}}  # type: ignore[attr-defined]


router = APIRouter(dependencies=[Depends(get_principal)])


@router.post("/v1/chat/completions", tags=["openai"], openapi_extra=_body_doc(ChatCompletionRequest))
async def chat_completions(request: Request, principal: PrincipalDep) -> Response:
    req = await parse_body(request, ChatCompletionRequest)
    return await chat_serving.create_chat_completion(request, req, principal)


@router.post("/v1/completions", tags=["openai"], openapi_extra=_body_doc(CompletionRequest))
async def completions(request: Request, principal: PrincipalDep) -> Response:
    req = await parse_body(request, CompletionRequest)
    return await completions_serving.create_completion(request, req, principal)


@router.post("/v1/embeddings", tags=["openai"], openapi_extra=_body_doc(EmbeddingRequest))
async def embeddings(request: Request) -> EmbeddingResponse:
    req = await parse_body(request, EmbeddingRequest)
    return await embeddings_serving.create_embeddings(request, req)


@router.get("/v1/models", tags=["openai"])
async def list_models(request: Request) -> models.ModelList:
    return models.list_models(request)


@router.get("/v1/models/{model_id:path}", tags=["openai"])
async def get_model(request: Request, model_id: str) -> models.ModelCard:
    return models.get_model(request, model_id)


@router.post("/tokenize", tags=["extensions"], openapi_extra=_body_doc(tokenize.TokenizeRequest))
async def tokenize_route(request: Request) -> dict[str, Any]:
    return await tokenize.tokenize(request, await parse_body(request, tokenize.TokenizeRequest))


@router.post("/detokenize", tags=["extensions"], openapi_extra=_body_doc(tokenize.DetokenizeRequest))
async def detokenize_route(request: Request) -> dict[str, Any]:
    return await tokenize.detokenize(request, await parse_body(request, tokenize.DetokenizeRequest))
