"""A corpus as one BM25 document-term matrix (scipy CSR), built with the service's own encoder, for the
dev scripts that score BM25 outside the engine (fusion sweeps, per-shard IDF)."""
from __future__ import annotations

import scipy.sparse as sp


def doc_term_matrix(enc, texts: list[str]) -> tuple[sp.csr_matrix, dict[int, int]]:
    """(documents x terms matrix of the service's BM25 document weights, term id -> column). Document
    weights use the corpus-wide average length, as the service computes it."""
    stats = [enc.doc_stats(t) for t in texts]
    avgdl = sum(dl for _, dl in stats) / len(stats)
    vocab: dict[int, int] = {}
    rows, cols, vals = [], [], []
    for r, (tfs, dl) in enumerate(stats):
        v = enc.encode_doc(tfs, dl, avgdl)
        for i, w in zip(v.indices, v.values):
            rows.append(r)
            cols.append(vocab.setdefault(i, len(vocab)))
            vals.append(w)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab))), vocab
