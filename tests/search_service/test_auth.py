"""search-service with API keys + an admin key (the app in-process, through an ASGI transport): keys enforced,
collection DELETE and /optimize need the admin key, health/metrics open, no key in the service's log, CORS off
by default."""
from __future__ import annotations

import logging

from stack_common.logs import JsonFormatter

from tests.search_service.service_fixtures import app_settings, serve_in_process

USER, ADMIN = "s-user-91ab", "s-admin-3e77"


def test_search_service_api_keys(tmp_path, redis_url, unique_name, caplog):
    caplog.set_level(logging.INFO)                  # every logger, as the service logs (SEARCH_LOG_LEVEL=INFO)
    settings = app_settings(tmp_path / "data", redis_url, unique_name, api_keys=f"{USER},second-key",
                            admin_key=ADMIN)
    with serve_in_process(settings) as c:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200
        r = c.post("/collections", json={"name": "c1"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        user = {"Authorization": f"Bearer {USER}"}
        assert c.post("/collections", json={"name": "c1"}, headers=user).status_code == 201
        r = c.post("/collections/c1/documents", headers={"X-API-Key": "second-key"},
                   json={"documents": [{"id": "d1", "text": "hello auth world"}]})
        assert r.status_code == 200, r.text
        r = c.post("/search/hybrid", json={"query": "hello", "collection": "c1"},
                   headers={"X-API-Key": "nope-key-55"})
        assert r.status_code == 401
        r = c.post("/search/hybrid", json={"query": "hello", "collection": "c1"}, headers=user)
        assert r.status_code == 200 and r.json()["results"][0]["id"] == "d1"
        assert "access-control-allow-origin" not in c.get("/collections", headers={
            **user, "Origin": "https://elsewhere.example"}).headers
        # admin operations
        r = c.post("/collections/c1/optimize", headers=user)
        assert r.status_code == 403 and "SEARCH_ADMIN_KEY" in r.json()["error"]["message"]
        assert c.delete("/collections/c1", headers=user).status_code == 403
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert c.post("/collections/c1/optimize", headers=admin).status_code == 200
        r = c.request("DELETE", "/collections/c1/documents", json={"ids": ["d1"]}, headers=user)
        assert r.status_code == 200, r.text        # deleting documents is not an admin operation
        assert c.delete("/collections/c1", headers=admin).status_code == 204
    # the log lines as the service writes them (stack_common.logs: message, extras, exception)
    log = "\n".join(JsonFormatter().format(rec) for rec in caplog.records)
    assert "request rejected" in log
    for secret in (USER, ADMIN, "second-key", "nope-key-55"):
        assert secret not in log
