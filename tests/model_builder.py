"""The test session's background model builder (started by tests/conftest.py after collection).

Builds, with the real pipeline and the same arguments as the fixtures, (``--smollm2``) SmolLM2 into the
repo's ``models/`` and then the tiny model into ``--tiny-dir``: one intra-op thread and one gate worker, so the
tests running meanwhile keep the other core. The fixtures then find the pipeline's cache (the pipeline
lock makes a fixture that asks first wait for the build, never build twice)."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny-dir", type=Path, required=True)
    ap.add_argument("--smollm2", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch
    from llm_service.export.pipeline import run_pipeline

    from tests.conftest import REPO_MODELS, TINY_ARGS

    torch.set_num_threads(1)
    # SmolLM2 first: it takes minutes and its tests run last. The tiny model takes seconds; when its tests
    # come first, the fixture builds it itself (the pipeline's lock per model keeps the two from clashing).
    if args.smollm2:
        t0 = time.perf_counter()
        run_pipeline("smollm2", models_dir=REPO_MODELS, gate_workers=1)
        logging.info("smollm2 built in %.1f s", time.perf_counter() - t0)
    t1 = time.perf_counter()
    run_pipeline("tiny", models_dir=args.tiny_dir, gate_workers=1, **TINY_ARGS)
    logging.info("tiny model built in %.1f s", time.perf_counter() - t1)


if __name__ == "__main__":
    main()
