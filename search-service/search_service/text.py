"""Tokenization and BM25 sparse encoding (the keyword side of hybrid search).

Analyzer
    English (and any non-Hangul text): lowercase, split on letters/digits (``[^\\W_]+``), drop an
    English stopword list, Snowball English stemming (PyStemmer). Korean: morphological analysis
    with kiwipiepy, keeping content morphemes (nouns, numerals, verb/adjective stems, roots, foreign
    words, numbers); particles, endings and suffixes are dropped, so '검색했다' and '검색을' both give
    '검색'. Script detection is per span: runs of words that contain Hangul go to Kiwi, every other
    word to the English path, so mixed text works. Kiwi is
    loaded once, lazily, on the first Korean text (~2 s). Latin words and numbers that Kiwi finds
    inside Korean words ('Qdrant로') go through the English path, so both paths give the same terms.
    ``Analyzer.spans`` gives each term with the character offsets of the word it came from (search
    highlights); ``tokens`` is its terms, one implementation for both.

Query script
    :func:`query_script` names the writing system most of a text's letters are written in ("Latin",
    "Hangul", "Han", ...; None without letters): the hybrid search answers a query whose script the
    collection's embedding model does not cover by keyword alone (``search_service.search``).

BM25 as sparse vectors
    A document's vector holds, per term, ``tf·(k1+1) / (tf + k1·(1 − b + b·dl/avgdl))``; a query's
    vector holds 1 per unique term; the engine (Qdrant ``Modifier.Idf``) multiplies each query term
    by ``ln(1 + (N − n + 0.5)/(n + 0.5))``. The dot product is then exactly BM25 (Okapi, binary
    query term weights). Term ids are a stable 32-bit hash of the token (blake2b, 4 bytes, little
    endian), so there is no vocabulary to keep in sync and every replica agrees.
"""
from __future__ import annotations

import hashlib
import re
import threading
from bisect import bisect_right
from collections import Counter
from functools import lru_cache

from .store.base import SparseVector

__all__ = ["Analyzer", "BM25Encoder", "term_id", "has_hangul", "query_script", "SCRIPTS", "ENGLISH_STOPWORDS",
           "DEFAULT_K1", "DEFAULT_B"]

# Chosen on SciFact test (scripts/dev/eval_fusion.py): k1 in 0.9..2.0 moves BM25 nDCG@10 within noise
# (0.685 / 0.687 / 0.690 / 0.687 for 0.9 / 1.2 / 1.5 / 2.0); in the default hybrid (zscore) k1 = 1.2
# does best (0.733 vs 0.729 with 1.5), so 1.2.
DEFAULT_K1 = 1.2
DEFAULT_B = 0.75

# The NLTK English stopword list (the usual BM25 list: articles, pronouns, auxiliaries, prepositions).
ENGLISH_STOPWORDS = frozenset("""
a about above after again against ain all am an and any are aren aren't as at be because been before
being below between both but by can couldn couldn't d did didn didn't do does doesn doesn't doing don
don't down during each few for from further had hadn hadn't has hasn hasn't have haven haven't having he
her here hers herself him himself his how i if in into is isn isn't it it's its itself just ll m ma me
mightn mightn't more most mustn mustn't my myself needn needn't no nor not now o of off on once only or
other our ours ourselves out over own re s same shan shan't she she's should should've shouldn
shouldn't so some such t than that that'll the their theirs them themselves then there these they this
those through to too under until up ve very was wasn wasn't we were weren weren't what when where which
while who whom why will with won won't wouldn wouldn't y you you'd you'll you're you've your yours
yourself yourselves
""".split())

_HANGUL = "\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff"
# A Korean span: consecutive whitespace-separated words that each contain Hangul. A word is never
# cut in two, so 'Qdrant로' reaches Kiwi whole (Qdrant/SL + 로/JKB) and '사과 3개를 먹었다' is one span.
_KOREAN_SPAN = re.compile(f"\\S*[{_HANGUL}]\\S*(?:\\s+\\S*[{_HANGUL}]\\S*)*")
_HAS_HANGUL = re.compile(f"[{_HANGUL}]")
_WORD = re.compile(r"[^\W_]+")

# Kiwi (Sejong) tags kept as content morphemes: common/proper nouns, numerals, verb and adjective
# stems, roots, foreign words, Chinese characters, numbers. Irregular variants ('VA-I') match too.
KOREAN_CONTENT_TAGS = frozenset({"NNG", "NNP", "NR", "VV", "VA", "XR", "SL", "SH", "SN"})

_STEM_CACHE_WORDS = 100_000     # distinct English words whose stem an Analyzer keeps (~15 MB at most)

_kiwi_lock = threading.Lock()
_kiwi_use = threading.Lock()    # one analysis at a time: Kiwi's thread safety is not documented
_kiwi = None


def _get_kiwi():
    """The process-wide Kiwi instance, loaded on first use (slow: ~2 s and ~100 MB)."""
    global _kiwi
    if _kiwi is None:
        with _kiwi_lock:
            if _kiwi is None:
                from kiwipiepy import Kiwi
                _kiwi = Kiwi(num_workers=0)
    return _kiwi


