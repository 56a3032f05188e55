"""Sentences, support and citations: what makes a RAG answer checkable. Pure functions over numpy vectors
(the caller embeds with the service's embedding model); used by rag.py and scripts/eval_rag.py alike.

* :func:`split_sentences` — English and Korean sentence boundaries (end punctuation, Korean sentence
  endings), with character offsets so citations can point into the text.
* :func:`select_context` — the query-relevant sentences of the top passages within a budget: each passage
  keeps its id and its sentences stay in their original order.
* :func:`attribute` — each answer sentence matched to the source sentences that support it (cosine of the
  embeddings at or above the grounding model's threshold): Cohere-style citation spans into the answer.
* :func:`strip_unknown_markers` — ``[id]`` markers the model wrote that name no returned source are removed.
* :func:`extractive_answer` — the best-supported source sentences, cited, for when nothing generated holds.
* :func:`not_an_answer` — why a generated text is no answer at all: empty, a stub ("The answer is:") or an
  echo of the question (small models do all three).

The threshold: a sentence counts as supported by a source sentence when their cosine under the grounding
model is at least that model's ``EmbeddingModel.support_threshold`` (MiniLM 0.6 = ``SUPPORT_THRESHOLD``, the
default here; multilingual-e5-small 0.86, whose cosines sit higher). ``python scripts/eval_rag.py
--calibrate [--judge-model M]`` measures it (a claim or question against the sentences of its relevant
documents vs those of other retrieved and of random ones: SciFact for MiniLM, the Korean set for e5); the
README gives the figures behind the values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SUPPORT_THRESHOLD = 0.6      # MiniLM's (search_service.embedding_models: minilm.support_threshold)
CHARS_PER_TOKEN = 4     # estimate for English text with BPE tokenizers; digits/symbols/Korean take more

# A sentence ends at . ! ? (or their full-width forms) followed by space, or at a line break; the period of
# common abbreviations and of decimals does not end one.
_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")
_ABBREV = re.compile(r"(?:\b(?:e\.g|i\.e|et al|vs|approx|Fig|fig|Dr|Mr|Mrs|Ms|No|St|ca|cf)\.|\b[A-Z]\.)$")
MARKER = re.compile(r"\s?\[([^\[\]\n]{1,80})\]")     # "[id]" or "[id1, id2]" a model may write


def marker_ids(text: str) -> set[str]:
    """Every id named by a ``[...]`` marker in ``text``."""
    return {part.strip() for m in MARKER.finditer(text) for part in m.group(1).split(",")}


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int          # character offsets in the text it was split from
    end: int


def split_sentences(text: str, min_chars: int = 3) -> list[Sentence]:
    """Sentences of ``text`` with their offsets (empty and punctuation-only pieces dropped)."""
    out: list[Sentence] = []
    a = 0
    for m in _END.finditer(text):
        if "\n" not in m.group(0) and _ABBREV.search(text[a:m.start()]):
            continue     # "e.g. the" / "Smith et al. found": not an end
        _add(out, text, a, m.start(), min_chars)
        a = m.end()
    _add(out, text, a, len(text), min_chars)
    return out


def _add(out: list[Sentence], text: str, a: int, b: int, min_chars: int) -> None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    piece = text[a:b]
    if len(piece) >= min_chars and any(ch.isalnum() for ch in piece):
        out.append(Sentence(piece, a, b))


_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset("a an the of and or to in on for with by is are was were be been it its this that these those "
                  "as at from which what who how do does did not no yes answer question".split())
_VERDICT = re.compile(r"^(yes|no)\b|^(네|예|아니요|아니오|아닙니다)", re.I)
ECHO_OVERLAP = 0.8      # share of the answer's content words that are the question's: a restatement, no answer


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def not_an_answer(answer: str, question: str) -> str | None:
    """``"empty"``, ``"stub"`` (fewer than 3 content words, or ending in ':' like "The answer is:") or
    ``"echo"`` (at least ECHO_OVERLAP of its content words, and hardly more words, are the question's; an
    answer that starts with yes or no is a verdict, not an echo) — else None."""
    text = " ".join(MARKER.sub("", answer).split())
    if not text:
        return "empty"
    words = content_words(text)
    if text.endswith(":") or len(words) < 3:
        return "stub"
    if _VERDICT.match(text):
        return None          # "Yes, X causes Y." restates a yes/no question, and answers it
    asked = set(content_words(question))
    if asked and sum(w in asked for w in words) >= ECHO_OVERLAP * len(words) and len(set(words)) <= len(asked) + 1:
        return "echo"
    return None


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass
class ContextPassage:
    """One source in the prompt: its id and title, and the sentences chosen from it (original order)."""
    id: str
    title: str | None
    score: float
    sentences: list[str]
    vectors: np.ndarray | None = None        # the chosen sentences' embeddings (rows, L2-normalised)

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def select_context(query_vec: np.ndarray, passages: list[dict[str, Any]], sentences: list[list[str]],
                   vectors: list[np.ndarray], budget_tokens: int, per_passage: int = 3) -> list[ContextPassage]:
    """The sentences most similar to the query, at most ``per_passage`` from each passage, best first
    across passages until ``budget_tokens`` (estimated) is spent; then each passage's chosen sentences are
    put back in their original order and the passages in rank order. A passage with no chosen sentence is
    left out. ``sentences[i]`` / ``vectors[i]`` are passage i's sentences and their embeddings."""
    scored: list[tuple[float, int, int]] = []
    for i, vecs in enumerate(vectors):
        if len(vecs):
            sims = vecs @ query_vec
            for j in np.argsort(-sims)[:per_passage]:
                scored.append((float(sims[j]), i, int(j)))
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    budget = budget_tokens
    chosen: dict[int, list[int]] = {}
    for _, i, j in scored:
        p = passages[i]
        header = 0 if i in chosen else estimate_tokens(f"[{p['id']}] {p.get('title') or ''}") + 1
        cost = estimate_tokens(sentences[i][j]) + 1 + header
        if cost > budget:
            continue
        budget -= cost
        chosen.setdefault(i, []).append(j)
    out = []
    for i in sorted(chosen):
        idx = sorted(chosen[i])
        p = passages[i]
        out.append(ContextPassage(id=p["id"], title=p.get("title"), score=float(p.get("score", 0.0)),
                                  sentences=[sentences[i][j] for j in idx], vectors=vectors[i][idx]))
    return out


