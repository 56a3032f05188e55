"""GET /ui (the page) over the app in this process: what it is served with and who may load it. The page's
behaviour in a real browser is tests/e2e/test_ui_browser.py."""
from __future__ import annotations

import json
import re

from search_service.fusion import Method
from typing import get_args

from tests.search_service.service_fixtures import app_settings, serve_in_process

USER, ADMIN = "ui-user-5c1d", "ui-admin-a90e"


def _config(html: str) -> dict:
    m = re.search(r'<script id="ui-config" type="application/json">(.*?)</script>', html, re.S)
    assert m, "the page carries its configuration"
    return json.loads(m.group(1))


def test_the_page_and_its_assets_are_served_without_a_key_the_api_still_needs_one(tmp_path, redis_url, unique_name):
    settings = app_settings(tmp_path / "data", redis_url, unique_name, api_keys=USER, admin_key=ADMIN,
                            fusion="rrf", alpha=0.3)
    with serve_in_process(settings) as c:
        r = c.get("/ui")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        config = _config(r.text)
        assert config == {"fusions": list(get_args(Method)), "default_fusion": "rrf", "default_alpha": 0.3,
                          "model_alphas": {"minilm": 0.45, "multilingual-e5-small": 0.55}, "max_limit": 100}
        # nothing runs inline (the CSP would block it): the one executable script is the module file
        assert re.findall(r"<script(?![^>]*application/json)[^>]*>", r.text) == [
            '<script type="module" src="ui/app.js">']
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            a = c.get(f"/ui/{name}")
            assert a.status_code == 200 and a.headers["content-type"].startswith(kind) and len(a.text) > 1000
        assert c.get("/ui/..%2Fmain.py").status_code == 404          # only the listed files, by name
        assert c.get("/ui/__init__.py").status_code == 404
        r = c.get("/ui/secrets.txt")
        assert r.status_code == 404 and r.json()["error"]["message"] == "no such file: /ui/secrets.txt"
        r = c.get("/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "ui"
        # the page is public, the data is not
        assert c.get("/collections").status_code == 401
        assert c.get("/uix").status_code == 401              # a prefix of /ui is not the page
        assert c.get("/collections", headers={"Authorization": f"Bearer {USER}"}).status_code == 200


def test_the_page_config_cannot_end_its_script_element():
    from search_service.api.routes import ui

    evil = {"fusions": ["</script><script>alert(1)</script>"], "note": "a</b"}
    html = ui.render_page(evil)
    assert "<script>alert(1)" not in html
    assert _config(html) == evil                     # and the page reads back exactly what was meant


def test_the_page_can_be_switched_off(tmp_path, redis_url, unique_name):
    settings = app_settings(tmp_path / "data", redis_url, unique_name, ui_enabled=False, api_keys=USER)
    with serve_in_process(settings) as c:
        assert c.get("/ui").status_code == 401       # not public any more (and not there with a key)
        assert c.get("/ui", headers={"Authorization": f"Bearer {USER}"}).status_code == 404
        assert c.get("/ui/app.js", headers={"Authorization": f"Bearer {USER}"}).status_code == 404


def test_the_ui_routes_stay_out_of_the_openapi_spec(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]
