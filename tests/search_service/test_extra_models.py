"""A collection that fuses more than one embedding model (``extra_embedding_models``), over HTTP.

A multilingual-e5-small collection with MiniLM as an extra model: every chunk gets both vectors, an English
hybrid query fuses BM25 + e5 + MiniLM (alpha weighs each dense retriever against keyword's 1 - alpha), a Korean one skips MiniLM by
the language gate (two-way, as on a plain e5 collection), the MiniLM retriever is the same ranking a MiniLM
collection gives, and bad requests are 422/503 naming what is wrong."""
from __future__ import annotations

import pytest

from search_service import fusion
from search_service.embedding_models import MODELS
from tests.search_service.service_fixtures import app_settings, ingest, serve_in_process

ALPHA = MODELS["multilingual-e5-small"].fusion_alpha    # the default of a collection whose model is e5


@pytest.fixture(scope="module")
def three_way(client, fixture_corpus) -> str:
    docs, _ = fixture_corpus
    name = "three-way"
    r = client.post("/collections", json={"name": name, "embedding_model": "multilingual-e5-small",
                                          "extra_embedding_models": ["minilm"]})
    assert r.status_code == 201, r.text
    ingest(client, name, docs)
    yield name
    client.delete(f"/collections/{name}")


def _hybrid(client, collection: str, query: str, **kw) -> dict:
    r = client.post("/search/hybrid", json={"query": query, "collection": collection, "explain": True, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_collection_records_its_extra_model(client, three_way, fixture_corpus):
    info = client.get(f"/collections/{three_way}").json()
    assert info["embedding_model"] == "multilingual-e5-small"
    (extra,) = info["extra_embedding_models"]
    assert extra["embedding_model"] == "minilm" and extra["retriever"] == "vector:minilm"
    assert extra["vector"] == "dense-minilm" and extra["dim"] == 384
    assert extra["model_loaded"] and extra["model_matches"]
    assert info["documents"] == len(fixture_corpus[0])
    listed = {c["name"]: c for c in client.get("/collections").json()["collections"]}
    assert listed[three_way]["extra_embedding_models"] == ["minilm"]
    assert listed[three_way]["embedding_model"] == "multilingual-e5-small"


def test_english_queries_fuse_three_retrievers(client, three_way, fixture_corpus):
    _, queries = fixture_corpus
    reciprocal = []
    for q in queries:
        body = _hybrid(client, three_way, q["query"])
        ex = body["explain"]["retrievers"]
        assert set(ex) == {"keyword", "vector", "vector:minilm"} and all(r["used"] for r in ex.values()), ex
        assert ex["keyword"]["weight"] == pytest.approx(1 - ALPHA)
        assert ex["vector"]["weight"] == pytest.approx(ALPHA) == ex["vector:minilm"]["weight"]
        assert ex["vector:minilm"]["embedding_model"] == MODELS["minilm"].model_id
        # each dense side's evidence uses its own model's calibration (e5's cosines sit near 0.8, MiniLM's lower)
        for name in ("vector", "vector:minilm"):
            assert 0.0 <= ex[name]["evidence"] <= 1.0
        conf = fusion.confidence({n: r["evidence"] for n, r in ex.items()}, {n: r["weight"] for n, r in ex.items()})
        assert body["explain"]["confidence"] == pytest.approx(conf)
        ids = [h["id"] for h in body["results"]]
        rank = next((i + 1 for i, d in enumerate(ids) if d in q["relevant"]), None)
        reciprocal.append(1 / rank if rank else 0.0)
        for hit in body["results"][:3]:           # a fused hit names each retriever that found it
            assert set(hit["explain"]) <= {"keyword", "vector", "vector:minilm"} and hit["explain"]
    assert sum(reciprocal) / len(reciprocal) >= 0.75, reciprocal


def test_the_minilm_retriever_ranks_as_a_minilm_collection_does(client, three_way, loaded, fixture_corpus):
    """Weighted alone, the extra retriever returns exactly what /search/vector returns on a MiniLM
    collection of the same documents (the same vectors, in a named vector of its own)."""
    _, queries = fixture_corpus
    for q in queries[:6]:
        alone = _hybrid(client, three_way, q["query"], weights={"keyword": 0, "vector": 0, "vector:minilm": 1},
                        limit=10)
        plain = client.post("/search/vector", json={"query": q["query"], "collection": loaded, "limit": 10}).json()
        assert [h["id"] for h in alone["results"]] == [h["id"] for h in plain["results"]]
        assert [h["explain"]["vector:minilm"]["score"] for h in alone["results"]] == pytest.approx(
            [h["score"] for h in plain["results"]], abs=1e-5)


def test_korean_queries_skip_minilm_by_the_language_gate(client, three_way):
    for query, expected in [("김치는 어떻게 발효되나요", "ko-1"), ("한글은 누가 만들었나요", "ko-4"),
                            ("혈당을 관리하는 방법", "ko-3")]:
        body = _hybrid(client, three_way, query)
        ex = body["explain"]["retrievers"]
        assert ex["vector:minilm"]["used"] is False and "Hangul" in ex["vector:minilm"]["reason"], ex
        assert ex["vector"]["used"] and ex["keyword"]["used"]
        # as on a plain e5 collection: e5 alpha, keyword 1 - alpha
        assert ex["vector"]["weight"] == pytest.approx(ALPHA) and ex["keyword"]["weight"] == pytest.approx(1 - ALPHA)
        assert body["results"][0]["id"] == expected, (query, body["results"][:2])


def test_weights_name_the_extra_retriever_and_bad_ones_are_400(client, three_way):
    body = _hybrid(client, three_way, "vitamin D deficiency", weights={"vector:minilm": 0.0})
    ex = body["explain"]["retrievers"]
    assert ex["vector:minilm"]["weight"] == 0.0 and ex["vector"]["weight"] == 1.0
    r = client.post("/search/hybrid", json={"query": "x", "collection": three_way, "weights": {"vector:bge": 1}})
    assert r.status_code == 422 and "vector:minilm" in r.json()["error"]["message"], r.text


def test_bad_extra_models_are_refused(client, unique_name):
    for extra, status, words in [(["minilm"], 422, ["extra_embedding_models", "minilm"]),      # = the main model
                                 (["multilingual-e5-small"] * 2, 422, ["each once"]),
                                 (["bge"], 422, ["extra_embedding_models", "multilingual-e5-small"]),
                                 ("minilm", 422, ["extra_embedding_models"])]:
        body = {"name": unique_name, "extra_embedding_models": extra}
        if extra == ["multilingual-e5-small"] * 2:
            body["embedding_model"] = "minilm"
        r = client.post("/collections", json=body)
        assert r.status_code == status, (extra, r.text)
        msg = r.json()["error"]["message"]
        assert all(w in msg for w in words), msg
    assert client.get(f"/collections/{unique_name}").status_code == 404


def test_an_extra_model_that_is_not_loaded_is_503(tmp_path, redis_url):
    settings = app_settings(tmp_path / "data", redis_url, "textra-" + tmp_path.name,
                            embedding_models="multilingual-e5-small", embedding_model="multilingual-e5-small")
    with serve_in_process(settings) as c:
        r = c.post("/collections", json={"name": "x", "extra_embedding_models": ["minilm"]})
        assert r.status_code == 503, r.text
        assert "minilm" in r.json()["error"]["message"] and "SEARCH_EMBEDDING_MODELS" in r.json()["error"]["message"]
        assert c.get("/collections/x").status_code == 404


def test_fused_scores_still_express_confidence(client, three_way, fixture_corpus):
    """Three calibrated retrievers: junk (stopwords, emoji, off-topic) scores low, relevant hits high, so
    ``score_threshold: 0.5`` still separates them (as on one-model collections)."""
    _, queries = fixture_corpus
    junk = {}
    for q in ("the of and", "🙂🙂🙂", "what is it about", "cheap flights to paris"):
        res = _hybrid(client, three_way, q)["results"]
        junk[q] = res[0]["score"] if res else 0.0
    relevant = []
    for q in queries:
        res = _hybrid(client, three_way, q["query"])["results"]
        relevant += [h["score"] for h in res[:10] if h["id"] in q["relevant"]]
    assert max(junk.values()) < 0.4, junk                     # measured (AMD): 0.08-0.16
    assert len(relevant) >= len(queries) and min(relevant) > max(junk.values()), (relevant, junk)
    assert sum(s >= 0.5 for s in relevant) >= 0.8 * len(relevant), relevant    # measured: 12 of 13
