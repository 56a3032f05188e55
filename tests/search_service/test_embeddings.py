"""search_service.embeddings: the real MiniLM int8 ONNX model (session fixture ``embedder``)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from search_service.embedding_models import minilm_dir
from search_service.embeddings import DIM, Embedder, length_groups

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Vitamin D deficiency is associated with an increased risk of fractures.",
    "The stock market fell sharply after the interest rate announcement.",
    "Aspirin reduces the risk of heart attack in some patients.",
    "검색 엔진은 문서를 빠르게 찾아 준다.",
]


def test_shape_dtype_and_normalised(embedder):
    assert embedder.dim == DIM == 384
    assert embedder.model_id.startswith("sentence-transformers/all-MiniLM-L6-v2")
    out = embedder.encode(SENTENCES)
    assert out.shape == (len(SENTENCES), 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)
    assert np.isfinite(embedder.encode([""])).all()


def test_order_is_kept_although_sorted_by_length(embedder):
    texts = ["short", "a much longer sentence about proteins and the cells that make them " * 3, "mid size text"]
    batch = embedder.encode(texts, batch_size=2)
    singles = np.stack([embedder.encode([t])[0] for t in texts])
    sims = batch @ singles.T
    # each row is its own text's vector (dynamic int8 quantizes activations per call, so a one-word
    # text batched with a long one moves a little: cosine ~0.98, not 1)
    assert (sims.argmax(axis=1) == np.arange(len(texts))).all()
    assert np.diag(sims).min() > 0.97, np.diag(sims)


def test_semantic_sanity(embedder):
    a, para, other = embedder.encode([
        "How do I reset my password?",
        "What are the steps to change my login password?",
        "The weather in Paris is sunny today.",
    ])
    assert float(a @ para) > float(a @ other) + 0.3


@pytest.fixture(scope="module")
def fp32_reference():
    """The fp32 sentence-transformers model (torch), the reference the int8 ONNX must match."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("sentence_transformers")
    torch.set_num_threads(1)
    model = st.SentenceTransformer(str(minilm_dir()), device="cpu")
    assert model.max_seq_length == 256
    return model


def test_parity_with_fp32_sentence_transformers(embedder, fp32_reference):
    ref = fp32_reference.encode(SENTENCES, normalize_embeddings=True)
    got = embedder.encode(SENTENCES)          # each in its own ORT call (the lengths differ by > 15 %)
    cos = (ref * got).sum(axis=1)
    # int8 activations are quantized per call; the out-of-domain Korean sentence is the worst (~0.976)
    assert cos.min() > 0.97 and cos[:4].min() > 0.985, cos


async def test_micro_batched_queries_equal_single_encoding(embedder):
    before = embedder.batches_run
    queries = [f"query number {i} about {w}" for i, w in enumerate(["cells", "genes", "vitamin", "tumour"] * 4)]
    got = await asyncio.gather(*(embedder.embed_query(q) for q in queries))
    ran = embedder.batches_run - before
    assert ran < len(queries)       # concurrent calls shared ORT calls
    for q, v in zip(queries, got):
        assert v.shape == (384,) and v.dtype == np.float32
        # dynamic int8 quantizes activations per call, so batch companions shift results a little
        assert float(v @ embedder.encode([q])[0]) > 0.98


def test_length_groups_bound_padding_and_size():
    assert length_groups([], 8) == []
    assert length_groups([20], 8) == [(0, 1)]
    assert length_groups([20, 21, 22, 23], 8) == [(0, 4)]             # 4 x 23 = 92 <= 1.15 x 86
    assert length_groups([10, 30], 8) == [(0, 1), (1, 2)]             # 60 padded for 40 real: apart
    assert length_groups([22] * 10, 4) == [(0, 4), (4, 8), (8, 10)]    # at most max_size each
    assert length_groups([10, 11, 40, 41, 256], 8, slack=0.15) == [(0, 2), (2, 4), (4, 5)]
    lengths = sorted([7, 9, 12, 12, 15, 18, 22, 25, 31, 33, 47, 64, 64, 120, 256, 256])
    groups = length_groups(lengths, 5)
    assert groups[0][0] == 0 and groups[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))            # contiguous, no gaps
    for start, end in groups:
        part = lengths[start:end]
        assert len(part) <= 5 and len(part) * max(part) <= 1.15 * sum(part) + 1e-9


