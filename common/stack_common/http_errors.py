"""Domain errors → HTTP, in one place, and handlers that never return a stack trace.

Every error body is ``{"error": {"type": str, "message": str, "details": ...}}`` (:func:`errors.error_body`).
Validation errors say which field is wrong and why; unexpected exceptions are logged with their
traceback and answered with a plain 500 message.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import (ClientClosed, Conflict, ContextTooLong, Failed, InvalidRequest, NotFound, Overloaded,
                     ServiceError, TimedOut, TooLarge, Unavailable, error_body)

log = logging.getLogger("stack_common.http_errors")

Status = int | Callable[[ServiceError], int]

# The HTTP status of each kind of domain error; the most specific class in an error's MRO wins, so a
# service's own subclass answers as its kind unless the service maps it (``install_error_handlers``).
STATUS: dict[type[ServiceError], Status] = {
    ServiceError: 400,
    InvalidRequest: 422,
    ContextTooLong: 400,
    TooLarge: 413,
    NotFound: 404,
    Conflict: 409,
    Overloaded: 429,
    ClientClosed: 499,          # nginx's "client closed request": only ever seen in logs and metrics
    Failed: 500,
    Unavailable: 503,
    TimedOut: 504,
}


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: Any = None
    param: str | None = Field(None, description="The request field at fault, where one is (as OpenAI's API "
                                                "names it)")


class ErrorResponse(BaseModel):
    """The body of every error answer (documented in the OpenAPI spec, so schema checks cover errors too)."""
    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Bad request: the message says what is wrong", 401: "Missing or unknown API key",
    403: "The key may not do this (admin operations)", 404: "Not found", 409: "Conflicts with the current state",
    413: "Request larger than a configured limit", 422: "Invalid field: which one and why",
    429: "Overloaded: retry after Retry-After seconds", 500: "Internal error (logged, no details returned)",
    503: "A dependency is down, or the service is not ready", 504: "Did not finish within its deadline",
}


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, all with the :class:`ErrorResponse` body
    (``descriptions``: ``s503="..."`` overrides a status's text)."""
    return {s: {"model": ErrorResponse, "description": descriptions.get(f"s{s}", _DESCRIPTIONS.get(s, "Error"))}
            for s in statuses}


# Every route of both services can answer these (request validation, body limit, auth, not ready).
COMMON_ERRORS = (401, 413, 422, 500, 503)


def http_status(exc: ServiceError, extra: Mapping[type[ServiceError], Status] | None = None) -> int:
    """The status ``exc`` is answered with (``extra`` overrides or adds kinds of one service)."""
    table = {**STATUS, **(extra or {})}
    for cls in type(exc).__mro__:
        status = table.get(cls)
        if status is not None:
            return status(exc) if callable(status) else status
    return 500


def error_headers(exc: ServiceError) -> dict[str, str] | None:
    if exc.retry_after_s is None:
        return None
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}


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


def install_error_handlers(app: FastAPI, statuses: Mapping[type[ServiceError], Status] | None = None) -> None:
    """Answer domain errors with their kind's status (``statuses``: the service's own kinds), request
    validation errors with 422 naming the fields, and anything unexpected with a logged, plain 500."""
    extra = dict(statuses or {})

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.error_type, exc.message, exc.details),
                            status_code=http_status(exc, extra), headers=error_headers(exc))

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
