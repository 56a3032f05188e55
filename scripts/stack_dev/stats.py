"""The one percentile every script under scripts/ reports.

Definition: numpy's default, **linear interpolation between the two nearest ranks**
(``numpy.percentile(values, p, method="linear")``, Hyndman & Fan type 7, also Excel's PERCENTILE.INC):
sort the n values, take the (p/100)·(n-1)-th position (0-based) and interpolate linearly between its
two neighbours. p50 is the median; p0/p100 are the min/max. For a small sample a high percentile lies
between the largest values (nearest-rank would return one of them), so figures from before this module
(soak.py used nearest-rank, bench_llm.py's TTFT too) can differ from today's at p99.

``DEFINITION`` is the short text scripts print next to their percentile columns.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFINITION = "percentiles: linear interpolation (numpy.percentile)"


def percentile(values: Iterable[float], p: float, weights: Sequence[int] | None = None) -> float:
    """The ``p``-th percentile (0..100) of ``values``; NaN when there are none.

    ``weights``: an integer count per value (a histogram, as wrk reports latencies), the same as the
    value repeated that many times."""
    arr = np.asarray(list(values), dtype=float)
    if weights is not None:
        arr = np.repeat(arr, np.asarray(weights, dtype=np.int64))
    if arr.size == 0:
        return float("nan")
    return float(np.percentile(arr, p, method="linear"))


def percentiles(values: Iterable[float], ps: Iterable[float] = (50, 95, 99),
                weights: Sequence[int] | None = None) -> dict[float, float]:
    """``{p: percentile(values, p)}`` for each ``p`` in ``ps``."""
    vals = list(values)
    return {p: percentile(vals, p, weights) for p in ps}
