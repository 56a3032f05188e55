"""Fixtures for the search-service tests.

``embedder``, ``e5_embedder``: the real MiniLM and multilingual-e5-small int8 ONNX embedders, built into the
repo's ``models/`` on first use and loaded once per session; ``embedders``: both, as the service holds them.
``own_redis``: a redis-server of our own that a test may stop and start (test_cache, test_faults).
The HTTP-service fixtures live in ``service_fixtures.py`` and are star-imported here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from stack_dev.procs import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def embedder():
    from search_service.embeddings import Embedder

    emb = Embedder.load("minilm", models_dir=REPO / "models", intra_op_threads=1, max_batch=32, batch_wait_ms=2.0)
    yield emb
    emb.close()


@pytest.fixture(scope="session")
def e5_embedder():
    from search_service.embeddings import Embedder

    emb = Embedder.load("multilingual-e5-small", models_dir=REPO / "models", intra_op_threads=1, max_batch=32,
                        batch_wait_ms=2.0)
    yield emb
    emb.close()


@pytest.fixture(scope="session")
def embedders(embedder, e5_embedder):
    from search_service.embeddings import Embedders

    return Embedders({"minilm": embedder, "multilingual-e5-small": e5_embedder}, "minilm")


@pytest.fixture
def own_redis(tmp_path):
    """A real redis-server of our own on a free port (so the test can stop, pause and restart it)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server binary not installed (make test installs it)")
    port = free_port()

    class Own:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen | None = None

        def start(self):
            self.proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(tmp_path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            client = redis.Redis(port=port)
            for _ in range(200):
                try:
                    client.ping()
                    return client
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError("own redis did not start")

        def stop(self):
            if self.proc and self.proc.poll() is None:
                self.proc.terminate()
                self.proc.wait(10)

    own = Own()
    yield own
    own.stop()


# the HTTP fixtures, shared by this package's tests (named, so a linter sees them used)
from tests.search_service.service_fixtures import client, fixture_corpus, loaded, search_settings  # noqa: E402

__all__ = ["client", "e5_embedder", "embedder", "embedders", "fixture_corpus", "loaded", "own_redis", "search_settings"]
