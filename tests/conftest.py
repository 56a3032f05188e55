"""Fixtures shared by every test package."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
REPO_MODELS = REPO / "models"
TINY_NAME = "tiny-llama"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis (make test starts one if none answers). Tests use DB 15 and unique key prefixes."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    client.ping()
    client.close()
    return REDIS_URL


@pytest.fixture
def unique_name() -> str:
    """A collection/key-prefix name no other test (or concurrent run) uses."""
    return "t" + uuid.uuid4().hex[:12]


# --- models (built once per session by the real pipeline, shared by every test package) --------
#
# Building them is the heaviest work of the suite (SmolLM2: export, quantization and the quality gate,
# minutes on 2 cores). So that it does not hold the suite up, a background process (tests/model_builder.py)
# starts building SmolLM2 (then the tiny model) as soon as collection is done, one intra-op thread and one
# gate worker, while the other tests run on the other core: tests are ordered by the model they need (none,
# the tiny model, SmolLM2), whole modules at a time. The fixtures call the pipeline with the same arguments:
# the pipeline's per-model lock makes a fixture wait for a build in progress and then find its cache, or
# build the model itself (the tiny one, when its tests come before the builder gets to it).

TINY_ARGS = dict(name=TINY_NAME, precisions=("fp32", "int8", "w8", "int4"), cache_dir=REPO_MODELS / ".cache",
                 bench_tokens=16, bench_runs=1)
_MODEL_FIXTURES = ("tiny_model_dir", "smollm2_model_dir")
_builder: dict = {}


def _needs(item) -> int:
    names = set(getattr(item, "fixturenames", ()))
    return 2 if "smollm2_model_dir" in names else 1 if "tiny_model_dir" in names else 0


def pytest_collection_modifyitems(session, config, items) -> None:
    rank: dict = {}
    for item in items:
        mod = item.nodeid.split("::")[0]
        rank[mod] = max(rank.get(mod, 0), _needs(item))
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])       # stable: file order within a rank
    need = max(rank.values(), default=0)
    if need == 0 or os.environ.get("STACK_TEST_BACKGROUND_BUILD") == "0":
        return
    import subprocess
    import sys
    import tempfile

    tiny_dir = Path(tempfile.mkdtemp(prefix="stack-test-models-"))
    log = tiny_dir / "builder.log"
    cmd = [sys.executable, "-m", "tests.model_builder", "--tiny-dir", str(tiny_dir)]
    if need == 2:
        cmd += ["--smollm2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    _builder.update(tiny_dir=tiny_dir, log=log,
                    proc=subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT))


def pytest_sessionfinish(session, exitstatus) -> None:
    proc = _builder.get("proc")
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(30)
    if "tiny_dir" in _builder:
        import shutil
        shutil.rmtree(_builder["tiny_dir"], ignore_errors=True)


def _tiny_models_dir(tmp_path_factory) -> Path:
    return _builder.get("tiny_dir") or tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random llama built ONCE per session by the real pipeline (scripts/optimize_model.py's
    code) into a temporary models dir (by the background builder when it runs). SmolLM2's converted
    tokenizer is cached in the repo's ``models/.cache`` so only the first session on a clone pays the GGUF
    read.

    A models dir holding one complete tiny model: ``<dir>/tiny-llama/manifest.json`` (variants fp32,
    int8, w8, int4; a quality-gate record measured on this CPU kind; default_variant cpu = the gate's
    choice, cuda=fp32). The tiny model is random, so which variants pass its gate depends on the CPU:
    tests that need a given precision name it."""
    from llm_service.export.pipeline import run_pipeline

    models = _tiny_models_dir(tmp_path_factory)
    res = run_pipeline("tiny", models_dir=models, **TINY_ARGS)
    assert (models / TINY_NAME / "manifest.json").is_file(), _builder_log()
    assert res.model_dir == models / TINY_NAME
    return models


@pytest.fixture(scope="session")
def smollm2_model_dir() -> Path:
    """models/smollm2-135m-instruct of the repo, built (or reused) by the real pipeline: the same cache
    ``make run`` uses (built once per clone, a sha256 check after that)."""
    from llm_service.export.pipeline import run_pipeline

    res = run_pipeline("smollm2", models_dir=REPO_MODELS)   # same defaults as make run: a cache hit
    return res.model_dir


def _builder_log() -> str:
    log = _builder.get("log")
    return log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else "(no builder log)"
