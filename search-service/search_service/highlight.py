"""Search highlights: where a result's title and text match the query, and a snippet around the best part.

The query goes through the collection's BM25 analyzer (``text.Analyzer``: English stopwords and
stemming, Korean content morphemes through Kiwi), once per search; each result's title and text go
through :meth:`Analyzer.spans`, and every word whose index term is a query term is a match. So a
highlight is exactly what the keyword retriever matched: "running" marks "runs", '검색을' marks the
'검색' of '검색했다', a stopword never marks anything.

Offsets are Unicode code points (Python ``str`` indices; JavaScript strings count UTF-16 units, so a
client with text outside the BMP, e.g. emoji, converts them), ``end`` exclusive. Spans that overlap are
merged; adjacent words stay separate spans.

The snippet is a window of about ``snippet_chars`` characters of the text placed over the most distinct
query terms (ties: the earliest such window), widened to use the whole budget and then cut at spaces
where that keeps every span it covers; with no match it is the start of the text.
"""
from __future__ import annotations

from typing import Any

from .text import Analyzer

__all__ = ["Highlighter", "highlight", "DEFAULT_SNIPPET_CHARS"]

DEFAULT_SNIPPET_CHARS = 240


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted spans with the overlapping ones merged (touching ones are kept apart)."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s < out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _best_window(hits: list[tuple[str, int, int]], width: int) -> tuple[int, int]:
    """(first, last) index into ``hits`` (sorted by start) of the run of hits that fits in ``width``
    characters and holds the most distinct terms; ties go to the earliest run. Two pointers: O(n)."""
    counts: dict[str, int] = {}
    best, best_n = (0, 0), 0
    j = 0
    for i in range(len(hits)):
        if j < i:
            j = i
        while j < len(hits) and (j == i or hits[j][2] - hits[i][1] <= width):
            counts[hits[j][0]] = counts.get(hits[j][0], 0) + 1
            j += 1
        if len(counts) > best_n:
            best, best_n = (i, j - 1), len(counts)
        term = hits[i][0]                  # slide: drop hit i
        counts[term] -= 1
        if not counts[term]:
            del counts[term]
    return best


def _cut(text: str, a: int, b: int, keep_a: int, keep_b: int) -> tuple[int, int]:
    """Move [a, b) inward to word boundaries (spaces) without uncovering [keep_a, keep_b); trim spaces."""
    n = len(text)
    if 0 < a < n and not text[a - 1].isspace() and not text[a].isspace():   # starts inside a word
        k = a
        while k < keep_a and not text[k].isspace():
            k += 1
        if k < keep_a:
            a = k
    if 0 < b < n and not text[b - 1].isspace() and not text[b].isspace():   # ends inside a word
        k = b
        while k > keep_b and not text[k - 1].isspace():
            k -= 1
        if k > keep_b:
            b = k
    while a < keep_a and a < b and text[a].isspace():
        a += 1
    while b > keep_b and b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _snippet(text: str, hits: list[tuple[str, int, int]], spans: list[tuple[int, int]],
             width: int) -> dict[str, Any]:
    n = len(text)
    if not hits:
        a, b = _cut(text, 0, min(n, width), 0, 0)
    else:
        i, j = _best_window(hits, width)
        lo = hits[i][1]
        hi = max(h[2] for h in hits[i:j + 1])
        if hi - lo > width:                # one match longer than the window: its start
            hi = lo + width
        slack = width - (hi - lo)
        a = max(0, lo - slack // 2)        # the budget around the matches, a little more after them
        b = min(n, a + width)
        a = max(0, b - width)
        a, b = _cut(text, a, b, lo, hi)
    inside = [{"start": max(s, a) - a, "end": min(e, b) - a} for s, e in spans if s < b and e > a]
    return {"text": text[a:b], "start": a, "end": b, "spans": inside}


class Highlighter:
    """The query analyzed once; :meth:`highlight` for each result."""

    def __init__(self, analyzer: Analyzer, query: str, snippet_chars: int = DEFAULT_SNIPPET_CHARS) -> None:
        if snippet_chars < 1:
            raise ValueError(f"snippet_chars must be at least 1, got {snippet_chars}")
        self.analyzer = analyzer
        self.terms = frozenset(analyzer.tokens(query))
        self.snippet_chars = snippet_chars

    def _hits(self, text: str | None) -> list[tuple[str, int, int]]:
        if not text or not self.terms:
            return []
        return [h for h in self.analyzer.spans(text) if h[0] in self.terms]

    def highlight(self, title: str | None, text: str | None) -> dict[str, Any]:
        """``{"terms", "title", "text", "snippet"}`` (see the module doc)."""
        text = text or ""
        title_hits, text_hits = self._hits(title), self._hits(text)
        text_hits.sort(key=lambda h: (h[1], h[2]))
        text_spans = _merge([(s, e) for _, s, e in text_hits])
        return {
            "terms": sorted({t for t, _, _ in title_hits} | {t for t, _, _ in text_hits}),
            "title": [{"start": s, "end": e} for s, e in _merge([(s, e) for _, s, e in title_hits])],
            "text": [{"start": s, "end": e} for s, e in text_spans],
            "snippet": _snippet(text, text_hits, text_spans, self.snippet_chars),
        }


def highlight(analyzer: Analyzer, query: str, title: str | None, text: str | None,
              snippet_chars: int = DEFAULT_SNIPPET_CHARS) -> dict[str, Any]:
    """One result's highlight (a search with many results builds one :class:`Highlighter`)."""
    return Highlighter(analyzer, query, snippet_chars).highlight(title, text)
