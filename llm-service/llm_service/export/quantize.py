"""How the quantized variants are made from the fp32 export: :func:`dynamic_int8` (``int8``) and
:func:`weight_only` (``w8``, ``int4``), each from the export re-saved with ``ORT_ENABLE_BASIC``.

Below them, a vectorised stand-in for onnxruntime's per-channel weight quantizer (same bytes, far faster).

``onnxruntime.quantization`` quantizes per-channel weights one channel at a time in Python: ~200k
channels for SmolLM2 (49k of them the lm_head's), i.e. most of the int8 step's time.
:func:`fast_per_channel` replaces ``BaseQuantizer.quantize_weight_per_channel_impl`` within a
``with`` block by the same arithmetic done with numpy on whole tensors, for the one case the pipeline
uses (signed int8, symmetric, no per-tensor overrides, no MinimumRealRange); any other call goes to the
original. ``tests/llm_service/test_export.py`` checks that both produce byte-identical models.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PRE_OPTIMIZATION = "ORT_ENABLE_BASIC"


def basic_optimized(src: Path, dst: Path) -> None:
    """Load with ORT_ENABLE_BASIC and save the optimized graph: constant folding turns the tied
    lm_head's runtime Transpose(embedding) into a stored weight, so quantization reaches that MatMul
    (the biggest one: without this most of int8's speed-up over fp32 is lost; see issue 4)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.intra_op_num_threads = 1
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def _drop(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        p.unlink()


def dynamic_int8(src: Path, dst: Path) -> dict:
    """``quantize_dynamic`` QInt8 per-channel with int8 activations (one scale per tensor).

    reduce_range (7-bit weights) is not optional: without VNNI (AVX2 only) MLAS's u8s8 kernel sums pairs
    of products in int16 and saturates; per-channel scales put many weights at +-127, and SmolLM2's
    int8 then stopped agreeing with fp32 altogether."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    basic = dst.parent / "basic.onnx"
    basic_optimized(src, basic)
    with fast_per_channel():   # same bytes as onnxruntime's per-channel loop, far faster
        quantize_dynamic(basic, dst, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    _drop(basic)
    return {"method": "dynamic", "weight_type": "QInt8", "per_channel": True, "reduce_range": True,
            "pre_optimization": PRE_OPTIMIZATION}


def weight_only(src: Path, dst: Path, bits: int, block_size: int = 32, accuracy_level: int = 4) -> dict:
    """Weight-only ``MatMulNBits`` (8 or 4 bits), symmetric, one scale per ``block_size`` weights.
    ``accuracy_level`` 4 lets the kernel quantize activations to int8 per block (the fast path; 8-bit
    weights at level 0 have no fast kernel and ran many times slower, issue 11). The embedding Gather
    stays fp32. Needs ``onnx-ir``."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    basic = dst.parent / "basic.onnx"
    basic_optimized(src, basic)
    q = MatMulNBitsQuantizer(onnx.load(str(basic)), bits=bits, block_size=block_size, is_symmetric=True,
                             accuracy_level=accuracy_level)
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)
    _drop(basic)
    return {"method": "matmul_nbits", "weight_type": f"int{bits}", "bits": bits, "block_size": block_size,
            "accuracy_level": accuracy_level, "pre_optimization": PRE_OPTIMIZATION}


def _vectorized(self, weight_name, weight_qType, channel_axis, reduce_range, keep_float_weight):  # noqa: N803
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import base_quantizer as bq
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType, normalize_axis

    if weight_qType != TensorProto.INT8 or keep_float_weight or self.min_real_range is not None:
        return None
    if not self.is_weight_symmetric(weight_qType):
        return None
    initializer = bq.find_by_name(weight_name, self.model.initializer())
    if initializer is None:
        return None
    weights = bq.tensor_proto_to_array(initializer)
    if weights.dtype != np.float32:
        return None
    ok, axis = normalize_axis(channel_axis, weights.ndim)
    if not ok:
        return None
    overrides = self.tensor_quant_overrides.get_per_channel_overrides(weight_name, default_val=[{"axis": axis}])
    if len(overrides) != 1 or set(overrides[0]) - {"axis"}:
        return None
    ok, ax_o = normalize_axis(overrides[0]["axis"], weights.ndim)
    if not ok or ax_o != axis:
        return None

    reduce = self.reduce_range and reduce_range
    qmin, qmax = get_qmin_qmax_for_qType(weight_qType, reduce, symmetric=True)
    w = np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1)        # [C, rest]
    if w.shape[1] == 0:
        return None
    rmin = np.minimum(w.min(axis=1), np.float32(0))
    rmax = np.maximum(w.max(axis=1), np.float32(0))
    absmax = np.maximum(np.abs(rmin), np.abs(rmax))                           # float32, like ORT
    scale64 = (absmax.astype(np.float64) - (-absmax).astype(np.float64)) / (
        np.float64(qmax) - np.float64(qmin))
    tiny = scale64 < np.finfo(np.float32).tiny
    scale = np.where(tiny, np.float32(1.0), scale64.astype(np.float32)).astype(np.float32)
    zp_sym = np.array(np.round((qmin + qmax) / np.array(2.0, dtype=np.float64)), dtype=qmin.dtype)
    zp = np.where(tiny, np.array(0, dtype=qmin.dtype), zp_sym).astype(qmin.dtype)
    lo, hi = get_qmin_qmax_for_qType(weight_qType, reduce_range=False, symmetric=False)
    q = (w.astype(np.float32) / scale[:, None]).round() + zp[:, None]
    np.clip(q, lo, hi, out=q)
    rest_shape = list(np.moveaxis(weights, axis, 0).shape)
    quantized = np.moveaxis(q.astype(np.int8).reshape(rest_shape), 0, axis)

    q_weight_name = weight_name + bq.TENSOR_NAME_QUANT_SUFFIX
    zp_name = weight_name + "_zero_point"
    scale_name = weight_name + "_scale"
    dims = [initializer.dims[axis]]
    self.model.initializer_extend([
        onnx.helper.make_tensor(scale_name, initializer.data_type, dims, scale.tolist()),
        onnx.helper.make_tensor(zp_name, weight_qType, dims, zp.tolist()),
    ])
    qw = np.asarray(quantized, dtype=np.int8).reshape(initializer.dims)
    self.model.initializer_extend([onnx.numpy_helper.from_array(qw, q_weight_name)])
    return q_weight_name, zp_name, scale_name


@contextmanager
def fast_per_channel():
    from onnxruntime.quantization.base_quantizer import BaseQuantizer

    orig = BaseQuantizer.quantize_weight_per_channel_impl

    def impl(self, weight_name, weight_qType, channel_axis, reduce_range=True, keep_float_weight=False):  # noqa: N803
        r = _vectorized(self, weight_name, weight_qType, channel_axis, reduce_range, keep_float_weight)
        if r is None:
            return orig(self, weight_name, weight_qType, channel_axis, reduce_range, keep_float_weight)
        return r

    BaseQuantizer.quantize_weight_per_channel_impl = impl
    try:
        yield
    finally:
        BaseQuantizer.quantize_weight_per_channel_impl = orig
