"""Search highlights: Analyzer.spans (the terms of tokens() with their offsets), search_service.highlight
(matched spans, snippet) and ``highlight: true`` on the three search endpoints of the in-process app."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_service.highlight import Highlighter, _merge, highlight
from search_service.search import SearchQuery
from search_service.text import ENGLISH_STOPWORDS, KOREAN_CONTENT_TAGS, Analyzer, _get_kiwi

HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff]")


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer()


# ---------------------------------------------------------------- the oracle: the tokenizer before spans existed
def reference_tokens(text: str) -> list[str]:
    """The analyzer as it was written before offsets (lowercase + findall + stem; Kiwi forms): spans()
    must give exactly these terms, in this order."""
    import Stemmer

    stem = Stemmer.Stemmer("english")
    word = re.compile(r"[^\W_]+")
    korean_span = re.compile(r"\S*[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff]\S*"
                             r"(?:\s+\S*[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff]\S*)*")

    def english(t: str) -> list[str]:
        return stem.stemWords([w for w in word.findall(t.lower()) if w not in ENGLISH_STOPWORDS])

    def korean(t: str) -> list[str]:
        out = []
        for tok in _get_kiwi().tokenize(t):
            if tok.tag.split("-", 1)[0] in KOREAN_CONTENT_TAGS:
                out += english(tok.form) if tok.tag in ("SL", "SN") else [tok.form.lower()]
        return out

    if not HANGUL.search(text):
        return english(text)
    out, pos = [], 0
    for m in korean_span.finditer(text):
        out += english(text[pos:m.start()]) + korean(m.group())
        pos = m.end()
    return out + english(text[pos:])


FIXED_TEXTS = [
    "", "The Proteins were RUNNING in the studies!", "COVID-19, IL-6/TNF_alpha", "the of and is",
    "검색했다", "검색을", "Qdrant로", "사과 3개를 먹었다", "나는 학교에 갔다", "검색엔진으로 검색했다",
    "BM25 검색 엔진을 사용했습니다 with Qdrant and proteins", "Proteins를 분석했다. 😀 Running 🎉검색🎉했다",
    "İstanbul의 İİx ΣΟΦΟΣ Straße 👩‍👩‍👧검색 ÅSTRÖM를 𝐀𝐁 사과", "ＡＢＣ를 검색\n\t제목\n본문 text",
]

PIECES = (["protein", "Proteins", "RUNNING", "runs", "the", "and", "of", "İstanbul", "Straße", "ΣΟΦΟΣ", "x_y",
           "COVID-19", "3.5", "42", "ÅSTRÖM", "𝐀𝐁"]
          + ["검색했다", "검색을", "Qdrant로", "사과", "3개를", "먹었다", "학교에", "갔다", "검색엔진", "분석기는"]
          + ["😀", "👩‍👩‍👧", "🎉"])
SEPARATORS = ["", " ", "  ", "\n", ", ", ". ", "-", "_", "/", "(", ")"]

composed = st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=14).map(
    lambda parts: "".join(p + s for p, s in parts))


@pytest.mark.parametrize("text", FIXED_TEXTS)
def test_spans_are_the_terms_of_tokens_with_offsets(analyzer, text):
    spans = analyzer.spans(text)
    assert [t for t, _, _ in spans] == analyzer.tokens(text) == reference_tokens(text)
    for term, s, e in spans:
        assert 0 <= s < e <= len(text)
        if not HANGUL.search(text[s:e]):           # a Latin word or number: its own analysis is the term
            assert analyzer.tokens(text[s:e]) == [term], (text, term, text[s:e])


def test_span_offsets_korean_emoji_and_expanding_lowercase(analyzer):
    def surface(text):
        return [(t, text[s:e]) for t, s, e in analyzer.spans(text)]

    assert surface("어제 검색했다") == [("검색", "검색")]                  # 어제: an adverb, dropped
    assert surface("Qdrant로 검색엔진을") == [("qdrant", "Qdrant"), ("검색", "검색"), ("엔진", "엔진")]
    assert surface("사과 3개를 먹었다") == [("사과", "사과"), ("3", "3"), ("먹", "먹")]
    assert surface("나는 학교에 갔다") == [("학교", "학교"), ("가", "갔")]    # a verb stem: its syllable
    # code points, not UTF-16 units: characters outside the BMP before a match
    assert surface("😀👩‍👩‍👧 proteins 𝐀 running") == [("protein", "proteins"), ("𝐀", "𝐀"), ("run", "running")]
    assert surface("🎉검색🎉했다 Proteins를") == [("검색", "검색"), ("protein", "Proteins")]
    # 'İ'.lower() is two code points: offsets still point into the original text
    assert surface("İİ proteins İstanbul") == [("protein", "proteins"), ("stanbul", "stanbul")]
    assert surface("İstanbul의 proteins를") == [("stanbul", "stanbul"), ("protein", "proteins")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(composed)
def test_spans_agree_with_tokens_on_mixed_texts(analyzer, text):
    spans = analyzer.spans(text)
    assert [t for t, _, _ in spans] == analyzer.tokens(text) == reference_tokens(text)
    assert [s for _, s, _ in spans] == sorted(s for _, s, _ in spans)
    for term, s, e in spans:
        assert 0 <= s < e <= len(text)
        if not HANGUL.search(text[s:e]):
            assert analyzer.tokens(text[s:e]) == [term], (text, term, text[s:e])
        else:
            assert HANGUL.search(text[s:e])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_spans_agree_with_tokens_on_any_text(analyzer, text):
    spans = analyzer.spans(text)
    assert [t for t, _, _ in spans] == analyzer.tokens(text) == reference_tokens(text)
    assert all(0 <= s < e <= len(text) for _, s, e in spans)


# ---------------------------------------------------------------- highlight (no service)
def marked(text: str, spans: list[dict]) -> list[str]:
    return [text[s["start"]:s["end"]] for s in spans]


def test_english_stemming_and_stopwords(analyzer):
    text = "The runner runs; a run of the RUNNING kind, and then the end."
    h = highlight(analyzer, "the running", None, text)
    assert h["terms"] == ["run"]
    assert marked(text, h["text"]) == ["runs", "run", "RUNNING"]     # 'runner' stems to 'runner'
    assert h["title"] == []
    h = highlight(analyzer, "the and of then", "The title", text)        # only stopwords: nothing at all
    assert h["terms"] == [] and h["text"] == [] and h["title"] == []
    assert h["snippet"]["start"] == 0 and h["snippet"]["spans"] == []
    assert highlight(analyzer, "protein", "Proteins bind", "no match here")["terms"] == ["protein"]


def test_title_spans(analyzer):
    h = highlight(analyzer, "insulin resistance", "Insulin Resistance in Muscle", "Muscle cells resist insulin.")
    assert marked("Insulin Resistance in Muscle", h["title"]) == ["Insulin", "Resistance"]
    assert marked("Muscle cells resist insulin.", h["text"]) == ["resist", "insulin"]   # resist/resistance: one stem
    assert h["terms"] == ["insulin", "resist"]


def test_korean_particles_and_mixed(analyzer):
    h = highlight(analyzer, "검색을", "검색 엔진", "어제 검색했다. 검색엔진으로 다시 검색을 했다.")
    assert h["terms"] == ["검색"]
    assert marked("검색 엔진", h["title"]) == ["검색"]
    assert marked("어제 검색했다. 검색엔진으로 다시 검색을 했다.", h["text"]) == ["검색", "검색", "검색"]
    text = "Qdrant로 검색했다 with qdrant and Proteins를 분석했다"
    h = highlight(analyzer, "qdrant 검색 proteins", None, text)
    assert h["terms"] == ["protein", "qdrant", "검색"]
    assert marked(text, h["text"]) == ["Qdrant", "검색", "qdrant", "Proteins"]


def test_adjacent_spans_stay_separate_overlapping_merge(analyzer):
    text = "검색엔진"                                  # 검색 [0, 2) and 엔진 [2, 4) touch
    assert highlight(analyzer, "검색 엔진", None, text)["text"] == [{"start": 0, "end": 2}, {"start": 2, "end": 4}]
    assert _merge([(5, 9), (0, 2), (2, 4), (1, 3), (8, 12), (6, 7)]) == [(0, 4), (5, 12)]


def test_offsets_with_emoji_and_astral_text(analyzer):
    text = "😀😀 𝐀𝐁 proteins 👩‍👩‍👧 bind 🎉검색🎉했다 proteins"
    h = highlight(analyzer, "protein 검색", "🧬 Proteins", text, snippet_chars=40)
    assert marked(text, h["text"]) == ["proteins", "검색", "proteins"]
    assert marked("🧬 Proteins", h["title"]) == ["Proteins"]
    sn = h["snippet"]
    assert sn["text"] == text[sn["start"]:sn["end"]]
    assert marked(sn["text"], sn["spans"]) == ["proteins", "검색", "proteins"]


FILLER = ("Background cells were observed across many samples taken from different clinical sites over time, "
          "and the measurements were repeated twice. ")


def test_snippet_covers_the_densest_region(analyzer):
    # one match early, all three terms close together later, one match again at the end
    text = ("Insulin is mentioned once. " + FILLER * 4 + "Here insulin resistance raises glucose in muscle. "
            + FILLER * 4 + "Glucose again.")
    h = highlight(analyzer, "insulin resistance glucose", None, text, snippet_chars=120)
    sn = h["snippet"]
    assert sn["text"] == text[sn["start"]:sn["end"]] and len(sn["text"]) <= 120
    assert "insulin resistance raises glucose" in sn["text"]
    assert marked(sn["text"], sn["spans"]) == ["insulin", "resistance", "glucose"]
    # cut at spaces: no half words at either end
    assert text[sn["start"] - 1].isspace() and (sn["end"] == len(text) or text[sn["end"]].isspace())
    assert not sn["text"][0].isspace() and not sn["text"][-1].isspace()
    # every snippet span is one of the text's spans, shifted
    whole = {(s["start"], s["end"]) for s in h["text"]}
    assert all((s["start"] + sn["start"], s["end"] + sn["start"]) in whole for s in sn["spans"])


def test_snippet_ties_go_to_the_earliest_and_no_match_is_the_start(analyzer):
    text = FILLER + "alpha beta here. " + FILLER * 3 + "beta alpha there. " + FILLER
    sn = highlight(analyzer, "alpha beta", None, text, snippet_chars=60)["snippet"]
    assert "alpha beta here" in sn["text"] and "there" not in sn["text"]
    sn = highlight(analyzer, "zebrafish", None, text, snippet_chars=60)["snippet"]
    assert sn["start"] == 0 and sn["spans"] == [] and text.startswith(sn["text"]) and len(sn["text"]) <= 60
    assert text[sn["end"]].isspace()                # ends at a word boundary
    # a text shorter than the window is the whole text
    sn = highlight(analyzer, "alpha", None, "short alpha text", snippet_chars=60)["snippet"]
    assert (sn["text"], sn["start"], sn["end"]) == ("short alpha text", 0, 16)
    # a match longer than the window: the window starts at it
    long_word = "alpha" + "x" * 100
    sn = highlight(analyzer, long_word, None, "intro " + long_word + " outro", snippet_chars=50)["snippet"]
    assert sn["start"] == 6 and sn["spans"] == [{"start": 0, "end": 50}]


def test_query_analysed_once_and_bad_width(analyzer):
    hl = Highlighter(analyzer, "The RUNNING proteins 검색을", snippet_chars=100)
    assert hl.terms == {"run", "protein", "검색"}
    with pytest.raises(ValueError):
        Highlighter(analyzer, "x", snippet_chars=0)


def test_cache_key_and_setting_bounds():
    plain = SearchQuery(query="q", collection="c")
    assert plain.cache_fields() != SearchQuery(query="q", collection="c", highlight=True).cache_fields()
    assert (SearchQuery(query="q", collection="c", highlight=True, snippet_chars=100).cache_fields()
            != SearchQuery(query="q", collection="c", highlight=True, snippet_chars=200).cache_fields())
    from pydantic import ValidationError

    from search_service.core.settings import Settings
    assert Settings().highlight_snippet_chars == 240
    with pytest.raises(ValidationError):
        Settings(highlight_snippet_chars=5)


# ---------------------------------------------------------------- over the API (the in-process app)
QUERIES = ["insulin resistance", "vitamin D deficiency and bone density", "당뇨병 환자의 인슐린", "the and of"]


def _check_result(analyzer, query: str, item: dict) -> None:
    h = item["highlight"]
    q_terms = set(analyzer.tokens(query))
    assert h["terms"] == sorted(set(h["terms"])) and set(h["terms"]) <= q_terms
    found = set()
    for field in ("title", "text"):
        source = item[field] or ""
        if field == "title" and not item["title"]:
            assert h["title"] == []
        prev_end = -1
        for span in h[field]:
            assert prev_end <= span["start"] < span["end"] <= len(source)
            prev_end = span["end"]
            words = set(analyzer.tokens(source[span["start"]:span["end"]]))
            assert words & q_terms, (query, field, source[span["start"]:span["end"]])
            found |= words & q_terms
    assert found == set(h["terms"])
    sn = h["snippet"]
    assert sn["text"] == item["text"][sn["start"]:sn["end"]]
    assert len(sn["text"]) <= 240
    for span in sn["spans"]:
        assert set(analyzer.tokens(sn["text"][span["start"]:span["end"]])) & q_terms
    if not h["text"]:
        assert sn["start"] == 0


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_highlight_on_the_search_endpoints(client, loaded, analyzer, mode):
    checked = matched = 0
    for query in QUERIES:
        r = client.post(f"/search/{mode}", json={"query": query, "collection": loaded, "limit": 8,
                                                 "highlight": True})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        if mode != "keyword" or analyzer.tokens(query):
            assert results, query
        for item in results:
            _check_result(analyzer, query, item)
            checked += 1
            matched += bool(item["highlight"]["terms"])
            if mode == "keyword":          # a BM25 hit matches a query term in its title or text
                assert item["highlight"]["terms"], (query, item["id"])
        if not analyzer.tokens(query):     # stopwords only: never a span
            assert all(i["highlight"]["terms"] == [] for i in results)
    assert checked >= 12 and matched >= 5


def test_highlight_korean_result(client, loaded):
    r = client.post("/search/hybrid", json={"query": "인슐린 저항성", "collection": loaded, "limit": 10,
                                            "highlight": True})
    top = next(i for i in r.json()["results"] if i["id"] == "ko-3")
    h = top["highlight"]
    assert marked(top["title"], h["title"]) == ["인슐린"]
    assert marked(top["text"], h["text"]) == ["인슐린", "인슐린", "저항"]
    assert set(h["terms"]) == {"인슐린", "저항"}


def test_highlight_cached_and_off(client, loaded):
    body = {"query": "Insulin  resistance in muscle", "collection": loaded, "limit": 5, "highlight": True}
    first = client.post("/search/hybrid", json=body).json()
    second = client.post("/search/hybrid", json=body).json()
    assert first["cached"] is False and second["cached"] is True
    assert first["results"] == second["results"]
    plain = client.post("/search/hybrid", json={**body, "highlight": False}).json()
    assert plain["cached"] is False                          # its own cache entry
    assert all("highlight" not in i for i in plain["results"])
    assert [{k: v for k, v in i.items() if k != "highlight"} for i in first["results"]] == plain["results"]
    default = client.post("/search/keyword", json={"query": "insulin", "collection": loaded}).json()
    assert default["results"] and all("highlight" not in i for i in default["results"])


def test_highlight_refused_on_rag_and_validated(client, loaded):
    r = client.post("/rag", json={"query": "What raises insulin resistance?", "collection": loaded,
                                  "highlight": True})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert "highlight" in err["message"] and "/search" in err["message"], err
    r = client.post("/search/hybrid", json={"query": "insulin", "collection": loaded, "highlight": "maybe"})
    assert r.status_code == 422 and "highlight" in r.json()["error"]["message"]
