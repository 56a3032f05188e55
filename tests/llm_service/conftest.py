"""Fixtures for the llm-service tests (over real HTTP).

The model fixtures ``tiny_model_dir`` and ``smollm2_model_dir`` live in tests/conftest.py: the
end-to-end tests share them, so each model is built once per session.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.conftest import TINY_NAME  # noqa: F401  (re-exported for the tests)


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
    """One llm-service process on the tiny model, int8 by setting (LLM_PRECISION: the user's choice, served
    whatever the gate says of a random model), shared by the API tests."""
    proc = start_llm(tmp_path_factory, tiny_model_dir, "main", default_model=TINY_NAME, precision="int8",
                     max_batch_size=8,
                     batch_wait_ms=10, max_new_tokens_limit=1024, max_body_bytes=65536, max_queue=64)
    yield proc
    proc.stop()


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
