"""Fusion of ranked lists from several retrievers into one ranking. Pure functions, no I/O.

Input: ``results`` maps a retriever name (the service uses ``"vector"`` and ``"keyword"``) to that
retriever's candidates ``[(id, raw_score), ...]``, best first (the service passes each retriever's
top-N, N configurable). A retriever may return an empty list. If an id appears twice in one list
only its first (best) occurrence counts.

Weights
-------
Each retriever ``r`` has a weight ``w_r >= 0``:

* ``alpha`` (0..1) weighs each dense retriever against ``"keyword"``: ``w_keyword = 1 - alpha`` and every
  dense retriever present (``"vector"``, and ``"vector:<model>"`` for a collection's extra embedding
  models, :func:`is_dense`) gets ``w = alpha``. With one, that is the usual convex ``alpha``; with two, the
  dense side weighs ``2 alpha`` against ``1 - alpha`` (SciFact, BM25 + e5 + MiniLM, the default alpha 0.45:
  nDCG@10 0.737 against 0.733 for splitting alpha between the two; README "Fusing two embedding
  models"). With alpha, no other retriever may be present.
* ``weights`` generalises to N retrievers (e.g. a third one fused in). A retriever absent from
  ``weights`` gets weight 1.0; a name in ``weights`` that is not in ``results`` is an error (typo guard).
* Neither given: every retriever weighs 1.0 (for the convex methods this is alpha = 0.5).

``alpha`` and ``weights`` together, a negative weight, all weights zero or an unknown method raise
:class:`ValueError` (the service turns it into a 400).

What the fused score means (always in [0, 1])
----------------------------------------------
A retriever whose list is empty or whose weight is 0 takes no part at all: its weight is left out
of ``W`` and its documents are not candidates (so ``alpha = 1`` returns exactly the vector ranking,
and a keyword query made only of stopwords fuses the vector list alone). Let ``W = sum_r w_r`` over
the retrievers that take part.

``rrf`` — reciprocal rank fusion with textbook ranks counted from 1:
    ``raw(d) = sum_r w_r / (k + rank_r(d))``, a list that lacks ``d`` contributes 0.
    Score = ``raw(d) / (W / (k + 1))``: the fraction of the best possible RRF value (ranked first by
    every retriever). 1.0 = first everywhere; a document ranked first by only one of two equally
    weighted retrievers scores 0.5; with k = 60, rank 10 in both lists scores 61/70 = 0.87.
    (Qdrant's engine counts ranks from 0, i.e. its k is this k - 1, and weights the rank instead of
    the term; this module follows the textbook.)

``dbsf`` — distribution-based score fusion, as Qdrant's DBSF: each list's scores are mapped
    linearly from ``[mean - 3 sd, mean + 3 sd]`` (sample sd, ddof = 1, over that list) to [0, 1] and
    clipped to [0, 1]; a list of one item or with all scores equal gives 0.5 to its items.
    A list that lacks ``d`` contributes 0. Score = ``sum_r w_r * norm_r(d) / W`` (Qdrant sums
    unweighted; the ranking is the same with equal weights). 0.5 = an average candidate everywhere.

``minmax`` — convex combination of min-max normalised scores: in each list
    ``(s - min) / (max - min)`` (1.0 for every item when max == min); a list that lacks ``d``
    contributes 0, i.e. the same as that list's worst candidate. Score = ``sum_r w_r * norm_r(d) / W``.
    1.0 = the best candidate of every retriever.

``zscore`` — convex combination of z-scores: in each list ``z = (s - mean) / sd`` (population sd,
    ddof = 0, over that list; z = 0 for all when sd == 0); a list that lacks ``d`` contributes that
    list's minimum z (as if ``d`` scored like the list's worst candidate).
    ``zbar(d) = sum_r w_r * z_r(d) / W`` and score = ``Phi(zbar(d))``, the standard normal CDF — a
    monotone map, so the ranking is exactly the convex combination of z-scores. 0.5 = average
    candidate; 0.84 = one standard deviation above the candidates' mean, on weighted average.

Ties (equal fused score) are broken by the best (smallest) rank the document has in any list,
then by id, so the order never depends on dict or input order. Per-list statistics are computed
in retriever-name order so floating-point sums are reproducible.

Confidence (the calibration the service applies to hybrid scores)
-----------------------------------------------------------------
Every method above is relative to the query's own candidates: the best of a set of junk candidates
still scores near 1 (a stopword-only query, whose keyword side is empty, fuses the vector list alone,
and the z-score CDF makes its nearest neighbour — any very short text — a 0.99999). So the service
multiplies every fused score of a query by one number, the query's confidence ``c`` in [0, 1]; one
factor for the whole list, so every method's ranking is exactly kept, and ``c * score`` stays in [0, 1].
``c`` is the weighted mean of each asked retriever's evidence that the collection holds an answer, with
the fusion's own weights (alpha / weights / 1.0 each, resolved as above)::

    c = sum_r w_r * e_r / sum_r w_r            (over the retrievers that were asked)

* ``e_vector`` = :func:`vector_evidence`: ``clip((best cosine - unrelated) / (related - unrelated), 0, 1)``
  with the embedding model's two calibration levels (``EmbeddingModel.cosine_unrelated`` /
  ``cosine_related``, measured by ``scripts/eval_calibration.py``);
* ``e_keyword`` = :func:`keyword_evidence`: ``1 - exp(-best BM25 / S)``. A BM25 score is about the sum of
  the matched terms' idf (times a saturating term frequency near 1), and idf depends on the collection's
  size, so ``S`` is measured in the collection's own unit, the idf of a term that only one of its N
  points holds (Qdrant's idf: ``ln(1 + (N - 0.5) / 1.5)``; 8.2 on SciFact's 5,335 chunks, 5.1 on 240
  passages, 3.3 on 40): ``S = BM25_EVIDENCE_TERMS * that`` (:func:`bm25_evidence_scale`). With the
  factor 1, a match as strong as one term unique to the collection is evidence 0.63, two are 0.86, and
  a matched common word (a quarter of that idf) 0.22. An unknown N uses ``BM25_EVIDENCE_SCALE`` (8);
* a retriever that was asked and returned nothing (a keyword query of stopwords only, no term in the
  collection) has ``e = 0``: evidence *against*, it keeps its weight in the mean. A retriever that was
  not asked (the vector side skipped for a script its model does not cover) does not count at all;
* evidence ``None`` (a retriever without a calibration, e.g. a plugged-in third one) is left out of the
  mean. When the asked retrievers' weights sum to 0 (a lone keyword list whose weight the request set
  to 0) the mean is unweighted.

Vector-only and keyword-only searches are not scaled: their scores keep their own meaning (cosine;
BM25 over the best hit's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = ["FusedHit", "fuse", "Method", "METHODS", "DEFAULT_METHOD", "DEFAULT_RRF_K",
           "confidence", "vector_evidence", "keyword_evidence", "bm25_evidence_scale", "resolve_weights",
           "BM25_EVIDENCE_TERMS", "BM25_EVIDENCE_SCALE", "is_dense"]

Method = Literal["rrf", "dbsf", "minmax", "zscore"]     # the one list of fusion names (settings, API, here)
METHODS: tuple[str, ...] = get_args(Method)
# The defaults were chosen on SciFact test with scripts/dev/eval_fusion.py (each retriever's top-100 fused;
# nDCG@10 and R@100 per method and alpha in the README's "Fusion" section): zscore leads and alpha
# 0.4-0.5 is one plateau within the paired standard error; 0.45 sits in its middle (MiniLM). The default
# alpha is the collection's embedding model's (``EmbeddingModel.fusion_alpha``: MiniLM 0.45; e5, whose dense
# side is stronger, 0.55 — README "Evaluation"), unless SEARCH_ALPHA sets one for all.
DEFAULT_METHOD: Method = "zscore"
DEFAULT_RRF_K = 60
# S of keyword_evidence in units of the collection's largest idf (bm25_evidence_scale). Chosen with
# scripts/eval_calibration.py --sweep (README "Calibrated scores and the language gate"): with 1.0 a 0.5
# threshold keeps every relevant SciFact top-10 hit and drops every junk query, and on the tests' 41-document
# collection 0.3 keeps every relevant hit (0.6-0.8 keep more off-topic junk; 1.25-1.5 start to lose
# SciFact's relevant hits at 0.5).
BM25_EVIDENCE_TERMS = 1.0
# S when the collection's size is unknown: about what BM25_EVIDENCE_TERMS gives on SciFact (5,335 chunks).
BM25_EVIDENCE_SCALE = 8.0


@dataclass(slots=True)
class FusedHit:
    id: str
    score: float                                   # fused score in [0, 1] (see module docstring)
    sources: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (1-based rank, raw score)


def _resolve_weights(names: list[str], weights: dict[str, float] | None,
                     alpha: float | None) -> dict[str, float]:
    if alpha is not None and weights is not None:
        raise ValueError("give either alpha or weights, not both")
    if alpha is not None:
        alpha = float(alpha)
        if not (0.0 <= alpha <= 1.0) or math.isnan(alpha):
            raise ValueError(f"alpha must be within [0, 1], got {alpha}")
        dense = [n for n in names if is_dense(n)]
        other = sorted(set(names) - set(dense) - {"keyword"})
        if other:
            raise ValueError(f"alpha weighs the dense retrievers against 'keyword'; use weights for {other}")
        return {n: alpha if is_dense(n) else 1.0 - alpha for n in names}
    out = {n: 1.0 for n in names}
    if weights:
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"weights name unknown retrievers {unknown}; known: {sorted(names)}")
        for n, v in weights.items():
            v = float(v)
            if v < 0 or math.isnan(v) or math.isinf(v):
                raise ValueError(f"weight for {n!r} must be a finite number >= 0, got {v}")
            out[n] = v
    if names and sum(out.values()) <= 0:
        raise ValueError("at least one retriever weight must be > 0")
    return out


def is_dense(name: str) -> bool:
    """``vector`` (a collection's embedding model) and ``vector:<model>`` (an extra one) are dense retrievers."""
    return name == "vector" or name.startswith("vector:")


def resolve_weights(names: list[str], weights: dict[str, float] | None = None,
                    alpha: float | None = None) -> dict[str, float]:
    """Each of ``names``' weight by the rules above (``ValueError`` on a bad combination)."""
    return _resolve_weights(sorted(names), weights, alpha)


def vector_evidence(best_cosine: float | None, unrelated: float, related: float) -> float:
    """Evidence in [0, 1] from the best dense hit's cosine (None: no hit, 0)."""
    if best_cosine is None or math.isnan(best_cosine):
        return 0.0
    if related <= unrelated:
        raise ValueError(f"cosine_related ({related}) must be above cosine_unrelated ({unrelated})")
    return min(1.0, max(0.0, (float(best_cosine) - unrelated) / (related - unrelated)))


def bm25_evidence_scale(points: int | None, terms: float = BM25_EVIDENCE_TERMS) -> float:
    """``S`` for a collection of ``points`` BM25 vectors: ``terms`` times the idf of a term only one of them
    holds (Qdrant's ``Modifier.Idf``); ``BM25_EVIDENCE_SCALE`` when ``points`` is unknown (None or 0)."""
    if not points or points < 1:
        return BM25_EVIDENCE_SCALE
    return terms * math.log(1.0 + (points - 0.5) / 1.5)


def keyword_evidence(best_bm25: float | None, scale: float = BM25_EVIDENCE_SCALE) -> float:
    """Evidence in [0, 1] from the best keyword hit's BM25 score (None: no hit, 0)."""
    if best_bm25 is None or math.isnan(best_bm25) or best_bm25 <= 0:
        return 0.0
    if scale <= 0:
        raise ValueError(f"the BM25 evidence scale must be > 0, got {scale}")
    return 1.0 - math.exp(-float(best_bm25) / scale)


def confidence(evidence: dict[str, float | None], weights: dict[str, float] | None = None,
               alpha: float | None = None) -> float:
    """The query's confidence in [0, 1]: the weighted mean of the asked retrievers' evidence (see the
    module docstring). ``evidence`` holds every retriever that was asked (0.0 for one that found nothing,
    None for one without a calibration); ``weights`` / ``alpha`` as given to :func:`fuse`, and they may
    name a retriever that was not asked. No calibrated retriever: 1.0 (nothing to scale by)."""
    w = _resolve_weights(sorted(set(evidence) | set(weights or ())), weights, alpha)
    known = {n: min(1.0, max(0.0, float(e))) for n, e in evidence.items() if e is not None}
    if not known:
        return 1.0
    total = math.fsum(w[n] for n in known)
    if total <= 0:
        return math.fsum(known.values()) / len(known)
    return min(1.0, max(0.0, math.fsum(w[n] * known[n] for n in sorted(known)) / total))


def _dedupe(items: list[tuple[str, float]]) -> list[tuple[str, float]]:
    seen: set[str] = set()
    out = []
    for doc_id, score in items:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        out.append((doc_id, float(score)))
    return out


def _mean_sd(scores: list[float], ddof: int) -> tuple[float, float]:
    n = len(scores)
    mean = math.fsum(scores) / n
    if n - ddof <= 0:
        return mean, 0.0
    var = math.fsum((s - mean) ** 2 for s in scores) / (n - ddof)
    return mean, math.sqrt(var)


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def fuse(results: dict[str, list[tuple[str, float]]], method: str = DEFAULT_METHOD,
         weights: dict[str, float] | None = None, rrf_k: int = DEFAULT_RRF_K,
         alpha: float | None = None) -> list[FusedHit]:
    """Fuse each retriever's ranked ``(id, raw_score)`` list; best first, scores in [0, 1]."""
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {list(METHODS)}")
    if method == "rrf" and (rrf_k is None or rrf_k < 0):
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    w = _resolve_weights(sorted(results), weights, alpha)
    # retrievers that returned nothing or weigh 0 take no part (neither their weight nor their docs)
    names = [n for n in sorted(results) if results[n] and w[n] > 0]
    total_w = math.fsum(w[n] for n in names)
    lists = {n: _dedupe(results[n]) for n in names}

    # sources: id -> {name: (rank, raw)}; first-seen order is irrelevant (ties use rank, then id)
    sources: dict[str, dict[str, tuple[int, float]]] = {}
    for n in names:
        for rank, (doc_id, score) in enumerate(lists[n], start=1):
            sources.setdefault(doc_id, {})[n] = (rank, score)
    if not sources:
        return []

    # per-list normalised contribution for a present doc, and for a missing doc
    contrib: dict[str, dict[str, float]] = {}
    missing: dict[str, float] = {}
    for n in names:
        items = lists[n]
        scores = [s for _, s in items]
        if method == "rrf":
            contrib[n] = {d: 1.0 / (rrf_k + r) for r, (d, _) in enumerate(items, start=1)}
            missing[n] = 0.0
        elif method == "dbsf":
            if len(items) <= 1:
                contrib[n] = {d: 0.5 for d, _ in items}
            else:
                mean, sd = _mean_sd(scores, ddof=1)
                if sd == 0:
                    contrib[n] = {d: 0.5 for d, _ in items}
                else:
                    lo = mean - 3 * sd
                    contrib[n] = {d: min(1.0, max(0.0, (s - lo) / (6 * sd))) for d, s in items}
            missing[n] = 0.0
        elif method == "minmax":
            lo, hi = min(scores), max(scores)
            rng = hi - lo
            contrib[n] = {d: (1.0 if rng == 0 else (s - lo) / rng) for d, s in items}
            missing[n] = 0.0
        else:  # zscore
            mean, sd = _mean_sd(scores, ddof=0)
            contrib[n] = {d: (0.0 if sd == 0 else (s - mean) / sd) for d, s in items}
            missing[n] = min(contrib[n].values())

    # Hot loop (~200 documents per hybrid query): one or two retrievers are summed directly, which is
    # exactly math.fsum's result (the sum of two floats is already correctly rounded); more use fsum.
    parts = [(w[n], contrib[n], missing[n]) for n in names]
    (w0, c0, m0), (w1, c1, m1) = parts[0], parts[-1]
    n_parts = len(parts)
    keyed = []
    for doc_id, src in sources.items():
        if n_parts == 1:
            raw = w0 * c0.get(doc_id, m0)
        elif n_parts == 2:
            raw = w0 * c0.get(doc_id, m0) + w1 * c1.get(doc_id, m1)
        else:
            raw = math.fsum(wn * cn.get(doc_id, mn) for wn, cn, mn in parts)
        if method == "rrf":
            score = raw / (total_w / (rrf_k + 1))
        elif method == "zscore":
            score = _phi(raw / total_w)
        else:
            score = raw / total_w
        score = min(1.0, max(0.0, score))
        if len(src) == 1:                       # (a generator min() here was a measurable part of a query)
            best_rank = next(iter(src.values()))[0]
        else:
            best_rank = min([r for r, _ in src.values()])
        # ``src`` was built by this call for this document alone: the hit can own it (no copy)
        keyed.append((-score, best_rank, doc_id, FusedHit(id=doc_id, score=score, sources=src)))

    keyed.sort(key=lambda t: t[:3])       # ids are unique: the key never ties
    return [t[3] for t in keyed]