async def test_a_short_query_is_answered_before_a_long_one_in_the_same_batch(embedder):
    long_text = "Vitamin D and calcium supplementation in older adults and fracture risk. " * 20
    short = asyncio.ensure_future(embedder.embed_query("vitamin d"))
    long = asyncio.ensure_future(embedder.embed_query(long_text))     # same micro-batch, ~250 tokens
    done, _ = await asyncio.wait({short, long}, return_when=asyncio.FIRST_COMPLETED)
    assert short in done and not long.done()     # delivered when its own ORT call ended
    assert float(short.result() @ embedder.encode(["vitamin d"])[0]) > 0.9999
    assert float((await long) @ embedder.encode([long_text])[0]) > 0.9999


async def test_micro_batches_respect_max_batch():
    emb = Embedder.load("minilm", MODELS_DIR, max_batch=4, batch_wait_ms=5.0)
    try:
        out = await asyncio.gather(*(emb.embed_query(f"text {i}") for i in range(10)))
        assert len(out) == 10 and emb.batches_run >= 3     # 10 queries, at most 4 per micro-batch
        single = await emb.embed_query("text 3")            # alone: still answers
        assert float(single @ out[3]) > 0.98                 # (int8 activations: batch mates move it a little)
    finally:
        emb.close()
    with pytest.raises(RuntimeError):
        await emb.embed_query("closed")


async def test_query_cache_skips_the_model_for_a_repeated_text_and_stays_bounded():
    emb = Embedder.load("minilm", MODELS_DIR, query_cache=2)
    try:
        first = await emb.embed_query("vitamin d and fractures")
        ran = emb.batches_run
        again = await emb.embed_query("vitamin d and fractures")
        assert emb.batches_run == ran and emb.query_cache_hits == 1 and again is first
        assert not again.flags.writeable                      # shared with the cache: read-only
        await emb.embed_query("second text")
        await emb.embed_query("third text")                   # evicts the oldest
        await emb.embed_query("vitamin d and fractures")
        assert emb.batches_run == ran + 3 and len(emb._query_cache) == 2
    finally:
        emb.close()
    off = Embedder.load("minilm", MODELS_DIR)
    try:
        await off.embed_query("same")
        await off.embed_query("same")
        assert off.batches_run == 2 and off.query_cache_hits == 0       # off by default in the class
    finally:
        off.close()


def test_max_tokens_truncates_documents_and_keeps_the_final_sep(embedder):
    long = "protein " * 300                            # one token per word: [CLS] + 300 + [SEP]
    short = "protein " * 126                           # what 128 tokens keep: [CLS] + 126 + [SEP]
    assert embedder.token_count(short) == 128
    cut = embedder.encode([long], max_tokens=128)[0]
    assert float(cut @ embedder.encode([short])[0]) > 0.9999
    assert float(cut @ embedder.encode([long])[0]) < 0.9999          # the 256-token vector differs
    assert float(embedder.encode([long], max_tokens=256)[0] @ embedder.encode([long])[0]) > 0.9999


def test_long_text_is_truncated_to_256_tokens(embedder):
    long = "Proteins fold into complex three dimensional structures. " * 400
    assert embedder.token_count(long) == 256
    v = embedder.encode([long])[0]
    assert np.isfinite(v).all() and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    # what lies past the limit does not change the vector
    assert float(v @ embedder.encode([long + " unrelated tail about football " * 50])[0]) > 0.9999


def test_an_unknown_model_is_refused_naming_the_available_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown embedding model 'nope'.*minilm.*multilingual-e5-small"):
        Embedder.load("nope", tmp_path)
