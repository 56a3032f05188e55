"""RAG with the real model: search-service (in-process app, real engine, real embedder) asking a real
llm-service process that serves SmolLM2-135M-Instruct as `make run` does, over the project's bundled sample
corpus. What the user receives is checked on a set of questions, not one (a 135M model's answer to a single
prompt is a coin flip): answers that are answers, citations that are spans of the answer and name the
right, returned sources, and a generated answer for most questions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from search_service.core.settings import Settings
from search_service.grounding import not_an_answer
from tests.llm_service.conftest import start_llm
from tests.search_service.service_fixtures import ingest, serve_in_process

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "sample_corpus.jsonl"
QUESTIONS = [   # (question, the document that answers it)
    ("Does vitamin D help prevent fractures in older people?", "s1"),
    ("How do vaccines train the immune system?", "s2"),
    ("Does regular exercise lower blood pressure?", "s5"),
    ("How do statins lower cholesterol?", "s7"),
    ("Why does smoking cause lung cancer?", "s9"),
    ("How does CRISPR edit genes?", "s11"),
]


def test_rag_answers_with_the_real_model_are_cited_and_grounded(smollm2_model_dir, tmp_path_factory, redis_url):
    docs = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    llm = start_llm(tmp_path_factory, smollm2_model_dir.parent, "rag-quality", default_model=smollm2_model_dir.name)
    tmp = tmp_path_factory.mktemp("rag-quality")
    settings = Settings(data_dir=tmp / "data", redis_url=redis_url, cache_enabled=False, llm_url=llm.url,
                        log_json=False)
    try:
        with serve_in_process(settings) as client:
            assert client.post("/collections", json={"name": "sample"}).status_code == 201
            ingest(client, "sample", [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in docs])
            generated = on_topic = 0
            for question, doc in QUESTIONS:
                r = client.post("/rag", json={"collection": "sample", "query": question, "limit": 3})
                assert r.status_code == 200, r.text
                body = r.json()
                sources = {s["id"]: s for s in body["sources"]}
                assert body["citations"], (question, body["answer"])             # every answer is cited
                for c in body["citations"]:
                    assert body["answer"][c["start"]:c["end"]] == c["text"]
                    assert all(s["id"] in sources and s["sentence"] in sources[s["id"]]["sentences"]
                               for s in c["sources"])
                assert not_an_answer(body["answer"], question) is None, (question, body["answer"])
                generated += body["answer_type"] == "generated" and body["grounded"]
                on_topic += doc in {s["id"] for c in body["citations"] for s in c["sources"]}
            print(f"generated and grounded {generated}/6, the answering document cited {on_topic}/6")
            # measured on the Intel/VNNI machine: 5 of 6 each (the model answered the statins question from the
            # Mediterranean-diet abstract, and its citation says so); bars one lower for other CPU kinds' kernels
            assert on_topic >= 4, on_topic           # the citations name the document that answers it
            assert generated >= 3, generated         # the model's own, supported answer for half the questions
    finally:
        llm.stop()
