"""stack_common: the shared error shape and the body-size limit, over a real ASGI app."""
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from stack_common.errors import Unavailable
from stack_common.http_errors import install_error_handlers
from stack_common.limits import BodySizeLimitMiddleware


class Body(BaseModel):
    n: int = Field(ge=1, le=10)


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=100)

    @app.post("/echo")
    def echo(body: Body) -> dict:
        return {"n": body.n}

    @app.get("/down")
    def down() -> dict:
        raise Unavailable("redis is down")

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("secret internals")

    return app


def test_validation_error_names_the_field():
    client = TestClient(make_app())
    r = client.post("/echo", json={"n": 99})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "validation_error"
    assert "n" in err["message"] and "less than or equal to 10" in err["message"]


def test_service_error_and_unexpected_error_shapes():
    client = TestClient(make_app(), raise_server_exceptions=False)
    r = client.get("/down")
    assert r.status_code == 503 and r.json()["error"] == {"type": "unavailable", "message": "redis is down"}
    r = client.get("/boom")
    assert r.status_code == 500
    assert "secret internals" not in r.text and "Traceback" not in r.text


def test_body_size_limit_413_by_header_and_by_stream():
    client = TestClient(make_app())
    r = client.post("/echo", content=b'{"n": 1}' + b" " * 200, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"

    def chunks():
        yield b'{"n": 1'
        yield b" " * 200
        yield b"}"

    r = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/echo", json={"n": 3}).json() == {"n": 3}


# ---- domain errors by kind, mapped to HTTP in one place ---------------------------------------

def test_each_kind_of_domain_error_gets_its_status_and_shape():
    from stack_common import errors as e

    expected = {e.ServiceError: 400, e.InvalidRequest: 422, e.ContextTooLong: 400, e.TooLarge: 413,
                e.NotFound: 404, e.Conflict: 409, e.Overloaded: 429, e.ClientClosed: 499, e.Failed: 500,
                e.Unavailable: 503, e.TimedOut: 504}
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    def raise_(name: str) -> dict:
        cls = getattr(e, name)
        raise cls(f"{name} happened", details={"n": 1}, retry_after_s=2.5 if cls is e.Overloaded else None)

    client = TestClient(app)
    for cls, status in expected.items():
        r = client.get(f"/raise/{cls.__name__}")
        assert r.status_code == status, cls
        assert r.json() == {"error": {"type": cls.error_type, "message": f"{cls.__name__} happened",
                                      "details": {"n": 1}}}
        assert r.headers.get("retry-after") == ("3" if cls is e.Overloaded else None)   # rounded up


def test_a_service_maps_its_own_kinds_and_subclasses_answer_as_their_kind():
    from search_service.llm_client import LLMRejected, LLMUnavailable
    from search_service.main import SEARCH_ERROR_STATUS
    from stack_common.http_errors import http_status

    assert http_status(LLMUnavailable("down")) == 503                       # a subclass answers as its kind
    for upstream, status in ((400, 400), (404, 404), (409, 409), (413, 413), (422, 422), (401, 502), (418, 502)):
        assert http_status(LLMRejected("no", upstream_status=upstream), SEARCH_ERROR_STATUS) == status
    assert http_status(LLMRejected("no", upstream_status=404)) == 400       # unmapped: the base kind


def test_domain_errors_do_not_import_the_web_framework():
    import subprocess
    import sys

    code = "import sys, stack_common.errors; print(sorted(m for m in ('fastapi', 'starlette') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_both_services_document_every_error_with_the_error_body():
    """The OpenAPI specs name the one error body for every 4xx/5xx they document (what schemathesis' response
    conformance then checks), and FastAPI's default 422 schema (a different shape) is gone."""
    from llm_service.main import create_app as llm_app
    from search_service.main import create_app as search_app

    for app in (search_app(), llm_app()):
        spec = app.openapi()
        assert "HTTPValidationError" not in spec["components"]["schemas"]
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                errors = {c: r for c, r in op["responses"].items() if c[0] in "45"}
                assert {"401", "413", "422", "500", "503"} <= set(errors), (path, method)
                for code, resp in errors.items():
                    ref = resp["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse") or (path, code) == ("/readyz", "503"), (path, method, code)
