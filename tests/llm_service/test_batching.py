"""Dynamic batching: batched greedy == single greedy (padding and joining mid-batch change nothing),
requests really share decode steps, and a full queue answers 429 with Retry-After. The HTTP tests serve the
app in-process (through an ASGI transport, which streams responses and handles requests concurrently)."""
from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from llm_service.engine.base import GenerationRequest, SamplingParams
from llm_service.engine.batching import AdmissionGate, BatchEngine
from llm_service.engine.onnx import OnnxRunner
from llm_service.engine.tokenizer import Tokenizer
from stack_common.errors import Overloaded
from stack_common.http_errors import error_headers, http_status
from tests.llm_service.conftest import TINY_NAME, app_settings, serve_in_process

PROMPTS = ["Hello world", "The quick brown fox jumps over the lazy dog because", "a",
           "Once upon a time in a land far away there lived", "1 2 3 4", "Why is the sky blue?"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    d = tiny_model_dir / TINY_NAME
    manifest = json.loads((d / "manifest.json").read_text())
    return d, manifest, Tokenizer(d / manifest["tokenizer_dir"])


def make_engine(tiny, precision="fp32", **kw) -> BatchEngine:
    d, manifest, tok = tiny
    runner = OnnxRunner(d / manifest["variants"][precision]["path"], precision, device="cpu")
    return BatchEngine(runner, tok, pad_token_id=manifest["pad_token_id"], **kw)


async def run(engine, tok, prompt, n, eos=frozenset(), **params):
    ids = []
    last = None
    async for ev in engine.generate(GenerationRequest(tok.encode(prompt), SamplingParams(max_new_tokens=n, **params),
                                                      eos)):
        ids += ev.token_ids
        last = ev
    return ids, last.finish_reason


async def test_one_wave_shares_decode_steps_and_matches_single(tiny):
    _, _, tok = tiny
    engine = make_engine(tiny, max_batch_size=8, batch_wait_ms=300)
    try:
        singles = [await run(engine, tok, p, 12, temperature=0) for p in PROMPTS]
        steps_before = engine.steps
        batched = await asyncio.gather(*[run(engine, tok, p, 12, temperature=0) for p in PROMPTS])
        assert batched == singles
        # 6 requests x 12 tokens decoded in 12 forward passes (1 prefill + 11 steps), not 72
        assert engine.steps - steps_before == 12
    finally:
        engine.close()


async def test_joining_mid_batch_and_leaving_early_change_nothing(tiny):
    _, _, tok = tiny
    engine = make_engine(tiny, max_batch_size=4, batch_wait_ms=0)
    lengths = [30, 5, 17, 40, 9, 25]     # rows finish at different steps; more requests than slots
    try:
        singles = [await run(engine, tok, p, n, temperature=0) for p, n in zip(PROMPTS, lengths)]

        async def later(i):
            await asyncio.sleep(0.002 * i)   # arrive while others decode: join at a step boundary
            return await run(engine, tok, PROMPTS[i], lengths[i], temperature=0)

        got = await asyncio.gather(*[later(i) for i in range(len(PROMPTS))])
        assert got == singles
        assert all(len(ids) == n and fr == "length" for (ids, fr), n in zip(got, lengths))
        # seeded sampling is per row too: same seed, same text, whatever the batch
        s1 = await run(engine, tok, "seeded", 15, temperature=0.9, top_p=0.95, seed=5)
        s2 = await asyncio.gather(run(engine, tok, "seeded", 15, temperature=0.9, top_p=0.95, seed=5),
                                  run(engine, tok, "noise", 15, temperature=1.0, seed=6))
        assert s2[0] == s1
    finally:
        engine.close()


async def test_gate_rejects_when_queue_full(tiny):
    _, _, tok = tiny
    gate = AdmissionGate(max_queue=0, retry_after_s=3)
    engine = make_engine(tiny, gate=gate)
    try:
        with pytest.raises(Overloaded) as err:
            engine.submit(GenerationRequest(tok.encode("x"), SamplingParams(max_new_tokens=2)))
        assert http_status(err.value) == 429 and error_headers(err.value) == {"Retry-After": "3"}
    finally:
        engine.close()


def test_concurrent_http_requests_equal_single(llm_app):
    """N clients at once over HTTP: all answered, each exactly as when sent alone (fp32)."""
    def ask(prompt):
        r = llm_app.post("/generate", json={"prompt": prompt, "max_new_tokens": 16, "temperature": 0,
                                            "precision": "fp32"})
        assert r.status_code == 200, r.text
        return r.json()["text"]

    singles = [ask(p) for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        assert list(pool.map(ask, PROMPTS)) == singles


def test_queue_full_gets_429_with_retry_after(tiny_model_dir):
    """One slot, one queue place: a running stream and a waiting one fill them; every further request,
    streaming or not, gets 429 + Retry-After at once; the two admitted ones are unaffected."""
    settings = app_settings(tiny_model_dir, default_model=TINY_NAME, max_batch_size=1, max_queue=1, retry_after_s=2,
                            batch_wait_ms=0, max_new_tokens_limit=2000)
    long_body = {"prompt": "hi", "max_new_tokens": 2000, "stream": True}
    with serve_in_process(settings) as client:
        clients = [client] * 3        # one client: each request is handled on its own by the app
        with clients[0].stream("POST", "/generate", json=long_body) as running:
            # keep one line iterator alive: a response's body is read by one iterator (httpx)
            lines = running.iter_lines()
            first = next(lines)
            assert first.startswith("data: ") and '"text"' in first
            with clients[1].stream("POST", "/generate", json=long_body) as waiting:
                assert waiting.status_code == 200          # admitted: it waits for the slot
                deadline = time.monotonic() + 20
                while "llm_num_requests_waiting 1.0" not in clients[2].get("/metrics").text:
                    assert time.monotonic() < deadline, [ln for ln in clients[2].get("/metrics").text.splitlines()
                                                         if ln.startswith(("llm_num", "llm_request_"))]
                    time.sleep(0.01)
                refused = [clients[2].post("/generate", json={"prompt": "hi", "max_new_tokens": 5}),
                           clients[2].post("/v1/completions", json={"model": TINY_NAME, "prompt": "hi"}),
                           clients[2].post("/generate", json={"prompt": "hi", "max_new_tokens": 5, "stream": True})]
                for r in refused:
                    assert r.status_code == 429, r.text
                    assert r.headers["retry-after"] == "2" and r.json()["error"]["type"] == "overloaded"
                    assert "max_queue=1" in r.json()["error"]["message"]
                more = [next(lines) for _ in range(20)]
                assert not any('"error"' in ln or "[DONE]" in ln for ln in more)   # the running stream goes on
        # both admitted streams were dropped by closing them before their end (the transport cancels the
        # app's handling of them, as a server does when the client hangs up); the slot frees, requests pass again
        deadline = time.monotonic() + 20
        while True:
            r = clients[2].post("/generate", json={"prompt": "hi", "max_new_tokens": 3})
            if r.status_code == 200:
                break
            assert r.status_code == 429 and time.monotonic() < deadline, r.text
            time.sleep(0.05)
        line = next(ln for ln in clients[2].get("/metrics").text.splitlines()
                    if ln.startswith('llm_request_failure_total{reason="overloaded"}'))
        assert float(line.split()[-1]) >= 3


async def test_a_constrained_row_shares_the_batch_and_changes_no_other_row(tiny):
    """Grammar masks are per row: unconstrained rows decode exactly as alone, in the same forward passes as
    the constrained one, which stops by itself when its grammar is complete."""
    from llm_service.engine.grammar import GrammarCompiler, GrammarSpec

    _, manifest, tok = tiny
    grammars = GrammarCompiler(tok.to_json(), frozenset(manifest["eos_token_ids"]))
    spec = GrammarSpec.json_schema({"type": "object", "additionalProperties": False, "required": ["n"],
                                    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}})
    engine = make_engine(tiny, max_batch_size=8, batch_wait_ms=300)
    try:
        singles = [await run(engine, tok, p, 12, temperature=0) for p in PROMPTS[:3]]

        row = grammars.constraint(spec)          # built first: all four rows arrive within the batch wait

        async def constrained():
            req = GenerationRequest(tok.encode("JSON:"), SamplingParams(max_new_tokens=40, temperature=1.0, seed=3),
                                    frozenset(), row)
            ids, last = [], None
            async for ev in engine.generate(req):
                ids += ev.token_ids
                last = ev
            return tok.decode(ids), last.finish_reason

        steps_before = engine.steps
        *batched, (text, finish) = await asyncio.gather(*[run(engine, tok, p, 12, temperature=0) for p in PROMPTS[:3]],
                                                        constrained())
        assert batched == singles
        assert finish == "stop" and json.loads(text)["n"] in range(10), text
        assert engine.steps - steps_before == 12        # one shared decode loop, not one per row
    finally:
        engine.close()
