"""Sentence embeddings through onnxruntime (no torch at run time), split the way infinity splits them:

* a **backend** runs token ids through a model and pools them (:class:`EncoderBackend`; one implementation,
  :class:`OrtBackend`: an int8 ONNX graph on onnxruntime's CPU provider, mean pooling over the attention
  mask, L2 normalisation);
* a **generic micro-batcher** (:class:`search_service.batching.MicroBatcher`) gathers concurrent queries;
* **one builder per model** (:mod:`.embedding_models`: MiniLM, multilingual-e5-small) makes the graph and
  the tokenizer once into ``models_dir``;
* :class:`Embedder` puts them together for one model: its normalization, prefixes (e5's ``query: `` /
  ``passage: ``), truncation and length grouping.

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

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from .batching import MicroBatcher
from .embedding_models import DEFAULT_MODEL, MODELS, Built, EmbeddingModel

__all__ = ["DIM", "PAD_SLACK", "Embedder", "Embedders", "EncoderBackend", "OrtBackend", "length_groups"]

DIM = 384
Kind = Literal["query", "passage"]

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


class EncoderBackend(Protocol):
    """Runs tokenized texts through a model: (n, dim) float32 vectors, L2-normalised."""
    dim: int

    def run(self, token_ids: list[list[int]]) -> np.ndarray: ...

    def close(self) -> None: ...


# The quantized encoder graphs hold each residual as Add + LayerNormalization; onnxruntime would fuse them into
# SkipLayerNormalization at session creation, whose CPU kernel (1.32) is several times slower than the two
# it replaces (~47 vs ~15 us per call on a 22-token query): left unfused, a query embeds ~15 % faster
# (``python scripts/dev/bench_layernorm.py --profile``; README "Embedding models").
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def encoder_session(model_file: str | Path, *, intra_op_threads: int = 1,
                    disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS, save_optimized_to: str | Path | None = None):
    """The onnxruntime CPU session an encoder runs in; ``save_optimized_to`` writes the graph onnxruntime
    actually runs (after its fusions) there."""
    import onnxruntime as ort

    from stack_common.ort import session_options

    options = session_options(intra_op_threads=intra_op_threads)
    if save_optimized_to is not None:
        options.optimized_model_filepath = str(save_optimized_to)
    return ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers))


class OrtBackend:
    """An encoder graph (input_ids, attention_mask[, token_type_ids] -> last_hidden_state) on onnxruntime's
    CPU provider; texts right-padded to the longest of the call, mean-pooled over the mask, L2-normalised."""

    def __init__(self, model_file: str | Path, *, pad_id: int = 0, intra_op_threads: int = 1,
                 disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS) -> None:
        self.model_file = str(model_file)
        self.pad_id = int(pad_id)
        self._session = encoder_session(model_file, intra_op_threads=intra_op_threads,
                                        disabled_optimizers=disabled_optimizers)
        self._input_names = {i.name for i in self._session.get_inputs()}
        dim = self._session.get_outputs()[0].shape[-1]
        self.dim = dim if isinstance(dim, int) else None

    def run(self, token_ids: list[list[int]]) -> np.ndarray:
        n = len(token_ids)
        width = max(len(t) for t in token_ids)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
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

    def close(self) -> None:
        self._session = None


class Embedder:
    """One embedding model: tokenizer (+ normalization, prefixes) + backend + a micro-batching query path."""

    def __init__(self, model: EmbeddingModel, built: Built, *, intra_op_threads: int = 1, max_batch: int = 32,
                 batch_wait_ms: float = 1.0, workers: int = 1, query_cache: int = 0,
                 backend: EncoderBackend | None = None):
        from tokenizers import Tokenizer

        self.spec = model
        self.model_id = model.model_id
        self.dim = int(model.dim)
        self.max_seq_length = int(model.max_seq_length)
        self.model_file = str(built.model_file)
        tok = Tokenizer.from_file(str(built.tokenizer_file))
        tok.enable_truncation(max_length=self.max_seq_length)
        tok.no_padding()
        self._tok = tok
        self._table = built.normalization            # str.translate table (code point -> replacement)
        pad_id = tok.token_to_id(model.pad_token)
        self.backend = backend or OrtBackend(built.model_file, pad_id=pad_id or 0, intra_op_threads=intra_op_threads)
        if self.backend.dim not in (None, self.dim):
            raise ValueError(f"{self.model_file} outputs dimension {self.backend.dim}, expected {self.dim}")
        self._batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            self._run_queries, max_batch=max_batch, wait_ms=batch_wait_ms, workers=workers, name="embed")
        self._closed = False
        # Recent query vectors by exact text (the next page or another filter of the same query skips
        # the embedding); 0 turns it off.
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache_size = max(0, int(query_cache))
        self.query_cache_hits = 0

    @property
    def batches_run(self) -> int:
        """Micro-batches embed_query handed to the worker (for metrics and tests)."""
        return self._batcher.batches_run

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, models_dir: str | Path = "models", **kwargs) -> "Embedder":
        """The embedder of ``model`` (a key of :data:`MODELS`), built into ``models_dir`` first if needed.
        ``kwargs``: intra_op_threads, max_batch, batch_wait_ms, workers, query_cache."""
        if model not in MODELS:
            raise ValueError(f"unknown embedding model {model!r}; available: {sorted(MODELS)}")
        spec = MODELS[model]
        try:
            built = spec.build(models_dir)
        except OSError as exc:
            raise RuntimeError(f"cannot build the {model!r} embedder under {models_dir} ({exc}); make models_dir "
                               f"writable or build it beforehand (python -c 'from search_service.embeddings import "
                               f"MODELS; MODELS[\"{model}\"].build(\"models\")')") from exc
        return cls(spec, built, **kwargs)

    # ------------------------------------------------------------------ tokenizing
    def _prepare(self, texts: Sequence[str], kind: Kind) -> list[str]:
        prefix = self.spec.query_prefix if kind == "query" else self.spec.passage_prefix
        out = [prefix + (t if isinstance(t, str) else str(t)) for t in texts]
        return [t.translate(self._table) for t in out] if self._table else out

    def _ids(self, texts: Sequence[str], kind: Kind) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(self._prepare(texts, kind), add_special_tokens=True)]

    # ------------------------------------------------------------------ sync encoding
    def encode(self, texts: Sequence[str], batch_size: int = 32, max_tokens: int | None = None,
               on_group: Callable[[list[int], np.ndarray], None] | None = None,
               kind: Kind = "passage") -> np.ndarray:
        """Embeddings of ``texts`` in order: float32, L2-normalised, shape (n, dim). Blocking.
        ``kind``: ``passage`` (documents) or ``query`` (search queries; also what e5 asks for when two texts
        are compared symmetrically) picks the model's prefix. ``max_tokens`` (special tokens included)
        truncates shorter than the model's limit: the model's cost is linear in tokens.

        Texts run in ORT calls of similar token length (:func:`length_groups`, at most ``batch_size``
        each); ``on_group(indices, vectors)`` is called after each call (from this thread)."""
        if self._closed:
            raise RuntimeError("embedder is closed")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self._ids(texts, kind)
        if max_tokens is not None and max_tokens < self.max_seq_length:
            n = max(2, int(max_tokens))
            ids = [t if len(t) <= n else t[:n - 1] + t[-1:] for t in ids]     # keep the final [SEP] / </s>
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        for start, end in length_groups([len(ids[i]) for i in order], max(1, int(batch_size))):
            idx = order[start:end]
            vecs = self.backend.run([ids[i] for i in idx])
            out[idx] = vecs
            if on_group is not None:
                on_group(idx, vecs)
        return out

    def token_count(self, text: str, kind: Kind = "passage") -> int:
        """Tokens the model sees for ``text`` (prefix and special tokens included, after truncation)."""
        return len(self._ids([text], kind)[0])

    # ------------------------------------------------------------------ async micro-batching
    def _run_queries(self, texts: list[str], deliver) -> None:
        # each query is answered as soon as its own ORT call is done, not at the batch's end
        self.encode(texts, len(texts), on_group=deliver, kind="query")

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
        vec = await self._batcher.submit(text)
        if self._query_cache_size:
            vec.setflags(write=False)
            self._query_cache[text] = vec
            if len(self._query_cache) > self._query_cache_size:
                self._query_cache.popitem(last=False)
        return vec

    def close(self) -> None:
        self._closed = True
        self._batcher.close()
        self.backend.close()


class Embedders:
    """The embedding models this process serves, by key (:data:`MODELS`), and the default for new collections."""

    def __init__(self, loaded: dict[str, Embedder], default: str) -> None:
        if default not in loaded:
            raise ValueError(f"default embedding model {default!r} is not among the loaded {sorted(loaded)}")
        self._loaded = dict(loaded)
        self.default = default

    def get(self, key: str) -> Embedder | None:
        return self._loaded.get(key)

    def keys(self) -> list[str]:
        return list(self._loaded)

    def values(self) -> list[Embedder]:
        return list(self._loaded.values())

    def close(self) -> None:
        for emb in self._loaded.values():
            emb.close()
