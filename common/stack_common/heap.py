"""Keep Python's full garbage collections off the request path.

A service's start (models, tokenizers, the engine's bindings, FastAPI's routing) leaves a large number of
objects that live as long as the process. Every full (generation 2) collection walks them all, and on
the request path such a walk shows up as a latency spike. :func:`gc.freeze` once the service is ready
moves them out of the collector's view. The measurement (``python scripts/dev/gc_pauses.py --data-dir DIR
[--no-freeze]``, with and without the freeze) is in the README.

Cost: objects frozen here are never collected as cycles. What is reachable at the end of start-up mostly
lives as long as the process; an llm-service model unloaded later frees its onnxruntime memory by
reference counting (the sessions are not in cycles), so the frozen remainder is small Python glue.
"""
from __future__ import annotations

import gc
import logging

log = logging.getLogger("stack_common.heap")


def freeze_startup_objects() -> int:
    """Collect once, then exclude every object alive now from future collections. Call at the end of
    start-up. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("startup objects frozen out of garbage collection", extra={"objects": frozen})
    return frozen
