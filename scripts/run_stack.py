#!/usr/bin/env python3
"""Run the whole stack on this machine, no Docker: the README's `make run`.

1. Redis: `make run` has already made sure one answers (scripts/ensure_redis.sh).
2. The default LLM is exported and quantized into models/ on the first run (cached after).
3. search-service on :8001 (embedded Qdrant engine, data in ./data/search) and llm-service on :8002
   start as child processes; we wait until both are ready, print where they are and how to try them.
4. Ctrl-C (or SIGTERM) stops both cleanly.

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

import httpx

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact"
BUNDLED_SAMPLE = ROOT / "scripts" / "sample_corpus.jsonl"


def log(msg: str) -> None:
    print(f"[run] {msg}", flush=True)


def ensure_model(models_dir: Path, name: str, source: str) -> None:
    manifest = models_dir / name / "manifest.json"
    if manifest.exists():
        log(f"model {name}: cached in {manifest.parent}")
        return
    log(f"model {name}: exporting {source} to ONNX and quantizing (first run only, ~1 min)")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "optimize_model.py"), "--source", source,
                    "--name", name, "--models-dir", str(models_dir)], check=True, cwd=ROOT)


def start(name: str, factory: str, port: int, env: dict[str, str], logs: Path) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    out = open(logs / f"{name}.log", "ab")
    log(f"starting {name} on :{port} (log: {logs / (name + '.log')})")
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", env.get("BIND", "127.0.0.1"),
         "--port", str(port), "--timeout-graceful-shutdown", "10"],
        env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def wait_ready(name: str, url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with code {proc.returncode}; see its log")
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            if r.status_code == 200:
                log(f"{name} ready at {url}")
                return
            last = r.text
        except httpx.HTTPError as e:
            last = str(e)
        time.sleep(0.5)
    raise SystemExit(f"{name} not ready after {timeout:.0f}s: {last}")


def stop_all(procs: dict[str, subprocess.Popen]) -> None:
    for name, p in procs.items():
        if p.poll() is None:
            log(f"stopping {name}")
            p.send_signal(signal.SIGTERM)
    for name, p in procs.items():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search-port", type=int, default=int(os.environ.get("SEARCH_PORT", 8001)))
    ap.add_argument("--llm-port", type=int, default=int(os.environ.get("LLM_PORT", 8002)))
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default=os.environ.get("LLM_DEFAULT_MODEL", "smollm2-135m-instruct"))
    ap.add_argument("--model-source", default="smollm2", help="optimize_model.py --source for the default model")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data" / "search")
    ap.add_argument("--sample", action="store_true", help="load the SciFact sample into collection 'scifact'")
    ap.add_argument("--no-llm", action="store_true", help="run search-service only")
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("SEARCH_DATA_DIR", str(args.data_dir))
    env.setdefault("SEARCH_MODELS_DIR", str(args.models_dir))
    env.setdefault("SEARCH_LLM_URL", f"http://127.0.0.1:{args.llm_port}")
    env.setdefault("LLM_MODELS_DIR", str(args.models_dir))
    env.setdefault("LLM_DEFAULT_MODEL", args.model)

    logs = ROOT / ".run" / "logs"
    procs: dict[str, subprocess.Popen] = {}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not args.no_llm:
            ensure_model(args.models_dir, args.model, args.model_source)
        search_url = f"http://127.0.0.1:{args.search_port}"
        llm_url = f"http://127.0.0.1:{args.llm_port}"
        procs["search-service"] = start("search-service", "search_service.main:create_app", args.search_port, env, logs)
        if not args.no_llm:
            procs["llm-service"] = start("llm-service", "llm_service.main:create_app", args.llm_port, env, logs)
        wait_ready("search-service", search_url, procs["search-service"], 180)
        if not args.no_llm:
            wait_ready("llm-service", llm_url, procs["llm-service"], 180)
        if args.sample:
            load_sample(search_url)
        print_banner(search_url, llm_url, args.model, args.no_llm)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in procs.items() if p.poll() is not None]
        log(f"{', '.join(dead)} exited; stopping the stack (see {logs})")
        return 1
    except KeyboardInterrupt:
        log("Ctrl-C: shutting down")
        return 0
    finally:
        stop_all(procs)


def load_sample(search_url: str) -> None:
    if (SCIFACT / "corpus.jsonl").exists():
        corpus, what = SCIFACT / "corpus.jsonl", "SciFact (5,183 abstracts; a couple of minutes on 2 cores)"
    else:
        corpus, what = BUNDLED_SAMPLE, "the bundled sample"
    log(f"loading {what} into collection 'scifact'")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "ingest.py"), "--url", search_url,
                    "--collection", "scifact", "--corpus", str(corpus)], check=True, cwd=ROOT)


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
