#!/usr/bin/env python3
"""Run the whole stack on this machine, no Docker: the README's `make run`.

1. Redis: `make run` has already made sure one answers (scripts/ensure_redis.sh).
2. The default LLM is exported and quantized into models/ on the first run (cached after).
3. search-service on :8001 (embedded Qdrant engine, data in ./data/search) and llm-service on :8002
   start as child processes; we wait until both are ready, print where they are and how to try them.
4. Ctrl-C (or SIGTERM) stops both cleanly; a second one, a moment later, kills them at once.
   No service outlives this script: each runs in its own process group (so a terminal's Ctrl-C or
   a supervisor's signal to make's group reaches only this script, which stops them in order), the
   whole group is stopped, and Linux SIGTERMs them should this script itself be SIGKILLed. When a
   service dies, the other one is stopped too. Exit status 0 after a clean stop on request, else 1.

Options: --sample loads a corpus into the collection "scifact" once the stack is up
(../shared/data/beir/scifact when present, else the project's small bundled sample).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stack_dev.procs import (ROOT, Interrupted, ServiceExited, ServiceProcess, parent_death_signal,
                             stop_all, stop_process)

SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact"
BUNDLED_SAMPLE = ROOT / "scripts" / "sample_corpus.jsonl"
# A signal this soon after the first is the same request, not "kill now": make forwards the SIGTERM it
# gets to its child, so one `kill -TERM -<make's group>` (what `timeout` or a supervisor sends) reaches
# this script twice within milliseconds.
REPEAT_WINDOW_S = 0.25
STOP_TIMEOUT_S = 20.0


def log(msg: str) -> None:
    try:
        print(f"[run] {msg}", flush=True)
    except (OSError, ValueError):    # stdout gone (a closed pipe): never a reason to skip a stop
        pass


class Shutdown:
    """SIGINT/SIGTERM handling that never raises, so no stop is ever cut short half way.

    The first signal only records the request: the code that waits (for a model export, for the
    services to be ready, for a service to die) polls :attr:`requested` and returns, and ``main``
    stops every service (SIGTERM to its process group, SIGKILL after ``STOP_TIMEOUT_S``). A second
    signal, :data:`REPEAT_WINDOW_S` or more after the first, SIGKILLs every service's process group at
    once, right in the handler. The handler writes with ``os.write`` (a ``print`` in a signal handler
    can collide with the main code's own print)."""

    def __init__(self, services: list[ServiceProcess]) -> None:
        self.services = services
        self.first_at: float | None = None
        self.forced = False

    @property
    def requested(self) -> bool:
        return self.first_at is not None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def handle(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
            self._say(f"{name}: stopping the stack (again to kill it at once)")
        elif not self.forced and now - self.first_at >= REPEAT_WINDOW_S:
            self.forced = True
            self._say(f"{name} again: killing the services")
            for svc in list(self.services):
                svc.send(signal.SIGKILL)

    @staticmethod
    def _say(msg: str) -> None:
        try:
            os.write(sys.stdout.fileno(), f"[run] {msg}\n".encode())
        except (OSError, ValueError):
            pass


def run_helper(cmd: list[str], shutdown: Shutdown) -> None:
    """Run a helper command (model export, ingestion) to its end; stop it when a stop is requested
    (raises :class:`Interrupted`). A failure raises CalledProcessError."""
    proc = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=parent_death_signal())
    try:
        while proc.poll() is None:
            if shutdown.requested:
                raise Interrupted(f"stopped {Path(cmd[1]).name}")
            time.sleep(0.1)
    finally:
        stop_process(proc, timeout=10)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def ensure_model(models_dir: Path, name: str, source: str, shutdown: Shutdown) -> None:
    manifest = models_dir / name / "manifest.json"
    if manifest.exists():
        log(f"model {name}: cached in {manifest.parent}")
        return
    log(f"model {name}: exporting {source} to ONNX and quantizing (first run only, ~1 min)")
    run_helper([sys.executable, str(ROOT / "scripts" / "optimize_model.py"), "--source", source,
                "--name", name, "--models-dir", str(models_dir)], shutdown)


def service(name: str, factory: str, port: int, env: dict[str, str], logs: Path) -> ServiceProcess:
    """A service in its own session/process group that gets SIGTERM if this script dies."""
    return ServiceProcess(factory, env=env, port=port, log_path=logs / f"{name}.log", ready_path="/readyz",
                          host=env.get("BIND", "127.0.0.1"), name=name, new_session=True, die_with_parent=True)


def run(args: argparse.Namespace, env: dict[str, str], logs: Path, services: list[ServiceProcess],
        shutdown: Shutdown) -> int:
    """Start the stack and wait until a stop is requested (returns 0) or a service dies (returns 1)."""
    if not args.no_llm:
        ensure_model(args.models_dir, args.model, args.model_source, shutdown)
    logs.mkdir(parents=True, exist_ok=True)
    search = service("search-service", "search_service.main:create_app", args.search_port, env, logs)
    llm = service("llm-service", "llm_service.main:create_app", args.llm_port, env, logs)
    for svc in [search] + ([] if args.no_llm else [llm]):
        if shutdown.requested:
            return 0
        services.append(svc)         # before it starts: a forced stop must find it
        log(f"starting {svc.name} on :{svc.port} (log: {svc.log_path})")
        svc.spawn()
    for svc in services:
        svc.wait_ready(180, stop=lambda: shutdown.requested)
        log(f"{svc.name} ready at {svc.url}")
    if args.sample:
        load_sample(search.url, shutdown)
    print_banner(search.url, llm.url, args.model, args.no_llm)
    while not shutdown.requested:
        dead = [svc for svc in services if not svc.running]
        if dead:
            log(", ".join(f"{svc.name} exited with {svc.proc.returncode}" for svc in dead)
                + f"; stopping the stack (see {logs})")
            return 1
        time.sleep(0.2)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search-port", type=int, default=int(os.environ.get("SEARCH_PORT", 8001)))
    ap.add_argument("--llm-port", type=int, default=int(os.environ.get("LLM_PORT", 8002)))
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default=os.environ.get("LLM_DEFAULT_MODEL", "smollm2-135m-instruct"))
    ap.add_argument("--model-source", default="smollm2", help="optimize_model.py --source for the default model")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data" / "search")
    ap.add_argument("--log-dir", type=Path, default=ROOT / ".run" / "logs", help="the services' log files")
    ap.add_argument("--sample", action="store_true", help="load the SciFact sample into collection 'scifact'")
    ap.add_argument("--no-llm", action="store_true", help="run search-service only")
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("SEARCH_DATA_DIR", str(args.data_dir))
    env.setdefault("SEARCH_MODELS_DIR", str(args.models_dir))
    env.setdefault("SEARCH_LLM_URL", f"http://127.0.0.1:{args.llm_port}")
    env.setdefault("LLM_MODELS_DIR", str(args.models_dir))
    env.setdefault("LLM_DEFAULT_MODEL", args.model)

    services: list[ServiceProcess] = []
    shutdown = Shutdown(services)
    shutdown.install()               # before anything starts
    code = 1
    try:
        code = run(args, env, args.log_dir, services, shutdown)
    except Interrupted:
        code = 0
    except (ServiceExited, TimeoutError, subprocess.CalledProcessError) as exc:
        log(f"{exc}; stopping the stack")
    finally:
        codes = stop_all(services, timeout=STOP_TIMEOUT_S, on_stop=lambda svc: log(f"stopping {svc.name}"))
    if shutdown.requested and code == 0:
        # clean: every service exited on its own after the SIGTERM (uvicorn re-raises it: -15), none killed
        unclean = {n: c for n, c in codes.items() if c not in (None, 0, -signal.SIGTERM)}
        if shutdown.forced or unclean:
            log(f"stopped by force: {unclean or 'every service killed'}")
            code = 1
        else:
            log("stopped")
    return code


