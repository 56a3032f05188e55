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
