#!/usr/bin/env python
"""In-process retrieval quality of the search-service's building blocks on a BEIR dataset.

Keyword = the service's Analyzer + BM25Encoder document weights with the engine's IDF
(ln(1 + (N - n + 0.5)/(n + 0.5)), exactly what Qdrant's Modifier.Idf computes; the rank_bm25 oracle
test shows the engine ranks identically), computed with scipy. Vector = the service's Embedder with
an exact dot product. Hybrid = search_service.fusion.fuse over each retriever's top-N, as the
service does. Prints nDCG@10 / Recall@100 (stack_dev.beir's definitions) per run as a markdown table.

The corpus matrix is cached (``--cache``), encoding SciFact takes minutes on one thread.

    .venv/bin/python scripts/dev/eval_fusion.py --dataset ../shared/data/beir/scifact \
        --qrels ../shared/data/beir/scifact/qrels/test.tsv --top-n 100
    # three-way: BM25 + multilingual-e5-small + MiniLM
    .venv/bin/python scripts/dev/eval_fusion.py ... --embedding-model multilingual-e5-small --third-model minilm
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from search_service.embedding_models import DEFAULT_MODEL, MODELS
from search_service.embeddings import Embedder
from search_service.fusion import fuse
from search_service.text import Analyzer, BM25Encoder, term_id
from stack_dev.beir import ndcg_at, read_corpus, read_qrels, read_queries, recall_at
from stack_dev.bm25 import doc_term_matrix
from stack_dev.procs import ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--qrels", type=Path, required=True)
    ap.add_argument("--top-n", type=int, default=100, help="candidates per retriever before fusion")
    ap.add_argument("--k1", type=float, default=1.2)
    ap.add_argument("--b", type=float, default=0.75)
    ap.add_argument("--embedding-model", default=DEFAULT_MODEL, choices=sorted(MODELS), help="embedding model")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/eval_fusion_cache"))
    ap.add_argument("--alphas", default="0.4,0.45,0.5,0.6")
    ap.add_argument("--third-model", default=None, choices=sorted(MODELS),
                    help="also fuse a second embedding model's ranking (three-way with BM25)")
    ap.add_argument("--three-way-weights", default="0.35,0.2,0.45;0.35,0.45,0.2;0.34,0.33,0.33;0.4,0.3,0.3",
                    help="'keyword,vector,third;...' zscore weights of the three-way runs")
    args = ap.parse_args()

    corpus = read_corpus(args.dataset)
    ids = list(corpus)
    docs = list(corpus.values())
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
    queries = read_queries(args.dataset)
    qrels = read_qrels(args.qrels)
    qids = [q for q in qrels if q in queries]

    # ---- dense
    args.cache.mkdir(parents=True, exist_ok=True)

    def dense(model: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The corpus matrix (cached) and the query vectors of one embedding model."""
        emb = Embedder.load(model, ROOT / "models")
        tag = f"{args.dataset.name}-{emb.model_id.replace('/', '_').replace(':', '_')}-{len(docs)}"
        cache = args.cache / f"{tag}.npy"
        if cache.is_file():
            mat = np.load(cache)
        else:
            t0 = time.perf_counter()
            mat = emb.encode(texts, batch_size=32)
            print(f"# encoded {len(texts)} docs with {model} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            np.save(cache, mat)
        qv = {q: emb.encode([queries[q]], kind="query")[0] for q in qids}     # one by one, like the service's
        emb.close()
        return mat, qv

    dmat, qvec = dense(args.embedding_model)

    # ---- BM25
    analyzer = Analyzer()
    enc = BM25Encoder(analyzer, k1=args.k1, b=args.b)
    bm25, vocab = doc_term_matrix(enc, texts)
    df = bm25.getnnz(axis=0)
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))

    def keyword_scores(q: str) -> np.ndarray:
        c = [vocab[t] for t in {term_id(x) for x in analyzer.tokens(queries[q])} if t in vocab]
        return np.asarray(bm25[:, c] @ idf[c]).ravel() if c else np.zeros(len(docs))

    def top(scores: np.ndarray, n: int, positive: bool = False) -> list[tuple[str, float]]:
        idx = np.argsort(-scores, kind="stable")[:n]
        return [(ids[i], float(scores[i])) for i in idx if not positive or scores[i] > 0]

    kw_top = {q: top(keyword_scores(q), args.top_n, positive=True) for q in qids}
    vec_top = {q: top(dmat @ qvec[q], args.top_n) for q in qids}

    def evaluate(name: str, rank) -> None:
        nd, rc = [], []
        for q in qids:
            ranked = rank(q)
            nd.append(ndcg_at(ranked, qrels[q], 10))
            rc.append(recall_at(ranked, qrels[q], 100))
        print(f"| {name} | {np.mean(nd):.4f} | {np.mean(rc):.4f} |", flush=True)

    print(f"{args.dataset.name}: {len(docs)} docs, {len(qids)} queries, BM25 k1={args.k1} b={args.b}, "
          f"embedder {args.embedding_model}, top-{args.top_n} per retriever fused")
    print("| run | nDCG@10 | Recall@100 |\n|---|---|---|")
    evaluate("keyword (BM25)", lambda q: [d for d, _ in kw_top[q]])
    evaluate(f"vector ({args.embedding_model})", lambda q: [d for d, _ in vec_top[q]])
    runs = [("rrf k=60", "rrf", {}), ("dbsf", "dbsf", {})]
    for a in (float(x) for x in args.alphas.split(",")):
        runs += [(f"minmax a={a}", "minmax", {"alpha": a}), (f"zscore a={a}", "zscore", {"alpha": a})]
    for name, method, kw in runs:
        evaluate(f"hybrid {name}", lambda q, m=method, kw=kw: [
            h.id for h in fuse({"vector": vec_top[q], "keyword": kw_top[q]}, method=m, **kw)])
    if args.third_model:
        # three-way: BM25 + this model + a second embedding model, fused by name with weights
        mat3, qvec3 = dense(args.third_model)
        third = {q: top(mat3 @ qvec3[q], args.top_n) for q in qids}
        evaluate(f"vector ({args.third_model})", lambda q: [d for d, _ in third[q]])
        evaluate(f"3-way rrf k=60 (+ {args.third_model})", lambda q: [
            h.id for h in fuse({"vector": vec_top[q], "keyword": kw_top[q], "third": third[q]}, method="rrf")])
        for spec in args.three_way_weights.split(";"):
            wk, wv, wt = (float(x) for x in spec.split(","))
            evaluate(f"3-way zscore keyword {wk} / {args.embedding_model} {wv} / {args.third_model} {wt}",
                     lambda q, w={"keyword": wk, "vector": wv, "third": wt}: [
                         h.id for h in fuse({"vector": vec_top[q], "keyword": kw_top[q], "third": third[q]},
                                            method="zscore", weights=w)])


if __name__ == "__main__":
    main()