def load_sample(search_url: str, shutdown: Shutdown) -> None:
    if (SCIFACT / "corpus.jsonl").exists():
        corpus, what = SCIFACT / "corpus.jsonl", "SciFact (5,183 abstracts; a couple of minutes on 2 cores)"
    else:
        corpus, what = BUNDLED_SAMPLE, "the bundled sample"
    log(f"loading {what} into collection 'scifact'")
    run_helper([sys.executable, str(ROOT / "scripts" / "ingest.py"), "--url", search_url,
                "--collection", "scifact", "--corpus", str(corpus)], shutdown)


def print_banner(search_url: str, llm_url: str, model: str, no_llm: bool) -> None:
    lines = [
        "",
        "The stack is up.",
        f"  search-service  {search_url}   (docs: {search_url}/docs, metrics: {search_url}/metrics)",
    ]
    if not no_llm:
        lines.append(f"  llm-service     {llm_url}   (docs: {llm_url}/docs, model: {model})")
    lines += [
        "",
        "Try it:",
        f"  curl -s {search_url}/search/hybrid -H 'content-type: application/json' \\",
        "       -d '{\"collection\": \"scifact\", \"query\": \"vitamin D and bone density\", \"limit\": 5}'",
    ]
    if not no_llm:
        lines += [
            f"  curl -s {search_url}/rag -H 'content-type: application/json' \\",
            "       -d '{\"collection\": \"scifact\", \"query\": \"Does vitamin D prevent fractures?\"}'",
            f"  curl -sN {llm_url}/v1/chat/completions -H 'content-type: application/json' \\",
            f"       -d '{{\"model\": \"{model}\", \"stream\": true, \"messages\": [{{\"role\": \"user\", \"content\": \"Say hello\"}}]}}'",
        ]
    lines += ["", "(No collection yet? `make sample` in another shell loads SciFact.)  Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
