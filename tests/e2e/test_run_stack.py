"""`make run` never leaks a process: scripts/run_stack.py as a real process in its own session (as make
runs it under a terminal or a supervisor), both services on free ports, the tiny LLM, real signals to its
process group, and what a user would see afterwards: the services' processes (and their process groups)
gone, their ports refusing connections.

One stack per case (~10 s to start): each case ends the stack in its own way.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from stack_dev.procs import ROOT, free_port, port_open, wait_ready
from tests.conftest import TINY_NAME

RUN_STACK = ROOT / "scripts" / "run_stack.py"
GRACEFUL_EXIT_S = 25       # run_stack's own stop timeout is 20 s: a graceful stop takes ~2 s here
FORCED_EXIT_S = 8          # a forced stop must not wait for that timeout
GONE_S = 5                 # after run_stack exits, its services are gone within this


@dataclass
class Stack:
    proc: subprocess.Popen
    out: Path
    ports: dict[str, int]
    services: dict[str, psutil.Process]

    def output(self) -> str:
        return self.out.read_text(errors="replace")[-4000:]

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)     # its own session: its pid is its group's id
        except ProcessLookupError:
            pass


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_members(pgids: set[int]) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) in pgids and _alive(p):
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out


def _start_stack(tmp: Path, models_dir: Path, redis_url: str) -> Stack:
    ports = {"search-service": free_port(), "llm-service": free_port()}
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEARCH_DATA_DIR", "SEARCH_LLM_URL", "LLM_MODELS_DIR", "LLM_DEFAULT_MODEL")}
    env.update({
        # the embedder is built once into (and cached in) the repo's models dir; the LLM comes from tiny_model_dir
        "SEARCH_MODELS_DIR": str(ROOT / "models"), "SEARCH_REDIS_URL": redis_url,
        "SEARCH_CACHE_PREFIX": "runstack-" + tmp.name, "LLM_DEVICE": "cpu", "LLM_INTRA_OP_THREADS": "1",
    })
    out = tmp / "run_stack.out"
    proc = subprocess.Popen(
        [sys.executable, str(RUN_STACK), "--search-port", str(ports["search-service"]),
         "--llm-port", str(ports["llm-service"]), "--models-dir", str(models_dir), "--model", TINY_NAME,
         "--data-dir", str(tmp / "data"), "--log-dir", str(tmp / "logs")],
        env=env, cwd=ROOT, stdout=out.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    stack = Stack(proc, out, ports, {})
    try:
        for name, port in ports.items():
            wait_ready(f"http://127.0.0.1:{port}", "/readyz", proc, timeout=180, name=f"run_stack ({name})",
                       log_path=out)
        for child in psutil.Process(proc.pid).children():
            cmd = " ".join(child.cmdline())
            for name, port in ports.items():
                if "uvicorn" in cmd and f"--port {port}" in cmd:
                    stack.services[name] = child
        assert set(stack.services) == set(ports), stack.output()
        for child in stack.services.values():     # each service leads its own process group
            assert os.getpgid(child.pid) == child.pid != os.getpgid(proc.pid)
    except BaseException:
        _kill_everything(stack)
        raise
    return stack


def _kill_everything(stack: Stack) -> None:
    for p in stack.services.values():
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    stack.signal_group(signal.SIGKILL)
    try:
        stack.proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture
def stack(tmp_path, tiny_model_dir, redis_url):
    s = _start_stack(tmp_path, tiny_model_dir, redis_url)
    yield s
    _kill_everything(s)         # only does something when a test failed


def _assert_nothing_left(stack: Stack) -> None:
    deadline = time.monotonic() + GONE_S
    pgids = {p.pid for p in stack.services.values()}
    while time.monotonic() < deadline:
        left = [n for n, p in stack.services.items() if _alive(p)] + [
            f"port {port} ({n})" for n, port in stack.ports.items() if port_open(port)]
        members = _group_members(pgids)
        if not left and not members:
            return
        time.sleep(0.1)
    pytest.fail(f"left behind: {left}, in the services' process groups: {members}\n{stack.output()}")


def _wait_exit(stack: Stack, within: float) -> tuple[int, float]:
    t0 = time.monotonic()
    try:
        rc = stack.proc.wait(within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run_stack still running {within} s after the signal\n{stack.output()}")
    return rc, time.monotonic() - t0


def test_one_sigterm_stops_the_stack_gracefully(stack):
    stack.signal_group(signal.SIGTERM)
    rc, _ = _wait_exit(stack, GRACEFUL_EXIT_S)
    _assert_nothing_left(stack)
    out = stack.output()
    assert rc == 0, out
    assert "stopping search-service" in out and "stopping llm-service" in out and "[run] stopped" in out, out
    for name in stack.services:   # each service shut down on its own (uvicorn's graceful shutdown), not killed
        log = (stack.out.parent / "logs" / f"{name}.log").read_text()
        assert "Application shutdown complete" in log, log[-2000:]


def test_two_sigterms_in_quick_succession_leave_nothing(stack):
    """The original defect: SIGTERM to make's group reaches run_stack twice (once from the group signal,
    once forwarded by make); the second one cut the stop short and left llm-service running."""
    stack.signal_group(signal.SIGTERM)
    time.sleep(0.05)
    stack.signal_group(signal.SIGTERM)
    rc, _ = _wait_exit(stack, GRACEFUL_EXIT_S)
    _assert_nothing_left(stack)
    assert rc == 0, stack.output()          # a repeat within a moment is the same request: still graceful


def test_second_ctrl_c_kills_a_service_that_hangs_on_shutdown(stack):
    """Double Ctrl-C: the first starts the graceful stop, which a stuck llm-service (SIGSTOPped here)
    would hold up for the 20 s stop timeout; the second one kills every service at once."""
    os.kill(stack.services["llm-service"].pid, signal.SIGSTOP)
    stack.signal_group(signal.SIGINT)
    time.sleep(0.6)
    assert stack.proc.poll() is None, stack.output()      # still waiting for the stuck service
    stack.signal_group(signal.SIGINT)
    rc, took = _wait_exit(stack, FORCED_EXIT_S)
    _assert_nothing_left(stack)
    assert rc == 1, stack.output()          # not a clean stop: services were killed
    assert "killing the services" in stack.output()


def test_a_service_that_dies_takes_the_stack_down_with_it(stack):
    stack.services["search-service"].kill()
    rc, _ = _wait_exit(stack, GRACEFUL_EXIT_S)
    _assert_nothing_left(stack)
    out = stack.output()
    assert rc == 1 and "search-service exited with -9" in out and "stopping llm-service" in out, out


def test_services_stop_when_run_stack_itself_is_killed(stack):
    """SIGKILL leaves run_stack no chance to stop anything: the kernel SIGTERMs its services
    (PR_SET_PDEATHSIG), which then shut down on their own."""
    stack.signal_group(signal.SIGKILL)
    _wait_exit(stack, 5)
    _assert_nothing_left(stack)
