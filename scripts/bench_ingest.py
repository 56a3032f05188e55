#!/usr/bin/env python
"""Where ingestion time goes, and what the ingestion levers buy and cost, on real SciFact abstracts.

    .venv/bin/python scripts/bench_ingest.py                         # 1,000 abstracts, every configuration
    .venv/bin/python scripts/bench_ingest.py --docs 0 --configs api-2,tok128   # the full corpus (5,183)

In process, the service's own objects: ``Ingestor`` over a ``CollectionCatalog`` on the embedded store
(``make_store``, a temporary directory per configuration), the embedder built by the service's
``main._build_embedders`` (its MiniLM) and the service's analyzer and BM25 encoder. Documents go in as upsert calls of
``request`` documents with ``in_flight`` calls at a time (what ``scripts/ingest.py`` sends through the API:
64 a request, 2 in flight; HTTP and JSON parsing are not in these figures).

The sample: every document relevant to a SciFact test query plus random others (seed 0) up to ``--docs``,
shuffled, so every test query can be scored against it. Per configuration (the levers):

* throughput: docs/s end to end (wall), process CPU per document (children included);
* the time split, per document, summed over threads (with 2 calls in flight the stages overlap): the model
  (onnxruntime ``Embedder._run``), the rest of ``Embedder.encode`` (tokenizer, truncation, length sorting),
  BM25 (analyzer + weights: ``BM25Encoder.doc_stats`` / ``encode_doc``), the store's upsert, the store's
  other calls (metadata, chunk-0 lookups), and with one call in flight the rest of the wall time ("other":
  payload and point building, event loop, thread hops);
* the quality cost: cosine of each document vector to the baseline configuration's (``--baseline``), and
  nDCG@10 / Recall@100 of ``vector`` and ``hybrid`` search (the service's ``SearchService``, its default
  fusion) for the SciFact test queries over *the sample* — a subset corpus, so the figures are higher than
  the full corpus's; compare them across rows, not with the README's full-corpus figures.

``procs2`` embeds in two worker processes (one intra-op thread each; the parent tokenizes for BM25 and
writes the store): what a second process buys when the store can take writes from several processes,
i.e. with a Qdrant server (the embedded store is one process per data directory).
``SEARCH_EMBED_WORKERS`` is not an ingestion lever: it bounds concurrent *query* embedding calls only;
ingestion runs ``Embedder.encode`` in a worker thread per upsert call, so calls in flight are its parallelism.

Prints the CPU, two tables, a 50k-document extrapolation (docs/s measured on the sample; store and index
costs at 50k from ``scripts/bench_scale.py``), the command, and a last JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil

from search_service.collections import CollectionCatalog
from search_service.core.metrics import Metrics
from search_service.core.settings import Settings
from search_service.ingest import Document, Ingestor, chunk_words
from search_service.embeddings import Embedders
from search_service.main import _build_embedders, index_policy
from search_service.search import KeywordRetriever, SearchQuery, SearchService, VectorRetriever
from search_service.store import make_store
from search_service.text import Analyzer, BM25Encoder
from stack_dev.beir import ndcg_at, read_qrels, read_queries, recall_at, relevant
from stack_dev.ingest import read_documents
from stack_dev.machine import cpu_name
from stack_dev.procs import ROOT

COLLECTION = "bench"
SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact"


@dataclass(frozen=True)
class Config:
    name: str
    tokens: int = 256          # SEARCH_EMBED_DOC_TOKENS
    embed_batch: int = 8       # SEARCH_EMBED_BATCH_SIZE (most texts in one onnxruntime call)
    threads: int = 1           # SEARCH_EMBED_THREADS (intra-op)
    in_flight: int = 2         # upsert calls at a time
    request: int = 64          # documents per upsert call
    procs: int = 0             # embedding worker processes (0: in the service process)


CONFIGS = [
    Config("service-1", in_flight=1),                  # the service's defaults, one call at a time
    Config("api-2"),                                   # + scripts/ingest.py's 2 calls in flight (baseline)
    Config("batch1", embed_batch=1),
    Config("batch32", embed_batch=32),
    Config("req256", request=256),
    Config("threads2", threads=2, in_flight=1),
    Config("procs2", procs=2),
    Config("tok192", tokens=192),
    Config("tok128", tokens=128),
    Config("tok128-procs2", tokens=128, procs=2),
]


# --------------------------------------------------------------------------- stage timers
class Stages:
    """Seconds per stage, summed over threads; the vectors ``encode`` returned, by text, while ``vectors`` is
    a dict."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)
        self.lock = threading.Lock()
        self.vectors: dict[str, np.ndarray] | None = None

    def keep(self, texts, vecs) -> None:
        if self.vectors is not None:
            self.vectors.update(zip(texts, vecs))

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.s[stage] += seconds


