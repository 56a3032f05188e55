"""search_service.encoder_graph: the hand-written fused graph computes what the real BERT computes.

The reference is transformers' ``BertModel`` in torch on the same safetensors (both are installed in the
dev environment: llm-service's export pipeline needs them), so a wrong weight transpose, head split,
mask or epsilon shows up as a large difference, not a small cosine drift."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from search_service.embedding_models import minilm_dir as tokenizer_dir
from search_service.embeddings import DIM, Embedder, encoder_session
from search_service.encoder_graph import build_bert_graph, read_safetensors

TEXTS = ["Vitamin D deficiency is associated with fractures.",
         "A much longer sentence about proteins, the ribosome and the cells that make them. " * 4,
         "short"]


@pytest.fixture(scope="module", params=[False, True], ids=["add-layernorm", "skiplayernorm"])
def fp32_session(request, tmp_path_factory):
    """The fp32 graph as served (residuals as Add + LayerNormalization) and in the fused form."""
    import onnx
    import onnxruntime as ort

    path = tmp_path_factory.mktemp("graph") / "fp32.onnx"
    onnx.save(build_bert_graph(tokenizer_dir(), skip_layer_norm=request.param), str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _batch(texts):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir() / "tokenizer.json"))
    tok.no_padding()                    # the file pads to 128; rows must differ in length here
    tok.enable_truncation(max_length=256)
    enc = tok.encode_batch(texts)
    width = max(len(e.ids) for e in enc)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    return ids, mask


def test_fused_graph_matches_transformers_bert(fp32_session):
    torch = pytest.importorskip("torch")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertModel

    ids, mask = _batch(TEXTS)           # right-padded rows of different lengths: exercises the mask
    ours = fp32_session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    model = BertModel.from_pretrained(str(tokenizer_dir()), add_pooling_layer=False).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    valid = mask.astype(bool)
    assert len(set(mask.sum(axis=1))) == len(TEXTS)     # really padded: three different lengths
    assert ours.shape == ref.shape == (len(TEXTS), ids.shape[1], DIM)
    assert np.abs(ours[valid] - ref[valid]).max() < 1e-3, np.abs(ours[valid] - ref[valid]).max()


def test_quantized_variant_is_close_to_fp32(fp32_session, embedder):
    ids, mask = _batch(TEXTS)
    hidden = fp32_session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    m = mask[:, :, None].astype(np.float32)
    ref = (hidden * m).sum(1) / m.sum(1)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert embedder.model_id.endswith(":int8-fused")     # the session embedder is the default variant
    cos = (embedder.encode(TEXTS) * ref).sum(axis=1)
    assert cos.min() > 0.98, cos


def _op_types(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def test_served_sessions_run_layernorm_unfused(tmp_path, embedder):
    """onnxruntime's SkipLayerNormalization CPU kernel is several times slower than Add + LayerNormalization:
    the built graph holds the latter, and the served session keeps it (with onnxruntime's default
    optimizers the same file is fused — the setting is what prevents it)."""
    model_file = embedder.backend.model_file
    assert {"LayerNormalization", "Add"} <= _op_types(model_file)
    assert "SkipLayerNormalization" not in _op_types(model_file)
    encoder_session(model_file, save_optimized_to=tmp_path / "served.onnx")
    served = _op_types(tmp_path / "served.onnx")
    assert "LayerNormalization" in served and "SkipLayerNormalization" not in served, served
    encoder_session(model_file, disabled_optimizers=(), save_optimized_to=tmp_path / "default.onnx")
    assert "SkipLayerNormalization" in _op_types(tmp_path / "default.onnx")


def test_read_safetensors_refuses_unknown_dtype(tmp_path):
    import json

    header = json.dumps({"x": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    f = tmp_path / "bad.safetensors"
    f.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0")
    with pytest.raises(ValueError, match=r"bad\.safetensors: unsupported dtype .*bfloat16"):
        read_safetensors(f)


def test_builder_refuses_a_non_bert_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="not a BERT encoder"):
        build_bert_graph(tmp_path)


def test_fused_variant_is_built_once_and_loads(tmp_path):
    first = Embedder.load("minilm", models_dir=tmp_path)
    try:
        built = tmp_path / "all-MiniLM-L6-v2-int8-fused" / "model.onnx"
        assert built.is_file() and (built.parent / "build.json").is_file()
        mtime = built.stat().st_mtime_ns
        second = Embedder.load("minilm", models_dir=tmp_path)
        second.close()
        assert built.stat().st_mtime_ns == mtime                     # reused, not rebuilt
        assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]   # no temp files left
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]         # nor temp folders
        recipe = json.loads((built.parent / "build.json").read_text())
        old = {**recipe, "steps": recipe["steps"][:1] + ["an older release's quantization"]}
        (built.parent / "build.json").write_text(json.dumps(old))          # a model an older recipe left
        third = Embedder.load("minilm", models_dir=tmp_path)
        third.close()
        assert built.stat().st_mtime_ns != mtime                     # rebuilt with the current recipe
        assert json.loads((built.parent / "build.json").read_text())["steps"] == recipe["steps"]
    finally:
        first.close()
