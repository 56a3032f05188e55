"""The language gate (issue 13, item 3): a hybrid query in a script the collection's embedding model does not
cover is answered by the keyword side alone, and ``explain`` says so.

* ``text.query_script``: the dominant writing system of a text's letters.
* Through the HTTP app (the session's in-process service, real engine): on a MiniLM collection (covers
  Latin) a Korean query skips the vector retriever — no dense search runs, explain names the reason, the
  results and their confidence come from the keyword side alone, the request's alpha / weights cannot
  empty it and a typo in them is still refused; an English (or letterless) query still uses both;
  ``/search/vector`` still answers a Korean query, with a warning in explain. On a multilingual-e5-small
  collection the same Korean query uses both retrievers.
"""
from __future__ import annotations

import re

import pytest

from search_service import fusion
from search_service.embedding_models import MODELS
from search_service.text import SCRIPTS, query_script
from tests.search_service.service_fixtures import KOREAN_DOCS, ingest

KOREAN_QUERY = "김치 발효와 유산균"
ENGLISH_DOCS = [
    {"id": "en-1", "title": "Fermented foods", "text": "Kimchi and sauerkraut are fermented by lactic acid bacteria."},
    {"id": "en-2", "title": "Insulin", "text": "Insulin lowers blood glucose; resistance to it marks type 2 diabetes."},
    {"id": "en-3", "title": "Seoul subway", "text": "The Seoul metropolitan subway carries millions of riders a day."},
    {"id": "en-4", "title": "Hangul", "text": "Hangul, the Korean alphabet, was created in the fifteenth century."},
]


# ------------------------------------------------------------------------------------ query_script
@pytest.mark.parametrize("text, script", [
    ("the of and", "Latin"), ("Café crème brûlée", "Latin"), ("Tiếng Việt", "Latin"), ("ｆｕｌｌｗｉｄｔｈ", "Latin"),
    ("김치 발효와 유산균", "Hangul"), ("ㅋㅋㅋ", "Hangul"),
    ("東京大学", "Han"), ("中文检索", "Han"), ("ひらがな カタカナ", "Kana"), ("東京タワー", "Kana"),
    ("Москва", "Cyrillic"), ("Ελληνικά", "Greek"), ("مرحبا بالعالم", "Arabic"), ("שלום עולם", "Hebrew"),
    ("สวัสดีครับ", "Thai"), ("नमस्ते दुनिया", "Devanagari"), ("ქართული", "Other"), ("Հայերեն", "Other"),
])
def test_query_script_names_the_writing_system_of_the_letters(text, script):
    assert query_script(text) == script


def test_query_script_ignores_what_is_not_a_letter_and_counts_letters():
    for text in ("", None, "🙂🙂🙂", "123 456", "??? ... !!!", "$$$ ### @@@", "  \t\n"):
        assert query_script(text) is None, text
    assert query_script("🙂 kimchi 🙂 2024") == "Latin"
    assert query_script("COVID-19 백신") == "Latin"                      # 5 letters to 2 syllables
    assert query_script("Python 리스트 정렬") == "Latin"                 # 6 letters to 5 syllables
    assert query_script("Python 리스트 정렬하기") == "Hangul"            # 6 to 7
    assert query_script("ab 가나") == "Latin"                           # a tie: the first script seen
    assert query_script("가나 ab") == "Hangul"
    # every name query_script gives (but "Other") is one a model can declare
    from search_service.embedding_models import ALL_SCRIPTS
    assert SCRIPTS == ALL_SCRIPTS


# --------------------------------------------------------------------------------- through the app
def _stage_count(client, stage: str) -> float:
    m = re.search(rf'^search_stage_duration_seconds_count{{stage="{stage}"}} (\S+)$', client.get("/metrics").text,
                  re.M)
    return float(m.group(1)) if m else 0.0


def _search(client, collection: str, query: str, mode: str = "hybrid", **kw):
    return client.post(f"/search/{mode}", json={"query": query, "collection": collection, "explain": True, **kw})


def _ok(r) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def gate_minilm(client) -> str:
    name = "gate-minilm"
    client.delete(f"/collections/{name}")
    assert client.post("/collections", json={"name": name, "embedding_model": "minilm"}).status_code == 201
    ingest(client, name, ENGLISH_DOCS + KOREAN_DOCS)
    return name