_stemmers = threading.local()


def _stemmer():
    st = getattr(_stemmers, "english", None)
    if st is None:   # PyStemmer objects must not be shared between threads
        import Stemmer
        st = _stemmers.english = Stemmer.Stemmer("english")
    return st


def has_hangul(text: str | None) -> bool:
    """Whether ``text`` holds Hangul (its analysis then goes through Kiwi)."""
    return bool(text) and _HAS_HANGUL.search(text) is not None


# Writing systems by Unicode block (inclusive code point ranges); a letter outside them is "Other".
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x024F, "Latin"),          # Basic Latin letters, Latin-1 Supplement, Extended-A/B
    (0x0250, 0x02AF, "Latin"),          # IPA extensions
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),       # Cyrillic + Supplement
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0750, 0x077F, "Arabic"),         # Arabic Supplement
    (0x08A0, 0x08FF, "Arabic"),         # Arabic Extended-A
    (0x0900, 0x097F, "Devanagari"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x1100, 0x11FF, "Hangul"),         # Jamo
    (0x1C80, 0x1C8F, "Cyrillic"),       # Extended-C
    (0x1E00, 0x1EFF, "Latin"),          # Latin Extended Additional (Vietnamese)
    (0x1F00, 0x1FFF, "Greek"),          # Greek Extended
    (0x2C60, 0x2C7F, "Latin"),          # Latin Extended-C
    (0x2DE0, 0x2DFF, "Cyrillic"),       # Extended-A
    (0x3005, 0x3007, "Han"),            # 々 〆 〇
    (0x3040, 0x30FF, "Kana"),           # Hiragana, Katakana
    (0x3130, 0x318F, "Hangul"),         # Compatibility Jamo
    (0x31F0, 0x31FF, "Kana"),           # Katakana Phonetic Extensions
    (0x3400, 0x4DBF, "Han"),            # CJK Extension A
    (0x4E00, 0x9FFF, "Han"),            # CJK Unified Ideographs
    (0xA640, 0xA69F, "Cyrillic"),       # Extended-B
    (0xA720, 0xA7FF, "Latin"),          # Latin Extended-D
    (0xA8E0, 0xA8FF, "Devanagari"),     # Devanagari Extended
    (0xA960, 0xA97F, "Hangul"),         # Jamo Extended-A
    (0xAB30, 0xAB6F, "Latin"),          # Latin Extended-E
    (0xAC00, 0xD7AF, "Hangul"),         # Syllables
    (0xD7B0, 0xD7FF, "Hangul"),         # Jamo Extended-B
    (0xF900, 0xFAFF, "Han"),            # CJK Compatibility Ideographs
    (0xFB1D, 0xFB4F, "Hebrew"),         # presentation forms
    (0xFB50, 0xFDFF, "Arabic"),         # Presentation Forms-A
    (0xFE70, 0xFEFF, "Arabic"),         # Presentation Forms-B
    (0xFF21, 0xFF5A, "Latin"),          # fullwidth Latin
    (0xFF66, 0xFF9F, "Kana"),           # halfwidth Katakana
    (0xFFA0, 0xFFDC, "Hangul"),         # halfwidth Hangul
    (0x20000, 0x323AF, "Han"),          # CJK Extensions B-H, Compatibility Supplement
)
_SCRIPT_STARTS = [lo for lo, _, _ in _SCRIPT_RANGES]
SCRIPTS = frozenset(name for _, _, name in _SCRIPT_RANGES)     # the names query_script gives, "Other" aside


def _script_of(ch: str) -> str:
    cp = ord(ch)
    i = bisect_right(_SCRIPT_STARTS, cp) - 1
    if i >= 0 and cp <= _SCRIPT_RANGES[i][1]:
        return _SCRIPT_RANGES[i][2]
    return "Other"


def query_script(text: str | None) -> str | None:
    """The writing system most of ``text``'s letters belong to: "Latin", "Hangul", "Han", "Kana",
    "Cyrillic", "Greek", "Arabic", "Hebrew", "Thai", "Devanagari", or "Other" (a letter of any other
    script); None when the text has no letters. Letters are the characters Unicode classes as letters
    (``str.isalpha``: categories L*); digits, punctuation, symbols, emoji, combining marks (Thai and
    Devanagari vowel signs among them) and spaces are not counted. Each letter counts once, so a Hangul
    syllable weighs as much as a Latin letter: "Python 리스트 정렬" is Latin (6 letters to 5 syllables),
    "Python 리스트 정렬하기" Hangul (7 to 6). A tie goes to the script whose first letter comes first."""
    if not text:
        return None
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = "Latin" if ch < "\x80" else _script_of(ch)
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return None
    return max(counts, key=counts.__getitem__)      # dicts keep insertion order: ties go to the first seen


