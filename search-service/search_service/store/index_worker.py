"""``python -m search_service.store.index_worker SHARD_DIR POLICY_JSON``: run the engine's optimizer (vacuum
deleted points, merge segments, and build the HNSW index unless ``build_index`` is false) on a copy of an
embedded collection's shard, in a process of its own.

The embedded engine's ``optimize()`` holds the GIL for its whole run, so :class:`..edge.EdgeStore` never
runs it in the serving process: it copies the shard and runs this worker on the copy (niced, with the
policy's indexing threads), then swaps the indexed copy in. Prints one JSON line: ``{"changed", "points",
"indexed_vectors", "segments", "seconds"}``; exits non-zero on failure (the copy is then dropped).
"""
from __future__ import annotations

import json
import os
import sys
import time

import qdrant_edge as qe

from .edge import edge_config
from .edge_indexing import IndexPolicy


def main(argv: list[str]) -> int:
    shard_dir, policy_json = argv
    policy = json.loads(policy_json)
    dim = int(policy.pop("dim"))
    extra = {name: int(d) for name, d in (policy.pop("vectors", None) or {}).items()}
    build_index = bool(policy.pop("build_index", True))     # False: vacuum and merge only
    try:
        os.nice(10)                 # searches in the serving process come first
    except OSError:
        pass
    t0 = time.perf_counter()
    shard = qe.EdgeShard.load(shard_dir, edge_config(dim, IndexPolicy(**policy), build_index=build_index, extra=extra))
    try:
        changed = shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    print(json.dumps({"changed": bool(changed), "points": info.points_count,
                      "indexed_vectors": info.indexed_vectors_count, "segments": info.segments_count,
                      "seconds": round(time.perf_counter() - t0, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
