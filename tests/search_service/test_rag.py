"""rag.py's pure parts: passage packing within a budget and the re-pack after a context overflow; the
event stream between the services (stack_common.sse: rag's writer, llm_client's reader of llm-service).
(The HTTP flow across both services is in tests/e2e/test_stack.py.)"""
import asyncio

import httpx
import pytest

from search_service.llm_client import LLMClient, LLMRejected, LLMUnavailable
from search_service.rag import CHARS_PER_TOKEN, build_messages, pack_passages, shrink_budget
from stack_common import sse


def _r(i: int, words: int) -> dict:
    return {"id": f"d{i}", "title": f"T{i}", "text": " ".join(["word"] * words), "score": 1 - i / 10}


def test_pack_keeps_rank_order_and_the_budget():
    results = [_r(i, 100) for i in range(10)]
    packed = pack_passages(results, budget_tokens=400)
    assert [p["id"] for p in packed] == [f"d{i}" for i in range(len(packed))]
    used = sum(len(p["text"]) + len(f"[{p['id']}] {p['title']}") + 2 for p in packed)
    assert used <= 400 * CHARS_PER_TOKEN
    assert 2 <= len(packed) < 10


def test_pack_cuts_the_last_passage_at_a_word_when_enough_fits():
    packed = pack_passages([_r(0, 30), _r(1, 2000)], budget_tokens=200)
    assert [p["id"] for p in packed] == ["d0", "d1"]
    assert packed[1]["text"].endswith("…") and "wor …" not in packed[1]["text"]


def test_messages_tag_each_passage_with_its_id():
    msgs = build_messages("why?", pack_passages([_r(0, 5), _r(1, 5)], 100))
    assert msgs[0]["role"] == "system" and "[doc-1]" in msgs[0]["content"]
    assert "[d0] T0" in msgs[1]["content"] and "[d1] T1" in msgs[1]["content"]
    assert msgs[1]["content"].endswith("Question: why?")


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
