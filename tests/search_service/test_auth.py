"""search-service with SEARCH_API_KEYS + SEARCH_ADMIN_KEY, over real HTTP: keys enforced, collection DELETE
and /optimize need the admin key, health/metrics open, no key in the service log, CORS off by default."""
from __future__ import annotations

import httpx

from tests.search_service.service_fixtures import service_env, start_service

USER, ADMIN = "s-user-91ab", "s-admin-3e77"


def test_search_service_api_keys(tmp_path, redis_url, unique_name):
    env = service_env(tmp_path / "data", redis_url, unique_name, SEARCH_API_KEYS=f"{USER},second-key",
                      SEARCH_ADMIN_KEY=ADMIN)
    proc = start_service(tmp_path, env, name="auth")
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as c:
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
    finally:
        proc.stop()
    log = (tmp_path / "auth.log").read_text()
    assert "request rejected" in log
    for secret in (USER, ADMIN, "second-key", "nope-key-55"):
        assert secret not in log
