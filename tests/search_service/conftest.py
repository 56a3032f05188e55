"""Fixtures for the search-service tests.

``embedder``: the real MiniLM int8 ONNX embedder, loaded once per session (~1 s, ~100 MB).
The HTTP-service fixtures live in ``service_fixtures.py`` and are star-imported here.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def embedder():
    from search_service.embeddings import Embedder

    emb = Embedder.load(models_dir=REPO / "models", intra_op_threads=1, max_batch=32, batch_wait_ms=2.0)
    yield emb
    emb.close()


from tests.search_service.service_fixtures import *  # noqa: E402,F401,F403