STAGES = Stages()


class TimedBM25Encoder(BM25Encoder):
    def doc_stats(self, text):
        t0 = time.perf_counter()
        try:
            return super().doc_stats(text)
        finally:
            STAGES.add("bm25", time.perf_counter() - t0)

    def encode_doc(self, tfs, doc_len, avgdl):
        t0 = time.perf_counter()
        try:
            return super().encode_doc(tfs, doc_len, avgdl)
        finally:
            STAGES.add("bm25", time.perf_counter() - t0)


def _embedder(s: Settings):
    """The service's MiniLM embedder, built as main._build_embedders builds it from these settings."""
    return _build_embedders(s.model_copy(update={"embedding_models": "minilm"})).get("minilm")


def time_embedder(emb, stages_of=lambda: STAGES):
    """Time ``encode`` (all of it) and the backend's ``run`` (the model) on this embedder; keep the vectors."""
    run, encode = emb.backend.run, emb.encode

    def timed_run(token_ids):
        t0 = time.perf_counter()
        try:
            return run(token_ids)
        finally:
            stages_of().add("model", time.perf_counter() - t0)

    def timed_encode(texts, *args, **kwargs):
        t0 = time.perf_counter()
        vecs = encode(texts, *args, **kwargs)
        stages_of().add("encode", time.perf_counter() - t0)
        stages_of().keep(texts, vecs)
        return vecs

    emb.backend.run, emb.encode = timed_run, timed_encode
    return emb


def time_store(store) -> None:
    for name in ("upsert", "retrieve", "get_collection", "update_meta", "delete_by_doc_ids"):
        fn = getattr(store, name)
        stage = "store upsert" if name == "upsert" else "store other"

        async def timed(*args, _fn=fn, _stage=stage, **kwargs):
            t0 = time.perf_counter()
            try:
                return await _fn(*args, **kwargs)
            finally:
                STAGES.add(_stage, time.perf_counter() - t0)

        setattr(store, name, timed)


# --------------------------------------------------------------------------- embedding in processes
_WORKER = None


def _worker_init(models_dir: str) -> None:
    global _WORKER
    _WORKER = time_embedder(_embedder(Settings(models_dir=Path(models_dir), embed_threads=1, cache_enabled=False)),
                            lambda: _WORKER_STAGES)


_WORKER_STAGES = Stages()


def _worker_encode(texts, batch_size, max_tokens, pause=0.0):
    _WORKER_STAGES.s.clear()
    vecs = _WORKER.encode(texts, batch_size=batch_size, max_tokens=max_tokens)
    time.sleep(pause)
    return vecs, dict(_WORKER_STAGES.s)


