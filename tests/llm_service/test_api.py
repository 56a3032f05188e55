"""llm-service HTTP API on the tiny model: the app in-process (through an ASGI transport, ``llm_app``), and
a real process (``llm_server``, same settings) for a client hanging up its connection mid-generation (the
server has to notice the socket close)."""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.llm_service.conftest import TINY_NAME


@pytest.fixture(scope="module")
def client(llm_app):
    return llm_app


@pytest.fixture(scope="module")
def proc_client(llm_server):
    """A client of the real service process (``llm_server``)."""
    with httpx.Client(base_url=llm_server.url, timeout=60) as c:
        yield c


def gen(client, **body):
    r = client.post("/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def sse_events(response: httpx.Response) -> list:
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def metric(client, name: str, labels: str = "") -> float:
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + (("{" + labels + "}") if labels else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["default_model"] == TINY_NAME
    ready = r.json()
    assert ready["precision"] == "int8" and ready["precision_source"] == "setting"   # LLM_PRECISION=int8 honoured
    gate = ready["gate"]                     # and the gate's scores on this CPU kind are shown beside it
    assert gate["state"] == "measured" and set(gate["variants"]) == {"fp32", "int8", "w8", "int4"}
    assert gate["chosen"] in gate["variants"] and gate["variants"][gate["chosen"]]["passed"]
    card = client.get("/v1/models").json()["data"][0]
    assert card["id"] == TINY_NAME and card["precision"] == "int8" and card["gate"]["chosen"] == gate["chosen"]


def test_greedy_is_deterministic_and_length_finish(client, tiny_tokenizer):
    prompt = "The capital of France is"
    a = gen(client, prompt=prompt, max_new_tokens=12, temperature=0)
    b = gen(client, prompt=prompt, max_new_tokens=12, temperature=0)
    assert a["text"] == b["text"] and a["text"]
    assert a["finish_reason"] == "length"
    n_prompt = len(tiny_tokenizer.encode(prompt).ids)
    assert a["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 12, "total_tokens": n_prompt + 12}
    assert a["model"] == TINY_NAME and a["precision"] == "int8"


def test_seeded_sampling_is_reproducible(client):
    body = dict(prompt="Once upon a time", max_new_tokens=16, temperature=1.0, top_p=0.9, top_k=50, seed=1234)
    a, b = gen(client, **body), gen(client, **body)
    assert a["text"] == b["text"]
    others = {gen(client, **{**body, "seed": s})["text"] for s in range(1, 6)}
    assert len(others) > 1   # the seed really drives the sampler


def test_stop_string_cuts_the_text(client):
    full = gen(client, prompt="Hello there", max_new_tokens=30, temperature=0, precision="fp32")["text"]
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip(), full
    r = gen(client, prompt="Hello there", max_new_tokens=30, temperature=0, precision="fp32", stop=[stop, "\x00zz"])
    assert r["finish_reason"] == "stop"
    assert r["text"] == full[: full.find(stop)]
    assert r["usage"]["completion_tokens"] < 30


def test_precision_per_request(client):
    r = gen(client, prompt="Hi", max_new_tokens=4, precision="fp32")
    assert r["precision"] == "fp32"
    bad = client.post("/generate", json={"prompt": "Hi", "precision": "int3"})
    assert bad.status_code == 400 and "int3" in bad.json()["error"]["message"]


def test_streaming_is_incremental_and_matches(client):
    body = dict(prompt="Tell me a story", max_new_tokens=20, temperature=0)
    whole = gen(client, **body)
    with client.stream("POST", "/generate", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 10                        # one event per token, not one blob
    assert "".join(c["text"] for c in chunks) == whole["text"]
    assert all(c["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["finish_reason"] == "length" and chunks[-1]["usage"] == whole["usage"]


def test_openai_stream_chunk_format(client):
    with client.stream("POST", "/v1/chat/completions", json={
            "model": TINY_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    first, *middle, usage = events[:-1]
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"
    assert middle[-1]["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert len({e["id"] for e in events[:-1]}) == 1


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": "x", "model": "no-such-model"}, 404, ["no-such-model"]),
    ({"prompt": "x", "model": "../../etc"}, 404, ["unknown model"]),
    ({"prompt": "x", "model": "a/b"}, 404, ["unknown model"]),
    ({"prompt": ""}, 422, ["prompt"]),
    ({"prompt": "x", "max_new_tokens": 0}, 400, ["max_new_tokens", "between 1 and 1024"]),
    ({"prompt": "x", "max_new_tokens": 1025}, 400, ["max_new_tokens", "1024"]),
    ({"prompt": "x", "temperature": 5}, 422, ["temperature"]),
    ({"prompt": "x", "top_p": 0}, 422, ["top_p"]),
    ({"prompt": "x", "top_p": 1.5}, 422, ["top_p"]),
    ({"prompt": "x", "stop": [""]}, 422, ["stop"]),
    ({"max_new_tokens": 3}, 422, ["prompt"]),
])
def test_generate_bad_input(client, body, status, words):
    r = client.post("/generate", json=body)
    assert r.status_code == status, r.text
    msg = r.json()["error"]["message"]
    assert all(w in msg for w in words), msg


def test_prompt_longer_than_context(client, tiny_model_dir):
    ctx = json.loads((tiny_model_dir / TINY_NAME / "manifest.json").read_text())["context_length"]
    r = client.post("/generate", json={"prompt": "word " * (ctx + 10), "max_new_tokens": 8})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "context length" in msg and str(ctx) in msg and "max_new_tokens is 8" in msg
    details = r.json()["error"]["details"]            # structured, for clients that re-pack (search's RAG)
    assert details["context_length"] == ctx and details["max_new_tokens"] == 8
    assert details["prompt_tokens"] + 8 > ctx


@pytest.mark.parametrize("messages", [
    [],
    [{"role": "wizard", "content": "hi"}],
    [{"content": "hi"}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
    "hello",
])
def test_malformed_messages(client, messages):
    r = client.post("/v1/chat/completions", json={"model": TINY_NAME, "messages": messages})
    assert r.status_code == 422, r.text
    assert "messages" in r.json()["error"]["message"]


def test_oversized_body_is_413(client):
    r = client.post("/generate", json={"prompt": "x" * 70_000})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"


def test_models_and_admin_listing(client):
    data = client.get("/v1/models").json()
    assert data["object"] == "list" and TINY_NAME in [m["id"] for m in data["data"]]
    admin = client.get("/admin/models").json()
    assert admin["default"] == TINY_NAME and TINY_NAME in admin["on_disk"]


def test_metrics_after_requests(client):
    gen(client, prompt="metrics please", max_new_tokens=3)
    text = client.get("/metrics").text
    for name in ("llm_request_success_total", "llm_time_to_first_token_seconds_bucket",
                 "llm_inter_token_latency_seconds_bucket", "llm_e2e_request_latency_seconds_bucket",
                 "llm_request_queue_time_seconds_bucket", "llm_num_requests_waiting", "llm_num_requests_running",
                 "llm_prompt_tokens_total", "llm_generation_tokens_total", "model_load_duration_seconds_bucket",
                 "gpu_memory_usage_bytes"):
        assert name in text, name
    assert metric(client, "llm_request_success_total", 'finish_reason="length"') >= 1
    assert metric(client, "gpu_memory_usage_bytes") == 0     # CPU


def _wait_cancelled(client, before: float) -> float:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = metric(client, "llm_request_failure_total", 'reason="cancelled"')
        if now > before and metric(client, "llm_num_requests_running") == 0:
            return now
        time.sleep(0.05)
    state = [line for line in client.get("/metrics").text.splitlines() if line.startswith("llm_")]
    raise AssertionError(f"generation was not cancelled after the client left: {state}")


def test_client_disconnect_cancels_stream(proc_client, llm_server):
    client = proc_client                             # the process's metrics
    before = metric(client, "llm_request_failure_total", 'reason="cancelled"')
    tokens_before = metric(client, "llm_generation_tokens_total")
    with httpx.Client(base_url=llm_server.url, timeout=30) as c2:
        with c2.stream("POST", "/generate", json={"prompt": "go on", "max_new_tokens": 1000, "stream": True,
                                                  "precision": "fp32"}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    break      # first token seen: hang up
    _wait_cancelled(client, before)
    assert metric(client, "llm_generation_tokens_total") - tokens_before < 1000


def test_client_disconnect_cancels_non_stream(proc_client, llm_server):
    client = proc_client                             # the process's metrics
    before = metric(client, "llm_request_failure_total", 'reason="cancelled"')
    tokens_before = metric(client, "llm_generation_tokens_total")
    body = json.dumps({"prompt": "go on", "max_new_tokens": 1000, "precision": "fp32"}).encode()
    sock = socket.create_connection(("127.0.0.1", llm_server.port))
    sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    deadline = time.monotonic() + 20
    while metric(client, "llm_num_requests_running") < 1:   # decoding has started
        assert time.monotonic() < deadline
        time.sleep(0.005)
    sock.close()                                             # hang up mid-generation
    _wait_cancelled(client, before)
    assert metric(client, "llm_generation_tokens_total") - tokens_before < 1000


def test_tokenize_and_detokenize_round_trip(client, tiny_tokenizer):
    c = client
    for text in ("The sky is blue.", "서울의 지하철 🙂", "a" * 50):
        r = c.post("/tokenize", json={"prompt": text})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tokens"] == tiny_tokenizer.encode(text).ids and body["count"] == len(body["tokens"])
        assert body["model"] == TINY_NAME and body["max_model_len"] > body["count"]
        back = c.post("/detokenize", json={"tokens": body["tokens"]}).json()["prompt"]
        assert back.strip() == text
    chat = c.post("/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    prompt = c.post("/detokenize", json={"tokens": chat["tokens"]}).json()["prompt"]
    assert "Hi" in prompt and chat["count"] > len(tiny_tokenizer.encode("Hi").ids)   # the chat template around it
    assert c.post("/tokenize", json={"prompt": "x", "messages": [{"role": "user", "content": "x"}]}).status_code == 422
    assert c.post("/tokenize", json={"prompt": "x", "model": "nope"}).status_code == 404
    r = c.post("/detokenize", json={"tokens": [1, 10**9]})
    assert r.status_code == 422 and "outside the vocabulary" in r.json()["error"]["message"]
