"""The engine factory: an ONNX Runtime session and its batching engine for one model variant, on the device
the settings ask for, and what happened to that device.

``LLM_DEVICE=auto`` asks for CUDA when onnxruntime lists it; onnxruntime lists CUDA even where no GPU is
usable, so the session reports the provider it really runs on (:attr:`OnnxRunner.provider`) and the
registry decides what to serve on the CPU instead (:meth:`EngineFactory.wants_cuda`).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core.metrics import Metrics
from ..core.settings import Settings
from .batching import AdmissionGate, BatchEngine
from .onnx import OnnxRunner, cuda_listed, gpu_process_memory_bytes
from .tokenizer import Tokenizer


class EngineFactory:
    def __init__(self, settings: Settings, metrics: Metrics, gate: AdmissionGate) -> None:
        self.settings = settings
        self.metrics = metrics
        self.gate = gate

    def wants_cuda(self) -> bool:
        """The device kind variants are chosen for: CUDA when asked for (auto/cuda) and listed."""
        return self.settings.device in ("auto", "cuda") and cuda_listed()

    def runner(self, path: Path, variant: str) -> OnnxRunner:
        s = self.settings
        return OnnxRunner(path, variant, device=s.device, intra_op_threads=s.intra_op_threads,
                          gpu_memory_fraction=s.gpu_memory_fraction, graph_optimization=s.graph_optimization)

    def engine(self, runner: OnnxRunner, tokenizer: Tokenizer, pad_token_id: int, name: str) -> BatchEngine:
        s = self.settings
        if runner.provider == "cuda":
            pid = os.getpid()
            self.metrics.gpu_memory.set_function(lambda: gpu_process_memory_bytes(pid))
        return BatchEngine(runner, tokenizer, pad_token_id=pad_token_id, max_batch_size=s.max_batch_size,
                           batch_wait_ms=s.batch_wait_ms, gate=self.gate, metrics=self.metrics, name=name)
