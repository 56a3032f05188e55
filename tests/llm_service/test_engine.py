"""Engine pieces without HTTP: sampling, incremental detokenization with stop strings, chat template,
the ONNX runner's KV cache (cached decode == full recompute)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from llm_service.engine.base import SamplingParams
from llm_service.engine.onnx import OnnxRunner
from llm_service.engine.sampling import apply_presence_frequency, apply_repetition_penalty, sample_token
from llm_service.engine.tokenizer import ChatTemplateError, IncrementalDecoder, Tokenizer
from tests.llm_service.conftest import TINY_NAME


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    d = tiny_model_dir / TINY_NAME
    manifest = json.loads((d / "manifest.json").read_text())
    return d, manifest, Tokenizer(d / manifest["tokenizer_dir"])


def test_greedy_and_degenerate_filters_pick_the_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=1000).astype(np.float32)
    best = int(np.argmax(logits))
    assert sample_token(logits, SamplingParams(temperature=0), rng) == best
    assert sample_token(logits, SamplingParams(temperature=1.5, top_k=1), rng) == best
    assert sample_token(logits, SamplingParams(temperature=1.0, top_p=1e-6), rng) == best


def test_sampling_follows_softmax_and_filters():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    rng = np.random.default_rng(1)
    draws = np.bincount([sample_token(logits, SamplingParams(temperature=1.0), rng) for _ in range(4000)],
                        minlength=4) / 4000
    assert np.allclose(draws, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    top2 = {sample_token(logits, SamplingParams(temperature=1.0, top_k=2), rng) for _ in range(300)}
    assert top2 == {0, 1}
    nucleus = {sample_token(logits, SamplingParams(temperature=1.0, top_p=0.75), rng) for _ in range(300)}
    assert nucleus == {0, 1}          # 0.5 + 0.3 reaches 0.75
    wide = np.random.default_rng(2).normal(size=50_000).astype(np.float32)   # flat: nucleus > 256 candidates
    picks = {sample_token(wide, SamplingParams(temperature=1.0, top_p=0.9), rng) for _ in range(200)}
    assert len(picks) > 150


def test_seed_reproducible():
    logits = np.random.default_rng(3).normal(size=500).astype(np.float32)
    p = SamplingParams(temperature=0.9, top_p=0.9)
    a = [sample_token(logits, p, r) for r in [np.random.default_rng(7)] for _ in range(20)]
    b = [sample_token(logits, p, r) for r in [np.random.default_rng(7)] for _ in range(20)]
    assert a == b


def test_repetition_penalty():
    logits = np.array([2.0, -2.0, 1.0], dtype=np.float32)
    out = apply_repetition_penalty(logits, np.array([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0] and logits.tolist() == [2.0, -2.0, 1.0]


def test_incremental_decoder_releases_text_and_finds_stop_across_tokens(tiny):
    _, _, tok = tiny
    text = "Hello there, general Kenobi! You are a bold one."
    ids = tok.encode(text, add_special_tokens=False)
    dec = IncrementalDecoder(tok)
    assert "".join(dec.add(i)[0] for i in ids) + dec.flush() == tok.decode(ids)
    dec = IncrementalDecoder(tok, stop=("Kenobi!",))
    out, hit = "", False
    for i in ids:
        piece, hit = dec.add(i)
        out += piece
        if hit:
            break
    assert hit and out == tok.decode(ids)[: tok.decode(ids).find("Kenobi!")]


def test_chat_template(tiny):
    _, manifest, tok = tiny
    assert manifest["has_chat_template"] and tok.chat_template
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}])
    assert "What is 2+2?" in text and text.rstrip().endswith("assistant")
    with pytest.raises(ChatTemplateError):
        tok.apply_chat_template([{"role": "user"}])     # no content: the template fails, clearly


def test_kv_cache_decode_equals_full_recompute(tiny):
    d, manifest, tok = tiny
    runner = OnnxRunner(d / manifest["variants"]["fp32"]["path"], "fp32", device="cpu")
    assert runner.provider == "cpu"
    ids = np.array([tok.encode("The cat sat on the mat")], dtype=np.int64)
    n = ids.shape[1]
    full, _ = runner.forward(ids, np.ones_like(ids), np.arange(n)[None], None)
    first, past = runner.forward(ids[:, :-1], np.ones((1, n - 1), np.int64), np.arange(n - 1)[None], None)
    step, _ = runner.forward(ids[:, -1:], np.ones((1, n), np.int64), np.array([[n - 1]]), past)
    assert np.allclose(full, step, atol=1e-4)
    # left padding with the mask gives the same last-token logits
    padded = np.concatenate([np.full((1, 3), manifest["pad_token_id"]), ids], axis=1)
    mask = np.concatenate([np.zeros((1, 3), np.int64), np.ones_like(ids)], axis=1)
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    pad_logits, _ = runner.forward(padded, mask, pos, None)
    assert np.allclose(full, pad_logits, atol=1e-4)


def test_presence_and_frequency_penalties_follow_openais_formula():
    logits = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    counts = (np.array([1, 3]), np.array([2.0, 1.0], dtype=np.float32))     # token 1 twice, token 3 once
    out = apply_presence_frequency(logits, counts, presence=0.5, frequency=0.25)
    assert np.allclose(out, [1.0, 2.0 - 2 * 0.25 - 0.5, 3.0, 4.0 - 0.25 - 0.5]) and logits[1] == 2.0   # a copy
    assert np.allclose(apply_presence_frequency(logits, counts, -1.0, 0.0), [1.0, 3.0, 3.0, 5.0])     # encourages
    assert apply_presence_frequency(logits, None, 1.0, 1.0) is logits
    greedy = SamplingParams(temperature=0, frequency_penalty=2.0)
    assert sample_token(logits, greedy, np.random.default_rng(0), counts=counts) == 2   # 3 -> 2.0: token 2 wins
