"""Typed dependencies: the objects the app factory built once and keeps on ``app.state``."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..core.settings import Settings
from ..registry import ModelRegistry
from ..serving import GenerationService


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_serving(request: Request) -> GenerationService:
    return request.app.state.serving


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
ServingDep = Annotated[GenerationService, Depends(get_serving)]


async def wait_disconnect(request: Request) -> None:
    """Returns when the client hangs up (the body is already read, so the next ASGI message is the
    disconnect); used to cancel non-streaming generations. Streaming responses detect it themselves."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
