"""App factory: ``uvicorn --factory llm_service.main:create_app --port 8002``.

``create_app(settings=None)`` reads ``LLM_*`` from the environment when no settings are given. The
lifespan builds the registry (and loads the default model) once and keeps the objects on ``app.state``.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from stack_common.auth import install_auth
from stack_common.http_errors import COMMON_ERRORS, error_responses, install_error_handlers
from stack_common.heap import freeze_startup_objects
from stack_common.limits import BodySizeLimitMiddleware
from stack_common.logs import configure_logging
from stack_common.metrics import metrics_router

from .api import admin, generate, health, openai, tokenize
from .core.metrics import Metrics
from .core.settings import Settings
from .engine.batching import AdmissionGate
from .registry import ModelRegistry
from .serving import GenerationService

log = logging.getLogger("llm_service")


def is_admin(method: str, path: str) -> bool:
    """Admin operations (need LLM_ADMIN_KEY when set): everything under /admin (model load/unload/default)."""
    return path == "/admin" or path.startswith("/admin/")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gate = AdmissionGate(settings.max_queue, settings.retry_after_s, metrics)
        registry = ModelRegistry(settings, metrics, gate)
        app.state.registry = registry
        app.state.serving = GenerationService(settings, registry)
        default = registry.initial_default()
        try:
            if default:
                await registry.set_default(default)
            for name in settings.preload_models:
                await registry.load(name)
        except Exception:
            # Stay up (healthz answers, readyz says why) so an operator can fix it via /admin.
            log.exception("could not load model at start", extra={"model": default})
        if not default:
            log.warning("no default model (set LLM_DEFAULT_MODEL)", extra={"models_dir": str(settings.models_dir),
                                                                           "on_disk": registry.available()})
        freeze_startup_objects()
        yield
        await registry.close()

    app = FastAPI(title="llm-service", version="0.1.0", lifespan=lifespan,
                  responses=error_responses(*COMMON_ERRORS, 400, 404, 409, 429, 504))
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    install_auth(app, settings, service="llm-service", env_prefix="LLM_", is_admin=is_admin)
    app.include_router(health.router)
    app.include_router(generate.router)
    app.include_router(openai.router)
    app.include_router(tokenize.router)
    app.include_router(admin.router)
    app.include_router(metrics_router(metrics.registry))
    return app
