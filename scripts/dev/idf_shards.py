#!/usr/bin/env python
"""What per-shard IDF does to keyword search: a sharded Qdrant collection scored the way Qdrant scores it.

A Qdrant server computes the IDF of ``Modifier.Idf`` sparse vectors from each shard's own statistics
(N and df of the shard's segments, not of the collection: lib/collection/src/shards/local_shard/search.rs
fills the query context from ``self.segments``), and the collection's top-k is the merge of every shard's
top-k by score. This script replays that on a BEIR corpus with the service's own Analyzer and BM25Encoder
(document weights use the collection-wide average length, as the service computes it): documents are
spread over S shards by a hash of their point id (what Qdrant's automatic sharding does), each shard's
documents are scored with that shard's IDF, and the merged ranking is compared with the single-shard one
(the engine's exact formula ln(1 + (N - n + 0.5)/(n + 0.5)); the congruence and rank_bm25 tests pin it).

Per S: how many of the top-10 ids are the same as with one shard, how many queries keep the exact
top-10 order, the median and 95th-percentile relative change of a document's score, and nDCG@10 on the
dataset's qrels. A second table draws df_shard ~ Binomial(df, 1/S) to show how far a term's shard IDF
strays from the collection's as its document frequency grows (what decides the effect at scale).

    .venv/bin/python scripts/dev/idf_shards.py --dataset ../shared/data/beir/scifact \
        --qrels ../shared/data/beir/scifact/qrels/test.tsv
"""
from __future__ import annotations

import argparse
import json
import uuid
import zlib
from pathlib import Path

import numpy as np

from search_service.text import Analyzer, BM25Encoder, term_id
from stack_dev.beir import ndcg_at, read_corpus, read_qrels, read_queries
from stack_dev.bm25 import doc_term_matrix

NAMESPACE = uuid.UUID("5b0c7a9e-2f7d-4c43-9a0e-6d1f1c2b7e10")     # search_service.collections.NAMESPACE


def idf(n: np.ndarray | float, df: np.ndarray) -> np.ndarray:
    return np.log(1 + (n - df + 0.5) / (df + 0.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--qrels", type=Path, required=True)
    ap.add_argument("--shards", default="1,2,3,6,12")
    ap.add_argument("--collection", default="scifact", help="collection name in the point ids")
    args = ap.parse_args()

    corpus = read_corpus(args.dataset)
    ids = list(corpus)
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in corpus.values()]
    queries = read_queries(args.dataset)
    qrels = read_qrels(args.qrels)
    qids = [q for q in qrels if q in queries]

    enc = BM25Encoder(Analyzer())
    weights, vocab = doc_term_matrix(enc, texts)
    present = weights.copy()
    present.data[:] = 1.0
    qterms = {q: [vocab[t] for t in {term_id(x) for x in enc.analyzer.tokens(queries[q])} if t in vocab]
              for q in qids}
    point_hash = np.array([zlib.crc32(str(uuid.uuid5(NAMESPACE, f"{args.collection}/{d}/0")).encode())
                           for d in ids], dtype=np.uint64)

    def scores(n_shards: int) -> dict[str, np.ndarray]:
        shard = point_hash % n_shards
        out = {q: np.zeros(len(ids)) for q in qids}
        for s in range(n_shards):
            rows_s = np.flatnonzero(shard == s)
            df_s = np.asarray(present[rows_s].sum(axis=0)).ravel()
            idf_s = idf(len(rows_s), df_s)
            w_s = weights[rows_s]
            for q, c in qterms.items():
                if c:
                    out[q][rows_s] = np.asarray(w_s[:, c] @ idf_s[c]).ravel()
        return out

    def top10(sc: np.ndarray) -> list[str]:
        idx = np.argsort(-sc, kind="stable")[:10]
        return [ids[i] for i in idx if sc[i] > 0]

    print(f"{args.dataset.name}: {len(ids)} documents, {len(qids)} queries, BM25 k1={enc.k1} b={enc.b}; "
          "per-shard IDF as Qdrant computes it, shard top-k merged by score")
    print("| shards | docs per shard | same top-10 ids | same top-10 order | score change p50 | p95 | nDCG@10 |")
    print("|---|---|---|---|---|---|---|")
    base = scores(1)
    base_top = {q: top10(base[q]) for q in qids}
    summary = []
    for n_shards in (int(x) for x in args.shards.split(",")):
        sc = scores(n_shards)
        same_ids, same_order, changes, nd = [], [], [], []
        for q in qids:
            t, b = top10(sc[q]), base_top[q]
            same_ids.append(len(set(t) & set(b)) / max(len(b), 1))
            same_order.append(t == b)
            hit = base[q] > 0
            changes.extend(np.abs(sc[q][hit] / base[q][hit] - 1).tolist())
            nd.append(ndcg_at(t, qrels[q], 10))
        row = {"shards": n_shards, "docs_per_shard": len(ids) // n_shards, "same_top10_ids": float(np.mean(same_ids)),
               "same_top10_order": float(np.mean(same_order)), "score_change_p50": float(np.percentile(changes, 50)),
               "score_change_p95": float(np.percentile(changes, 95)), "ndcg_at_10": float(np.mean(nd))}
        summary.append(row)
        print(f"| {n_shards} | {row['docs_per_shard']:,} | {row['same_top10_ids']:.1%} | {row['same_top10_order']:.1%} "
              f"| {row['score_change_p50']:.2%} | {row['score_change_p95']:.2%} | {row['ndcg_at_10']:.4f} |")

    # how far a shard's IDF strays from the collection's, by document frequency (3 shards, 1M documents)
    rng = np.random.default_rng(0)
    n, n_shards = 1_000_000, 3
    print(f"\nIDF of a term in one of {n_shards} shards vs the collection's ({n:,} documents, 100k draws)")
    print("| df (documents with the term) | collection IDF | shard IDF p5 | p50 | p95 | off by (p5-p95, of the IDF) |")
    print("|---|---|---|---|---|---|")
    for df in (1, 3, 10, 100, 1_000, 10_000, 100_000):
        df_s = rng.binomial(df, 1 / n_shards, size=100_000)
        df_s = df_s[df_s > 0]                       # a shard without the term scores nothing with it
        shard_idf = idf(n / n_shards, df_s.astype(float))
        g = float(idf(n, np.array([float(df)]))[0])
        p5, p50, p95 = np.percentile(shard_idf, [5, 50, 95])
        print(f"| {df:,} | {g:.3f} | {p5:.3f} | {p50:.3f} | {p95:.3f} | {max(abs(p5 - g), abs(p95 - g)) / g:.1%} |")
    print(json.dumps({"dataset": args.dataset.name, "runs": summary}))


if __name__ == "__main__":
    main()
