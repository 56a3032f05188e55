"""Grammar-constrained decoding with llguidance: a per-row token mask applied to the logits before sampling.

A request may carry a :class:`GrammarSpec` (a JSON schema, a regular expression or a Lark grammar). The
serving layer compiles it once per request with the model's :class:`GrammarCompiler` (the llguidance
tokenizer is built once per model, compiled grammars are cached) into a :class:`RowConstraint`, which
the batching engine consults for that row only: before sampling, every token the grammar does not allow
next gets ``-inf``; after sampling, the token advances the grammar; when the grammar is complete and
nothing may follow, the row stops (finish_reason ``stop``). The end-of-sequence token is allowed exactly
when the grammar accepts what was generated. Other rows of the batch are untouched, so a constrained row
never stalls the others (the mask of one row costs tens of microseconds: scripts/dev/bench_constraint_mask.py).

Why llguidance: it is what llama.cpp, vLLM and onnxruntime-genai use, it needs no torch, and it computes
a mask from the tokenizer's byte trie lazily (no per-grammar precompilation over the vocabulary).
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

GrammarKind = Literal["json_schema", "regex", "lark"]

# Small models given free whitespace inside JSON can pad with newlines until max_tokens: the JSON is
# generated compact ("," and ":" with no spaces), as OpenAI's own structured outputs are.
JSON_OPTIONS = {"whitespace_flexible": False}


class GrammarError(ValueError):
    """The schema, regex or grammar cannot be compiled (the message says where)."""


@dataclass(frozen=True)
class GrammarSpec:
    """What a row's output must match. ``source``: the JSON schema (a dict or its JSON text), the regex,
    or the Lark grammar (llguidance's dialect: ``%json {...}`` embeds a schema). ``strict``: a JSON schema's
    unknown keywords are errors (else they are ignored, as OpenAI's non-strict mode does)."""
    kind: GrammarKind
    source: str
    strict: bool = True

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str, strict: bool = True) -> "GrammarSpec":
        text = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True, separators=(",", ":"))
        return cls("json_schema", text, strict)


def _llguidance():
    import llguidance                      # imported on first use: a service with no constrained request never loads it
    return llguidance


def _bytelevel_tokenizer_json(tokenizer_json: str) -> str:
    """The tokenizer JSON as llguidance should read it. A tokenizer converted from GGUF (SmolLM2's here)
    has a *sequence* of decoders (ByteFallback, Fuse, Replace, ByteLevel); llguidance only recognises a
    byte-level vocabulary by a top-level ByteLevel decoder, and otherwise takes 'Ġhello' for the bytes
    'Ġhello' instead of ' hello'. The ByteLevel member alone decodes the same vocabulary the same way."""
    data = json.loads(tokenizer_json)
    dec = data.get("decoder") or {}
    if dec.get("type") == "Sequence":
        byte_level = [d for d in dec.get("decoders", []) if d.get("type") == "ByteLevel"]
        if byte_level:
            data["decoder"] = byte_level[0]
            return json.dumps(data)
    return tokenizer_json


class GrammarCompiler:
    """Per model: the llguidance tokenizer (built on first use, ~0.7 s for a 49k vocabulary) and a cache of
    compiled, validated grammars. Thread-safe."""

    def __init__(self, tokenizer_json: str, eos_token_ids: frozenset[int] | list[int], cache_size: int = 64) -> None:
        self._tokenizer_json = tokenizer_json
        self._eos = sorted(int(t) for t in eos_token_ids)
        self._lock = threading.Lock()
        self._tok = None
        self._cache: OrderedDict[GrammarSpec, str] = OrderedDict()
        self._cache_size = cache_size

    @property
    def tokenizer(self):
        if self._tok is None:
            with self._lock:
                if self._tok is None:
                    llg = _llguidance()
                    self._tok = llg.LLTokenizer(_bytelevel_tokenizer_json(self._tokenizer_json),
                                                eos_token=self._eos or None)
        return self._tok

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (what OpenAI's logprobs call ``bytes``)."""
        return self.tokenizer.decode_bytes([int(token_id)])

    def grammar(self, spec: GrammarSpec) -> str:
        """The llguidance grammar of ``spec``, validated against this tokenizer (GrammarError if invalid)."""
        with self._lock:
            hit = self._cache.get(spec)
            if hit is not None:
                self._cache.move_to_end(spec)
                return hit
        llg = _llguidance()
        try:
            if spec.kind == "json_schema":
                options = dict(JSON_OPTIONS, lenient=not spec.strict)
                grammar = llg.LLMatcher.grammar_from_json_schema(spec.source, overrides=options)
            elif spec.kind == "regex":
                grammar = llg.LLMatcher.grammar_from_regex(spec.source)
            elif spec.kind == "lark":
                grammar = llg.LLMatcher.grammar_from_lark(spec.source)
            else:
                raise GrammarError(f"unknown grammar kind {spec.kind!r}")
        except ValueError as exc:              # not JSON, not an object
            raise GrammarError(str(exc)) from None
        error = llg.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise GrammarError(error.strip())
        with self._lock:
            self._cache[spec] = grammar
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return grammar

    def constraint(self, spec: GrammarSpec) -> "RowConstraint":
        """A fresh matcher for one row (construction can take ~1-100 ms for a large schema: call it off the
        event loop)."""
        llg = _llguidance()
        matcher = llg.LLMatcher(self.tokenizer, self.grammar(spec), log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return RowConstraint(matcher, self.tokenizer.vocab_size)


# _BYTE_BIAS[b, k]: 0 when bit k of byte b is set (token allowed), else -inf
_BYTE_BIAS = np.where((np.arange(256)[:, None] >> np.arange(8)) & 1, 0.0, -np.inf).astype(np.float32)


class RowConstraint:
    """One row's grammar state: ``mask`` the logits, ``advance`` with the sampled token."""

    __slots__ = ("matcher", "_words")

    def __init__(self, matcher, vocab_size: int) -> None:
        self.matcher = matcher
        self._words = np.empty((vocab_size + 31) // 32, dtype=np.int32)     # one bit per token

    def mask(self, logits: np.ndarray) -> bool:
        """Set the logits of every disallowed token to -inf, in place. False when no token is allowed
        (the matcher is in an error state)."""
        if self.matcher.is_error():
            return False
        self.matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        if not self._words.any():
            return False
        # one table lookup per mask byte (0 or -inf for each of its 8 tokens), added to the logits: 2-3x
        # cheaper than unpacking the bits and indexing (scripts/dev/bench_constraint_mask.py)
        bias = np.take(_BYTE_BIAS, self._words.view(np.uint8), axis=0).reshape(-1)
        v = min(logits.shape[0], bias.shape[0])
        logits[:v] += bias[:v]
        if logits.shape[0] > v:                        # logits wider than the tokenizer's vocabulary
            logits[v:] = -np.inf
        return True

    def advance(self, token_id: int) -> bool:
        """Feed the sampled token; False if the grammar rejects it."""
        return bool(self.matcher.consume_token(int(token_id)))

    @property
    def finished(self) -> bool:
        """The output is complete and nothing may follow (so the row stops without an EOS)."""
        return bool(self.matcher.is_stopped())

    @property
    def error(self) -> str | None:
        return self.matcher.get_error() if self.matcher.is_error() else None
