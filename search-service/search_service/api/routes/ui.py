"""GET /ui: the page for people (search, explain, streamed cited answers, collections).

Plain HTML, one stylesheet and one ES module shipped inside the package (``search_service/ui/``): no CDN,
no build step. The page itself holds no data, so it is served without an API key even when keys are set;
every call it makes goes through the API with the key the person types (kept in the page's memory only).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import get_args

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from stack_common.errors import NotFound

from ...embedding_models import MODELS
from ...fusion import Method
from ..deps import SettingsDep
from ..schemas import SearchRequest

router = APIRouter(include_in_schema=False)

ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# The page loads only its own files and calls only its own origin; nothing inline runs.
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
PUBLIC_PATHS = ("/", "/ui")          # open without a key (the page; its assets are under /ui/)
PUBLIC_PREFIXES = ("/ui/",)


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return resources.files("search_service").joinpath("ui", name).read_text(encoding="utf-8")


def page_config(settings) -> dict:
    """What the page needs to know of this server: fusion names and defaults, the result limit."""
    limit = next(m.le for m in SearchRequest.model_fields["limit"].metadata if hasattr(m, "le"))
    return {"fusions": list(get_args(Method)), "default_fusion": settings.fusion,
            "default_alpha": settings.alpha, "model_alphas": {m.key: m.fusion_alpha for m in MODELS.values()},
            "max_limit": limit}


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("ui", status_code=307)     # relative: works behind a path prefix


def render_page(config: dict) -> str:
    """index.html with ``config`` as JSON in its ``<script type="application/json">`` element. "<" is written
    as its JSON escape (no "</script>" or "<!--" can change how the element is parsed); JSON reads it back
    as the same text."""
    data = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _asset("index.html").replace("__CONFIG__", data)


@router.get("/ui")
async def page(settings: SettingsDep) -> HTMLResponse:
    return HTMLResponse(render_page(page_config(settings)), headers=HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no such file: /ui/{name}")
    return Response(_asset(name), media_type=ASSETS[name], headers=HEADERS)
