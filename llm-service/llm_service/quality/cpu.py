"""The CPU kind a quality measurement holds for.

onnxruntime's int8 kernels (MLAS) pick their code path by ISA: u8s8 products summed in int16 without
VNNI (AVX2), VNNI dot products with AVX512-VNNI / AVX-VNNI, tile instructions with AMX — and their results
differ. So a gate result is only valid on the same *kind*: the CPU vendor, those ISA flags, and the
onnxruntime version that ran the kernels.
"""
from __future__ import annotations

import platform
import re
from functools import lru_cache

# ISA flags (as /proc/cpuinfo spells them) that select different MLAS kernels for int8 / fp32 GEMMs.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, str, frozenset[str]]:
    vendor, model, flags = platform.machine() or "unknown", platform.processor() or "", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return vendor, model, flags
    def field(name: str) -> str | None:
        m = re.search(rf"^{name}\s*:\s*(.*)$", text, re.MULTILINE)
        return m.group(1).strip() if m else None
    vendor = field("vendor_id") or field("CPU implementer") or vendor
    model = field("model name") or model
    flags = frozenset((field("flags") or field("Features") or "").split())
    return vendor, model, flags


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def cpu_info() -> dict:
    """What a gate record stores about the machine it ran on."""
    vendor, model, flags = _cpuinfo()
    return {"kind": cpu_kind(), "vendor": vendor, "model": model, "machine": platform.machine(),
            "flags": [f for f in KERNEL_FLAGS if f in flags], "onnxruntime": ort_version()}


def cpu_kind() -> str:
    """E.g. ``AuthenticAMD-avx2-ort1.32.0`` or ``GenuineIntel-avx2+avx512f+avx512_vnni-ort1.32.0``:
    safe as a file name, equal on machines whose int8 kernels compute the same."""
    vendor, _, flags = _cpuinfo()
    isa = "+".join(f for f in KERNEL_FLAGS if f in flags) or platform.machine() or "generic"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{vendor}-{isa}-ort{ort_version()}")
