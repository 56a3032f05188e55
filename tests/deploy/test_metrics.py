"""`promtool check metrics` (Debian prometheus) on each service's real /metrics output.

Each service runs as a real process (stack_dev.procs.ServiceProcess, as a user runs it), serves a few real
requests so its histograms and counters carry samples, and its exposition goes through promtool's lint
(format, naming conventions: counters end in _total, base units, help text)."""
from __future__ import annotations

import uuid

import httpx
import pytest

from tests.llm_service.conftest import TINY_NAME, llm_env
from stack_dev.procs import ServiceProcess

from .conftest import run


def promtool_check(promtool: str, exposition: str):
    return run([promtool, "check", "metrics"], input=exposition, timeout=60)


@pytest.fixture(scope="module")
def search_metrics(tmp_path_factory, redis_url) -> str:
    tmp = tmp_path_factory.mktemp("search-metrics")
    prefix = "t" + uuid.uuid4().hex[:10]
    env = {"SEARCH_DATA_DIR": str(tmp / "data"), "SEARCH_MODELS_DIR": str(tmp / "models"),
           "SEARCH_REDIS_URL": redis_url, "SEARCH_CACHE_PREFIX": prefix, "SEARCH_LOG_JSON": "false"}
    with ServiceProcess("search_service.main:create_app", env=env, log_path=tmp / "search.log",
                        ready_path="/readyz").start(timeout=180) as svc, httpx.Client(base_url=svc.url, timeout=60) as c:
        coll = prefix
        assert c.post("/collections", json={"name": coll}).status_code == 201
        docs = [{"id": "a", "text": "Qdrant stores dense and sparse vectors for hybrid search."},
                {"id": "b", "text": "Sourdough bread needs flour, water and salt."}]
        assert c.post(f"/collections/{coll}/documents", json={"documents": docs}).status_code == 200
        for _ in range(2):  # a miss, then a cache hit
            assert c.post("/search/hybrid", json={"query": "hybrid vector search", "collection": coll}).status_code == 200
        assert c.post("/search/hybrid", json={"query": "x", "collection": "no-such-" + coll}).status_code == 404
        r = c.get("/metrics")
        c.delete(f"/collections/{coll}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


@pytest.fixture(scope="module")
def llm_metrics(tmp_path_factory, tiny_model_dir) -> str:  # noqa: F811
    tmp = tmp_path_factory.mktemp("llm-metrics")
    env = llm_env(tiny_model_dir, default_model=TINY_NAME)
    with ServiceProcess("llm_service.main:create_app", env=env, log_path=tmp / "llm.log",
                        ready_path="/readyz").start(timeout=180) as svc, httpx.Client(base_url=svc.url, timeout=60) as c:
        assert c.post("/generate", json={"prompt": "Hello", "max_new_tokens": 4, "seed": 1}).status_code == 200
        assert c.post("/generate", json={"prompt": "", "max_new_tokens": 4}).status_code in (400, 422)
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


def test_search_service_metrics_pass_promtool(promtool_bin, search_metrics):
    assert "search_requests_total" in search_metrics
    assert "search_request_duration_seconds_bucket" in search_metrics
    r = promtool_check(promtool_bin, search_metrics)
    assert r.returncode == 0, r.output


def test_llm_service_metrics_pass_promtool(promtool_bin, llm_metrics):
    assert "_total" in llm_metrics and "_bucket" in llm_metrics
    r = promtool_check(promtool_bin, llm_metrics)
    assert r.returncode == 0, r.output


# ---- the gate can fail -------------------------------------------------------------------------

@pytest.mark.parametrize("exposition,why", [
    ("# HELP search_requests Requests.\n# TYPE search_requests counter\nsearch_requests 3\n", "counter without _total"),
    ("# HELP x_seconds Latency.\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"+Inf\" 1\n", "syntax"),
    ("# HELP took_milliseconds Latency.\n# TYPE took_milliseconds gauge\ntook_milliseconds 3\n", "non-base unit"),
], ids=["counter-without-total", "syntax", "non-base-unit"])
def test_promtool_rejects_bad_metrics(promtool_bin, exposition, why):
    r = promtool_check(promtool_bin, exposition)
    assert r.returncode != 0, f"promtool accepted {why}: {r.output}"
