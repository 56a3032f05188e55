"""Single-stream engines of scripts/bench_llm.py: each one is a greedy generator

    gen(prompt_ids, n, eos) -> (new ids, ttft_s, total_s)      # eos None: exactly n new tokens

so speed and quality (the gate's task suite) are measured through the same function for every row:
PyTorch fp32 / int8 dynamic, an ONNX variant of the manifest (the project's numpy loop), and
onnxruntime-genai's model builder export of the same HF folder run by its own generator.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

# onnxruntime-genai builder exports of the same HF folder: (label, -p precision, --extra_options)
GENAI_VARIANTS = [("fp32", "fp32", []),
                  ("int4", "int4", ["int4_accuracy_level=4", "int4_block_size=32"]),
                  ("int4-kquant-mixed", "int4", ["int4_accuracy_level=4", "int4_algo_config=k_quant_mixed"])]


def torch_engine(hf_dir: Path, int8: bool):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    if int8:
        import warnings

        from torch.ao.quantization import quantize_dynamic
        with warnings.catch_warnings():   # torch.ao eager quantization is deprecated (torchao), still the baseline
            warnings.simplefilter("ignore")
            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    pad = model.generation_config.pad_token_id

    def gen(ids: list[int], n: int, eos: set[int] | None):
        x = torch.tensor([ids])
        kw = dict(do_sample=False, use_cache=True, pad_token_id=pad, attention_mask=torch.ones_like(x))
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(x, max_new_tokens=1, min_new_tokens=1, **kw)
            t1 = time.perf_counter()
            if eos is None:
                out = model.generate(x, max_new_tokens=n, min_new_tokens=n, **kw)
            else:
                out = model.generate(x, max_new_tokens=n, eos_token_id=sorted(eos), **kw)
            t2 = time.perf_counter()
        # TTFT from a separate 1-token call; the timed run is the n-token call.
        return [int(t) for t in out[0, len(ids):]], t1 - t0, t2 - t1
    return gen


def onnx_engine(path: Path):
    from llm_service.export.ort_lm import OrtCausalLM

    lm = OrtCausalLM(path, intra_op_threads=1, spinning=False)

    def gen(ids: list[int], n: int, eos: set[int] | None):
        t: dict = {}
        out = lm.greedy(ids, n, eos_ids=eos, timings=t)
        return out, t["prefill_s"], t["total_s"]
    return gen


def genai_build(hf_dir: Path, out: Path, precision: str, extra: list[str]) -> Path:
    """onnxruntime-genai's model builder on the same HF folder (cached in ``out``), 1 intra-op thread."""
    if not (out / "genai_config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(out.parent / ".genai-cache")]
        if extra:
            cmd += ["--extra_options", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not (out / "genai_config.json").is_file():
            raise RuntimeError(f"onnxruntime-genai builder failed: {r.stderr[-2000:]}")
    cfg_path = out / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    so = cfg["model"]["decoder"].setdefault("session_options", {})
    so.update({"intra_op_num_threads": 1, "inter_op_num_threads": 1})   # one thread: no pool left to spin
    so.pop("config_entries", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return out


def genai_engine(path: Path):
    import onnxruntime_genai as og

    model = og.Model(str(path))

    def gen(ids: list[int], n: int, eos: set[int] | None):
        params = og.GeneratorParams(model)
        opts = {"max_length": len(ids) + n, "do_sample": False}
        if eos is None:
            opts["min_length"] = len(ids) + n
        params.set_search_options(**opts)
        g = og.Generator(model, params)
        t0 = time.perf_counter()
        g.append_tokens(ids)
        out: list[int] = []
        ttft = None
        while not g.is_done():
            g.generate_next_token()
            tok = int(g.get_next_tokens()[0])
            if ttft is None:
                ttft = time.perf_counter() - t0
            out.append(tok)
            if eos is not None and tok in eos:
                break
        return out, ttft or 0.0, time.perf_counter() - t0
    return gen


