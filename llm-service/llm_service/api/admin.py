"""Model administration without restart: list, load, unload, switch the default.

GET /admin/models; POST /admin/models/{name}/load {precision?}; POST /admin/models/{name}/unload;
POST /admin/default {model, precision?}. Protected by LLM_ADMIN_KEY when set (stack_common.auth middleware,
installed in main.create_app; the rule is main.is_admin).
"""
from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..openai_protocol import AdminModels, DefaultSet, ModelLoaded, ModelUnloaded
from .deps import RegistryDep

router = APIRouter(prefix="/admin", tags=["admin"])


class LoadBody(BaseModel):
    precision: str | None = Field(None, max_length=16, description="Variant to load (default: per device)")


class DefaultBody(BaseModel):
    model: str = Field(..., min_length=1, max_length=128)
    precision: str | None = Field(None, max_length=16)


# exclude_unset: a gate without a record has no scores, and they stay absent (not null).
@router.get("/models", response_model=AdminModels, response_model_exclude_unset=True)
async def models(registry: RegistryDep) -> dict:
    return {"default": registry.default, "on_disk": registry.available(),
            "loaded": [m.describe() for _, m in sorted(registry.loaded.items())]}


@router.post("/models/{name}/load", response_model=ModelLoaded, response_model_exclude_unset=True)
async def load(name: str, registry: RegistryDep, body: LoadBody | None = None) -> dict:
    model = await registry.load(name, body.precision if body else None)
    return {"status": "loaded", **model.describe()}


@router.post("/models/{name}/unload", response_model=ModelUnloaded)
async def unload(name: str, registry: RegistryDep) -> dict:
    return await registry.unload(name)


@router.post("/default", response_model=DefaultSet, response_model_exclude_unset=True)
async def set_default(body: DefaultBody, registry: RegistryDep) -> dict:
    model = await registry.set_default(body.model, body.precision)
    return {"status": "ok", "default": registry.default, **model.describe()}
