"""BEIR datasets: readers and the retrieval metrics, one definition each.

Layout (https://github.com/beir-cellar/beir): a folder with ``corpus.jsonl`` (``_id``, ``title``, ``text``),
``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id<TAB>corpus-id<TAB>score``
after a header line). Ids are strings; graded relevance is kept as the integer score.

Metrics (``ranked``: document ids best first; ``rels``: ``{doc id: score}`` of one query; a document
is relevant when its score is > 0):

* ``ndcg_at(ranked, rels, k)``: DCG = sum over the top k of ``rel / log2(rank + 1)`` (linear gain,
  rank from 1), divided by the DCG of the ideal ranking of the positive scores; trec_eval's and so
  BEIR's (pytrec_eval) definition. With binary qrels (SciFact) the exponential gain 2^rel - 1 gives
  the same value;
* ``recall_at(ranked, rels, k)``: relevant documents in the top k / relevant documents;
* ``precision_at(ranked, rels, k)``: relevant documents in the top k / k (k, not the list's length);
* ``hit_at(ranked, rels, k)``: 1.0 when a relevant document is in the top k, else 0.0 (``hit_at(.., 1)``
  is hit@1, "the right passage first", the figure for one-answer sets such as scripts/data/korean_eval);
* ``mrr_at(ranked, rels, k)``: 1 / the rank of the first relevant document, 0.0 when none is in the top k.

Each returns 0.0 for a query without a relevant document.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """The objects of a JSONL file, blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def corpus_file(path: str | Path) -> Path:
    """``path/corpus.jsonl`` for a BEIR folder, else ``path`` itself (a JSONL file)."""
    p = Path(path)
    return p / "corpus.jsonl" if p.is_dir() else p


def read_corpus(path: str | Path) -> dict[str, dict]:
    """``{_id: row}`` of a BEIR folder's corpus.jsonl (or a corpus JSONL file), rows as stored, file order."""
    return {str(d["_id"]): d for d in iter_jsonl(corpus_file(path))}


def read_queries(path: str | Path) -> dict[str, str]:
    """``{_id: text}`` of a BEIR folder's queries.jsonl (or a queries JSONL file), file order."""
    p = Path(path)
    return {str(q["_id"]): q["text"] for q in iter_jsonl(p / "queries.jsonl" if p.is_dir() else p)}


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """``{query id: {doc id: score}}`` of a qrels TSV, in file order. The header line (a third column
    that is not an integer) and lines with fewer than three columns are skipped."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or not parts[2].strip().lstrip("-").isdigit():
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def relevant(rels: dict[str, int]) -> set[str]:
    """The documents with a positive score."""
    return {d for d, r in rels.items() if r > 0}


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    pos = relevant(rels)
    return len(pos & set(ranked[:k])) / len(pos) if pos else 0.0


def precision_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    pos = relevant(rels)
    return len(pos & set(ranked[:k])) / k if pos else 0.0


def hit_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    pos = relevant(rels)
    return 1.0 if any(d in pos for d in ranked[:k]) else 0.0


def mrr_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    pos = relevant(rels)
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if d in pos), 0.0)
