"""One error shape for both services, and handlers that never return a stack trace.

Every error body is ``{"error": {"type": str, "message": str, "details": ...}}``.
Validation errors say which field is wrong and why; unexpected exceptions are logged
with their traceback and answered with a plain 500 message.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("stack_common.errors")


class ServiceError(Exception):
    """An error with an HTTP status and a message meant for the client."""

    status_code = 400
    error_type = "bad_request"

    def __init__(self, message: str, *, status_code: int | None = None, error_type: str | None = None,
                 details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type
        self.details = details
        self.headers = headers


class NotFound(ServiceError):
    status_code = 404
    error_type = "not_found"


class Conflict(ServiceError):
    status_code = 409
    error_type = "conflict"


class Unavailable(ServiceError):
    """A dependency is down or too slow: 503, with what is down in the message."""

    status_code = 503
    error_type = "unavailable"


class Overloaded(ServiceError):
    """The service's queue is full: 429 with Retry-After."""

    status_code = 429
    error_type = "overloaded"


def error_body(error_type: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": error_type, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def _loc(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.error_type, exc.message, exc.details),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _loc(e.get("loc", ())), "message": e.get("msg", "invalid"), "type": e.get("type")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return JSONResponse(error_body("validation_error", f"invalid request: {summary}", _jsonable(errors)),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                403: "forbidden", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if message == "There was an error parsing the body":      # FastAPI's text for undecodable JSON
            message = "the request body is not valid JSON (or not UTF-8)"
        return JSONResponse(error_body(kind, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal error; see the service log"), status_code=500)
