"""Start a service as a real process (uvicorn on a free port) and wait until it answers.

Used by every test that needs "the service over real HTTP". The process gets its settings
through the environment, exactly as a user would run it.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """``uvicorn --factory <app>`` in a subprocess; ``url`` is its base URL."""

    def __init__(self, factory: str, env: dict[str, str] | None = None, port: int | None = None,
                 log_path: Path | None = None, ready_path: str = "/healthz") -> None:
        self.factory = factory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.log_path = log_path
        self.ready_path = ready_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "ServiceProcess":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        _STARTED.append(self)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", self.factory, "--host", "127.0.0.1",
             "--port", str(self.port), "--timeout-graceful-shutdown", "10"],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.factory} exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.factory} not ready within {timeout}s; log: {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> "ServiceProcess":
        # ``with ServiceProcess(...).start() as svc`` must not start a second process (the first would
        # be left running after the tests: it was, three processes per CI run)
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_STARTED: list[ServiceProcess] = []


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: a service a test forgot to stop does not outlive the test run."""
    for svc in _STARTED:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.stop(timeout=10)
