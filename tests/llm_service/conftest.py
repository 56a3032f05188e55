"""Fixtures for the llm-service tests: the app in this process, or a real service process.

Where a real process is not the point, a test serves ``create_app(Settings(...))`` in this process
(``serve_in_process``: Starlette's TestClient, an ``httpx.Client`` over an ASGI transport, the lifespan run
on entry and exit); ``llm_app`` is the shared tiny-model app of a test module. Tests where a real process is
the point (signals, kills, hanging up a socket, tools that need a URL: the ``openai`` client, schemathesis)
start one with ``start_llm``; ``llm_server`` is the shared one, with the same settings as ``llm_app``.

The model fixtures ``tiny_model_dir`` and ``smollm2_model_dir`` live in tests/conftest.py: the
end-to-end tests share them, so each model is built once per session.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.conftest import TINY_NAME  # noqa: F401  (re-exported for the tests)
from tests.inprocess import serve_app


# settings of the shared tiny-model service (``llm_server``, ``llm_app``): int8 by setting (LLM_PRECISION: the
# user's choice, served whatever the gate says of a random model)
MAIN_SETTINGS = dict(default_model=TINY_NAME, precision="int8", max_batch_size=8, batch_wait_ms=10,
                     max_new_tokens_limit=1024, max_body_bytes=65536, max_queue=64)


# --- service fixtures (llm-service over real HTTP) ----------------------------------------------
def llm_env(models_dir: Path, **extra: str) -> dict[str, str]:
    """LLM_* environment of a test service process (tiny model, plain logs)."""
    env = {"LLM_MODELS_DIR": str(models_dir), "LLM_LOG_JSON": "false", "LLM_INTRA_OP_THREADS": "1",
           "LLM_DEVICE": "cpu"}
    env.update({k if k.startswith("LLM_") else f"LLM_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def start_llm(tmp_path_factory, models_dir: Path, name: str, **extra: str):
    from stack_dev.procs import ServiceProcess

    log_path = tmp_path_factory.mktemp("logs") / f"llm-{name}.log"
    return ServiceProcess("llm_service.main:create_app", env=llm_env(models_dir, **extra), log_path=log_path,
                          ready_path="/readyz").start(timeout=120)


@pytest.fixture(scope="session")
def llm_server(tiny_model_dir, tmp_path_factory):
    """One llm-service process on the tiny model (``MAIN_SETTINGS``), shared by the tests that need a real
    server: the ``openai`` client, schemathesis, a client hanging up its connection."""
    proc = start_llm(tmp_path_factory, tiny_model_dir, "main", **MAIN_SETTINGS)
    yield proc
    proc.stop()


# --- the app in this process --------------------------------------------------------------------
def app_settings(models_dir: Path, **extra):
    """The in-process counterpart of ``llm_env``: the same settings (tiny model, plain logs), passed
    explicitly (field names: ``default_model=...``). Fields not given come from LLM_* as in a process."""
    from llm_service.core.settings import Settings

    return Settings(**{"models_dir": models_dir, "log_json": False, "intra_op_threads": 1, "device": "cpu",
                       **extra})


@contextmanager
def serve_in_process(settings) -> Iterator[httpx.Client]:
    """``llm_service.main.create_app(settings)`` in this process (tests/inprocess.serve_app: a TestClient
    whose context runs the lifespan; on exit, every thread the app started must have ended). Responses
    stream: ``client.stream(...)`` gets each chunk as the app sends it, and closing a response before its
    end cancels the app's handling of the request."""
    from llm_service.main import create_app

    with serve_app(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def llm_app(tiny_model_dir):
    """A client of the tiny-model app in this process, with ``llm_server``'s settings, shared by a test
    module's tests (per module, not per session: an app's thread check on exit counts every thread started
    while it was open, and the async tests' session event loop starts some of its own)."""
    with serve_in_process(app_settings(tiny_model_dir, **MAIN_SETTINGS)) as client:
        yield client


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tiny model's tokenizer, as the service loads it (to count tokens independently)."""
    from tokenizers import Tokenizer

    import json
    manifest = json.loads((tiny_model_dir / TINY_NAME / "manifest.json").read_text())
    return Tokenizer.from_file(str(tiny_model_dir / TINY_NAME / manifest["tokenizer_dir"] / "tokenizer.json"))


@pytest.fixture(scope="session")
def two_models_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A models dir with two copies of the tiny model, ``tiny-a`` and ``tiny-b`` (hard links: no disk cost)."""
    import shutil

    out = tmp_path_factory.mktemp("two-models")

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for name in ("tiny-a", "tiny-b"):
        shutil.copytree(tiny_model_dir / TINY_NAME, out / name, copy_function=link)
    return out
