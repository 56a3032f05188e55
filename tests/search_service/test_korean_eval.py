"""The project's Korean evaluation set (scripts/data/korean_eval, SOURCE.md there).

* Its invariants, read with stack_dev.beir exactly as scripts/eval_beir.py reads it (fast, no model): the
  counts, unique ids, one relevant passage per question, passage lengths, every topic covered, and no
  question copying its passage.
* Korean search on it: the corpus ingested into the in-process app (embedded engine, real Redis, real
  models) on a MiniLM and a multilingual-e5-small collection and every question sent: keyword hit@1 must
  stay at or above KEYWORD_HIT1_BAR (measured 0.944, 68/72, when the set was written; the bar is that less
  0.05), and hybrid must never do worse than keyword on either model.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from difflib import SequenceMatcher
from pathlib import Path

import pytest

from stack_dev import beir
from stack_dev.ingest import read_documents
from tests.search_service.service_fixtures import REPO, app_settings, ingest, serve_in_process

DATA = REPO / "scripts" / "data" / "korean_eval"
QRELS = DATA / "qrels" / "test.tsv"
TOPICS = {"history", "geography", "food", "science", "technology", "health", "sports", "arts", "economy",
          "nature", "transport", "culture"}
MIN_PASSAGES, MIN_QUESTIONS = 240, 72
PASSAGE_CHARS = (80, 250)
COPY_RUN = 12                 # a question shares no run of this many characters with its passage
KEYWORD_HIT1_BAR = 0.89
E5_HYBRID_HIT1_BAR = 0.95
HANGUL = re.compile(r"[가-힣]")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dataset():
    return beir.read_corpus(DATA), beir.read_queries(DATA), beir.read_qrels(QRELS)


def test_the_set_reads_with_the_beir_readers_and_keeps_its_invariants(dataset):
    corpus, queries, qrels = dataset
    # unique ids: the readers keep the last of a repeated id, so the files' rows must equal the dicts
    assert len(_lines(DATA / "corpus.jsonl")) == len(corpus) >= MIN_PASSAGES
    assert len(_lines(DATA / "queries.jsonl")) == len(queries) >= MIN_QUESTIONS
    assert QRELS.read_text(encoding="utf-8").splitlines()[0] == "query-id\tcorpus-id\tscore"
    assert sum(len(r) for r in qrels.values()) == len(QRELS.read_text(encoding="utf-8").splitlines()) - 1

    topics = Counter(d["metadata"]["topic"] for d in corpus.values())
    assert set(topics) == TOPICS and min(topics.values()) >= 20, topics
    for did, d in corpus.items():
        assert d["title"].strip() and HANGUL.search(d["text"]), did
        assert PASSAGE_CHARS[0] <= len(d["text"]) <= PASSAGE_CHARS[1], (did, len(d["text"]))

    assert set(qrels) == set(queries), "every question has qrels and every qrels row a question"
    asked = Counter()
    for qid, rels in qrels.items():
        assert list(rels.values()) == [1], f"{qid}: exactly one relevant passage, score 1"
        (did,) = rels
        assert did in corpus, (qid, did)
        q, p = queries[qid], corpus[did]["title"] + " " + corpus[did]["text"]
        assert q.strip() and HANGUL.search(q), qid
        run = SequenceMatcher(None, q, p, autojunk=False).find_longest_match(0, len(q), 0, len(p)).size
        assert run < COPY_RUN, f"{qid} copies {run} characters of {did}"
        asked[corpus[did]["metadata"]["topic"]] += 1
    assert set(asked) == TOPICS and min(asked.values()) >= 6, asked
    assert len({next(iter(r)) for r in qrels.values()}) == len(qrels), "no passage answers two questions"


def _hit1(c, collection: str, mode: str, queries: dict, qrels: dict) -> tuple[float, list]:
    misses = []
    for qid, rels in qrels.items():
        r = c.post(f"/search/{mode}", json={"query": queries[qid], "collection": collection, "limit": 10})
        assert r.status_code == 200, r.text
        ranked = [h["id"] for h in r.json()["results"]]
        if not beir.hit_at(ranked, rels, 1):
            misses.append((qid, queries[qid], next(iter(rels)), ranked[:3]))
    return 1 - len(misses) / len(qrels), misses


@pytest.mark.slow
def test_korean_hybrid_never_does_worse_than_its_keyword_side_on_either_model(tmp_path, redis_url, dataset):
    """Through the service, on both embedding models: keyword hit@1 holds its bar; hybrid (the default fusion)
    is at least as good as keyword alone — on MiniLM because the language gate answers Korean by keyword
    alone (exactly the keyword ranking), on multilingual-e5-small because its dense side knows Korean (hybrid
    hit@1 >= E5_HYBRID_HIT1_BAR, the issue's target; measured 0.986, 71/72)."""
    _, queries, qrels = dataset
    docs = list(read_documents(DATA))            # the documents scripts/eval_beir.py --ingest sends
    settings = app_settings(tmp_path / "data", redis_url, "tko-" + tmp_path.name)
    with serve_in_process(settings) as c:
        for name, model in (("ko", "minilm"), ("ko-e5", "multilingual-e5-small")):
            r = c.post("/collections", json={"name": name, "embedding_model": model})
            assert r.status_code == 201, r.text
            ingest(c, name, docs)
        keyword, misses = _hit1(c, "ko", "keyword", queries, qrels)
        assert keyword >= KEYWORD_HIT1_BAR, f"keyword hit@1 {keyword:.3f} < {KEYWORD_HIT1_BAR}; misses: {misses}"
        minilm, _ = _hit1(c, "ko", "hybrid", queries, qrels)
        assert minilm == keyword, (minilm, keyword)                 # the gate: keyword alone
        e5_keyword, _ = _hit1(c, "ko-e5", "keyword", queries, qrels)
        assert e5_keyword == keyword                                # (the BM25 side does not depend on the model)
        e5, misses = _hit1(c, "ko-e5", "hybrid", queries, qrels)
        assert e5 >= max(keyword, E5_HYBRID_HIT1_BAR), f"e5 hybrid hit@1 {e5:.3f}; misses: {misses}"
