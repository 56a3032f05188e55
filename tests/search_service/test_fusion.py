"""search_service.fusion: hand-computed examples per method, weights/alpha, edge cases, RRF oracle."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from search_service.fusion import DEFAULT_METHOD, METHODS, FusedHit, fuse, is_dense, resolve_weights

VEC = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
KW = [("b", 12.0), ("d", 6.0), ("a", 3.0)]


def scores(hits: list[FusedHit]) -> dict[str, float]:
    return {h.id: h.score for h in hits}


def textbook_rrf(lists: list[list[str]], k: int = 60) -> dict[str, float]:
    """Cormack et al. 2009: sum over lists of 1 / (k + rank), rank counted from 1."""
    out: dict[str, float] = {}
    for ranking in lists:
        for rank, doc in enumerate(ranking, start=1):
            out[doc] = out.get(doc, 0.0) + 1.0 / (k + rank)
    return out


def test_rrf_hand_computed():
    hits = fuse({"vector": VEC, "keyword": KW}, method="rrf", rrf_k=60)
    best = 2 / 61
    expect = {
        "a": (1 / 61 + 1 / 63) / best,
        "b": (1 / 62 + 1 / 61) / best,
        "c": (1 / 63) / best,
        "d": (1 / 62) / best,
    }
    got = scores(hits)
    assert got.keys() == expect.keys()
    for d in expect:
        assert got[d] == pytest.approx(expect[d], abs=1e-12)
    assert [h.id for h in hits] == ["b", "a", "d", "c"]
    # explain data: 1-based rank and the raw score per retriever
    b = hits[0]
    assert b.sources == {"vector": (2, 0.8), "keyword": (1, 12.0)}


def test_rrf_first_everywhere_scores_one():
    hits = fuse({"vector": [("x", 0.1)], "keyword": [("x", 5.0)]}, method="rrf")
    assert hits[0].score == pytest.approx(1.0)


def test_rrf_matches_textbook_on_random_lists():
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(300)]
    for k in (1, 10, 60):
        for _ in range(20):
            lists = {name: rng.sample(docs, rng.randint(1, 100)) for name in ("vector", "keyword", "third")}
            results = {n: [(d, 100.0 - i) for i, d in enumerate(lst)] for n, lst in lists.items()}
            ref = textbook_rrf(list(lists.values()), k=k)
            hits = fuse(results, method="rrf", rrf_k=k)
            assert {h.id for h in hits} == set(ref)
            for h in hits:
                assert h.score == pytest.approx(ref[h.id] / (3 / (k + 1)), rel=1e-12)
            ref_order = sorted(ref, key=lambda d: -ref[d])
            # same ranking up to ties in the reference (ties may be ordered differently)
            assert [round(ref[h.id], 12) for h in hits] == [round(ref[d], 12) for d in ref_order]


def test_rrf_weights_textbook():
    hits = fuse({"vector": VEC, "keyword": KW}, method="rrf", weights={"vector": 3.0, "keyword": 1.0})
    got = scores(hits)
    best = 4 / 61
    assert got["a"] == pytest.approx((3 / 61 + 1 / 63) / best)
    assert got["d"] == pytest.approx((1 / 62) / best)
    assert hits[0].id == "a"


def test_dbsf_hand_computed():
    hits = fuse({"vector": VEC, "keyword": KW}, method="dbsf")

    def norm(values, s):
        m, sd = statistics.mean(values), statistics.stdev(values)   # sample sd, like Qdrant
        return min(1.0, max(0.0, (s - (m - 3 * sd)) / (6 * sd)))

    v = [s for _, s in VEC]
    k = [s for _, s in KW]
    expect = {
        "a": (norm(v, 0.9) + norm(k, 3.0)) / 2,
        "b": (norm(v, 0.8) + norm(k, 12.0)) / 2,
        "c": norm(v, 0.5) / 2,
        "d": norm(k, 6.0) / 2,
    }
    got = scores(hits)
    for d in expect:
        assert got[d] == pytest.approx(expect[d], abs=1e-12)
    assert hits[0].id == "b"


def test_dbsf_single_item_and_constant_lists_get_half():
    hits = fuse({"vector": [("a", 0.3)], "keyword": [("a", 2.0), ("b", 2.0)]}, method="dbsf")
    got = scores(hits)
    assert got["a"] == pytest.approx(0.5)        # 0.5 in both lists
    assert got["b"] == pytest.approx(0.25)       # 0.5 in one list, missing (0) in the other


def test_minmax_hand_computed_and_alpha():
    hits = fuse({"vector": VEC, "keyword": KW}, method="minmax", alpha=0.7)
    vnorm = {"a": 1.0, "b": 0.75, "c": 0.0}
    knorm = {"b": 1.0, "d": 3 / 9, "a": 0.0}
    got = scores(hits)
    for d in "abcd":
        assert got[d] == pytest.approx(0.7 * vnorm.get(d, 0.0) + 0.3 * knorm.get(d, 0.0), abs=1e-12)
    assert [h.id for h in hits] == ["b", "a", "d", "c"]


def test_zscore_hand_computed():
    hits = fuse({"vector": VEC, "keyword": KW}, method="zscore", alpha=0.5)

    def z(values, s):
        return (s - statistics.mean(values)) / statistics.pstdev(values)

    v = [s for _, s in VEC]
    k = [s for _, s in KW]
    zv = {d: z(v, s) for d, s in VEC}
    zk = {d: z(k, s) for d, s in KW}
    zv_missing, zk_missing = min(zv.values()), min(zk.values())
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    got = scores(hits)
    for d in "abcd":
        zbar = 0.5 * zv.get(d, zv_missing) + 0.5 * zk.get(d, zk_missing)
        assert got[d] == pytest.approx(phi(zbar), abs=1e-12)
    assert hits[0].id == "b"


@pytest.mark.parametrize("method", METHODS)
def test_scores_within_unit_interval_and_sorted(method):
    rng = random.Random(3)
    for _ in range(30):
        results = {}
        for name in ("vector", "keyword", "third"):
            n = rng.randint(0, 60)
            ids = rng.sample(range(200), n)
            vals = sorted((rng.uniform(-50, 50) for _ in range(n)), reverse=True)
            results[name] = [(str(i), v) for i, v in zip(ids, vals)]
        if not any(results.values()):
            continue
        hits = fuse(results, method=method, weights={"third": rng.uniform(0, 2)})
        assert all(0.0 <= h.score <= 1.0 for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert len({h.id for h in hits}) == len(hits)


@pytest.mark.parametrize("method", METHODS)
def test_alpha_one_reproduces_vector_ranking_and_zero_keyword(method):
    assert [h.id for h in fuse({"vector": VEC, "keyword": KW}, method=method, alpha=1.0)] == ["a", "b", "c"]
    assert [h.id for h in fuse({"vector": VEC, "keyword": KW}, method=method, alpha=0.0)] == ["b", "d", "a"]


@pytest.mark.parametrize("method", ["minmax", "zscore", "dbsf"])
def test_alpha_moves_the_ranking(method):
    vec = [("v", 1.0), ("x", 0.5), ("k", 0.0)]
    kw = [("k", 10.0), ("x", 5.0), ("v", 0.0)]
    assert fuse({"vector": vec, "keyword": kw}, method=method, alpha=0.8)[0].id == "v"
    assert fuse({"vector": vec, "keyword": kw}, method=method, alpha=0.2)[0].id == "k"


def test_alpha_equals_weights():
    for method in METHODS:
        a = fuse({"vector": VEC, "keyword": KW}, method=method, alpha=0.3)
        b = fuse({"vector": VEC, "keyword": KW}, method=method, weights={"vector": 0.3, "keyword": 0.7})
        c = fuse({"vector": VEC, "keyword": KW}, method=method, weights={"vector": 3, "keyword": 7})
        assert [(h.id, round(h.score, 12)) for h in a] == [(h.id, round(h.score, 12)) for h in b]
        assert [(h.id, round(h.score, 12)) for h in a] == [(h.id, round(h.score, 12)) for h in c]


def test_default_equal_weights_is_alpha_half():
    for method in METHODS:
        a = fuse({"vector": VEC, "keyword": KW}, method=method)
        b = fuse({"vector": VEC, "keyword": KW}, method=method, alpha=0.5)
        assert [(h.id, round(h.score, 12)) for h in a] == [(h.id, round(h.score, 12)) for h in b]
    assert DEFAULT_METHOD in METHODS


def test_third_retriever_fuses_in():
    third = [("c", 0.99), ("e", 0.5)]
    for method in METHODS:
        two = fuse({"vector": VEC, "keyword": KW}, method=method)
        three = fuse({"vector": VEC, "keyword": KW, "splade": third}, method=method,
                     weights={"splade": 5.0})
        assert "e" in {h.id for h in three} and "e" not in {h.id for h in two}
        assert three[0].id == "c"   # heavily weighted third retriever ranks its best first
        assert three[0].sources["splade"] == (1, 0.99)


@pytest.mark.parametrize("method", METHODS)
def test_doc_in_one_list_only(method):
    hits = fuse({"vector": [("a", 0.9)], "keyword": [("b", 3.0)]}, method=method)
    got = scores(hits)
    assert set(got) == {"a", "b"}
    assert hits[0].sources.keys() in ({"vector"}, {"keyword"})
    assert got["a"] == pytest.approx(got["b"])        # symmetric situation
    assert [h.id for h in hits] == ["a", "b"]          # tie: same best rank, then id


@pytest.mark.parametrize("method", METHODS)
def test_empty_inputs(method):
    assert fuse({}, method=method) == []
    assert fuse({"vector": [], "keyword": []}, method=method) == []
    # an empty list takes no part: the other list alone decides and keeps its order
    only = fuse({"vector": VEC, "keyword": []}, method=method)
    assert [h.id for h in only] == ["a", "b", "c"]
    assert only[0].score == pytest.approx(
        {"rrf": 1.0, "dbsf": fuse({"vector": VEC}, method="dbsf")[0].score, "minmax": 1.0,
         "zscore": fuse({"vector": VEC}, method="zscore")[0].score}[method])


@pytest.mark.parametrize("method", METHODS)
def test_ties_are_deterministic(method):
    # identical scores in both lists for all docs: every fused score ties
    vec = [("z", 1.0), ("m", 1.0), ("a", 1.0)]
    kw = [("a", 2.0), ("m", 2.0), ("z", 2.0)]
    out1 = [h.id for h in fuse({"vector": vec, "keyword": kw}, method=method)]
    out2 = [h.id for h in fuse({"keyword": list(kw), "vector": list(vec)}, method=method)]
    assert out1 == out2
    if method != "rrf":
        # all scores equal -> best rank (1 for a and z, 2 for m), then id
        assert out1 == ["a", "z", "m"]


def test_duplicate_ids_keep_first_occurrence():
    hits = fuse({"vector": [("a", 0.9), ("a", 0.1), ("b", 0.5)]}, method="rrf")
    assert hits[0].sources["vector"] == (1, 0.9)
    assert hits[1].sources["vector"] == (2, 0.5)


@pytest.mark.parametrize("kwargs, msg", [
    ({"method": "bogus"}, "unknown fusion method"),
    ({"alpha": 0.5, "weights": {"vector": 1}}, "not both"),
    ({"alpha": 1.5}, "alpha"),
    ({"weights": {"vector": -1}}, ">= 0"),
    ({"weights": {"vectr": 1}}, "unknown retrievers"),
    ({"weights": {"vector": 0, "keyword": 0}}, "> 0"),
    ({"method": "rrf", "rrf_k": -1}, "rrf_k"),
])
def test_bad_arguments_raise_value_error(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        fuse({"vector": VEC, "keyword": KW}, **kwargs)


def test_alpha_refuses_other_retrievers():
    with pytest.raises(ValueError, match="use weights"):
        fuse({"vector": VEC, "keyword": KW, "third": [("x", 1.0)]}, alpha=0.5)


def test_alpha_weighs_each_dense_retriever_against_keyword():
    """``vector:<model>`` (a collection's extra embedding model) is dense: alpha gives it alpha too."""
    assert resolve_weights(["keyword", "vector", "vector:minilm"], alpha=0.45) == pytest.approx(
        {"keyword": 0.55, "vector": 0.45, "vector:minilm": 0.45})
    assert resolve_weights(["keyword", "vector"], alpha=0.3) == pytest.approx({"keyword": 0.7, "vector": 0.3})
    assert is_dense("vector:multilingual-e5-small") and not is_dense("vectorish") and not is_dense("keyword")
    three = {"vector": VEC, "vector:minilm": list(reversed(VEC)), "keyword": KW}
    by_alpha = fuse(three, method="zscore", alpha=0.45)
    by_weights = fuse(three, method="zscore", weights={"keyword": 0.55, "vector": 0.45, "vector:minilm": 0.45})
    assert [(h.id, h.score) for h in by_alpha] == [(h.id, pytest.approx(h.score)) for h in by_weights]
    with pytest.raises(ValueError, match="use weights"):
        resolve_weights(["keyword", "vector", "splade"], alpha=0.5)
