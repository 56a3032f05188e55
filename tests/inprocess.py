"""A service app served in the test process (where a real process is not the point): one helper for both
services' tests (tests/llm_service/conftest.py, tests/search_service/service_fixtures.py)."""
from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

_root_log_state: list = []      # the root logger's level and our handlers before the first open app
_open_apps = [0]


@contextmanager
def serve_app(app, threads_from: str = "exit") -> Iterator[httpx.Client]:
    """``app`` (a service's ``create_app(...)``) served in this process: a TestClient (an ``httpx.Client`` over an ASGI
    transport) whose context runs the app's lifespan. Server errors come back as responses (500), as a
    real server would send them, and redirects are not followed (as with a plain ``httpx.Client``).
    Responses stream: ``client.stream(...)`` gets each chunk as the app sends it, and closing a response
    before its end cancels the app's handling of the request.

    On exit the app is closed, and this checks that every thread the app started (its event loop, the
    engines' and embedders' workers, a gate thread, thread-pool workers) has ended: the threads that
    appeared while it was open (``threads_from="exit"``: also those of models loaded during a test), or
    during its start-up only (``"startup"``: for an app shared by async tests, whose own event loop starts
    threads of its own meanwhile). It also undoes what the app did to the test process: ``gc.freeze`` (the service
    freezes its start-up objects) and, once the last app is closed, the root logger's configuration."""
    from fastapi.testclient import TestClient

    root = logging.getLogger()
    if _open_apps[0] == 0:
        _root_log_state[:] = [root.level, [h for h in root.handlers if getattr(h, "_stack_common", False)]]
    _open_apps[0] += 1
    before = set(threading.enumerate())
    started: set[threading.Thread] = set()
    try:
        with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
            if threads_from == "startup":
                started = set(threading.enumerate()) - before
            try:
                yield client
            finally:
                if threads_from == "exit":
                    started = set(threading.enumerate()) - before
    finally:
        gc.unfreeze()
        _open_apps[0] -= 1
        if _open_apps[0] == 0:
            level, ours = _root_log_state
            for h in list(root.handlers):
                if getattr(h, "_stack_common", False) and h not in ours:
                    root.removeHandler(h)
            for h in ours:
                if h not in root.handlers:
                    root.addHandler(h)
            root.setLevel(level)
    for t in started:
        t.join(10)
    assert not [t.name for t in started if t.is_alive()], "threads left running by a closed app"
