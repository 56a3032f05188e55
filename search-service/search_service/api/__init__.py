"""HTTP layer: routes (validate, call one object, return a schema), schemas, dependencies."""
from fastapi import APIRouter

from .routes import collections, embeddings, rag, search


def api_router() -> APIRouter:
    router = APIRouter()
    router.include_router(search.router)
    router.include_router(collections.router)
    router.include_router(rag.router)
    router.include_router(embeddings.router)
    return router