@lru_cache(maxsize=1 << 16)
def term_id(token: str) -> int:
    """Stable unsigned 32-bit id of a token: blake2b (4-byte digest) read little endian."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little")


class Analyzer:
    """Text -> index terms (English stop+stem, Korean content morphemes). Deterministic, thread-safe.

    :meth:`spans` is the one implementation: each term with the (start, end) of the text it came from,
    in code points (Python ``str`` indices); :meth:`tokens` is its terms, so search highlights
    (``search_service.highlight``) find exactly what BM25 indexes."""

    def __init__(self, stopwords: frozenset[str] = ENGLISH_STOPWORDS, stem: bool = True):
        self.stopwords = stopwords
        self.stem = stem
        self._stems: dict[str, str] = {}    # word -> stem: a dict hit is ~4x cheaper than PyStemmer's call

    def tokens(self, text: str) -> list[str]:
        return [t for t, _, _ in self.spans(text)]

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        """Every index term of ``text`` in order, with the (start, end) offsets of the word or morpheme
        it came from: ``text[start:end]`` is the surface form (a Korean verb stem's span is its
        syllables in the text, e.g. '갔' for 가)."""
        if not text:
            return []
        if not _HAS_HANGUL.search(text):
            return self._english(text, 0)
        out: list[tuple[str, int, int]] = []
        pos = 0
        for m in _KOREAN_SPAN.finditer(text):
            if m.start() > pos:
                out += self._english(text[pos:m.start()], pos)
            out += self._korean(m.group(), m.start())
            pos = m.end()
        if pos < len(text):
            out += self._english(text[pos:], pos)
        return out

    def _english(self, text: str, base: int) -> list[tuple[str, int, int]]:
        low = text.lower()
        sw = self.stopwords
        found = [m for m in _WORD.finditer(low) if m.group() not in sw]
        if not found:
            return []
        words = [m.group() for m in found]
        terms = self._stem(words) if self.stem else words
        if len(low) == len(text):           # lowercasing kept every offset
            return [(t, base + m.start(), base + m.end()) for t, m in zip(terms, found)]
        # a character whose lowercase is longer ('İ' -> 'i̇'): map offsets in `low` back to `text`
        orig = [i for i, ch in enumerate(text) for _ in ch.lower()]
        if len(orig) != len(low):           # not expected (final sigma keeps its length): clamp, never raise
            orig = [min(i, len(text) - 1) for i in range(len(low))]
        return [(t, base + orig[m.start()], base + orig[m.end() - 1] + 1) for t, m in zip(terms, found)]

    def _stem(self, words: list[str]) -> list[str]:
        cache = self._stems
        out = list(map(cache.get, words))
        if None in out:
            missing = list({w for w, t in zip(words, out) if t is None})
            new = dict(zip(missing, _stemmer().stemWords(missing)))
            if len(cache) + len(new) > _STEM_CACHE_WORDS:     # bounded: start over (another thread may too)
                cache.clear()
            cache.update(new)
            out = [t if t is not None else new[w] for w, t in zip(words, out)]
        return out

    def _korean(self, text: str, base: int) -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = []
        kiwi = _get_kiwi()
        with _kiwi_use:
            morphemes = kiwi.tokenize(text)
        for tok in morphemes:
            if tok.tag.split("-", 1)[0] in KOREAN_CONTENT_TAGS:
                start, end = tok.start, tok.start + tok.len
                if tok.tag in ("SL", "SN"):   # Latin words/numbers in a Korean word: as English
                    if text[start:end] == tok.form:
                        out += self._english(tok.form, base + start)
                    else:                      # Kiwi changed the form: each term spans the whole token
                        out += [(t, base + start, base + end) for t, _, _ in self._english(tok.form, 0)]
                else:
                    out.append((tok.form.lower(), base + start, base + end))
        return out


class BM25Encoder:
    """BM25 document/query sparse vectors over hashed term ids (IDF comes from the engine)."""

    def __init__(self, analyzer: Analyzer | None = None, k1: float = DEFAULT_K1, b: float = DEFAULT_B):
        if k1 < 0 or not (0.0 <= b <= 1.0):
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.analyzer = analyzer or Analyzer()
        self.k1 = float(k1)
        self.b = float(b)

    def doc_stats(self, text: str) -> tuple[dict[int, int], int]:
        """(term id -> term frequency, document length in tokens)."""
        tokens = self.analyzer.tokens(text)
        return dict(Counter(term_id(t) for t in tokens)), len(tokens)

    def weight(self, tf: float, doc_len: float, avgdl: float) -> float:
        """BM25 saturation of one term: tf·(k1+1) / (tf + k1·(1 − b + b·dl/avgdl))."""
        norm = 1.0 - self.b + self.b * (doc_len / avgdl if avgdl > 0 else 1.0)
        return tf * (self.k1 + 1.0) / (tf + self.k1 * norm)

    def encode_doc(self, tfs: dict[int, int], doc_len: int, avgdl: float) -> SparseVector:
        """The document's sparse vector (indices sorted and unique)."""
        idx = sorted(tfs)
        return SparseVector(indices=idx, values=[self.weight(tfs[i], doc_len, avgdl) for i in idx])

    def encode_query(self, text: str) -> SparseVector:
        """1.0 per unique query term (indices sorted); empty when the query has no index terms."""
        idx = sorted({term_id(t) for t in self.analyzer.tokens(text)})
        return SparseVector(indices=idx, values=[1.0] * len(idx))
