"""rag.py's and grounding.py's parts: sentence splitting, context selection within a budget, citation spans
from the real embedding model, unknown markers, the extractive answer, follow-up questions, the re-pack after
a context overflow; the event stream between the services (stack_common.sse: rag's writer, llm_client's reader
of llm-service). (The HTTP flow across both services is in tests/e2e/test_stack.py.)"""
import asyncio

import httpx
import numpy as np
import pytest

from search_service import grounding
from search_service.grounding import (ContextPassage, attribute, extractive_answer, select_context, split_sentences,
                                      strip_unknown_markers)
from search_service.llm_client import LLMClient, LLMRejected, LLMUnavailable
from search_service.rag import build_messages, shrink_budget, standalone_query
from stack_common import sse

PASSAGES = [
    {"id": "vitd", "title": "Vitamin D and fractures", "score": 0.9,
     "text": "Vitamin D supplementation was studied in 2,000 older adults. Daily vitamin D with calcium reduced hip "
             "fractures by a fifth. The trial ran for three years in France."},
    {"id": "statin", "title": "Statins", "score": 0.8,
     "text": "Statins lower LDL cholesterol by blocking HMG-CoA reductase in the liver. Muscle pain is the most "
             "reported side effect. Patients were followed for five years."},
    {"id": "kimchi", "title": "김치", "score": 0.7,
     "text": "김치는 배추를 소금에 절여 발효시킨 음식이다. 발효 과정에서 유산균이 증식한다. 한국의 대표 음식이다."},
]


def _prepared(embedder, query: str, passages=PASSAGES):
    sentences = [[x.text for x in split_sentences(p["text"])] for p in passages]
    vectors = [embedder.encode(ss) for ss in sentences]
    return embedder.encode([query])[0], sentences, vectors


def test_split_sentences_english_korean_offsets_and_abbreviations():
    text = "Smith et al. found it (e.g. in mice). It works! Does it? 김치는 발효 음식이다. 유산균이 증식한다.\nLast line"
    got = split_sentences(text)
    assert [s.text for s in got] == ["Smith et al. found it (e.g. in mice).", "It works!", "Does it?",
                                     "김치는 발효 음식이다.", "유산균이 증식한다.", "Last line"]
    assert all(text[s.start:s.end] == s.text for s in got)
    assert split_sentences("  ... ") == [] and split_sentences("3.5 mg/d of vitamin D") [0].text == "3.5 mg/d of vitamin D"


def test_context_keeps_the_relevant_sentences_in_order_within_the_budget(embedder):
    for query, doc, must in (("Does vitamin D prevent hip fractures?", "vitd", "reduced hip fractures"),
                             ("What side effects do statins have?", "statin", "Muscle pain"),
                             ("김치는 어떻게 발효되나요?", "kimchi", "발효")):
        qvec, sentences, vectors = _prepared(embedder, query)
        two_each = select_context(qvec, PASSAGES, sentences, vectors, budget_tokens=400, per_passage=2)
        best = next(c for c in two_each if c.id == doc)
        assert len(best.sentences) == 2
        assert any(must in s for s in best.sentences), (query, best.sentences)
        ctx = select_context(qvec, PASSAGES, sentences, vectors, budget_tokens=400, per_passage=3)
        assert [c.id for c in ctx] == [p["id"] for p in PASSAGES if p["id"] in {c.id for c in ctx}]   # rank order
        for c in ctx:
            i = [p["id"] for p in PASSAGES].index(c.id)
            assert c.sentences == [s for s in sentences[i] if s in c.sentences]                         # text order
        tight = select_context(qvec, PASSAGES, sentences, vectors, budget_tokens=40, per_passage=3)
        used = sum(grounding.estimate_tokens(f"[{c.id}] {c.title}") + 1 +
                   sum(grounding.estimate_tokens(s) + 1 for s in c.sentences) for c in tight)
        assert 0 < used <= 40 and any(must in s for c in tight for s in c.sentences)


def _context(embedder, query: str) -> tuple[np.ndarray, list[ContextPassage]]:
    qvec, sentences, vectors = _prepared(embedder, query)
    return qvec, select_context(qvec, PASSAGES, sentences, vectors, budget_tokens=1000, per_passage=3)


