"""Swap models without restart, under concurrent load, with zero failed requests (the app in-process, through
an ASGI transport; the clients are threads sharing its client, their requests handled concurrently by the
app's event loop)."""
from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.llm_service.conftest import app_settings, serve_in_process


@pytest.fixture(scope="module")
def swap_app(two_models_dir):
    with serve_in_process(app_settings(two_models_dir, default_model="tiny-a", max_batch_size=8, max_queue=256,
                                       admin_key="s3cret")) as client:
        yield client


ADMIN = {"Authorization": "Bearer s3cret"}


def test_admin_needs_the_key(swap_app):
    r = swap_app.post("/admin/models/tiny-b/load")
    assert r.status_code == 401 and "LLM_ADMIN_KEY" in r.json()["error"]["message"]
    r = swap_app.post("/admin/models/..%2Fetc/load", headers=ADMIN)
    assert r.status_code == 404


def test_swap_under_load_has_zero_failures(swap_app):
    stop = threading.Event()
    served: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        c = swap_app               # one client for all: each request is handled on its own by the app
        while not stop.is_set():
            stream = i % 2 == 1
            body = {"prompt": f"client {i} says", "max_new_tokens": 24, "stream": stream}
            try:
                if stream:
                    with c.stream("POST", "/generate", json=body) as r:
                        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
                        ok = r.status_code == 200 and lines[-1] == "data: [DONE]" and '"finish_reason":"length"' in lines[-2]
                        model = lines[0].split('"model":"')[1].split('"')[0] if ok else None
                else:
                    r = c.post("/generate", json=body)
                    ok = r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 24
                    model = r.json()["model"] if ok else None
                with lock:
                    if ok:
                        served[model] += 1
                    else:
                        failures.append(f"{r.status_code}")
            except Exception as exc:  # any transport error is a failure too
                with lock:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        def call(path, json=None):
            r = swap_app.post(path, json=json, headers=ADMIN)
            assert r.status_code == 200, r.text
            return r.json()

        for _ in range(2):
            call("/admin/models/tiny-b/load")
            call("/admin/default", {"model": "tiny-b"})
            call("/admin/models/tiny-a/unload")
            assert swap_app.get("/readyz", headers=ADMIN).json()["default_model"] == "tiny-b"
            call("/admin/models/tiny-a/load", {"precision": "fp32"})
            call("/admin/default", {"model": "tiny-a"})
            call("/admin/models/tiny-b/unload")
        listing = swap_app.get("/admin/models", headers=ADMIN).json()
        assert listing["default"] == "tiny-a" and [m["name"] for m in listing["loaded"]] == ["tiny-a"]
        assert listing["loaded"][0]["default_precision"] == "fp32"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    assert served["tiny-a"] > 0 and served["tiny-b"] > 0, served
