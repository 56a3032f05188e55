"""An embedding model per collection, over HTTP: chosen at creation, recorded, used for ingestion and search,
validated (unknown -> 422 naming the available ones), and a collection whose model this process does not load
answers 503 (never a 500) until a process that loads it opens the same data — with nothing lost."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from search_service.core.settings import Settings
from tests.search_service.service_fixtures import app_settings, ingest, korean_subset as _korean, serve_in_process


def test_a_collection_records_and_uses_its_model(client, unique_name):
    r = client.post("/collections", json={"name": unique_name, "embedding_model": "multilingual-e5-small"})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["embedding_model"] == "multilingual-e5-small" and info["model_loaded"] and info["model_matches"]
    assert info["model_id"].startswith("intfloat/multilingual-e5-small") and info["dim"] == 384
    emb = info["embedding"]
    assert "Hangul" in emb["scripts"] and "Latin" in emb["scripts"]
    assert (emb["query_prefix"], emb["passage_prefix"]) == ("query: ", "passage: ") and emb["max_tokens"] == 512
    listed = {c["name"]: c for c in client.get("/collections").json()["collections"]}
    assert listed[unique_name]["embedding_model"] == "multilingual-e5-small"

    docs, questions = _korean()
    ingest(client, unique_name, docs)
    hits = 0
    for q in questions:          # the vector side alone answers Korean questions with e5 (MiniLM: ~0.04 hit@1)
        top = client.post("/search/vector", json={"query": q["query"], "collection": unique_name, "limit": 1}).json()
        hits += top["results"][0]["id"] == q["relevant"]
    assert len(questions) >= 20 and hits / len(questions) >= 0.85, (hits, len(questions))

    default = client.post("/collections", json={"name": unique_name + "-d"}).json()
    assert default["embedding_model"] == "minilm" and default["embedding"]["scripts"] == ["Latin"]
    client.delete(f"/collections/{unique_name}-d")


def test_an_unknown_model_is_422_naming_the_available_ones(client, unique_name):
    for bad in ("bert-base", "MINILM", 3):
        r = client.post("/collections", json={"name": unique_name, "embedding_model": bad})
        assert r.status_code == 422, r.text
        msg = r.json()["error"]["message"]
        assert "embedding_model" in msg and "minilm" in msg and "multilingual-e5-small" in msg, msg
    assert client.get(f"/collections/{unique_name}").status_code == 404        # nothing was created


def test_a_collection_whose_model_is_not_loaded_answers_503_and_nothing_is_lost(tmp_path, redis_url):
    data = tmp_path / "data"
    docs, questions = _korean(2)
    with serve_in_process(app_settings(data, redis_url, "tmodels-" + tmp_path.name)) as c:
        assert c.post("/collections", json={"name": "ko", "embedding_model": "multilingual-e5-small"}).status_code == 201
        ingest(c, "ko", docs)
        before = c.post("/search/hybrid", json={"query": questions[0]["query"], "collection": "ko"}).json()

    only_minilm = app_settings(data, redis_url, "tmodels-" + tmp_path.name, embedding_models="minilm")
    with serve_in_process(only_minilm) as c:
        assert c.get("/readyz").status_code == 200                            # the process itself is fine
        info = c.get("/collections/ko").json()
        assert info["embedding_model"] == "multilingual-e5-small" and info["model_loaded"] is False
        assert info["documents"] == len(docs)
        for path, body in [("/search/hybrid", {"query": "김치", "collection": "ko"}),
                           ("/search/vector", {"query": "김치", "collection": "ko"}),
                           ("/collections/ko/documents", {"documents": [{"id": "x", "text": "김치"}]})]:
            r = c.post(path, json=body)
            assert r.status_code == 503, r.text
            msg = r.json()["error"]["message"]
            assert "multilingual-e5-small" in msg and "SEARCH_EMBEDDING_MODELS" in msg, msg
        r = c.post("/collections", json={"name": "ko2", "embedding_model": "multilingual-e5-small"})
        assert r.status_code == 503 and "not loaded" in r.json()["error"]["message"]
        assert c.get("/collections/ko/documents/" + docs[0]["id"]).status_code == 200    # reads need no model

    with serve_in_process(app_settings(data, redis_url, "tmodels-" + tmp_path.name)) as c:
        after = c.post("/search/hybrid", json={"query": questions[0]["query"], "collection": "ko"}).json()
        assert [h["id"] for h in after["results"]] == [h["id"] for h in before["results"]]


def test_settings_name_the_available_models():
    assert Settings().embedding_model_keys == ["minilm", "multilingual-e5-small"]
    assert Settings(embedding_models=" multilingual-e5-small , minilm,minilm").embedding_model_keys == [
        "multilingual-e5-small", "minilm"]
    with pytest.raises(ValidationError, match=r"embedding_models: unknown \['bge'\]; available: \['minilm', "
                                              r"'multilingual-e5-small'\]"):
        Settings(embedding_models="minilm,bge")
    with pytest.raises(ValidationError, match="embedding_model 'multilingual-e5-small' must be one of"):
        Settings(embedding_models="minilm", embedding_model="multilingual-e5-small")


def test_the_default_alpha_is_the_collection_models_and_a_request_or_setting_overrides_it(client, unique_name,
                                                                                       tmp_path, redis_url):
    """Hybrid weights without alpha/weights in the request: the collection's model's ``fusion_alpha`` (MiniLM's
    vector side is weaker than BM25 on SciFact, e5's a little stronger); a request's alpha wins; so does
    SEARCH_ALPHA for every collection. The explain output shows the weights the fusion used."""
    from search_service.embedding_models import MODELS

    docs = [{"id": "a", "text": "vitamin D and bone fractures"}, {"id": "b", "text": "sleep and memory"}]

    def weights(c, name, **extra) -> dict:
        body = {"query": "vitamin D", "collection": name, "explain": True, **extra}
        r = c.post("/search/hybrid", json=body)
        assert r.status_code == 200, r.text
        ex = r.json()["explain"]["retrievers"]
        return {k: round(ex[k]["weight"], 6) for k in ("vector", "keyword")}

    names = {m: f"{unique_name}-{i}" for i, m in enumerate(("minilm", "multilingual-e5-small"))}
    try:
        for model, name in names.items():
            assert client.post("/collections", json={"name": name, "embedding_model": model}).status_code == 201
            ingest(client, name, docs)
            a = MODELS[model].fusion_alpha
            assert weights(client, name) == {"vector": a, "keyword": round(1 - a, 6)}, model
            assert weights(client, name, alpha=0.3) == {"vector": 0.3, "keyword": 0.7}
        assert MODELS["minilm"].fusion_alpha != MODELS["multilingual-e5-small"].fusion_alpha
    finally:
        for name in names.values():
            client.delete(f"/collections/{name}")
    with serve_in_process(app_settings(tmp_path / "data", redis_url, unique_name, alpha=0.3)) as c:
        for model, name in names.items():
            c.post("/collections", json={"name": name, "embedding_model": model})
            ingest(c, name, docs)
            assert weights(c, name) == {"vector": 0.3, "keyword": 0.7}, model
