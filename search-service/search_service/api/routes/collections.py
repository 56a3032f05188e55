"""Collections and their documents."""
from __future__ import annotations

from fastapi import APIRouter, Response

from ...ingest import Document
from ..deps import CatalogDep, IngestorDep
from ..schemas import (CollectionDetail, CollectionList, CreateCollection, DeleteDocuments, DeleteResponse,
                       DocumentOut, OptimizeResponse, UpsertDocuments, UpsertResponse)

router = APIRouter(prefix="/collections", tags=["collections"])


@router.post("", response_model=CollectionDetail, status_code=201)
async def create_collection(body: CreateCollection, catalog: CatalogDep) -> dict:
    return await catalog.create(body.name, chunk_words=body.chunk_words, chunk_overlap=body.chunk_overlap,
                                bm25_k1=body.bm25_k1, bm25_b=body.bm25_b, shard_number=body.shard_number,
                                replication_factor=body.replication_factor,
                                write_consistency_factor=body.write_consistency_factor,
                                embedding_model=body.embedding_model,
                                extra_embedding_models=body.extra_embedding_models)


@router.get("", response_model=CollectionList)
async def list_collections(catalog: CatalogDep) -> dict:
    return {"collections": await catalog.list()}


@router.get("/{name}", response_model=CollectionDetail)
async def get_collection(name: str, catalog: CatalogDep) -> dict:
    return await catalog.describe(name)


@router.delete("/{name}", status_code=204)
async def delete_collection(name: str, catalog: CatalogDep) -> Response:
    await catalog.delete(name)
    return Response(status_code=204)


@router.post("/{name}/optimize", response_model=OptimizeResponse)
async def optimize_collection(name: str, catalog: CatalogDep) -> dict:
    """Build indexes now (after a bulk load of a large collection; a Qdrant server does it by itself)."""
    return await catalog.optimize(name)


@router.post("/{name}/documents", response_model=UpsertResponse)
async def upsert_documents(name: str, body: UpsertDocuments, ingestor: IngestorDep) -> dict:
    docs = [Document(id=d.id, text=d.text, title=d.title, metadata=d.metadata or {}) for d in body.documents]
    return (await ingestor.upsert(name, docs)).__dict__


@router.delete("/{name}/documents", response_model=DeleteResponse)
async def delete_documents(name: str, body: DeleteDocuments, ingestor: IngestorDep) -> dict:
    return (await ingestor.delete(name, body.ids)).__dict__


@router.get("/{name}/documents/{doc_id:path}", response_model=DocumentOut)   # ids may hold "/"
async def get_document(name: str, doc_id: str, ingestor: IngestorDep) -> dict:
    return await ingestor.get_document(name, doc_id)
