"""`/v1/collections`: create and list collections, upload (multipart), list, read and delete
documents, and hybrid search. Every route acts as the request's principal: collections a caller
may not read answer 404, exactly like missing ones.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from jongleur.api.body import parse_body
from jongleur.api.errors import APIError, bad_request
from jongleur.api.rag.deps import api_error, rag_service, request_caller
from jongleur.api.rag.protocol import (
    Collection,
    CollectionList,
    CreateCollectionRequest,
    Document,
    DocumentList,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from jongleur.api.security import PrincipalDep, get_principal
from jongleur.rag.parsing import DocumentError
from jongleur.rag.store import StoreError

T = TypeVar("T")
router = APIRouter(dependencies=[Depends(get_principal)], tags=["collections"])
MAX_FILES = 32


async def _call(work: Awaitable[T]) -> T:
    try:
        return await work
    except (StoreError, DocumentError) as exc:
        raise api_error(exc) from None


def _body_doc(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(by_alias=True)}}}}  # type: ignore[attr-defined]


@router.post("/v1/collections", openapi_extra=_body_doc(CreateCollectionRequest), status_code=201)
async def create_collection(request: Request, principal: PrincipalDep) -> Collection:
    req = await parse_body(request, CreateCollectionRequest)
    info = await _call(rag_service(request.app).create_collection(
        request_caller(principal), req.name, description=req.description, level=req.level, readers=req.readers,
        writers=req.writers, embedding_model=req.embedding_model))
    return Collection.of(info)


@router.get("/v1/collections")
async def list_collections(request: Request, principal: PrincipalDep) -> CollectionList:
    infos = await _call(rag_service(request.app).list_collections(request_caller(principal)))
    return CollectionList(data=[Collection.of(c) for c in infos])


@router.get("/v1/collections/{collection}")
async def get_collection(request: Request, collection: str, principal: PrincipalDep) -> Collection:
    return Collection.of(await _call(rag_service(request.app).get_collection(request_caller(principal), collection)))


@router.delete("/v1/collections/{collection}")
async def delete_collection(request: Request, collection: str, principal: PrincipalDep) -> dict[str, Any]:
    await _call(rag_service(request.app).delete_collection(request_caller(principal), collection))
    return {"id": collection, "object": "collection.deleted", "deleted": True}


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise bad_request(f"{name} must be true or false", param=name)


@router.post("/v1/collections/{collection}/documents", status_code=201)
async def upload_documents(request: Request, collection: str, principal: PrincipalDep) -> Response:
    """multipart/form-data: one or more `file` parts; optional fields `document_id` (single file),
    `replace` (true: upload a new version of an existing document), `level`, `readers` (comma-separated)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise APIError(415, "upload documents as multipart/form-data with a 'file' part", code="unsupported_media_type")
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=32)
    except Exception:  # noqa: BLE001 - malformed multipart bodies
        raise bad_request("the multipart body could not be parsed", param="file") from None
    files = [f for key, f in form.multi_items() if key == "file" and not isinstance(f, str)]
    if not files:
        raise bad_request("no 'file' part in the upload", param="file")
    doc_id = form.get("document_id")
    if doc_id is not None and len(files) > 1:
        raise bad_request("document_id applies to a single file", param="document_id")
    replace = _flag(form.get("replace"), "replace")
    level = form.get("level")
    readers_raw = form.get("readers")
    readers = [r.strip() for r in str(readers_raw).split(",") if r.strip()] if readers_raw else []
    service = rag_service(request.app)
    caller = request_caller(principal)
    out = []
    for upload in files:
        data = await upload.read()
        report = await _call(service.ingest(
            caller, collection, upload.filename or "document", data, content_type=upload.content_type,
            doc_id=str(doc_id) if doc_id else None, replace=replace, level=str(level) if level else None,
            readers=readers))
        doc = Document.of(report.document)
        doc.replaced_version = report.replaced_version
        doc.ingest_seconds = round(report.seconds, 4)
        out.append(doc)
    body = DocumentList(data=out).model_dump_json().encode()
    status = 200 if all(d.duplicate for d in out) else 201
    return Response(body, status_code=status, media_type="application/json")


@router.get("/v1/collections/{collection}/documents")
async def list_documents(request: Request, collection: str, principal: PrincipalDep) -> DocumentList:
    docs = await _call(rag_service(request.app).list_documents(request_caller(principal), collection))
    return DocumentList(data=[Document.of(d) for d in docs])


@router.get("/v1/collections/{collection}/documents/{document}")
async def get_document(request: Request, collection: str, document: str, principal: PrincipalDep,
                       include_text: bool = False) -> dict[str, Any]:
    info, text = await _call(rag_service(request.app).read_document(request_caller(principal), collection,
                                                                    document))
    body = Document.of(info).model_dump(mode="json")
    if include_text:
        body["text"] = text
    return body


@router.delete("/v1/collections/{collection}/documents/{document}")
async def delete_document(request: Request, collection: str, document: str, principal: PrincipalDep,
                          ) -> dict[str, Any]:
    info = await _call(rag_service(request.app).delete_document(request_caller(principal), collection, document))
    return {"id": info.doc_id, "object": "document.deleted", "collection": collection, "deleted": True,
            "chunks_removed": info.chunks}


@router.post("/v1/collections/{collection}/search", openapi_extra=_body_doc(SearchRequest))
async def search(request: Request, collection: str, principal: PrincipalDep) -> SearchResponse:
    req = await parse_body(request, SearchRequest)
    hits = await _call(rag_service(request.app).search(request_caller(principal), [collection], req.query, req.k))
    return SearchResponse(data=[SearchHit.of(h) for h in hits])
