"""Numpy sampling of one row's next token: repetition penalty, temperature, top-k, top-p."""
from __future__ import annotations

import numpy as np

from .base import SamplingParams


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    if penalty == 1.0 or seen.size == 0:
        return logits
    logits = logits.copy()
    vals = logits[seen]
    logits[seen] = np.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
                 seen: np.ndarray | None = None) -> int:
    """Next token of one row from its float32 logits (V,)."""
    logits = logits.astype(np.float32, copy=False)
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.temperature <= 0.0:
        return int(np.argmax(logits))
    logits = logits / np.float32(params.temperature)
    if params.top_k and 0 < params.top_k < logits.shape[0]:
        kth = np.partition(logits, -params.top_k)[-params.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    order = np.argsort(-logits, kind="stable")
    sorted_logits = logits[order]
    probs = np.exp(sorted_logits - sorted_logits[0])
    probs /= probs.sum()
    if params.top_p < 1.0:
        cum = np.cumsum(probs)
        keep = int(np.searchsorted(cum, params.top_p, side="left")) + 1
        probs = probs[:keep] / probs[:keep].sum()
        order = order[:keep]
    return int(order[rng.choice(len(probs), p=probs)])
