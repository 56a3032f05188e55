#!/usr/bin/env python
"""How fast can MiniLM (all-MiniLM-L6-v2) run on this CPU at all? A floor for the embedding cost.

    python scripts/dev/encoder_ceiling.py                    # 1 thread, query (22 tokens) and abstract (238)
    python scripts/dev/encoder_ceiling.py --tokens 22,128,238

1. The encoder's linear layers alone: a graph of only the MatMuls of its 6 layers with their real shapes
   (per layer: QKV 384x1152, output 384x384, FFN 384x1536 and 1536x384; a Slice stands in for
   attention), random weights, int8 dynamically quantized the way the service's model is (QInt8 per
   channel, ``DynamicQuantizeMatMul``) and in fp32. No attention, LayerNorm, GELU or embeddings: the
   model cannot be faster than this with onnxruntime's kernels on this CPU.
2. The service's ``fused`` encoder (``models/all-MiniLM-L6-v2-int8-fused``, built on first use) at
   the same lengths, with onnxruntime's per-operator profile.
3. What that means for the search-service targets: documents/s per core at 238 tokens (SciFact's mean
   abstract after truncation to 256), and the query-embedding floor.

The figures are this machine's; run it on a quiet machine (one script at a time).
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stack_dev.procs import ROOT

HIDDEN, FFN, LAYERS = 384, 1536, 6


def linear_only_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"

    def matmul(src: str, k: int, n: int, name: str) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal((k, n)) * 0.05).astype(np.float32), f"w_{name}"))
        nodes.append(helper.make_node("MatMul", [src, f"w_{name}"], [name]))
        return name

    inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), n)
              for n, v in (("s0", [0]), ("s1", [HIDDEN]), ("ax", [1]))]
    for layer in range(LAYERS):
        qkv = matmul(x, HIDDEN, 3 * HIDDEN, f"qkv{layer}")
        nodes.append(helper.make_node("Slice", [qkv, "s0", "s1", "ax"], [f"ctx{layer}"]))   # "attention"
        out = matmul(f"ctx{layer}", HIDDEN, HIDDEN, f"out{layer}")
        up = matmul(out, HIDDEN, FFN, f"up{layer}")
        x = matmul(up, FFN, HIDDEN, f"down{layer}")
    graph = helper.make_graph(nodes, "minilm_linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", HIDDEN])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["m", HIDDEN])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def timed(run, reps: int) -> float:
    for _ in range(3):
        run()
    best = []
    for _ in range(3):                        # best of 3 rounds: the floor, not the noise
        t0 = time.perf_counter()
        for _ in range(reps):
            run()
        best.append((time.perf_counter() - t0) / reps)
    return min(best)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="22,238", help="sequence lengths (tokens incl. [CLS]/[SEP])")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    args = ap.parse_args(argv)
    lengths = [int(t) for t in args.tokens.split(",")]
    with tempfile.TemporaryDirectory(prefix="encoder_ceiling-") as tmp:
        measure(Path(tmp), args, lengths)


def measure(tmp: Path, args: argparse.Namespace, lengths: list[int]) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from search_service.embedding_models import build_minilm
    from stack_common.ort import session_options

    macs_per_token = LAYERS * (HIDDEN * 3 * HIDDEN + HIDDEN * HIDDEN + 2 * HIDDEN * FFN)
    linear_only_model(tmp / "fp32.onnx")
    logging.getLogger().setLevel(logging.ERROR)     # quantize_dynamic's "consider pre-processing" warning
    quantize_dynamic(str(tmp / "fp32.onnx"), str(tmp / "int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)

    print(f"onnxruntime {ort.__version__}, {args.threads} intra-op thread(s), {os.cpu_count()} cores")
    print(f"linear layers: {macs_per_token / 1e6:.2f} M multiply-adds per token\n")
    print("| graph | tokens | ms per sequence | ms per token | GFLOP/s |")
    print("|---|---|---|---|---|")
    floor: dict[int, float] = {}
    for name in ("fp32", "int8"):
        sess = ort.InferenceSession(str(tmp / f"{name}.onnx"), session_options(intra_op_threads=args.threads),
                                    providers=["CPUExecutionProvider"])
        for n in lengths:
            x = np.random.default_rng(1).standard_normal((n, HIDDEN)).astype(np.float32)
            dt = timed(lambda: sess.run(None, {"x": x}), max(5, 2000 // n))
            if name == "int8":
                floor[n] = dt
            print(f"| linear layers only, {name} | {n} | {dt * 1e3:.2f} | {dt / n * 1e3:.4f} | "
                  f"{2 * macs_per_token * n / dt / 1e9:.0f} |")

    model_file = build_minilm(args.models_dir).model_file
    full: dict[int, float] = {}
    profiles: dict[int, collections.Counter] = {}
    for n in lengths:
        so = session_options(intra_op_threads=args.threads)
        sess = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
        ids = np.random.default_rng(2).integers(1000, 20000, (1, n)).astype(np.int64)
        ids[0, 0], ids[0, -1] = 101, 102
        names = {i.name for i in sess.get_inputs()}
        feed = {k: v for k, v in {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                  "token_type_ids": np.zeros_like(ids)}.items() if k in names}
        full[n] = timed(lambda: sess.run(None, feed), max(5, 2000 // n))
        print(f"| service encoder (fused int8) | {n} | {full[n] * 1e3:.2f} | {full[n] / n * 1e3:.4f} | "
              f"{2 * macs_per_token * n / full[n] / 1e9:.0f} (linear share) |")
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp / f"profile{n}")
        prof = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
        runs = max(5, 500 // n)
        for _ in range(runs):
            prof.run(None, feed)
        per_op: collections.Counter = collections.Counter()
        for ev in json.loads(Path(prof.end_profiling()).read_text()):
            if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                per_op[ev["args"]["op_name"]] += ev["dur"] / runs / 1000
        profiles[n] = per_op

    print("\nper operator, ms per sequence (onnxruntime profiler):")
    ops = sorted({op for p in profiles.values() for op in p}, key=lambda op: -profiles[lengths[-1]][op])
    print("| operator | " + " | ".join(f"{n} tokens" for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for op in ops:
        print(f"| {op} | " + " | ".join(f"{profiles[n][op]:.2f}" for n in lengths) + " |")

    cores = os.cpu_count() or 1
    print("\nwhat it bounds (all cores busy embedding, nothing else):")
    for n in lengths:
        print(f"  {n:4d} tokens: linear floor {1 / floor[n]:7.1f} /s per core, {cores / floor[n]:7.1f} /s on {cores} cores; "
              f"service encoder {1 / full[n]:6.1f} /s per core, {cores / full[n]:6.1f} /s on {cores} cores")
    print(f"command: python scripts/dev/encoder_ceiling.py --tokens {args.tokens} --threads {args.threads}")


if __name__ == "__main__":
    main()
