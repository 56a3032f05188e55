"""llm-service with LLM_API_KEYS + LLM_ADMIN_KEY, over real HTTP: keys enforced, admin endpoints need the
admin key, health/metrics open, no key in the service log."""
from __future__ import annotations

import httpx

from tests.llm_service.conftest import TINY_NAME, start_llm

USER, ADMIN = "user-key-7f3a9", "admin-key-c41d2"


def test_llm_service_api_keys(tiny_model_dir, tmp_path_factory, tmp_path):
    keyfile = tmp_path / "keys"          # the form a mounted Kubernetes Secret takes
    keyfile.write_text(f"{USER}\nother-key\n")
    proc = start_llm(tmp_path_factory, tiny_model_dir, "auth", default_model=TINY_NAME,
                     api_keys=f"file:{keyfile}", admin_key=ADMIN)
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
            r = c.post("/generate", json={"prompt": "hi", "max_new_tokens": 2})
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["type"] == "unauthorized"
            r = c.post("/generate", json={"prompt": "hi", "max_new_tokens": 2},
                       headers={"Authorization": "Bearer wrong-key-0000"})
            assert r.status_code == 401
            r = c.post("/generate", json={"prompt": "hi", "max_new_tokens": 2}, headers={"X-API-Key": USER})
            assert r.status_code == 200, r.text
            assert c.get("/v1/models", headers={"Authorization": f"Bearer {USER}"}).status_code == 200
            # admin: model load/unload/default
            r = c.post(f"/admin/models/{TINY_NAME}/load", headers={"Authorization": f"Bearer {USER}"})
            assert r.status_code == 403 and "LLM_ADMIN_KEY" in r.json()["error"]["message"]
            assert c.get("/admin/models").status_code == 401
            r = c.post("/admin/default", json={"model": TINY_NAME}, headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 200, r.text
    finally:
        proc.stop()
    log = proc.log_path.read_text()
    assert "request rejected" in log
    for secret in (USER, ADMIN, "wrong-key-0000", "other-key"):
        assert secret not in log
