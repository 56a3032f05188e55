"""Numpy sampling of one row's next token: repetition penalty, presence/frequency penalties, temperature,
top-k, top-p."""
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


def apply_presence_frequency(logits: np.ndarray, counts: tuple[np.ndarray, np.ndarray] | None,
                             presence: float, frequency: float) -> np.ndarray:
    """OpenAI's penalties over the tokens generated so far (``counts`` = (token ids, times each)):
    ``logit[j] -= count[j] * frequency + (count[j] > 0) * presence``. Negative values encourage repeats."""
    if counts is None or (presence == 0.0 and frequency == 0.0) or counts[0].size == 0:
        return logits
    ids, n = counts
    logits = logits.copy()
    logits[ids] -= (n * frequency + presence).astype(np.float32)
    return logits


def _draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Index drawn from unnormalised probabilities (inverse CDF: one uniform number per token)."""
    cdf = np.cumsum(probs, dtype=np.float64)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(probs) - 1))


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
                 seen: np.ndarray | None = None, nucleus_candidates: int = 256,
                 counts: tuple[np.ndarray, np.ndarray] | None = None) -> int:
    """Next token of one row from its float32 logits (V,).

    temperature 0 = greedy. top-k and top-p work on a partial sort: the ``nucleus_candidates`` best
    tokens are taken with argpartition and fully sorted only when their mass does not reach top_p
    (exact either way; a full argsort of the whole vocabulary for every token costs far more).
    """
    logits = logits.astype(np.float32, copy=False)
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    logits = apply_presence_frequency(logits, counts, params.presence_penalty, params.frequency_penalty)
    if params.temperature <= 0.0:
        return int(np.argmax(logits))
    scaled = logits / np.float32(params.temperature)
    v = scaled.shape[0]
    k = params.top_k if params.top_k and params.top_k < v else v
    if k == v and params.top_p >= 1.0:
        return _draw(np.exp(scaled - scaled.max()), rng)
    m = scaled.max()
    total = float(np.exp(scaled - m, dtype=np.float64).sum()) if params.top_p < 1.0 else 0.0
    cand = min(k, max(nucleus_candidates, 1))
    while True:
        idx = np.argpartition(-scaled, cand - 1)[:cand] if cand < v else np.arange(v)
        idx = idx[np.argsort(-scaled[idx], kind="stable")]
        probs = np.exp(scaled[idx] - m, dtype=np.float64)
        if params.top_p >= 1.0:
            return int(idx[_draw(probs, rng)])
        if cand == k:
            total = float(probs.sum())         # top-k first, then top-p within the k
        cum = np.cumsum(probs) / total
        if cum[-1] >= params.top_p or cand == k:
            keep = int(np.searchsorted(cum, params.top_p, side="left")) + 1
            keep = min(keep, len(idx))
            return int(idx[_draw(probs[:keep], rng)])
        cand = min(k, cand * 8)
