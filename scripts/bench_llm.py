#!/usr/bin/env python
"""LLM speed, one run, same model/prompts/threads for every engine (a script, not a test).

Single stream (default): PyTorch fp32 `generate` and PyTorch int8 dynamic (torch.ao quantize_dynamic
on nn.Linear, the fairer baseline), every ONNX variant in the manifest (fp32, int8, w8, int4) and, where
onnxruntime-genai installs beside the pinned onnxruntime, its model builder's exports of the same HF
folder run by its own generator; greedy, exactly --new-tokens new tokens (no early stop at eos), KV cache,
1 intra-op thread, ORT spinning off. Every row also answers the quality gate's task suite (same prompts,
chat template, greedy) for its quality column.

HTTP (--http starts the llm-service itself and also measures cold start; --url uses a running one):
aggregate tokens/s and time to first token p50/p99 at 1, 4 and 8 concurrent streaming clients.

  python scripts/bench_llm.py                              # single stream, SmolLM2
  python scripts/bench_llm.py --http                       # + service: cold start, 1/4/8 clients
  python scripts/bench_llm.py --url http://127.0.0.1:8002 --skip-single
Build the model first: python scripts/optimize_model.py --source smollm2 [--precisions fp32,int8,int4]

Targets on 2 cores (issue 4): ONNX int8 >= 3x PyTorch fp32 single-stream; aggregate at 8 clients
>= 3x one client; cold start <= 5 s. Run on a quiet machine: a second busy process halves everything.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from stack_dev.llm_engines import GENAI_VARIANTS, genai_build, genai_engine, onnx_engine, torch_engine  # noqa: E402
from stack_dev.procs import ROOT as REPO, ServiceProcess  # noqa: E402
from stack_dev.stats import DEFINITION, percentile  # noqa: E402

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle works to a ten-year-old.",
    "What are three good habits for staying healthy?",
]


def chat_ids(tok, text: str) -> list[int]:
    s = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return tok(s, add_special_tokens=False).input_ids


def summarize(name: str, runs: list[tuple[float, float, int]]) -> dict:
    """runs: (ttft_s, total_s, new_tokens) per generation."""
    tot = sum(r[1] for r in runs)
    toks = sum(r[2] for r in runs)
    decode = sum(r[1] - r[0] for r in runs) / max(1, sum(r[2] - 1 for r in runs))
    return {"engine": name, "tokens_per_s": toks / tot, "ms_per_token": 1000 * decode,
            "ttft_ms": 1000 * statistics.mean(r[0] for r in runs), "runs": len(runs), "new_tokens": toks}


# ------------------------------------------------------------------------------------ single stream
# Each engine (stack_dev/llm_engines.py) is one greedy function; speed and quality go through it.
def speed(name: str, gen, prompts: list[list[int]], new_tokens: int, repeats: int) -> dict:
    gen(prompts[0], 4, None)   # warm-up
    runs = []
    for _ in range(repeats):
        for p in prompts:
            out, ttft, total = gen(p, new_tokens, None)
            runs.append((ttft, total, len(out)))
    return summarize(name, runs)


def quality(gen, task_prompts: list[list[int]], decode, eos: set[int]) -> tuple[float, list[str]]:
    """Task score on the gate's suite (greedy, the gate's token budget) and the answers."""
    from llm_service.quality.gate import MAX_NEW_TOKENS
    from llm_service.quality.tasks import score

    answers = []
    for ids in task_prompts:
        out, _, _ = gen(ids, MAX_NEW_TOKENS, eos)
        answers.append(decode([t for t in out if t not in eos]))
    return score(answers), answers


# --------------------------------------------------------------------------------------------- HTTP
def _stream_once(client, url: str, endpoint: str, prompt: str, new_tokens: int, model: str | None,
                 precision: str | None) -> tuple[float, float, int]:
    if endpoint == "generate":
        path, body = "/generate", {"prompt": prompt, "max_new_tokens": new_tokens, "temperature": 0.0,
                                   "stream": True}
        if precision:
            body["precision"] = precision
    else:
        path, body = "/v1/completions", {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0.0,
                                         "stream": True, "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    chunks = 0
    with client.stream("POST", url + path, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                raise RuntimeError(f"{path}: {ev['error']}")
            text = ev.get("text") if endpoint == "generate" else \
                "".join(c.get("text", "") for c in ev.get("choices") or [])
            if text:
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
            if ev.get("usage"):
                tokens = int(ev["usage"]["completion_tokens"])
    total = time.perf_counter() - t0
    # Token count from the final usage; a stream without usage counts its text chunks (~1 per token).
    return (ttft if ttft is not None else total, total, tokens or chunks)


def bench_http(url: str, clients: int, per_client: int, endpoint: str, new_tokens: int,
               model: str | None, precision: str | None) -> dict:
    import httpx

    results: list[tuple[float, float, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with httpx.Client(timeout=300) as c:
            for j in range(per_client):
                try:
                    r = _stream_once(c, url, endpoint, PROMPTS[(i + j) % len(PROMPTS)], new_tokens, model, precision)
                    with lock:
                        results.append(r)
                except Exception as e:  # noqa: BLE001 - reported, not raised
                    with lock:
                        errors.append(str(e)[:200])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttfts = [r[0] for r in results]
    return {"clients": clients, "requests": len(results), "errors": len(errors), "first_error": errors[:1],
            "tokens": sum(r[2] for r in results), "wall_s": wall,
            "aggregate_tok_s": sum(r[2] for r in results) / wall,
            "ttft_p50_ms": 1000 * percentile(ttfts, 50), "ttft_p99_ms": 1000 * percentile(ttfts, 99)}


def start_service(models_dir: Path, model: str, log_path: Path) -> tuple[ServiceProcess, str, float]:
    """Start the llm-service and return (process, url, cold start = process start -> first token)."""
    import httpx

    env = {"LLM_MODELS_DIR": str(models_dir), "LLM_DEFAULT_MODEL": model,
           "LLM_INTRA_OP_THREADS": "1", "LLM_LOG_JSON": "false", "LLM_DEVICE": "cpu"}
    log_path.unlink(missing_ok=True)
    svc = ServiceProcess("llm_service.main:create_app", env=env, log_path=log_path, name="llm-service")
    t0 = time.perf_counter()
    svc.spawn()
    # ready = the first streamed token (not /readyz): that is what the cold start measures
    deadline = t0 + 180
    with httpx.Client(timeout=60) as c:
        while time.perf_counter() < deadline:
            if not svc.running:
                raise RuntimeError(f"llm-service exited ({svc.proc.returncode}); log: {log_path}")
            try:
                _stream_once(c, svc.url, "generate", "Hello", 1, None, None)
                return svc, svc.url, time.perf_counter() - t0
            except (httpx.TransportError, RuntimeError):
                time.sleep(0.02)
    svc.kill()
    raise TimeoutError(f"llm-service gave no token within 180 s; log: {log_path}")


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=str(REPO / "models"))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="passes over the prompts per engine")
    ap.add_argument("--engines", default="pytorch-fp32,pytorch-int8,onnx,genai",
                    help="comma list of pytorch-fp32, pytorch-int8, onnx (every variant of the manifest), genai "
                         "(onnxruntime-genai's builder + generator on the same HF folder, where it is installed)")
    ap.add_argument("--no-quality", action="store_true", help="speed only (skip the task suite per engine)")
    ap.add_argument("--skip-single", action="store_true", help="only the HTTP part")
    ap.add_argument("--http", action="store_true", help="start the llm-service, measure cold start and 1/4/8 clients")
    ap.add_argument("--url", default=None, help="benchmark a running llm-service instead of starting one")
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--requests-per-client", type=int, default=3)
    ap.add_argument("--endpoint", choices=["generate", "completions"], default="generate")
    ap.add_argument("--precision", default=None, help="variant the service should use (default: its CPU default)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    from llm_service.export.manifest import load_manifest

    mdir = Path(args.models_dir) / args.model
    try:
        m = load_manifest(mdir)
    except Exception as e:  # noqa: BLE001
        print(f"{e}\nbuild it: python scripts/optimize_model.py --source smollm2", file=sys.stderr)
        return 2
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    load = os.getloadavg()
    from llm_service.quality.cpu import cpu_info

    cpu = cpu_info()
    print(f"model {m.name} ({mdir}); CPU {cpu['model']} ({cpu['kind']}), {os.cpu_count()} cores, "
          f"load avg {load[0]:.2f}; 1 intra-op thread, ORT spinning off, torch threads 1; greedy, "
          f"{args.new_tokens} new tokens, {len(PROMPTS)} prompts x {args.repeats}")
    report: dict = {"model": m.name, "command": cmd, "load_avg_1m": load[0], "cpu": cpu}

    if not args.skip_single:
        from transformers import AutoTokenizer

        from llm_service.quality.tasks import TASKS

        tok = AutoTokenizer.from_pretrained(str(mdir / m.tokenizer_dir))
        prompts = [chat_ids(tok, p) for p in PROMPTS]
        task_prompts = [chat_ids(tok, t.prompt) for t in TASKS]
        eos = set(m.eos_token_ids)
        decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        makers: list[tuple[str, object]] = []
        for e in engines:
            if e in ("pytorch-fp32", "pytorch-int8"):
                makers.append((e if e == "pytorch-fp32" else "pytorch-int8-dynamic",
                               lambda e=e: torch_engine(mdir / "hf", e == "pytorch-int8")))
            elif e == "onnx":
                makers += [(f"onnx-{n}", lambda v=v: onnx_engine(mdir / v.path)) for n, v in m.variants.items()]
            elif e == "genai":
                try:
                    importlib.import_module("onnxruntime_genai")
                except ImportError:
                    print("  genai: onnxruntime-genai is not installed (pip install -c constraints.txt "
                          "onnxruntime-genai); skipped")
                    continue
                for label, prec, extra in GENAI_VARIANTS:
                    makers.append((f"genai-{label}", lambda label=label, prec=prec, extra=extra: genai_engine(
                        genai_build(mdir / "hf", mdir / "genai" / label, prec, extra))))
        rows, answers = [], {}
        for name, make in makers:
            try:
                gen = make()
            except Exception as exc:  # noqa: BLE001 - a peer that does not build is reported, not fatal
                print(f"  {name:<24} failed: {str(exc)[:300]}")
                continue
            row = speed(name, gen, prompts, args.new_tokens, args.repeats)
            if not args.no_quality:
                row["task_score"], answers[name] = quality(gen, task_prompts, decode, eos)
            rows.append(row)
            del gen
            print(f"  {name:<24} {row['tokens_per_s']:7.1f} tok/s  tasks {row.get('task_score', float('nan')):.2f}",
                  flush=True)
        ref = answers.get("onnx-fp32")
        for r in rows:
            if ref and r["engine"] in answers:
                r["same_answers_as_fp32"] = sum(a == b for a, b in zip(answers[r["engine"]], ref)) / len(ref)
        base = next((r["tokens_per_s"] for r in rows if r["engine"] == "pytorch-fp32"), None)
        gate = (m.gate or {}).get("variants", {})
        print(f"\n{'engine':<24}{'tok/s':>8}{'ms/token':>10}{'TTFT ms':>9}{'vs torch fp32':>15}{'tasks':>7}"
              f"{'same as fp32':>14}{'gate top1':>11}{'gate':>6}")
        for r in rows:
            g = gate.get(r["engine"].removeprefix("onnx-")) if r["engine"].startswith("onnx-") else None
            ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
            tasks = f"{r['task_score']:.2f}" if "task_score" in r else "-"
            same = f"{r['same_answers_as_fp32']:.2f}" if "same_answers_as_fp32" in r else "-"
            top1 = f"{g['agreement']['top1']:.3f}" if g else "-"
            verdict = ("pass" if g["passed"] else "fail") if g else "-"
            print(f"{r['engine']:<24}{r['tokens_per_s']:8.1f}{r['ms_per_token']:10.2f}{r['ttft_ms']:9.1f}"
                  f"{ratio:>15}{tasks:>7}{same:>14}{top1:>11}{verdict:>6}")
        print(f"(tasks: the quality gate's {len(TASKS)}-task suite, greedy through the chat template; same as fp32: "
              "share of those answers identical to ONNX fp32's; gate top1/pass: the manifest's gate record)")
        report["single_stream"] = rows
        served = (m.gate or {}).get("chosen") or m.default_variant.get("cpu")
        if base and any(r["engine"] == f"onnx-{served}" for r in rows):
            r8 = next(r for r in rows if r["engine"] == f"onnx-{served}")
            print(f"target: served CPU variant ({served}) >= 3x PyTorch fp32 -> {r8['tokens_per_s'] / base:.2f}x"
                  + (f" at task score {r8['task_score']:.2f}" if "task_score" in r8 else ""))

    if args.http or args.url:
        proc = None
        try:
            if args.url:
                url = args.url.rstrip("/")
            else:
                log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-llm-{os.getpid()}.log"
                proc, url, cold = start_service(Path(args.models_dir), args.model, log_path)
                report["cold_start_s"] = cold
                print(f"\ncold start (process start -> first streamed token, export cached): {cold:.2f} s "
                      f"(target <= 5 s)")
            levels = [int(c) for c in args.clients.split(",") if c.strip()]
            print(f"\nHTTP {url} /{args.endpoint if args.endpoint == 'generate' else 'v1/completions'} "
                  f"stream, {args.new_tokens} max new tokens, {args.requests_per_client} requests per client; "
                  f"{DEFINITION}")
            print(f"{'clients':>8}{'requests':>10}{'errors':>8}{'agg tok/s':>11}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}")
            rows = []
            for c in levels:
                r = bench_http(url, c, args.requests_per_client, args.endpoint, args.new_tokens, None, args.precision)
                rows.append(r)
                print(f"{c:>8}{r['requests']:>10}{r['errors']:>8}{r['aggregate_tok_s']:>11.1f}"
                      f"{r['ttft_p50_ms']:>13.1f}{r['ttft_p99_ms']:>13.1f}", flush=True)
                if r["errors"]:
                    print(f"   first error: {r['first_error'][0]}")
            report["http"] = rows
            one = next((r for r in rows if r["clients"] == 1), None)
            top = max(rows, key=lambda r: r["clients"])
            if one and top is not one and one["aggregate_tok_s"]:
                print(f"target: aggregate at {top['clients']} clients >= 3x one client -> "
                      f"{top['aggregate_tok_s'] / one['aggregate_tok_s']:.2f}x")
        finally:
            if proc is not None:
                proc.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\ncommand: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
