"""Optional API-key auth shared by both services (pure ASGI middleware), and CORS wiring.

- Keys come from settings as ``SecretStr``: a comma-separated list, or ``file:/path`` / an absolute path
  to a file (one key per line or comma-separated; the form a Kubernetes Secret is mounted as).
- A client sends ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
- Comparison is constant-time (``hmac.compare_digest``) against EVERY configured key, no early exit.
- No keys configured: the API is open. Open paths (default /healthz, /readyz, /metrics) never need a key.
- Admin operations (a per-service rule: method + path) need the admin key when one is set; a valid
  ordinary key there gets 403. The admin key is also accepted everywhere an ordinary key is.
- Rejections are 401 (no/wrong key, with ``WWW-Authenticate: Bearer``) or 403 in the shared error shape,
  and log the method, path and client only: never the key that was sent.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from pathlib import Path
from typing import Callable, Iterable

from pydantic import BaseModel, Field, SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("stack_common.auth")

DEFAULT_OPEN_PATHS = "/healthz,/readyz,/metrics"

AdminRule = Callable[[str, str], bool]


class AuthSettings(BaseModel):
    """Auth and CORS fields, mixed into each service's settings class (so the env names carry its prefix:
    SEARCH_API_KEYS / LLM_API_KEYS, ...)."""

    api_keys: SecretStr | None = Field(
        None, description="API keys clients must send (`Authorization: Bearer <key>` or `X-API-Key`): a "
                          "comma-separated list, or `file:/path` (or an absolute path) to a file with one key "
                          "per line (a mounted Kubernetes Secret). Unset: the API is open.")
    admin_key: SecretStr | None = Field(
        None, description="Key for admin operations (same forms as api_keys). When set, admin operations need "
                          "it (`Authorization: Bearer <admin key>`); unset: they follow api_keys.")
    open_paths: str = Field(
        DEFAULT_OPEN_PATHS, description="Comma-separated paths that never need a key (health and metrics by "
                                        "default). Empty: every path needs a key when keys are set.")
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS (`*` for any). Empty (default): no CORS "
                        "middleware, browsers on other origins are refused.")


def _split(text: str) -> list[str]:
    return [k.strip() for k in re.split(r"[,\n]", text) if k.strip()]


def load_keys(value: SecretStr | str | None) -> list[str]:
    """Keys from a setting: ``a,b,c``; ``file:/path``; or an absolute path to an existing file."""
    if value is None:
        return []
    raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    raw = raw.strip()
    if not raw:
        return []
    path: Path | None = None
    if raw.startswith("file:"):
        path = Path(raw[5:])
    elif raw.startswith("/") and "," not in raw and Path(raw).is_file():
        path = Path(raw)
    if path is not None:
        try:
            return _split(path.read_text())
        except OSError as exc:
            # The path is not a secret; the content is never logged.
            raise ValueError(f"cannot read the key file {path}: {exc.strerror}") from None
    return _split(raw)


def split_csv(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


def key_matches(given: str, keys: list[bytes]) -> bool:
    """Constant-time: compares against every key, whatever matched before."""
    g = given.encode("utf-8", "surrogateescape")
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(g, k)
    return ok


def _given_key(scope: Scope) -> str | None:
    auth = api = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            auth = value.decode("latin-1")
        elif name == b"x-api-key":
            api = value.decode("latin-1")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api is not None and api.strip():
        return api.strip()
    return None


class ApiKeyMiddleware:
    """401/403 before the app sees the request; see the module docstring for the rules."""

    def __init__(self, app: ASGIApp, *, api_keys: Iterable[str] = (), admin_keys: Iterable[str] = (),
                 open_paths: Iterable[str] = (), open_prefixes: Iterable[str] = (),
                 is_admin: AdminRule | None = None, service: str = "api",
                 admin_env: str = "ADMIN_KEY", keys_env: str = "API_KEYS") -> None:
        self.app = app
        self.keys = [k.encode() for k in api_keys]
        self.admin = [k.encode() for k in admin_keys]
        self.open = {p.rstrip("/") or "/" for p in open_paths}
        self.open_prefixes = tuple(open_prefixes)
        self.is_admin = is_admin or (lambda method, path: False)
        self.service = service
        self.admin_env = admin_env
        self.keys_env = keys_env

    @property
    def active(self) -> bool:
        return bool(self.keys or self.admin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.active:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "/")
        method = scope.get("method", "GET")
        if method == "OPTIONS" or (path.rstrip("/") or "/") in self.open or path.startswith(self.open_prefixes):
            await self.app(scope, receive, send)      # CORS preflights carry no credentials
            return
        given = _given_key(scope)
        if self.admin and self.is_admin(method, path):
            if given is not None and key_matches(given, self.admin):
                await self.app(scope, receive, send)
                return
            if given is not None and key_matches(given, self.keys):
                await self._reject(scope, send, 403, "forbidden",
                                   f"this operation needs the admin key ({self.admin_env})")
                return
            await self._reject(scope, send, 401, "unauthorized",
                               f"admin endpoints need 'Authorization: Bearer <{self.admin_env}>'")
            return
        if not self.keys:
            await self.app(scope, receive, send)     # only an admin key is configured: the rest is open
            return
        if given is not None and (key_matches(given, self.keys) or key_matches(given, self.admin)):
            await self.app(scope, receive, send)
            return
        message = ("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'" if given is None
                   else f"invalid API key (see {self.keys_env})")
        await self._reject(scope, send, 401, "unauthorized", message)

    async def _reject(self, scope: Scope, send: Send, status: int, kind: str, message: str) -> None:
        client = scope.get("client") or ("?", 0)
        log.warning("request rejected: %s", kind, extra={"status": status, "method": scope.get("method"),
                                                         "path": scope.get("path"), "client": client[0]})
        body = json.dumps({"error": {"type": kind, "message": message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", f'Bearer realm="{self.service}"'.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def install_auth(app, settings: AuthSettings, *, service: str, env_prefix: str,
                 is_admin: AdminRule | None = None, public_paths: Iterable[str] = (),
                 public_prefixes: Iterable[str] = ()) -> None:
    """Add CORS (only when origins are set) and the API-key middleware to a FastAPI app.

    ``public_paths`` / ``public_prefixes``: paths the service itself serves without a key whatever
    ``open_paths`` says (pages that hold no data, e.g. search-service's /ui and its assets).

    Call it after the app's other middlewares so it runs first (outermost) — except CORS, which must
    wrap it so that 401s still carry CORS headers for allowed origins."""
    api_keys = load_keys(settings.api_keys)
    admin_keys = load_keys(settings.admin_key)
    app.add_middleware(ApiKeyMiddleware, api_keys=api_keys, admin_keys=admin_keys,
                       open_paths=[*split_csv(settings.open_paths), *public_paths],
                       open_prefixes=public_prefixes, is_admin=is_admin, service=service,
                       admin_env=f"{env_prefix}ADMIN_KEY", keys_env=f"{env_prefix}API_KEYS")
    origins = split_csv(settings.cors_origins)
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"],
                           allow_headers=["authorization", "x-api-key", "content-type"],
                           allow_credentials="*" not in origins)
    log.info("auth configured", extra={"service": service, "api_keys": len(api_keys),
                                       "admin_key": bool(admin_keys), "cors_origins": origins})
