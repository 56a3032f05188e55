"""The model pipeline (llm_service.export / scripts/optimize_model.py) on the tiny model."""
from __future__ import annotations

import json
import shutil

import numpy as np

from llm_service.export.manifest import load_manifest, sha256_file, verify_files
from llm_service.export.ort_lm import OrtCausalLM

from .conftest import REPO_MODELS, TINY_NAME


def test_tiny_manifest_valid_and_files_match(tiny_model_dir):
    mdir = tiny_model_dir / TINY_NAME
    m = load_manifest(mdir, verify=True)
    assert m.name == TINY_NAME and m.source.kind == "tiny"
    assert set(m.variants) == {"fp32", "int8"}
    assert m.default_variant == {"cpu": "int8", "cuda": "fp32"}
    assert m.architecture == "llama" and m.num_layers == 2
    assert m.eos_token_ids == [2] and m.pad_token_id == 2 and m.has_chat_template
    for v in m.variants.values():
        assert (mdir / v.path).is_file()
        assert m.files[v.path] == sha256_file(mdir / v.path)
        assert v.bench and v.bench.tokens_per_s > 0
    q = m.variants["int8"]
    assert q.quantization.weight_type == "QInt8" and q.quantization.per_channel
    assert q.agreement_vs_fp32 is not None
    assert 0.0 <= q.agreement_vs_fp32.top1 <= 1.0 and q.agreement_vs_fp32.kl_nats >= 0.0
    tdir = mdir / m.tokenizer_dir
    assert json.loads((tdir / "tokenizer_config.json").read_text())["chat_template"]
    assert not verify_files(mdir, m.files)


def test_tiny_onnx_io_matches_documented_contract(tiny_model_dir):
    m = load_manifest(tiny_model_dir / TINY_NAME)
    for v in m.variants.values():
        lm = OrtCausalLM(tiny_model_dir / TINY_NAME / v.path)
        assert lm.input_names[:3] == ["input_ids", "attention_mask", "position_ids"]
        assert lm.past_names == [f"past_key_values.{i}.{kv}" for i in range(m.num_layers)
                                 for kv in ("key", "value")]
        assert lm.output_names[0] == "logits"
        assert lm.num_kv_heads == m.num_kv_heads and lm.head_dim == m.head_dim


def test_int8_close_to_fp32_on_tiny(tiny_model_dir):
    mdir = tiny_model_dir / TINY_NAME
    m = load_manifest(mdir)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(mdir / m.tokenizer_dir / "tokenizer.json"))
    ids = tok.encode("The quick brown fox jumps over the lazy dog.").ids
    fp32 = OrtCausalLM(mdir / m.variants["fp32"].path)
    int8 = OrtCausalLM(mdir / m.variants["int8"].path)
    a, b = fp32.logits(ids), int8.logits(ids)
    assert a.shape == b.shape == (len(ids), m.vocab_size)
    corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert corr > 0.95, corr
    # Greedy with the KV cache equals teacher-forced argmax of the same model (cache path is right),
    # and int8's first greedy token is among fp32's top 5.
    gen = fp32.greedy(ids, 8)
    tf = fp32.logits(ids + gen[:-1])
    assert gen == [int(x) for x in tf[len(ids) - 1:].argmax(-1)]
    assert int8.greedy(ids, 1)[0] in np.argsort(a[-1])[-5:]
