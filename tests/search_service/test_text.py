"""search_service.text: analyzer behaviour, hashing, BM25 weights, and the rank-bm25 oracle on the engine."""
from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from pathlib import Path

import pytest
from rank_bm25 import BM25Okapi

from search_service.store import Point, make_store
from search_service.store.base import SparseVector
from search_service.text import DEFAULT_B, DEFAULT_K1, Analyzer, BM25Encoder, term_id

SCIFACT = Path("/work/shared/data/beir/scifact")
if not SCIFACT.is_dir():
    SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "beir" / "scifact"


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer()


# ---------------------------------------------------------------- English
def test_english_lowercase_stopwords_and_stemming(analyzer):
    assert analyzer.tokens("The Proteins were RUNNING in the studies!") == ["protein", "run", "studi"]
    # inflections meet on one stem; stopwords never become terms
    assert analyzer.tokens("connected") == analyzer.tokens("connection") == analyzer.tokens("connecting")
    assert analyzer.tokens("the of and is are was to be") == []
    assert analyzer.tokens("") == []


def test_english_splits_on_punctuation_keeps_numbers(analyzer):
    assert analyzer.tokens("COVID-19, IL-6/TNF_alpha") == ["covid", "19", "il", "6", "tnf", "alpha"]


# ---------------------------------------------------------------- Korean
def test_korean_particles_and_endings_dropped(analyzer):
    assert analyzer.tokens("검색했다") == ["검색"]
    assert analyzer.tokens("검색을") == ["검색"]
    assert set(analyzer.tokens("검색했다")) & set(analyzer.tokens("검색"))
    toks = analyzer.tokens("나는 학교에 갔다")
    assert "학교" in toks and "에" not in toks and "는" not in toks


def test_korean_verb_and_adjective_stems(analyzer):
    # different endings of one verb share its stem term
    assert set(analyzer.tokens("밥을 먹었다")) == set(analyzer.tokens("밥을 먹는다")) == {"밥", "먹"}


def test_mixed_scripts(analyzer):
    toks = analyzer.tokens("BM25 검색 엔진을 사용했습니다 with Qdrant and proteins")
    assert toks == ["bm25", "검색", "엔진", "사용", "qdrant", "protein"]
    # a Latin word glued to a Korean particle gives the same term as the English path
    assert analyzer.tokens("Qdrant로 검색했다") == ["qdrant", "검색"]
    assert analyzer.tokens("Proteins를") == analyzer.tokens("proteins")


def test_deterministic(analyzer):
    text = "Kiwi 형태소 분석기는 빠르다. The analyzers are deterministic; 검색했다."
    first = analyzer.tokens(text)
    assert all(Analyzer().tokens(text) == first for _ in range(3))


# ---------------------------------------------------------------- hashing and BM25 weights
def test_term_ids_are_stable_32_bit_hashes():
    for tok in ["protein", "검색", "bm25", ""]:
        expect = int.from_bytes(hashlib.blake2b(tok.encode("utf-8"), digest_size=4).digest(), "little")
        assert term_id(tok) == expect
        assert 0 <= term_id(tok) < 2 ** 32
    # pinned values: every replica and every release must agree
    assert term_id("protein") == 3515100375
    assert term_id("검색") == 3938192417
    assert len({term_id(f"w{i}") for i in range(10_000)}) == 10_000


def test_doc_stats_and_weights_formula(analyzer):
    enc = BM25Encoder(analyzer, k1=1.5, b=0.75)
    tfs, dl = enc.doc_stats("Proteins bind proteins; the protein binds DNA.")
    assert dl == 6     # protein bind protein protein bind dna
    assert tfs == {term_id("protein"): 3, term_id("bind"): 2, term_id("dna"): 1}
    vec = enc.encode_doc(tfs, dl, avgdl=4.0)
    assert vec.indices == sorted(vec.indices) and len(set(vec.indices)) == len(vec.indices)
    got = dict(zip(vec.indices, vec.values))
    for tid, tf in tfs.items():
        expect = tf * (1.5 + 1) / (tf + 1.5 * (1 - 0.75 + 0.75 * 6 / 4.0))
        assert got[tid] == pytest.approx(expect, rel=1e-12)
    # b = 0: no length normalisation; k1 = 0: binary
    assert BM25Encoder(analyzer, k1=1.2, b=0.0).weight(2, 100, 5) == pytest.approx(2 * 2.2 / (2 + 1.2))
    assert BM25Encoder(analyzer, k1=0.0).weight(7, 10, 5) == pytest.approx(1.0)


