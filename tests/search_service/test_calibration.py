"""Calibrated hybrid scores (issue 13, item 3): the per-query confidence of search_service.fusion, and the
service applying it.

* Pure functions: vector_evidence / keyword_evidence / confidence, as fusion's docstring defines them.
* SearchService._score: every method's ranking is kept exactly; the scores are the fused ones times the
  confidence; a retriever that found nothing counts against.
* Through the HTTP app (the session's in-process service, real MiniLM, real engine) on a small English
  collection — SciFact documents relevant to the fixture queries, other SciFact documents, and the
  one-word document "beta" that is every junk query's nearest neighbour: junk queries (stopwords only,
  emoji, keyboard mash, off-topic) score below ``JUNK_BELOW`` while the real queries' relevant hits in
  the top 10 score above it; the top-level explain carries the confidence and its parts, and a cached
  answer carries the same explain.

``JUNK_BELOW`` = 0.3: measured by scripts/eval_calibration.py on this collection ("SciFact small" in the
README's "Calibrated scores and the language gate"), 0.3 kept all 13 relevant top-10 hits of its 12 queries
(the lowest 0.38) and dropped 24 of 25 junk queries (the one left, "who won the football world cup", 0.35,
matches words of its documents; the junk here scores at most 0.25 there).
"""
from __future__ import annotations

import math

import pytest

from search_service import fusion
from search_service.core.metrics import Metrics
from search_service.search import SearchQuery, SearchService
from tests.search_service.service_fixtures import ingest

JUNK_BELOW = 0.3
JUNK = ["the of and", "🙂🙂🙂", "asdfghjkl qwerty", "best pizza in Naples", "what is the", "zxcvbnm",
        "cheap flights to paris"]
MINILM = {"unrelated": 0.25, "related": 0.55}


# ------------------------------------------------------------------------------------------- pure
def test_vector_evidence_is_the_clipped_position_between_the_two_levels():
    ev = lambda c: fusion.vector_evidence(c, 0.25, 0.55)            # noqa: E731
    assert ev(0.10) == 0.0 and ev(0.25) == 0.0
    assert ev(0.40) == pytest.approx(0.5) and ev(0.55) == 1.0 and ev(0.95) == 1.0
    assert ev(None) == 0.0 and ev(float("nan")) == 0.0              # no hit: no evidence
    assert [ev(c) for c in (0.3, 0.35, 0.5)] == sorted(ev(c) for c in (0.3, 0.35, 0.5))
    with pytest.raises(ValueError, match="must be above"):
        fusion.vector_evidence(0.5, 0.6, 0.6)


def test_the_keyword_scale_is_the_idf_of_a_term_unique_to_the_collection():
    # Qdrant's idf of a term in 1 of N points: ln(1 + (N - 1 + 0.5) / (1 + 0.5))
    for n in (1, 41, 240, 5335, 1_000_000):
        assert fusion.bm25_evidence_scale(n) == pytest.approx(math.log(1 + (n - 0.5) / 1.5))
    assert fusion.bm25_evidence_scale(5335) == pytest.approx(8.18, abs=0.01)
    assert fusion.bm25_evidence_scale(240, terms=2.0) == pytest.approx(2 * math.log(1 + 239.5 / 1.5))
    assert fusion.bm25_evidence_scale(None) == fusion.bm25_evidence_scale(0) == fusion.BM25_EVIDENCE_SCALE
    # one unique term is the same evidence in any collection
    for n in (41, 5335):
        assert fusion.keyword_evidence(fusion.bm25_evidence_scale(n), fusion.bm25_evidence_scale(n)) == \
            pytest.approx(1 - math.exp(-1))


def test_keyword_evidence_saturates_with_the_bm25_score():
    s = fusion.BM25_EVIDENCE_SCALE
    assert fusion.keyword_evidence(None) == 0.0 and fusion.keyword_evidence(0.0) == 0.0
    assert fusion.keyword_evidence(s) == pytest.approx(1 - math.exp(-1))
    assert fusion.keyword_evidence(2 * s) == pytest.approx(1 - math.exp(-2))
    assert 0.99 < fusion.keyword_evidence(10 * s) < 1.0
    assert fusion.keyword_evidence(4.0, scale=4.0) == pytest.approx(1 - math.exp(-1))
    with pytest.raises(ValueError, match="scale"):
        fusion.keyword_evidence(1.0, scale=0)


