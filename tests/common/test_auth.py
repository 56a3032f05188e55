"""stack_common.auth: key sources, constant-time matching over all keys, open paths, admin rule, 401 shape,
no key in the logs, CORS off by default. The middleware runs in a real FastAPI app (in-process ASGI)."""
from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from stack_common.auth import AuthSettings, install_auth, key_matches, load_keys
from stack_common.http_errors import install_error_handlers


def make_app(**settings) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/data")
    def data():
        return {"ok": True}

    @app.delete("/things/{name}")
    def delete(name: str):
        return {"deleted": name}

    install_auth(app, AuthSettings(**settings), service="test", env_prefix="T_",
                 is_admin=lambda method, path: method == "DELETE")
    return app


async def call(app, method, path, headers=None, **kw):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.request(method, path, headers=headers or {}, **kw)


def test_load_keys_forms(tmp_path):
    assert load_keys(None) == [] and load_keys(SecretStr("")) == []
    assert load_keys(SecretStr("a, b,,c ")) == ["a", "b", "c"]
    f = tmp_path / "keys"
    f.write_text("k1\nk2, k3\n\n")
    assert load_keys(SecretStr(f"file:{f}")) == ["k1", "k2", "k3"]
    assert load_keys(SecretStr(str(f))) == ["k1", "k2", "k3"]          # a mounted Secret's path
    with pytest.raises(ValueError, match="cannot read the key file"):
        load_keys(SecretStr(f"file:{tmp_path}/missing"))


def test_key_matches_checks_every_key():
    keys = [b"alpha", b"beta", b"gamma"]
    assert key_matches("gamma", keys) and key_matches("alpha", keys)
    assert not key_matches("alph", keys) and not key_matches("", keys) and not key_matches("x", [])
    assert not key_matches("é", keys)                      # non-ASCII input never raises


def test_settings_repr_hides_secrets():
    s = AuthSettings(api_keys=SecretStr("topsecret1"), admin_key=SecretStr("topsecret2"))
    assert "topsecret" not in repr(s) and "topsecret" not in str(s) and "topsecret" not in s.model_dump_json()


async def test_open_without_keys():
    app = make_app()
    assert (await call(app, "GET", "/data")).status_code == 200
    assert (await call(app, "DELETE", "/things/x")).status_code == 200


async def test_keys_required_and_accepted_in_both_headers(caplog):
    app = make_app(api_keys="k-one,k-two")
    caplog.set_level(logging.DEBUG)
    r = await call(app, "GET", "/data")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["type"] == "unauthorized" and "X-API-Key" in r.json()["error"]["message"]
    r = await call(app, "GET", "/data", {"Authorization": "Bearer wrong-key-xyz"})
    assert r.status_code == 401 and "invalid API key" in r.json()["error"]["message"]
    assert "wrong-key-xyz" not in caplog.text and "k-one" not in caplog.text
    assert "wrong-key-xyz" not in r.text
    assert (await call(app, "GET", "/data", {"Authorization": "Bearer k-two"})).status_code == 200
    assert (await call(app, "GET", "/data", {"authorization": "bearer k-one"})).status_code == 200
    assert (await call(app, "GET", "/data", {"X-API-Key": "k-one"})).status_code == 200
    assert (await call(app, "GET", "/data", {"Authorization": "Basic k-one"})).status_code == 401
    assert (await call(app, "GET", "/healthz")).status_code == 200              # open by default
    assert (await call(app, "GET", "/healthz/")).status_code in (200, 307)
    assert (await call(app, "GET", "/docs")).status_code == 401                  # only the listed paths


async def test_open_paths_configurable():
    app = make_app(api_keys="k", open_paths="")
    assert (await call(app, "GET", "/healthz")).status_code == 401
    app = make_app(api_keys="k", open_paths="/data")
    assert (await call(app, "GET", "/data")).status_code == 200


async def test_admin_key():
    app = make_app(api_keys="user", admin_key="boss")
    r = await call(app, "DELETE", "/things/x", {"Authorization": "Bearer user"})
    assert r.status_code == 403 and "T_ADMIN_KEY" in r.json()["error"]["message"]
    r = await call(app, "DELETE", "/things/x")
    assert r.status_code == 401 and "T_ADMIN_KEY" in r.json()["error"]["message"]
    assert (await call(app, "DELETE", "/things/x", {"X-API-Key": "boss"})).status_code == 200
    assert (await call(app, "GET", "/data", {"X-API-Key": "boss"})).status_code == 200   # admin works everywhere
    # admin key only: ordinary endpoints stay open, admin ones need the key
    app = make_app(admin_key="boss")
    assert (await call(app, "GET", "/data")).status_code == 200
    assert (await call(app, "DELETE", "/things/x")).status_code == 401


async def test_cors_off_by_default_and_on_when_configured():
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    r = await call(make_app(), "OPTIONS", "/data", origin)
    assert "access-control-allow-origin" not in r.headers
    r = await call(make_app(), "GET", "/data", {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    app = make_app(cors_origins="https://ui.example", api_keys="k")
    r = await call(app, "OPTIONS", "/data", {**origin, "Origin": "https://ui.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ui.example"
    r = await call(app, "GET", "/data", {"Origin": "https://evil.example", "X-API-Key": "k"})
    assert "access-control-allow-origin" not in r.headers
