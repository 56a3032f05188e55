"""Typed dependencies: the objects the app factory built once, taken from ``app.state``.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its threadpool (a thread
hop per dependency per request); these only read ``app.state``."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from stack_common.errors import Unavailable

from ..collections import CollectionCatalog
from ..core.settings import Settings
from ..embeddings import Embedders
from ..ingest import Ingestor
from ..rag import RagService
from ..search import SearchService


def _state(request: Request, name: str):
    obj = getattr(request.app.state, name, None)
    if obj is None:
        raise Unavailable("search service not ready: starting or stopping")
    return obj


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_searcher(request: Request) -> SearchService:
    return _state(request, "searcher")


async def get_ingestor(request: Request) -> Ingestor:
    return _state(request, "ingestor")


async def get_catalog(request: Request) -> CollectionCatalog:
    return _state(request, "catalog")


async def get_embedders(request: Request) -> Embedders:
    return _state(request, "embedders")


async def get_rag(request: Request) -> RagService:
    return _state(request, "rag")


SettingsDep = Annotated[Settings, Depends(get_settings)]
SearcherDep = Annotated[SearchService, Depends(get_searcher)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
CatalogDep = Annotated[CollectionCatalog, Depends(get_catalog)]
EmbeddersDep = Annotated[Embedders, Depends(get_embedders)]
RagDep = Annotated[RagService, Depends(get_rag)]
