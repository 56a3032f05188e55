"""What machine a figure was measured on: benchmark output records the CPU (int8 kernels, and so int8
results and speed, differ between AVX2-only and AVX-512 VNNI machines)."""
from __future__ import annotations

import platform

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_name() -> str:
    """``"<model name> (<the SIMD flags that matter here>)"``, e.g. ``"AMD EPYC (avx2)"``."""
    name, flags = platform.processor() or "unknown", ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = "+".join(f for f in FLAGS if f in have)
                    break
    except OSError:
        pass
    return f"{name} ({flags})" if flags else name
