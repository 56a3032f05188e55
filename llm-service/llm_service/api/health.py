"""GET /healthz (alive) and GET /readyz (the default model is loaded; its served precision and gate scores)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..openai_protocol import Alive, NotReady, Ready
from .deps import RegistryDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Alive)
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses={503: {"model": NotReady, "description": "Not ready: why"}})
async def readyz(registry: RegistryDep) -> JSONResponse:
    name = registry.default
    if name and name in registry.loaded:
        model = registry.loaded[name]
        return JSONResponse({"status": "ready", "default_model": name, **model.quality(),
                             "loaded": sorted(registry.loaded)})
    reason = (f"default model {name!r} is not loaded" if name else
              "no default model: set LLM_DEFAULT_MODEL or POST /admin/default")
    return JSONResponse({"status": "not_ready", "reason": reason, "models_on_disk": registry.available()},
                        status_code=503)