@dataclass
class Citation:
    start: int
    end: int
    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)    # [{"id", "sentence", "score"}]

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text, "sources": self.sources}


def attribute(answer: str, answer_vecs: np.ndarray, answer_sentences: list[Sentence],
              context: list[ContextPassage], threshold: float = SUPPORT_THRESHOLD,
              max_sources: int = 3) -> list[Citation]:
    """A citation for every answer sentence that some context sentence supports (cosine >= threshold):
    the sentence's span in ``answer`` and its supporting sources, best first, one sentence per source."""
    rows: list[tuple[str, str]] = []
    mats = []
    for p in context:
        if p.vectors is not None and len(p.vectors):
            rows += [(p.id, s) for s in p.sentences]
            mats.append(p.vectors)
    if not rows or not answer_sentences:
        return []
    src = np.vstack(mats)
    sims = answer_vecs @ src.T                  # [answer sentences, source sentences]
    citations = []
    for k, sent in enumerate(answer_sentences):
        best: dict[str, tuple[float, str]] = {}
        for j in np.argsort(-sims[k]):
            score = float(sims[k, j])
            if score < threshold:
                break
            doc, text = rows[j]
            if doc not in best:
                best[doc] = (score, text)
            if len(best) >= max_sources:
                break
        if best:
            sources = [{"id": d, "sentence": t, "score": round(s, 4)}
                       for d, (s, t) in sorted(best.items(), key=lambda kv: -kv[1][0])]
            citations.append(Citation(sent.start, sent.end, answer[sent.start:sent.end], sources))
    return citations


def strip_unknown_markers(answer: str, known_ids: set[str]) -> tuple[str, list[str]]:
    """``answer`` without ``[x]`` markers whose x (or any of "x, y") names no returned source, and the ids of
    the markers that do name one (in order, unique)."""
    cited: list[str] = []

    def keep(m: re.Match) -> str:
        ids = [part.strip() for part in m.group(1).split(",")]
        if ids and all(i in known_ids for i in ids):
            for i in ids:
                if i not in cited:
                    cited.append(i)
            return m.group(0)
        return ""

    return MARKER.sub(keep, answer).strip(), cited


def extractive_answer(query_vec: np.ndarray, context: list[ContextPassage],
                      max_sentences: int = 2) -> tuple[str, list[Citation]]:
    """The context sentences most similar to the query (at most ``max_sentences``, in rank order), as an
    answer whose every sentence is cited by the passage it comes from."""
    cands: list[tuple[float, str, str]] = []
    for p in context:
        if p.vectors is None:
            continue
        for s, v in zip(p.sentences, p.vectors):
            cands.append((float(v @ query_vec), p.id, s))
    cands.sort(key=lambda c: -c[0])
    parts, citations, pos = [], [], 0
    for score, doc, s in cands[:max_sentences]:
        if parts:
            pos += 1
        citations.append(Citation(pos, pos + len(s), s, [{"id": doc, "sentence": s, "score": round(score, 4)}]))
        parts.append(s)
        pos += len(s)
    return " ".join(parts), citations
