"""Start a service as a real process (uvicorn on a free port), wait until it answers, stop it.

Used by every test that needs "the service over real HTTP", by the scripts that start services
(run_stack.py, bench_search.py, soak.py, bench_llm.py, dev/gc_pauses.py). The process gets its settings
through the environment, exactly as a user would run it.

Stopping never leaves a process behind:

* :meth:`ServiceProcess.stop` sends the signal, waits, and SIGKILLs on timeout; a service started
  with ``new_session=True`` (its own session and process group, so a Ctrl-C or a signal to the
  caller's group does not reach it directly) is signalled as a whole group, and whatever is left of
  that group once the service has exited is SIGKILLed;
* ``die_with_parent=True`` asks Linux to SIGTERM the service when the process that started it dies,
  even by SIGKILL (``PR_SET_PDEATHSIG``);
* an ``atexit`` hook stops every service still running when the interpreter exits;
* :func:`stop_all` signals every service first, then waits for them under one deadline, so one that
  hangs does not delay the others' stop, and one that already died does not stop the loop.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]      # the repository (stack_dev is installed editable: -e ./scripts)
HF_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class ServiceExited(RuntimeError):
    """The process being waited for exited before it was ready."""


class Interrupted(Exception):
    """``wait_ready``'s ``stop`` callable asked to give up (a stop was requested meanwhile)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_listening_on(port: int) -> int | None:
    """PID of the process listening on TCP ``port`` (any address), or None (psutil; may need root to
    see other users' processes)."""
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return conn.pid
    return None


def wait_ready(url: str, path: str = "/readyz", proc: subprocess.Popen | None = None, timeout: float = 120.0, *,
               name: str | None = None, log_path: Path | str | None = None, interval: float = 0.1,
               request_timeout: float = 1.0, stop: Callable[[], bool] | None = None) -> None:
    """Poll ``GET url+path`` until it answers 200.

    Raises :class:`ServiceExited` as soon as ``proc`` (when given) has exited, :class:`TimeoutError`
    after ``timeout`` seconds, :class:`Interrupted` as soon as ``stop()`` returns true."""
    name = name or url
    where = f"; log: {log_path}" if log_path else ""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if stop is not None and stop():
            raise Interrupted(f"stopped while waiting for {name}")
        if proc is not None and proc.poll() is not None:
            raise ServiceExited(f"{name} exited with {proc.returncode}{where}")
        try:
            r = httpx.get(url + path, timeout=request_timeout)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{name} not ready within {timeout:g}s ({path}: {last}){where}")
        time.sleep(interval)


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the thread that forked it dies (Linux only)."""
    parent = os.getpid()

    def preexec() -> None:
        # the parent's Python handlers must not run here (between fork and exec) if a signal comes
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)    # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:           # the parent died before prctl: nobody would signal us
            os._exit(1)
    return preexec


def _killpg(pgid: int, sig: int) -> bool:
    """``killpg``; False when no process of the group is left (or it is not ours to signal)."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_process(proc: subprocess.Popen, sig: int, group: bool = False) -> None:
    """``sig`` to ``proc``, or to its whole process group (``group``: it was started with
    ``start_new_session=True``, so its pid is its group's id)."""
    if group:
        _killpg(proc.pid, sig)
    elif proc.poll() is None:
        proc.send_signal(sig)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0,
                 group: bool = False) -> int | None:
    """Send ``sig`` and wait ``timeout`` s for the exit, then SIGKILL. With ``group``, the whole process
    group is signalled, and what is left of it after the exit is SIGKILLed. Returns the exit code."""
    if proc.poll() is None:
        signal_process(proc, sig, group)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_process(proc, signal.SIGKILL, group)
            _wait_killed(proc)
    if group:
        _killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def _wait_killed(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """Wait for a SIGKILLed process; None if it is still there (stuck in the kernel: it goes when that
    returns) rather than an exception that would skip the caller's other processes."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


class ServiceProcess:
    """``uvicorn --factory <app>`` in a subprocess; ``url`` is its base URL.

    ``start(timeout)`` spawns it and waits until ``ready_path`` answers 200 (``spawn()`` +
    ``wait_ready()`` to start several before waiting). Used as a context manager it is started on
    entry unless already running (never twice) and stopped on exit."""

    def __init__(self, factory: str, env: dict[str, str] | None = None, port: int | None = None,
                 log_path: Path | None = None, ready_path: str = "/healthz", *, host: str = "127.0.0.1",
                 name: str | None = None, new_session: bool = False, die_with_parent: bool = False) -> None:
        self.factory = factory
        self.name = name or factory
        self.port = port or free_port()
        self.host = host
        connect = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{connect}:{self.port}"
        self.env = {**os.environ, **HF_OFFLINE_ENV, **(env or {})}
        self.log_path = log_path
        self.ready_path = ready_path
        self.new_session = new_session
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def spawn(self) -> "ServiceProcess":
        """Start the process (no wait). Never starts a second one while the first runs."""
        if self.running:
            return self
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        _STARTED.append(self)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", self.factory, "--host", self.host,
                 "--port", str(self.port), "--timeout-graceful-shutdown", "10"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=self.new_session,
                preexec_fn=parent_death_signal() if self.die_with_parent else None)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()                  # the child has its own copy
        return self

    def wait_ready(self, timeout: float = 120.0, stop: Callable[[], bool] | None = None) -> "ServiceProcess":
        wait_ready(self.url, self.ready_path, self.proc, timeout, name=self.name, log_path=self.log_path, stop=stop)
        return self

    def start(self, timeout: float = 120.0) -> "ServiceProcess":
        self.spawn()
        try:
            return self.wait_ready(timeout)
        except TimeoutError:
            self.stop()
            raise

    def send(self, sig: int) -> None:
        """``sig`` to the service (its whole process group when it has its own session)."""
        if self.proc is not None:
            signal_process(self.proc, sig, self.new_session)

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def sweep(self) -> None:
        """SIGKILL what is left of the service's process group (new_session only) once it has exited."""
        if self.new_session and self.proc is not None and self.proc.returncode is not None:
            _killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        return stop_process(self.proc, sig, timeout, self.new_session)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> "ServiceProcess":
        # ``with ServiceProcess(...).start() as svc`` must not start a second process (the first would
        # be left running after the tests: it was, three processes per CI run)
        if self.running:
            return self
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_all(services: Iterable[ServiceProcess], sig: int = signal.SIGTERM, timeout: float = 20.0,
             on_stop: Callable[[ServiceProcess], None] | None = None) -> dict[str, int | None]:
    """Stop every service: ``sig`` to each first, then wait for all under one deadline; SIGKILL those
    still running at the deadline. Each service is handled on its own (one that already exited or
    fails to stop does not keep the others running). Returns ``{name: exit code}``."""
    services = list(services)
    for svc in services:
        if svc.running:
            if on_stop is not None:
                on_stop(svc)
            svc.send(sig)
    deadline = time.monotonic() + timeout
    codes: dict[str, int | None] = {}
    for svc in services:
        if svc.proc is None:
            codes[svc.name] = None
            continue
        try:
            codes[svc.name] = svc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            svc.send(signal.SIGKILL)
            codes[svc.name] = _wait_killed(svc.proc)
    for svc in services:
        svc.sweep()
    return codes


_STARTED: list[ServiceProcess] = []


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: a service a test (or script) forgot to stop does not outlive the interpreter."""
    stop_all([svc for svc in _STARTED if svc.running], timeout=10)
