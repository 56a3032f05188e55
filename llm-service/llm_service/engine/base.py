"""Engine interfaces: what the serving layer and the batcher depend on, whatever runs the model."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0          # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0                    # 0 = off
    repetition_penalty: float = 1.0   # 1 = off (HF/CTRL style: divide positive logits, multiply negative)
    presence_penalty: float = 0.0     # OpenAI's: minus this from the logit of every token already generated
    frequency_penalty: float = 0.0    # OpenAI's: minus this times the token's count in the generated text
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None       # None = off; k = the chosen token's log-probability and the k most likely


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probabilities under the model's own distribution (the logits before penalties, temperature and
    any grammar mask): the chosen token's, and the ``top`` most likely tokens' (best first)."""
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)
    constraint: Any = None            # engine.grammar.RowConstraint: this row's output must match a grammar


@dataclass
class GenerationEvent:
    """One step of one request: ``text`` is the new text since the last event (may be empty).
    The last event has ``finish_reason`` set (stop | length | cancelled | error)."""
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None     # one per token in token_ids (when asked)


class KVCache(abc.ABC):
    """Opaque per-batch cache state of a runner; rows follow the batch order."""


class ModelRunner(abc.ABC):
    """Runs one forward pass of a causal LM with a KV cache, on a batch of rows.

    ``forward`` takes left-padded ``input_ids`` (B, T), the ``attention_mask`` (B, past + T), per-row
    ``position_ids`` (B, T) and the past cache (None for an empty one); it returns the logits of each
    row's last position (B, V) as float32 and the new cache.
    """

    provider: str = "cpu"
    precision: str = "fp32"

    @abc.abstractmethod
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: KVCache | None) -> tuple[np.ndarray, KVCache]: ...

    @abc.abstractmethod
    def select(self, past: KVCache, rows: np.ndarray) -> KVCache:
        """Keep only ``rows`` (indices) of the cache."""

    @abc.abstractmethod
    def trim_left(self, past: KVCache, n: int) -> KVCache:
        """Drop the first ``n`` positions of every row (they are padding in all rows)."""

    @abc.abstractmethod
    def concat(self, a: KVCache, b: KVCache) -> KVCache:
        """Rows of ``a`` then rows of ``b``; the shorter one is left-padded with zeros (masked out)."""

    @abc.abstractmethod
    def past_length(self, past: KVCache) -> int: ...

    def close(self) -> None:
        """Release the model (sessions, device memory)."""
