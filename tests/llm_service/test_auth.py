"""llm-service with LLM_API_KEYS + LLM_ADMIN_KEY (the app in-process, through an ASGI transport): keys
enforced, admin endpoints need the admin key, health/metrics open, no key in the service's log."""
from __future__ import annotations

import logging

from tests.llm_service.conftest import TINY_NAME, app_settings, serve_in_process

USER, ADMIN = "user-key-7f3a9", "admin-key-c41d2"
SECRETS = (USER, ADMIN, "wrong-key-0000", "other-key")


def leaked(records: list[logging.LogRecord], formatter: logging.Formatter) -> list[str]:
    """The secrets found in the log lines ``formatter`` makes of ``records``."""
    log = "\n".join(formatter.format(rec) for rec in records)
    return [s for s in SECRETS if s in log]


def test_llm_service_api_keys(tiny_model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)                  # every logger, as the service logs (LLM_LOG_LEVEL=INFO)
    keyfile = tmp_path / "keys"          # the form a mounted Kubernetes Secret takes
    keyfile.write_text(f"{USER}\nother-key\n")
    # JSON logs: the formatter writes the message, every extra field and the exception of a record
    settings = app_settings(tiny_model_dir, default_model=TINY_NAME, api_keys=f"file:{keyfile}", admin_key=ADMIN,
                            log_json=True)
    with serve_in_process(settings) as c:
        # the formatter of the handler the app put on the root logger: its log lines as it writes them
        formatter, = [h.formatter for h in logging.getLogger().handlers if getattr(h, "_stack_common", False)]
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
    records = list(caplog.records)
    assert "request rejected" in "\n".join(formatter.format(rec) for rec in records)
    assert leaked(records, formatter) == []
    # ... and the check sees a key that a service logger writes, in an extra field as well as in the message
    logging.getLogger("stack_common.auth").warning("request rejected", extra={"api_key": USER})
    logging.getLogger("llm_service").info(f"loaded with {ADMIN}")
    assert leaked(caplog.records[len(records):], formatter) == [USER, ADMIN]