def test_query_vector_binary_unique_sorted(analyzer):
    enc = BM25Encoder(analyzer)
    q = enc.encode_query("protein proteins PROTEIN binding 검색 검색했다")
    assert isinstance(q, SparseVector)
    assert q.indices == sorted({term_id("protein"), term_id("bind"), term_id("검색")})
    assert q.values == [1.0, 1.0, 1.0]
    assert enc.encode_query("the of and") == SparseVector([], [])
    assert (DEFAULT_K1, DEFAULT_B) == (enc.k1, enc.b)


def test_bad_parameters():
    with pytest.raises(ValueError):
        BM25Encoder(k1=-1)
    with pytest.raises(ValueError):
        BM25Encoder(b=1.5)


# ---------------------------------------------------------------- the oracle: engine BM25 == rank_bm25
class QdrantIdfBM25(BM25Okapi):
    """BM25Okapi with the IDF of Qdrant's Modifier.Idf: ln(1 + (N - n + 0.5) / (n + 0.5))."""

    def _calc_idf(self, nd):
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


@pytest.fixture(scope="module")
def scifact_sample():
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    docs = []
    with open(SCIFACT / "corpus.jsonl") as fh:
        for line in fh:
            d = json.loads(line)
            docs.append((d["_id"], (d.get("title", "") + " " + d["text"]).strip()))
            if len(docs) == 200:
                break
    return docs


async def test_engine_keyword_ranking_matches_rank_bm25(analyzer, scifact_sample, tmp_path):
    k1, b = DEFAULT_K1, DEFAULT_B
    enc = BM25Encoder(analyzer, k1=k1, b=b)
    ids = [d for d, _ in scifact_sample]
    tokens = [analyzer.tokens(t) for _, t in scifact_sample]
    stats = [enc.doc_stats(t) for _, t in scifact_sample]
    avgdl = sum(dl for _, dl in stats) / len(stats)
    oracle = QdrantIdfBM25(tokens, k1=k1, b=b)
    assert oracle.avgdl == pytest.approx(avgdl)

    # queries: a few dozen mixes of words drawn from the documents (real vocabulary, varied overlap)
    rng = random.Random(11)
    vocab = sorted({w for _, t in scifact_sample for w in t.lower().split() if w.isalpha() and len(w) > 3})
    queries = [" ".join(rng.sample(vocab, rng.randint(2, 6))) for _ in range(36)]
    queries += [t.split(".")[0] for _, t in scifact_sample[:6]]       # titles/first sentences

    store = make_store(qdrant_url=None, data_dir=tmp_path / "edge")
    try:
        name = "bm25oracle"
        await store.create_collection(name, 4, {"purpose": "rank_bm25 oracle"})
        pid = {str(uuid.uuid5(uuid.NAMESPACE_URL, d)): d for d in ids}
        points = [Point(id=p, dense=[1.0, 0.0, 0.0, 0.0], sparse=enc.encode_doc(tfs, dl, avgdl), payload={"doc_id": d, "chunk": 0})
                  for (p, d), (tfs, dl) in zip(pid.items(), stats)]
        await store.upsert(name, points)

        compared = 0
        for q in queries:
            qtok = list(dict.fromkeys(analyzer.tokens(q)))       # unique terms: binary query weights
            if not qtok:
                continue
            scores = oracle.get_scores(qtok)
            hits = await store.search_sparse(name, enc.encode_query(q), limit=10)
            got = [(pid[h.id], h.score) for h in hits]
            ref = sorted(((ids[i], s) for i, s in enumerate(scores) if s > 0), key=lambda x: -x[1])[:10]
            assert len(got) == len(ref), q
            # same scores (engine stores f32) and the same ids, up to the order of exact ties
            for (gid, gs), (rid, rs) in zip(got, ref):
                assert gs == pytest.approx(rs, rel=1e-4), (q, gid, rid)
            ref_scores = {ids[i]: s for i, s in enumerate(scores)}
            assert all(ref_scores[g] == pytest.approx(s, rel=1e-4) for g, s in got), q
            if ref and len(ref) == 10:
                cut = ref[-1][1]
                strict = {d for d, s in ref if s > cut * (1 + 1e-4)}
                assert strict <= {g for g, _ in got}, q
            else:
                assert {g for g, _ in got} == {r for r, _ in ref}, q
            compared += 1
        assert compared >= 30
    finally:
        await store.close()
