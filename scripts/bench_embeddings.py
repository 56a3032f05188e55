#!/usr/bin/env python
"""Compare the MiniLM embedding variants on SciFact text, in one run, one intra-op thread each.

    python scripts/bench_embeddings.py                       # 160 abstracts, 200 queries
    python scripts/bench_embeddings.py --docs 400 --variants fused,dynamic

For each variant: documents/s (abstracts, batches of 8 sorted by length, up to 256 tokens), ms per query
(one query per call, as a lone search does), and the cosine of its vectors to the fp32 model's (the
fused graph before quantization, which a test checks against transformers' BertModel). The fp32 row is
the baseline the ratios are taken against. Prints a Markdown table and the command.

Then, for the default variant, what a micro-batch of B concurrent queries costs per query (B random
SciFact queries, medians over ``--trials`` trials, the three ways interleaved): padded to the longest
in one onnxruntime call; in calls of similar length (``embeddings.length_groups``, what the service
does); and one call per query. ``--batches ""`` skips it.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from search_service.embeddings import DEFAULT_VARIANT, VARIANTS, Embedder, tokenizer_dir
from stack_dev.beir import iter_jsonl
from stack_dev.procs import ROOT


def load_texts(dataset: Path, n_docs: int, n_queries: int) -> tuple[list[str], list[str]]:
    docs = [f"{d.get('title') or ''}\n{d['text']}"
            for d in itertools.islice(iter_jsonl(dataset / "corpus.jsonl"), n_docs)]
    queries = [q["text"] for q in itertools.islice(iter_jsonl(dataset / "queries.jsonl"), n_queries)]
    return docs, queries


def measure(emb: Embedder, docs: list[str], queries: list[str]) -> dict:
    emb.encode(docs[:8])
    for q in queries[:10]:
        emb.encode([q])
    t = time.perf_counter()
    dv = emb.encode(docs, batch_size=8)
    docs_s = len(docs) / (time.perf_counter() - t)
    qv = []
    t = time.perf_counter()
    for q in queries:
        qv.append(emb.encode([q])[0])
    q_ms = (time.perf_counter() - t) / len(queries) * 1000
    return {"docs_s": docs_s, "q_ms": q_ms, "dv": dv, "qv": np.stack(qv)}


def query_batches(emb: Embedder, queries: list[str], sizes: list[int], trials: int) -> dict[int, dict[str, float]]:
    """ms per query of a B-query micro-batch run three ways, interleaved in random order per trial."""
    rng = np.random.default_rng(0)
    ways = {
        "padded": lambda qs: emb._run([e.ids for e in emb._tok.encode_batch(qs)]),
        "grouped": lambda qs: emb.encode(qs, batch_size=len(qs)),
        "single": lambda qs: [emb.encode([q]) for q in qs],
    }
    for fn in ways.values():                  # warm-up
        fn(queries[:4])
    out: dict[int, dict[str, float]] = {}
    for size in sizes:
        times: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(trials):
            batch = [queries[i] for i in rng.choice(len(queries), size=size, replace=False)]
            for w in rng.permutation(list(ways)):
                t0 = time.perf_counter()
                ways[w](batch)
                times[w].append((time.perf_counter() - t0) / size * 1000)
        out[size] = {w: float(np.median(v)) for w, v in times.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--docs", type=int, default=160)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--variants", default="fused,dynamic,prebuilt")
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--batches", default="2,4,8,16", help="micro-batch sizes for the padded/grouped/single table")
    ap.add_argument("--trials", type=int, default=60)
    args = ap.parse_args(argv)
    docs, queries = load_texts(Path(args.dataset), args.docs, args.queries)

    import onnx

    from search_service.encoder_graph import build_bert_graph

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        onnx.save(build_bert_graph(tokenizer_dir()), str(fp32))
        ref = Embedder(fp32, tokenizer_dir() / "tokenizer.json", model_id="fp32")
        base = measure(ref, docs, queries)
        ref.close()
        rows.append(("fp32 (fused graph, not quantized)", base, 1.0, 1.0, 1.0, 1.0))
        for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
            if name not in VARIANTS:
                raise SystemExit(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
            emb = Embedder.load(models_dir=args.models_dir, variant=name)
            r = measure(emb, docs, queries)
            emb.close()
            cd = (r["dv"] * base["dv"]).sum(axis=1)
            cq = (r["qv"] * base["qv"]).sum(axis=1)
            rows.append((name, r, float(cd.mean()), float(cd.min()), float(cq.mean()), float(cq.min())))
    print(f"{len(docs)} SciFact abstracts (batches of 8), {len(queries)} queries one at a time; 1 intra-op thread")
    print("| variant | docs/s | vs fp32 | ms/query | vs fp32 | cosine to fp32, docs mean/min | queries mean/min |")
    print("|---|---|---|---|---|---|---|")
    for name, r, dm, dmin, qm, qmin in rows:
        print(f"| {name} | {r['docs_s']:.1f} | {r['docs_s'] / base['docs_s']:.2f}× | {r['q_ms']:.2f} | "
              f"{base['q_ms'] / r['q_ms']:.2f}× | {dm:.4f} / {dmin:.4f} | {qm:.4f} / {qmin:.4f} |")
    sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    if sizes:
        emb = Embedder.load(models_dir=args.models_dir, variant=DEFAULT_VARIANT)
        print(f"\nmicro-batch of B queries, {DEFAULT_VARIANT}: ms per query (median of {args.trials} interleaved trials)")
        print("| B | padded, one call | length groups (the service) | one call each | groups vs padded |")
        print("|---|---|---|---|---|")
        for size, r in query_batches(emb, queries, sizes, args.trials).items():
            print(f"| {size} | {r['padded']:.2f} | {r['grouped']:.2f} | {r['single']:.2f} | "
                  f"{r['padded'] / r['grouped']:.2f}× |")
        emb.close()
    print("command: python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    main()
