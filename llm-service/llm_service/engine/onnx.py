"""ONNX Runtime runner of an optimum ``text-generation-with-past`` export.

Inputs: input_ids, attention_mask, (position_ids), past_key_values.{i}.key/value (B, kv_heads, past, D);
outputs: logits, present.{i}.key/value. The cache lives in numpy arrays between steps.
"""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stack_common import ort as ort_common

from .base import KVCache, ModelRunner

log = logging.getLogger("llm_service.engine.onnx")

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass
class OnnxKV(KVCache):
    arrays: list[np.ndarray]   # key0, value0, key1, value1, ... each (B, H, L, D)


def gpu_total_memory_bytes() -> int | None:
    """Total memory of GPU 0 via nvidia-smi (None when there is none)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
        return int(out.stdout.strip().splitlines()[0]) * 1024 * 1024 if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def gpu_process_memory_bytes(pid: int) -> int:
    """GPU memory used by process ``pid`` (0 when unknown)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
        total = 0
        for line in out.stdout.strip().splitlines():
            p, mem = [x.strip() for x in line.split(",")]
            if int(p) == pid:
                total += int(mem) * 1024 * 1024
        return total
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def cuda_listed() -> bool:
    import onnxruntime as ort
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRunner(ModelRunner):
    def __init__(self, model_path: Path, precision: str, device: str = "auto", intra_op_threads: int = 1,
                 gpu_memory_fraction: float = 0.9, graph_optimization: str = "all") -> None:
        import onnxruntime as ort

        self.precision = precision
        so = ort_common.session_options(intra_op_threads=intra_op_threads, graph_optimization=graph_optimization)
        limit = None
        if device in ("auto", "cuda"):
            total = gpu_total_memory_bytes()
            limit = int(total * gpu_memory_fraction) if total else None
        self.session = ort.InferenceSession(str(model_path), sess_options=so,
                                            providers=ort_common.providers(device, limit))
        self.provider = ort_common.active_provider(self.session)
        if device == "cuda" and self.provider != "cuda":
            raise RuntimeError("LLM_DEVICE=cuda but the CUDA execution provider is not usable here "
                               f"(session runs on {self.session.get_providers()})")
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.has_position_ids = "position_ids" in inputs
        self.kv_names = sorted((n for n in inputs if n.startswith("past_key_values.")),
                               key=lambda n: (int(n.split(".")[1]), n.split(".")[2] != "key"))
        first = inputs[self.kv_names[0]]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.kv_dtype = _DTYPES.get(first.type, np.float32)
        self.output_names = ["logits"] + [n.replace("past_key_values.", "present.") for n in self.kv_names]
        log.info("onnx session ready", extra={"model_path": str(model_path), "precision": precision,
                                              "provider": self.provider, "providers": self.session.get_providers(),
                                              "gpu_mem_limit": limit, "intra_op_threads": intra_op_threads})

    def forward(self, input_ids, attention_mask, position_ids, past):
        b = input_ids.shape[0]
        if past is None:
            empty = np.zeros((b, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
            past = OnnxKV([empty] * len(self.kv_names))
        feed = {"input_ids": input_ids.astype(np.int64, copy=False),
                "attention_mask": attention_mask.astype(np.int64, copy=False)}
        if self.has_position_ids:
            feed["position_ids"] = position_ids.astype(np.int64, copy=False)
        feed.update(zip(self.kv_names, past.arrays))
        out = self.session.run(self.output_names, feed)
        logits = np.asarray(out[0][:, -1, :], dtype=np.float32)
        return logits, OnnxKV(out[1:])

    def select(self, past, rows):
        return OnnxKV([a[rows] for a in past.arrays])

    def trim_left(self, past, n):
        return OnnxKV([np.ascontiguousarray(a[:, :, n:, :]) for a in past.arrays]) if n > 0 else past

    def concat(self, a, b):
        la, lb = self.past_length(a), self.past_length(b)
        out = []
        for x, y in zip(a.arrays, b.arrays):
            if la < lb:
                x = np.pad(x, ((0, 0), (0, 0), (lb - la, 0), (0, 0)))
            elif lb < la:
                y = np.pad(y, ((0, 0), (0, 0), (la - lb, 0), (0, 0)))
            out.append(np.concatenate([x, y], axis=0))
        return OnnxKV(out)

    def past_length(self, past):
        return int(past.arrays[0].shape[2])

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