def test_korean_query_on_a_minilm_collection_is_answered_by_keyword_alone(client, gate_minilm):
    spec = MODELS["minilm"]
    before = _stage_count(client, "vector")
    body = _ok(_search(client, gate_minilm, KOREAN_QUERY, limit=10))
    assert _stage_count(client, "vector") == before                  # no dense search ran
    ex = body["explain"]
    assert ex["query_script"] == "Hangul"
    assert ex["retrievers"]["vector"] == {
        "used": False, "reason": f"query script Hangul is not covered by {spec.model_id} (covers Latin)"}
    kw = ex["retrievers"]["keyword"]
    assert kw["used"] and kw["hits"] >= 1
    assert ex["confidence"] == pytest.approx(fusion.keyword_evidence(kw["best"], kw["scale"]))   # keyword alone
    assert body["results"][0]["id"] == "ko-1"
    assert all(set(h["explain"]) == {"keyword"} for h in body["results"])           # nothing from the vector side
    assert {h["id"] for h in body["results"]} <= {d["id"] for d in KOREAN_DOCS}
    # the keyword ranking, fused alone: the same order as /search/keyword
    kw_only = _ok(_search(client, gate_minilm, KOREAN_QUERY, "keyword", limit=10))
    assert [h["id"] for h in body["results"]] == [h["id"] for h in kw_only["results"]]
    assert set(kw_only["explain"]["retrievers"]) == {"keyword"} and "confidence" not in kw_only["explain"]
    # every fusion method, alpha = 1 and weights that zero the keyword side still answer from it
    for extra in ({"fusion": "rrf"}, {"fusion": "minmax"}, {"fusion": "dbsf"}, {"alpha": 1.0},
                  {"weights": {"vector": 1.0, "keyword": 0.0}}):
        res = _ok(_search(client, gate_minilm, KOREAN_QUERY, **extra))
        assert res["results"][0]["id"] == "ko-1", extra
        assert res["explain"]["confidence"] == pytest.approx(ex["confidence"]), extra
    # a bad alpha/weights combination is refused as before, gate or not
    r = _search(client, gate_minilm, KOREAN_QUERY, weights={"vectr": 1.0})
    assert r.status_code == 422 and "vectr" in r.json()["error"]["message"]


def test_english_and_letterless_queries_on_the_same_collection_use_both(client, gate_minilm):
    before = _stage_count(client, "vector")
    body = _ok(_search(client, gate_minilm, "fermented cabbage and lactic acid bacteria"))
    assert _stage_count(client, "vector") == before + 1
    ex = body["explain"]
    assert ex["query_script"] == "Latin"
    assert ex["retrievers"]["vector"]["used"] and ex["retrievers"]["keyword"]["used"]
    assert "reason" not in ex["retrievers"]["vector"] and "warning" not in ex["retrievers"]["vector"]
    assert body["results"][0]["id"] == "en-1"
    assert any("vector" in h["explain"] for h in body["results"])
    # no letters (emoji): no script to gate on, both run (and the keyword side finds nothing)
    emoji = _ok(_search(client, gate_minilm, "🙂🙂🙂"))["explain"]
    assert emoji["query_script"] is None and emoji["retrievers"]["vector"]["used"]
    assert emoji["retrievers"]["keyword"]["hits"] == 0


def test_vector_mode_still_runs_an_uncovered_script_and_says_so(client, gate_minilm):
    body = _ok(_search(client, gate_minilm, KOREAN_QUERY, "vector", limit=4))
    assert len(body["results"]) == 4
    v = body["explain"]["retrievers"]["vector"]
    assert v["used"] and v["hits"] >= 4 and "query script Hangul is not covered" in v["warning"]
    assert "confidence" not in body["explain"]
    assert body["results"][0]["score"] == pytest.approx(v["best"], abs=1e-5)        # raw cosine, not scaled
    plain = _ok(client.post("/search/vector", json={"query": KOREAN_QUERY, "collection": gate_minilm, "limit": 4}))
    assert "explain" not in plain


def test_a_multilingual_collection_runs_both_for_korean(client):
    name = "gate-e5"
    client.delete(f"/collections/{name}")
    r = client.post("/collections", json={"name": name, "embedding_model": "multilingual-e5-small"})
    if r.status_code != 201:
        pytest.skip(f"this app does not serve multilingual-e5-small: {r.status_code} {r.text[:200]}")
    try:
        ingest(client, name, ENGLISH_DOCS + KOREAN_DOCS)
        res = _search(client, name, KOREAN_QUERY)
        if res.status_code == 503:
            pytest.skip(f"multilingual-e5-small is not loaded: {res.text[:200]}")
        ex = _ok(res)["explain"]
        assert ex["query_script"] == "Hangul" and ex["embedding_model"] == MODELS["multilingual-e5-small"].model_id
        assert ex["retrievers"]["vector"]["used"] and ex["retrievers"]["keyword"]["used"]
        assert 0.0 < ex["confidence"] <= 1.0
    finally:
        client.delete(f"/collections/{name}")