@pytest.mark.parametrize("answer,cited", [
    ("Taking vitamin D with calcium every day cut hip fractures by about a fifth.", ["vitd"]),
    ("Statins reduce LDL cholesterol. The most common side effect is muscle pain.", ["statin", "statin"]),
    ("김치는 소금에 절인 배추를 발효시킨 음식입니다.", ["kimchi"]),
    ("The Eiffel Tower was finished in 1889. Statins block HMG-CoA reductase in the liver.", ["statin"]),
])
def test_citations_point_at_the_supporting_sources(embedder, answer, cited):
    _, ctx = _context(embedder, "vitamin D statins kimchi")
    sents = split_sentences(answer)
    citations = attribute(answer, embedder.encode([s.text for s in sents]), sents, ctx)
    assert [c.sources[0]["id"] for c in citations] == cited
    for c in citations:
        assert answer[c.start:c.end] == c.text
        assert all(s["score"] >= grounding.SUPPORT_THRESHOLD for s in c.sources)
        src = next(p for p in ctx if p.id == c.sources[0]["id"])
        assert c.sources[0]["sentence"] in src.sentences


def test_unrelated_answers_are_not_supported(embedder):
    _, ctx = _context(embedder, "vitamin D statins kimchi")
    for answer in ("The answer is:", "Paris is the capital of France.", "I like turtles and trains.",
                   "Football is played with eleven players on each side."):
        sents = split_sentences(answer)
        assert attribute(answer, embedder.encode([s.text for s in sents]), sents, ctx) == [], answer


def test_markers_naming_no_source_are_removed():
    text, cited = strip_unknown_markers("Yes [vitd]. Also [doc-1] and [vitd, statin]. No [x, vitd].", {"vitd", "statin"})
    assert text == "Yes [vitd]. Also and [vitd, statin]. No." and cited == ["vitd", "statin"]
    assert grounding.marker_ids("a [x] b [y, z] c[x]") == {"x", "y", "z"}


def test_the_extractive_answer_is_cited_source_text(embedder):
    for query, doc in (("Does vitamin D prevent fractures?", "vitd"), ("statin side effects", "statin")):
        qvec, ctx = _context(embedder, query)
        text, citations = extractive_answer(qvec, ctx)
        assert citations[0].sources[0]["id"] == doc
        for c in citations:
            assert text[c.start:c.end] == c.text == c.sources[0]["sentence"]
            assert c.text in next(p for p in ctx if p.id == c.sources[0]["id"]).sentences


def test_follow_up_questions_are_made_standalone():
    history = (("user", "How do statins lower cholesterol?"), ("assistant", "They block an enzyme."))
    assert standalone_query("What about their side effects?", history) == \
        "How do statins lower cholesterol? What about their side effects?"
    assert standalone_query("그럼 부작용은?", (("user", "스타틴은 무엇인가요?"),)) == "스타틴은 무엇인가요? 그럼 부작용은?"
    assert standalone_query("Does vitamin D prevent hip fractures in older adults?", history) == \
        "Does vitamin D prevent hip fractures in older adults?"              # a question of its own
    assert standalone_query("side effects?", ()) == "side effects?"


def test_messages_carry_the_sources_by_id_and_the_recent_history():
    ctx = [ContextPassage("d0", "T0", 1.0, ["One.", "Two."]), ContextPassage("d1", None, 0.5, ["Three."])]
    history = (("user", "old " * 2000), ("user", "Earlier?"), ("assistant", "Earlier answer."))
    msgs = build_messages("why?", ctx, history)
    assert msgs[0]["role"] == "system"
    assert [m["content"] for m in msgs[1:-1]] == ["Earlier?", "Earlier answer."]     # the long old turn dropped
    assert "[d0] T0\nOne. Two." in msgs[-1]["content"] and "[d1]\nThree." in msgs[-1]["content"]
    assert msgs[-1]["content"].startswith("Context:\n[d0]") and msgs[-1]["content"].endswith("why?\nAnswer in one sentence.")


