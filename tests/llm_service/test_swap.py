"""Swap models without restart, under concurrent load, with zero failed requests (real HTTP)."""
from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest

from tests.llm_service.conftest import start_llm


@pytest.fixture(scope="module")
def swap_server(two_models_dir, tmp_path_factory):
    proc = start_llm(tmp_path_factory, two_models_dir, "swap", default_model="tiny-a", max_batch_size=8,
                     max_queue=256, admin_key="s3cret")
    yield proc
    proc.stop()


ADMIN = {"Authorization": "Bearer s3cret"}


def test_admin_needs_the_key(swap_server):
    r = httpx.post(swap_server.url + "/admin/models/tiny-b/load")
    assert r.status_code == 401 and "LLM_ADMIN_KEY" in r.json()["error"]["message"]
    r = httpx.post(swap_server.url + "/admin/models/..%2Fetc/load", headers=ADMIN)
    assert r.status_code == 404


def test_swap_under_load_has_zero_failures(swap_server):
    url = swap_server.url
    stop = threading.Event()
    served: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
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
        with httpx.Client(base_url=url, timeout=60, headers=ADMIN) as admin:
            def call(path, json=None):
                r = admin.post(path, json=json)
                assert r.status_code == 200, r.text
                return r.json()

            for _ in range(2):
                call("/admin/models/tiny-b/load")
                call("/admin/default", {"model": "tiny-b"})
                call("/admin/models/tiny-a/unload")
                assert admin.get("/readyz").json()["default_model"] == "tiny-b"
                call("/admin/models/tiny-a/load", {"precision": "fp32"})
                call("/admin/default", {"model": "tiny-a"})
                call("/admin/models/tiny-b/unload")
            listing = admin.get("/admin/models").json()
            assert listing["default"] == "tiny-a" and [m["name"] for m in listing["loaded"]] == ["tiny-a"]
            assert listing["loaded"][0]["default_precision"] == "fp32"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    assert served["tiny-a"] > 0 and served["tiny-b"] > 0, served