def test_confidence_is_the_weighted_mean_of_the_asked_retrievers_evidence():
    # alpha weighs vector against keyword, as in fuse
    assert fusion.confidence({"vector": 1.0, "keyword": 0.5}, alpha=0.45) == pytest.approx(0.45 + 0.55 * 0.5)
    # a retriever that returned nothing (evidence 0) keeps its weight: evidence against
    assert fusion.confidence({"vector": 1.0, "keyword": 0.0}, alpha=0.45) == pytest.approx(0.45)
    # one that was not asked (the language gate) does not count; weights may still name it
    assert fusion.confidence({"keyword": 0.8}, alpha=0.45) == pytest.approx(0.8)
    assert fusion.confidence({"keyword": 0.8}, weights={"vector": 3.0, "keyword": 1.0}) == pytest.approx(0.8)
    # no weights: 1.0 each; a third retriever's weight counts when it has a calibration
    assert fusion.confidence({"vector": 0.2, "keyword": 0.6}) == pytest.approx(0.4)
    assert fusion.confidence({"vector": 1.0, "keyword": 0.0, "x": 1.0}, weights={"x": 2.0}) == pytest.approx(0.75)
    # None: no calibration, left out; nothing calibrated: 1.0 (nothing to scale by)
    assert fusion.confidence({"vector": 0.3, "pinned": None}, weights={"pinned": 10.0}) == pytest.approx(0.3)
    assert fusion.confidence({"pinned": None}) == 1.0
    # alpha = 1: the vector side alone (as fuse returns the vector ranking alone)
    assert fusion.confidence({"vector": 0.7, "keyword": 0.0}, alpha=1.0) == pytest.approx(0.7)
    # the asked retrievers' weights sum to 0: unweighted
    assert fusion.confidence({"keyword": 0.6}, weights={"vector": 1.0, "keyword": 0.0}) == pytest.approx(0.6)
    # evidence is clipped into [0, 1]
    assert fusion.confidence({"vector": 1.7, "keyword": -1.0}) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="either alpha or weights"):
        fusion.confidence({"vector": 1.0}, weights={"vector": 1.0}, alpha=0.5)


# ------------------------------------------------------------------------- the service's _score
class _Spec:
    cosine_unrelated, cosine_related = MINILM["unrelated"], MINILM["related"]


def _service() -> SearchService:
    svc = SearchService.__new__(SearchService)        # _score needs only its metrics and retriever names
    svc.metrics, svc.retrievers, svc.reranker = Metrics(), {"vector": None, "keyword": None}, None
    return svc


PER_DOC = {
    "vector": [("a", 0.41, "pa"), ("b", 0.38, "pb"), ("c", 0.33, "pc"), ("d", 0.30, "pd"), ("e", 0.21, "pe")],
    "keyword": [("c", 9.0, "pc2"), ("a", 6.5, "pa2"), ("f", 2.0, "pf")],
}


@pytest.mark.parametrize("method", fusion.METHODS)
def test_score_keeps_every_methods_ranking_and_scales_by_the_confidence(method):
    q = SearchQuery(query="q", collection="c", fusion=method, alpha=0.45)
    ranked, cal = _service()._score(q, PER_DOC, {"vector": _Spec()}, chunks=240)
    fused = fusion.fuse({n: [(d, s) for d, s, _ in v] for n, v in PER_DOC.items()}, method=method, alpha=0.45)
    assert [c.doc_id for c in ranked] == [f.id for f in fused]
    e_v = fusion.vector_evidence(0.41, **MINILM)
    e_k = fusion.keyword_evidence(9.0, fusion.bm25_evidence_scale(240))
    assert cal["bm25_scale"] == pytest.approx(fusion.bm25_evidence_scale(240))
    assert cal["evidence"] == {"vector": pytest.approx(e_v), "keyword": pytest.approx(e_k)}
    assert cal["confidence"] == pytest.approx(0.45 * e_v + 0.55 * e_k)
    assert cal["weights"] == {"vector": pytest.approx(0.45), "keyword": pytest.approx(0.55)}
    for c, f in zip(ranked, fused):
        assert c.score == pytest.approx(f.score * cal["confidence"])
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)


def test_score_an_empty_keyword_list_counts_against_and_modes_are_not_scaled():
    per_doc = {"vector": PER_DOC["vector"], "keyword": []}
    ranked, cal = _service()._score(SearchQuery(query="the of and", collection="c", alpha=0.45), per_doc, {"vector": _Spec()})
    assert [c.doc_id for c in ranked] == ["a", "b", "c", "d", "e"]          # the vector list alone, as before
    assert cal["evidence"]["keyword"] == 0.0
    assert cal["confidence"] == pytest.approx(0.45 * fusion.vector_evidence(0.41, **MINILM))
    assert ranked[0].score < 0.25                                        # was Phi(z) ~ 0.94 uncalibrated
    # vector and keyword modes keep their own scores (cosine; BM25 over the best), no confidence
    vec, none = _service()._score(SearchQuery(query="x", collection="c", mode="vector"), PER_DOC, {"vector": _Spec()})
    assert none is None and vec[0].score == pytest.approx(0.41)
    kw, none = _service()._score(SearchQuery(query="x", collection="c", mode="keyword"), PER_DOC, {"vector": _Spec()})
    assert none is None and [c.score for c in kw] == pytest.approx([1.0, 6.5 / 9.0, 2.0 / 9.0])


