"""A minimal numpy driver for the exported ONNX causal LM (no torch).

Used by the pipeline to measure agreement and speed, and by tests; a reference for the service's
generation loop (see the I/O names in :mod:`llm_service.export.manifest`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class OrtCausalLM:
    def __init__(self, model_path: str | Path, intra_op_threads: int = 1, spinning: bool = False,
                 graph_optimization: str = "all", providers: list | None = None):
        import onnxruntime as ort
        from stack_common.ort import session_options

        so = session_options(intra_op_threads=intra_op_threads, spinning=spinning,
                             graph_optimization=graph_optimization)
        self.session = ort.InferenceSession(str(model_path), so,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.past_names = [n for n in self.input_names if n.startswith("past_key_values.")]
        self.present_names = ["present." + n[len("past_key_values."):] for n in self.past_names]
        shp = {i.name: i.shape for i in self.session.get_inputs()}
        if self.past_names:
            s = shp[self.past_names[0]]
            self.num_kv_heads, self.head_dim = int(s[1]), int(s[3])
        self.has_position_ids = "position_ids" in self.input_names

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        z = np.zeros((batch, self.num_kv_heads, 0, self.head_dim), dtype=np.float32)
        return {n: z for n in self.past_names}

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                past: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One forward pass. ``attention_mask`` covers past + new tokens. Returns (logits, new past)."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        feed.update(past if past is not None else self.empty_past(input_ids.shape[0]))
        if self.has_position_ids:
            pos = np.clip(np.cumsum(attention_mask, axis=1) - 1, 0, None)
            feed["position_ids"] = pos[:, -input_ids.shape[1]:].astype(np.int64)
        outs = self.session.run(None, feed)
        named = dict(zip(self.output_names, outs))
        new_past = {p: named[q] for p, q in zip(self.past_names, self.present_names)}
        return named["logits"], new_past

    def logits(self, ids: list[int]) -> np.ndarray:
        """Teacher-forced logits [seq, vocab] for one sequence."""
        x = np.asarray([ids], dtype=np.int64)
        lg, _ = self.forward(x, np.ones_like(x))
        return lg[0]

    def greedy(self, ids: list[int], max_new_tokens: int, eos_ids: set[int] | None = None,
               timings: dict | None = None) -> list[int]:
        """Greedy decode with KV cache, batch 1. Returns the new token ids."""
        t0 = time.perf_counter()
        x = np.asarray([ids], dtype=np.int64)
        mask = np.ones_like(x)
        lg, past = self.forward(x, mask)
        t1 = time.perf_counter()
        out: list[int] = []
        nxt = int(lg[0, -1].argmax())
        while True:
            out.append(nxt)
            if len(out) >= max_new_tokens or (eos_ids and nxt in eos_ids):
                break
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
            lg, past = self.forward(np.asarray([[nxt]], dtype=np.int64), mask, past)
            nxt = int(lg[0, -1].argmax())
        if timings is not None:
            t2 = time.perf_counter()
            timings["prefill_s"] = t1 - t0
            timings["decode_s"] = t2 - t1
            timings["total_s"] = t2 - t0
        return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def agreement(ref: OrtCausalLM, other: OrtCausalLM, sequences: list[list[int]],
              starts: list[int] | None = None) -> dict:
    """Teacher-forced top-1 agreement and mean KL(ref || other) over the positions of ``sequences``
    (from ``starts[i]`` on in sequence i when given, e.g. only the positions that predict an answer)."""
    agree = 0
    kl_sum = 0.0
    n = 0
    for i, ids in enumerate(sequences):
        lo = starts[i] if starts is not None else 0
        a = log_softmax(ref.logits(ids)[lo:])
        b = log_softmax(other.logits(ids)[lo:])
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        kl_sum += float((np.exp(a) * (a - b)).sum())
        n += a.shape[0]
    return {"top1": round(agree / n, 4), "kl_nats": round(kl_sum / n, 4), "positions": n}


def bench(lm: OrtCausalLM, prompt_ids: list[int], new_tokens: int = 64, runs: int = 2,
          warmup: int = 1) -> dict:
    """Single-stream greedy generation of exactly ``new_tokens`` (no early eos)."""
    for _ in range(warmup):
        lm.greedy(prompt_ids, min(8, new_tokens))
    pre, dec, tot = [], [], []
    for _ in range(runs):
        t: dict = {}
        out = lm.greedy(prompt_ids, new_tokens, eos_ids=None, timings=t)
        pre.append(t["prefill_s"])
        dec.append(t["decode_s"] / max(1, len(out) - 1))
        tot.append(t["total_s"])
    avg = sum(tot) / len(tot)
    return {"new_tokens": new_tokens, "runs": runs, "prompt_tokens": len(prompt_ids),
            "prefill_ms": round(1000 * sum(pre) / runs, 2),
            "per_token_ms": round(1000 * sum(dec) / runs, 3),
            "avg_latency_s": round(avg, 4), "tokens_per_s": round(new_tokens / avg, 2)}
