"""ONNX Runtime session options shared by both services.

Two busy processes on two cores make onnxruntime with default threads 2-10x slower, and its
default spin-waiting burns a core: default to 1 intra-op thread and spinning off.
"""
from __future__ import annotations

import logging

log = logging.getLogger("stack_common.ort")


def session_options(intra_op_threads: int = 1, inter_op_threads: int = 1, spinning: bool = False,
                    graph_optimization: str = "all"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(0, int(intra_op_threads))
    so.inter_op_num_threads = max(0, int(inter_op_threads))
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    flag = "1" if spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", flag)
    so.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return so


def providers(device: str = "auto", gpu_mem_limit_bytes: int | None = None) -> list:
    """Execution providers to ask for: CUDA first when wanted and listed, CPU always as fallback.

    ``get_available_providers()`` lists CUDA even without a usable GPU, so callers must check
    ``session.get_providers()`` after creating the session (see :func:`active_provider`).
    """
    import onnxruntime as ort

    out: list = []
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        opts = {}
        if gpu_mem_limit_bytes:
            opts["gpu_mem_limit"] = str(int(gpu_mem_limit_bytes))
        out.append(("CUDAExecutionProvider", opts))
    out.append("CPUExecutionProvider")
    return out


def active_provider(session) -> str:
    """The provider that really runs the session's first node: 'cuda' or 'cpu'."""
    used = session.get_providers()
    return "cuda" if used and used[0] == "CUDAExecutionProvider" else "cpu"
