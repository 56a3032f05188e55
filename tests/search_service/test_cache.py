"""The Redis cache over HTTP (the app in-process, through an ASGI transport): hits on repeat, invalidation by
writes, and Redis outages (a closed port; a real redis-server of our own that we stop and start again)."""
from __future__ import annotations

import json
import logging
import time

import httpx
import redis

from stack_common.logs import JsonFormatter
from tests.search_service.service_fixtures import app_settings, ingest, serve_in_process


def hybrid(client: httpx.Client, **body) -> dict:
    r = client.post("/search/hybrid", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_repeat_is_a_hit_and_writes_invalidate(client, unique_name):
    assert client.post("/collections", json={"name": unique_name}).status_code == 201
    try:
        ingest(client, unique_name, [{"id": "a", "text": "the heart pumps blood through the arteries"},
                                     {"id": "b", "text": "plants convert sunlight into sugar"}])
        q = {"query": "blood circulation in the heart", "collection": unique_name, "limit": 10}
        hits0 = metric(client, "search_cache_hits_total")
        first = hybrid(client, **q)
        second = hybrid(client, **q)
        assert first["cached"] is False and second["cached"] is True
        assert second["results"] == first["results"] and second["total"] == first["total"]
        assert metric(client, "search_cache_hits_total") == hits0 + 1
        # the same request written differently (whitespace, defaults spelled out) hits too
        assert hybrid(client, **{**q, "query": "  blood circulation   in the heart ", "offset": 0})["cached"]
        # a different request does not
        assert hybrid(client, **{**q, "limit": 5})["cached"] is False
        # upsert → the next search misses and sees the new document (never stale)
        ingest(client, unique_name, [{"id": "c", "text": "blood circulation: the heart and the veins"}])
        after = hybrid(client, **q)
        assert after["cached"] is False and "c" in [h["id"] for h in after["results"]]
        assert hybrid(client, **q)["cached"] is True
        # delete → the next search misses and no longer returns it
        client.request("DELETE", f"/collections/{unique_name}/documents", json={"ids": ["c"]})
        gone = hybrid(client, **q)
        assert gone["cached"] is False and "c" not in [h["id"] for h in gone["results"]]
        assert hybrid(client, **q)["cached"] is True
        # 1 of 3 documents deleted: the embedded engine vacuums it in a background pass, which changes the
        # BM25 statistics (IDF) under the cached answer -> the next search misses
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            index = client.get(f"/collections/{unique_name}").json()["index"]
            if not index["deleted_unvacuumed"] and index["state"] not in ("waiting", "building"):
                break
            time.sleep(0.1)
        assert index["builds"] >= 1 and not index["deleted_unvacuumed"], index
        vacuumed = hybrid(client, **q)
        assert vacuumed["cached"] is False and [h["id"] for h in vacuumed["results"]] == [h["id"] for h in gone["results"]]
        assert hybrid(client, **q)["cached"] is True
        # drop and re-create the collection with other content: nothing from before is served
        client.delete(f"/collections/{unique_name}")
        client.post("/collections", json={"name": unique_name})
        ingest(client, unique_name, [{"id": "z", "text": "blood and the heart, again"}])
        fresh = hybrid(client, **q)
        assert fresh["cached"] is False and [h["id"] for h in fresh["results"]] == ["z"]
    finally:
        client.delete(f"/collections/{unique_name}")


def test_keys_carry_prefix_and_ttl(client, search_settings, redis_url, unique_name):
    client.post("/collections", json={"name": unique_name})
    try:
        ingest(client, unique_name, [{"id": "a", "text": "cache key check"}])
        hybrid(client, query="cache key", collection=unique_name)
        r = redis.Redis.from_url(redis_url)
        prefix = search_settings.cache_prefix
        keys = list(r.scan_iter(f"{prefix}:{unique_name}:*"))
        assert len(keys) == 1
        assert 0 < r.ttl(keys[0]) <= 300
        assert json.loads(r.get(keys[0]))["results"][0]["id"] == "a"
    finally:
        client.delete(f"/collections/{unique_name}")


def test_redis_outages_bypass_the_cache_and_never_serve_stale(tmp_path, own_redis, caplog):
    """One service through three outages: Redis absent at start (closed port), Redis unresponsive
    with its data kept (CLIENT PAUSE), Redis stopped and restarted empty. Writes happen during the
    outages; searches always answer, and nothing cached before a write is served after it."""
    caplog.set_level(logging.INFO)                  # every logger, as the service logs (SEARCH_LOG_LEVEL=INFO)
    settings = app_settings(tmp_path / "data", own_redis.url, "tout", redis_retry_s=0.2, cache_ttl_s=600)
    q = {"query": "photosynthesis in leaves", "collection": "docs"}

    def ids(res):
        return [h["id"] for h in res["results"]]

    with serve_in_process(settings) as c:           # Redis not started yet: a closed port
        # 1. closed port: ready, searches answer uncached, errors counted
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "down (cache bypassed)"
        c.post("/collections", json={"name": "docs"})
        ingest(c, "docs", [{"id": "v1", "text": "the original answer about photosynthesis"}])
        for _ in range(5):
            res = hybrid(c, **q)
            assert res["cached"] is False and ids(res) == ["v1"]
        assert metric(c, "search_cache_errors_total") >= 1 and metric(c, "search_cache_hits_total") == 0

        # 2. Redis comes up: the cache resumes by itself
        r = own_redis.start()
        time.sleep(0.3)
        assert hybrid(c, **q)["cached"] is False
        assert hybrid(c, **q)["cached"] is True
        assert c.get("/readyz").json()["checks"]["redis"] == "ok"

        # 3. Redis unresponsive but keeping its data; a write lands meanwhile
        r.client_pause(3000, all=True)
        t0 = time.monotonic()
        slow = hybrid(c, **q)
        assert slow["cached"] is False and time.monotonic() - t0 < 2.5    # bypassed, not waited for
        ingest(c, "docs", [{"id": "v2", "text": "a newer answer about photosynthesis in green leaves"}])
        time.sleep(max(0.0, 3.3 - (time.monotonic() - t0)))
        assert r.dbsize() >= 1                    # the pre-write entry is still in Redis ...
        res = hybrid(c, **q)
        assert res["cached"] is False and "v2" in ids(res)     # ... and is not served
        assert hybrid(c, **q)["cached"] is True

        # 4. Redis stopped; a delete lands; Redis restarts empty
        own_redis.stop()
        res = hybrid(c, **q)
        assert res["cached"] is False and "v2" in ids(res)
        c.request("DELETE", "/collections/docs/documents", json={"ids": ["v2"]})
        assert c.get("/readyz").json()["checks"]["redis"] == "down (cache bypassed)"
        own_redis.start()
        time.sleep(0.3)
        res = hybrid(c, **q)
        assert res["cached"] is False and ids(res) == ["v1"]
        assert hybrid(c, **q)["cached"] is True
    # the log lines as the service writes them (stack_common.logs)
    log = "\n".join(JsonFormatter().format(rec) for rec in caplog.records)
    # one warning per outage (not per request), one line when it is over
    assert log.count("redis unavailable") == 3, log
    assert log.count("redis available again") == 3, log