def test_shrink_budget_cuts_the_overflow_in_real_tokens():
    exc = LLMRejected("llm-service rejected the request (400): prompt too long",
                      details={"prompt_tokens": 2077, "max_new_tokens": 256, "context_length": 2048})
    # estimated: passages 900 of a 1000-token prompt; real prompt 2077 -> ratio 2.077, overflow 285 real tokens
    smaller = shrink_budget(900, 1000, exc)
    assert smaller == int((900 - 285 / 2.077) * 0.9)
    real_after = (1000 - 900 + smaller) * 2.077
    assert real_after + 256 <= 2048                         # the re-packed prompt fits
    assert shrink_budget(900, 1000, LLMRejected("temperature must be <= 2")) is None
    too_big = LLMRejected("prompt too long",
                          details={"prompt_tokens": 3000, "max_new_tokens": 256, "context_length": 2048})
    assert shrink_budget(100, 1000, too_big) is None        # the question alone does not fit: nothing to cut


# --- the event stream (stack_common.sse) -----------------------------------------------------------
def test_sse_wire_format():
    assert sse.encode({"delta": "é"}) == 'data: {"delta":"é"}\n\n'.encode()
    assert sse.encode({"a": [1, None]}, "done") == b'event: done\ndata: {"a":[1,null]}\n\n'
    assert sse.DONE == b"data: [DONE]\n\n"


async def _lines(raw: bytes):
    for line in raw.decode().split("\n"):
        yield line


def _read(raw: bytes) -> list:
    async def go():
        return [e async for e in sse.read_events(_lines(raw))]
    return asyncio.run(go())


def test_sse_reader_round_trip():
    raw = b": comment\n" + sse.encode({"sources": []}, "sources") + sse.encode({"delta": "a"}) + sse.DONE + b"data: {}\n\n"
    assert _read(raw) == [("sources", {"sources": []}), ("message", {"delta": "a"})]   # nothing after [DONE]
    with pytest.raises(sse.IncompleteStream):
        _read(sse.encode({"delta": "a"}))


def _client(body: bytes) -> LLMClient:
    client = LLMClient("http://llm.test")
    client._client = httpx.AsyncClient(base_url="http://llm.test", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})))
    return client


def _stream(body: bytes) -> list:
    async def go():
        client = _client(body)
        try:
            return [c async for c in client.chat_stream([{"role": "user", "content": "q"}])]
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_llm_client_reads_the_stream_to_done():
    chunks = [{"choices": [{"delta": {"content": "a"}}]}, {"choices": [], "usage": {"total_tokens": 3}}]
    assert _stream(b"".join(sse.encode(c) for c in chunks) + sse.DONE) == chunks


def test_llm_client_stream_cut_or_failing_is_unavailable():
    with pytest.raises(LLMUnavailable, match="closed the stream before"):
        _stream(sse.encode({"choices": []}))
    with pytest.raises(LLMUnavailable, match="failed mid-stream: boom"):
        _stream(sse.encode({"error": {"type": "generation_error", "message": "boom"}}) + sse.DONE)


@pytest.mark.parametrize("answer,question,why", [
    ("", "Does vitamin D prevent fractures?", "empty"),
    ("The answer to this question is:", "Does vitamin D prevent fractures?", "stub"),
    ("Yes.", "Does vitamin D prevent fractures?", "stub"),
    ("ADAR1 binds to Dicer to cleave pre-miRNA.", "ADAR1 binds to Dicer to cleave pre-miRNA.", "echo"),
    ("5% of perinatal mortality is attributed to low birth weight.",
     "5% of perinatal mortality is due to low birth weight.", "echo"),
    ("Does vitamin D prevent fractures [doc-1]?", "Does vitamin D prevent fractures?", "echo"),
    ("Yes, obesity is a risk factor for diabetes.", "Is obesity a risk factor for diabetes?", None),
    ("Vitamin D can help prevent fractures by promoting bone mineralization.", "Does vitamin D prevent fractures?", None),
    ("네, 비타민 D는 골절 위험을 낮춥니다.", "비타민 D는 골절 위험을 낮추나요?", None),
    ("Statins block HMG-CoA reductase, which lowers LDL.", "How do statins work?", None),
])
def test_a_text_that_is_no_answer_is_named(answer, question, why):
    assert grounding.not_an_answer(answer, question) == why