class ProcessEmbedder:
    """``Embedder.encode`` in worker processes: each call goes whole to one free worker."""

    def __init__(self, emb, procs: int, models_dir: str) -> None:
        self.emb = emb
        self.pool = ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init, initargs=(models_dir,))
        # load every worker (the pause spreads the warm-up calls over them), outside the clock
        list(self.pool.map(_worker_encode, [["warm up"]] * procs, [8] * procs, [None] * procs, [1.0] * procs))

    def __getattr__(self, name):
        return getattr(self.emb, name)

    def encode(self, texts, batch_size=32, max_tokens=None, on_group=None):
        vecs, stages = self.pool.submit(_worker_encode, list(texts), batch_size, max_tokens).result()
        for k, v in stages.items():
            STAGES.add(k, v)
        STAGES.keep(texts, vecs)
        return vecs

    def children(self) -> list[psutil.Process]:
        return [psutil.Process(p) for p in self.pool._processes]

    def close(self) -> None:
        self.pool.shutdown()


# --------------------------------------------------------------------------- one configuration
def cpu_seconds(children: list[psutil.Process]) -> float:
    t = psutil.Process().cpu_times()
    total = t.user + t.system
    for c in children:
        ct = c.cpu_times()
        total += ct.user + ct.system
    return total


async def run_config(cfg: Config, docs: list[Document], embedders: dict, args, queries, qrels) -> dict:
    s = Settings(data_dir=Path(args.tmp) / cfg.name, models_dir=Path(args.models_dir), cache_enabled=False,
                 embed_doc_tokens=cfg.tokens, embed_batch_size=cfg.embed_batch, embed_threads=cfg.threads)
    if cfg.threads not in embedders:
        embedders[cfg.threads] = time_embedder(_embedder(s))
    emb = embedders[cfg.threads]
    ingest_emb = ProcessEmbedder(emb, cfg.procs, args.models_dir) if cfg.procs else emb
    store = make_store(qdrant_url=None, data_dir=s.data_dir, index=index_policy(s))
    try:
        metrics = Metrics()
        # ingestion embeds with ingest_emb (in-process or worker processes), search with emb
        catalog = CollectionCatalog(store, Embedders({"minilm": ingest_emb}, "minilm"), Analyzer(), TimedBM25Encoder, s)
        await catalog.create(COLLECTION)
        ingestor = Ingestor(catalog, s, metrics)
        # warm-up outside the clock: the arena for this batch shape, the analyzer
        ingest_emb.encode([f"{d.title}\n{d.text}" for d in docs[:cfg.request]], batch_size=cfg.embed_batch,
                          max_tokens=cfg.tokens)
        time_store(store)
        STAGES.s.clear()
        STAGES.vectors = {}
        children = ingest_emb.children() if cfg.procs else []
        sem = asyncio.Semaphore(cfg.in_flight)

        async def one(batch):
            async with sem:
                await ingestor.upsert(COLLECTION, batch)

        c0, t0 = cpu_seconds(children), time.perf_counter()
        await asyncio.gather(*(one(docs[i:i + cfg.request]) for i in range(0, len(docs), cfg.request)))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(children) - c0
        st, kept, STAGES.vectors = dict(STAGES.s), STAGES.vectors, None
        n = len(docs)
        split = {"model": st.get("model", 0.0), "tokenize": st.get("encode", 0.0) - st.get("model", 0.0),
                 "bm25": st.get("bm25", 0.0), "store upsert": st.get("store upsert", 0.0),
                 "store other": st.get("store other", 0.0)}
        if cfg.in_flight == 1:
            split["other"] = wall - sum(split.values())
        out = {"config": asdict(cfg), "docs": n, "seconds": round(wall, 2), "docs_s": round(n / wall, 2),
               "wall_ms_per_doc": round(1000 * wall / n, 2), "cpu_ms_per_doc": round(1000 * cpu / n, 2),
               "split_ms_per_doc": {k: round(1000 * v / n, 3) for k, v in split.items()}}
        if cfg.procs:
            ingest_emb.close()
        # quality: each document's (first chunk's) vector, for the cosine to the baseline's; search over the sample
        out["vectors"] = np.stack([kept[indexed_text(d, s)] for d in docs])
        if queries:
            searcher = SearchService(catalog, None, s, metrics,
                                     [VectorRetriever(store, metrics), KeywordRetriever(catalog, metrics)])
            out["quality"] = await quality(searcher, s, queries, qrels)
        return out
    finally:
        await store.close()