def test_score_without_a_model_spec_leaves_the_vector_side_uncalibrated():
    ranked, cal = _service()._score(SearchQuery(query="q", collection="c", alpha=0.45), PER_DOC, None)
    assert cal["evidence"]["vector"] is None
    assert cal["confidence"] == pytest.approx(fusion.keyword_evidence(9.0))


# --------------------------------------------------------------------------------- through the app
@pytest.fixture(scope="module")
def small_en(client, fixture_corpus) -> str:
    """The fixture corpus's SciFact documents and the one-word document 'beta' (MiniLM, the default model)."""
    docs = [d for d in fixture_corpus[0] if d["metadata"]["lang"] == "en"]
    name = "calib-en"
    client.delete(f"/collections/{name}")
    r = client.post("/collections", json={"name": name})
    assert r.status_code == 201, r.text
    ingest(client, name, docs + [{"id": "beta", "text": "beta"}])
    return name


def _search(client, collection: str, query: str, mode: str = "hybrid", **kw) -> dict:
    r = client.post(f"/search/{mode}", json={"query": query, "collection": collection, "explain": True, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_junk_queries_score_low_and_relevant_hits_score_high(client, small_en, fixture_corpus):
    for q in JUNK:
        body = _search(client, small_en, q)
        top = body["results"][0] if body["results"] else None
        conf = body["explain"]["confidence"]
        assert top is None or top["score"] < JUNK_BELOW, (q, top["id"], top["score"], body["explain"])
        if q in ("the of and", "🙂🙂🙂"):               # the two: 0.99999 before, 'beta' first
            kw = body["explain"]["retrievers"]["keyword"]
            assert kw["used"] and kw["hits"] == 0 and kw["evidence"] == 0.0 and "no index terms" in kw["reason"]
            assert top is not None and top["score"] < 0.2 and conf < 0.2, (q, top, body["explain"])
        # the same query with a threshold: nothing is left
        assert _search(client, small_en, q, score_threshold=JUNK_BELOW)["results"] == []
    kept, found, confs = [], 0, []
    for q in fixture_corpus[1]:
        body = _search(client, small_en, q["query"])
        hits = [h for h in body["results"][:10] if h["id"] in q["relevant"]]
        found += bool(hits)
        kept += [(q["query"], h["score"]) for h in hits]
        confs.append(body["explain"]["confidence"])
    assert found >= len(fixture_corpus[1]) - 1          # as test_api: nearly every query finds its document
    assert all(s >= JUNK_BELOW for _, s in kept), kept
    assert sorted(confs)[len(confs) // 2] > 0.8, confs   # most real queries: both sides agree


def test_explain_reports_the_confidence_and_its_parts_and_is_cached_with_the_body(client, small_en):
    query = "insulin resistance and glucose"      # a query no other test sends: the first answer is computed
    first = _search(client, small_en, query)
    ex = first["explain"]
    assert ex["query_script"] == "Latin" and ex["embedding_model"].startswith("sentence-transformers/all-MiniLM")
    v, k = ex["retrievers"]["vector"], ex["retrievers"]["keyword"]
    assert v["used"] and k["used"] and v["hits"] > 0 and k["hits"] > 0
    assert v["evidence"] == pytest.approx(fusion.vector_evidence(v["best"], **MINILM))
    chunks = client.get(f"/collections/{small_en}").json()["chunks"]
    assert k["scale"] == pytest.approx(fusion.bm25_evidence_scale(chunks))
    assert k["evidence"] == pytest.approx(fusion.keyword_evidence(k["best"], k["scale"]))
    assert v["weight"] + k["weight"] == pytest.approx(1.0)
    assert ex["confidence"] == pytest.approx(v["weight"] * v["evidence"] + k["weight"] * k["evidence"])
    # each result's own explain is unchanged: per retriever rank and raw score
    assert all(set(h["explain"]) <= {"vector", "keyword"} for h in first["results"])
    second = _search(client, small_en, query)
    if second["cached"]:                        # Redis answered: the cached body carries the same explain
        assert not first["cached"]
        assert second["explain"] == ex and second["results"] == first["results"]
    plain = client.post("/search/hybrid", json={"query": query, "collection": small_en}).json()
    assert "explain" not in plain and [h["score"] for h in plain["results"]] == [h["score"] for h in first["results"]]
