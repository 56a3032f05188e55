"""Domain errors by kind, shared by both services. No web framework here.

Domain code raises one of these with a message meant for the client; what HTTP status each kind is
answered with is decided in one place, the API layer (:mod:`stack_common.http_errors`). ``error_type``
is the kind's name as the client sees it in ``{"error": {"type", "message", "details"}}``.
"""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """The request cannot be served as asked (the base kind: a bad request)."""

    error_type = "bad_request"

    def __init__(self, message: str, *, details: Any = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.retry_after_s = retry_after_s     # the client may retry after this long (Retry-After)


class InvalidRequest(ServiceError):
    """A field of the request is wrong (out of bounds, malformed, inconsistent with another)."""

    error_type = "validation_error"


class TooLarge(ServiceError):
    """The request carries more than a configured limit allows."""

    error_type = "payload_too_large"


class ContextTooLong(ServiceError):
    """Prompt plus requested tokens do not fit the model's context."""

    error_type = "context_length_exceeded"


class NotFound(ServiceError):
    error_type = "not_found"


class Conflict(ServiceError):
    """The request contradicts the current state (exists already, built with another model, ...)."""

    error_type = "conflict"


class Unavailable(ServiceError):
    """A dependency is down or too slow, or the service is not ready: what is down is in the message."""

    error_type = "unavailable"


class Overloaded(ServiceError):
    """The service's queue is full; ``retry_after_s`` says when to try again."""

    error_type = "overloaded"


class TimedOut(ServiceError):
    """The work did not finish within its deadline."""

    error_type = "timeout"


class ClientClosed(ServiceError):
    """The client went away before the answer was complete."""

    error_type = "client_closed"


class Failed(ServiceError):
    """The service's own work failed (a model file, a generation): not the client's fault."""

    error_type = "internal_error"


def error_body(error_type: str, message: str, details: Any = None) -> dict[str, Any]:
    """The one error shape: ``{"error": {"type", "message"[, "details"][, "param"]}}``. A ``param`` in the
    details (the request field at fault) is repeated at the top, where OpenAI's clients read it."""
    body: dict[str, Any] = {"type": error_type, "message": message}
    if details is not None:
        body["details"] = details
        if isinstance(details, dict) and "param" in details:
            body["param"] = details["param"]
    return {"error": body}