def indexed_text(d: Document, s: Settings) -> str:
    """The text the Ingestor embeds for the document's first chunk."""
    chunk = chunk_words(d.text, s.chunk_words, s.chunk_overlap)[0] if d.text.strip() else ""
    return f"{d.title}\n{chunk}" if d.title else chunk


async def quality(searcher: SearchService, s: Settings, queries: dict[str, str],
                  qrels: dict[str, dict[str, int]]) -> dict:
    out = {}
    for mode in ("vector", "hybrid"):
        nd, rc = [], []
        for qid, rels in qrels.items():
            q = SearchQuery(query=queries[qid], collection=COLLECTION, mode=mode, limit=100, fusion=s.fusion,
                            alpha=s.alpha, rrf_k=s.rrf_k)
            ranked = [r["id"] for r in (await searcher.search(q))["results"]]
            nd.append(ndcg_at(ranked, rels, 10))
            rc.append(recall_at(ranked, rels, 100))
        out[mode] = {"ndcg@10": round(float(np.mean(nd)), 4), "recall@100": round(float(np.mean(rc)), 4)}
    return out


# --------------------------------------------------------------------------- sample
def sample(dataset: Path, n: int, qrels: dict[str, dict[str, int]]) -> list[Document]:
    all_docs = [Document(id=d["id"], text=d["text"], title=d["title"]) for d in read_documents(dataset)]
    if not n or n >= len(all_docs):
        return all_docs
    need = set().union(*(relevant(r) for r in qrels.values()))
    rng = random.Random(0)
    keep = [d for d in all_docs if d.id in need]
    rest = [d for d in all_docs if d.id not in need]
    keep += rng.sample(rest, max(0, n - len(keep)))
    rng.shuffle(keep)
    return keep


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(SCIFACT))
    ap.add_argument("--qrels", default=None, help="default: DATASET/qrels/test.tsv")
    ap.add_argument("--docs", type=int, default=1000, help="sample size (0: the whole corpus)")
    ap.add_argument("--configs", default=",".join(c.name for c in CONFIGS))
    ap.add_argument("--baseline", default="api-2", help="the row the ratios and cosines are taken against")
    ap.add_argument("--no-quality", action="store_true", help="skip the search quality (throughput only)")
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    args = ap.parse_args(argv)

    dataset = Path(args.dataset)
    qrels = read_qrels(args.qrels or dataset / "qrels" / "test.tsv")
    qrels = {q: r for q, r in qrels.items() if relevant(r)}
    queries = read_queries(dataset)
    docs = sample(dataset, args.docs, qrels)
    ids = {d.id for d in docs}
    qrels = {q: r for q, r in qrels.items() if q in queries and relevant(r) & ids}
    by_name = {c.name: c for c in CONFIGS}
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; choose from {list(by_name)}")
    if args.baseline in by_name and args.baseline not in names:
        names.insert(0, args.baseline)

    probe = _embedder(Settings(models_dir=Path(args.models_dir), cache_enabled=False))
    lengths = np.array([len(ids_) for ids_ in probe._ids([f"{d.title}\n{d.text}" for d in docs], "passage")])
    probe.close()
    cpu = cpu_name()
    print(f"CPU: {cpu}; {psutil.cpu_count()} cores")
    print(f"sample: {len(docs)} SciFact abstracts ({'all' if len(docs) >= 5183 else 'every test-query relevant one + random'}), "
          f"tokens (title + text, after the model's 256 cap) mean {lengths.mean():.0f}, p50 {np.median(lengths):.0f}; "
          f"{(lengths >= 256).mean():.0%} reach 256, {(lengths > 128).mean():.0%} exceed 128; "
          f"quality: {len(qrels)} test queries" + (" (skipped)" if args.no_quality else ""), flush=True)

    results: dict[str, dict] = {}
    embedders: dict[int, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ingest-") as tmp:
        args.tmp = tmp
        for name in names:
            r = asyncio.run(run_config(by_name[name], docs, embedders, args,
                                       None if args.no_quality else queries, qrels))
            results[name] = r
            print(f"  {name}: {r['docs_s']:.1f} docs/s, CPU {r['cpu_ms_per_doc']:.1f} ms/doc"
                  + (f", hybrid nDCG@10 {r['quality']['hybrid']['ndcg@10']}" if 'quality' in r else ""), flush=True)
    for e in embedders.values():
        e.close()
    report(results, args, cpu, len(docs), argv)


def report(results: dict[str, dict], args, cpu: str, n: int, argv) -> None:
    base = results.get(args.baseline) or next(iter(results.values()))
    bv = base.get("vectors")
    print(f"\n{n} SciFact abstracts per configuration, one run each; ratios and cosines against `{args.baseline}`")
    print("| config | doc tokens | embed batch | intra-op threads | calls in flight × docs | embed procs | docs/s | vs base "
          "| CPU ms/doc | 50k docs at this rate |")
    print("|---" * 10 + "|")
    for name, r in results.items():
        c = r["config"]
        print(f"| {name} | {c['tokens']} | {c['embed_batch']} | {c['threads']} | {c['in_flight']} × {c['request']} | "
              f"{c['procs'] or '–'} | {r['docs_s']:.1f} | {r['docs_s'] / base['docs_s']:.2f}× | "
              f"{r['cpu_ms_per_doc']:.1f} | {50000 / r['docs_s'] / 60:.0f} min |")
    print("\nTime split, ms per document summed over threads (\"other\": wall minus the stages, one call in flight "
          "only); quality over the sample (subset corpus)")
    print("| config | wall ms/doc | model | tokenize etc. | BM25 | store upsert | store other | other "
          "| cosine to base mean / min | vector nDCG@10 / R@100 | hybrid nDCG@10 / R@100 |")
    print("|---" * 11 + "|")
    for name, r in results.items():
        sp = r["split_ms_per_doc"]
        cos = "–"
        if bv is not None and r.get("vectors") is not None:
            cs = (r["vectors"] * bv).sum(axis=1)
            r["cosine_to_base"] = {"mean": round(float(cs.mean()), 5), "min": round(float(cs.min()), 5)}
            cos = f"{cs.mean():.4f} / {cs.min():.4f}"
        q = r.get("quality")
        qv = (f"{q['vector']['ndcg@10']:.4f} / {q['vector']['recall@100']:.4f} | "
              f"{q['hybrid']['ndcg@10']:.4f} / {q['hybrid']['recall@100']:.4f}") if q else "– | –"
        other = f"{sp['other']:.2f}" if "other" in sp else "–"
        print(f"| {name} | {r['wall_ms_per_doc']:.1f} | {sp['model']:.1f} | {sp['tokenize']:.2f} | {sp['bm25']:.2f} | "
              f"{sp['store upsert']:.2f} | {sp['store other']:.2f} | {other} | {cos} | {qv} |")
    print("\n50k documents: the rate above holds (the model's cost is per document); scripts/bench_scale.py measured the "
          "store's own load at 50k at ~5,300 points/s (~0.2 ms/doc) and the automatic HNSW build (past "
          "SEARCH_INDEX_THRESHOLD 20k, once writes pause) at ~17 s — add that once at the end.")
    print("command: .venv/bin/python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(json.dumps({"docs": n, "cpu": cpu, "baseline": args.baseline, "configs": {
        name: {k: v for k, v in r.items() if k != "vectors"} for name, r in results.items()}}))


if __name__ == "__main__":
    main()
