"""The model catalog: what is on disk under ``models_dir`` — manifests, their variants, the quality gate's
results per CPU kind — and the one place that decides which variant a request is served.

A model is a plain directory name directly under ``models_dir`` holding a manifest.json written by the
export pipeline (no path traversal). Gate records: the build machine's is in the manifest
(``manifest.gate``); a record measured at load on another CPU kind is cached beside it in
``<model>/gates/<cpu kind>.json``. A record counts only when its key (CPU kind, task suite, policy,
variant files) matches this machine and these files, so a ``models/`` volume moved to another kind of
CPU is never served a variant gated elsewhere.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stack_common.errors import Failed, NotFound, ServiceError
from stack_common.files import write_json_atomic

from .export.manifest import Manifest, ManifestError, load_manifest
from .export.pipeline import ALL_PRECISIONS
from .quality.cpu import cpu_kind
from .quality.gate import Policy, record_key, run_gate

log = logging.getLogger("llm_service.catalog")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
GATES_DIR = "gates"

# Why a variant is served: a request or /admin call named it; LLM_PRECISION named it; the quality gate
# chose it on this CPU kind; the device's default (CUDA); fp32 because no gate result exists (yet) for
# this CPU kind.
Source = Literal["request", "setting", "gate", "device", "ungated"]


class ModelFilesError(Failed):
    error_type = "model_error"


@dataclass(frozen=True)
class Choice:
    variant: str
    source: Source


class ModelCatalog:
    def __init__(self, models_dir: Path, policy: Policy = Policy()) -> None:
        self.models_dir = Path(models_dir).resolve()
        self.policy = policy

    # --- discovery ----------------------------------------------------------------------------
    def available(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.models_dir.glob("*/manifest.json") if NAME_RE.match(p.parent.name))

    def model_dir(self, name: str) -> Path:
        """The directory of model ``name``; 404 unless it is a plain name with a manifest under models_dir."""
        if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
            raise NotFound(f"unknown model {name!r}: model names are plain directory names "
                           "(letters, digits, '.', '_', '-')")
        d = self.models_dir / name
        if d.resolve().parent != self.models_dir or not (d / "manifest.json").is_file():
            raise NotFound(f"unknown model {name!r}; models on disk: {self.available()}")
        return d

    def manifest(self, directory: Path) -> Manifest:
        """The model's manifest, validated by the export pipeline's own schema."""
        try:
            manifest = load_manifest(directory)
        except ManifestError as exc:
            raise ModelFilesError(str(exc)) from exc
        if not manifest.variants:
            raise ModelFilesError(f"{directory / 'manifest.json'} lists no variants")
        tok_dir = (directory / manifest.tokenizer_dir).resolve()
        if not tok_dir.is_relative_to(directory.resolve()):
            raise ModelFilesError(f"{directory.name}: tokenizer_dir leaves the model directory")
        return manifest

    def variant_path(self, directory: Path, manifest: Manifest, variant: str) -> Path:
        rel = manifest.variants[variant].path
        path = (directory / rel).resolve()
        if not path.is_relative_to(directory.resolve()) or not path.is_file():
            raise ModelFilesError(f"{directory.name}: variant {variant} file {rel!r} is missing")
        return path

    # --- the quality gate ---------------------------------------------------------------------
    def _gated_files(self, manifest: Manifest) -> dict[str, str]:
        return {n: f for n, f in manifest.variant_files().items() if n in ALL_PRECISIONS}   # not fp16 (CUDA)

    def gate_record(self, directory: Path, manifest: Manifest) -> dict[str, Any] | None:
        """The gate record valid on this CPU kind for these files, or None (then: :meth:`regate`)."""
        key = record_key(self._gated_files(manifest), self.policy)
        if manifest.gate and manifest.gate.get("key") == key:
            return manifest.gate
        path = directory / GATES_DIR / f"{cpu_kind()}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def regate(self, directory: Path, manifest: Manifest, intra_op_threads: int = 1,
               stop: threading.Event | None = None) -> dict[str, Any]:
        """Run the gate on this machine and cache the record under ``<model>/gates/`` (blocking: call it
        in a thread). A read-only models dir keeps the record in memory only (gated again next start)."""
        variants = {n: v.path for n, v in manifest.variants.items() if n in ALL_PRECISIONS}
        record = run_gate(directory, directory / manifest.tokenizer_dir, variants, self._gated_files(manifest),
                          manifest.eos_token_ids, policy=self.policy, intra_op_threads=intra_op_threads, stop=stop)
        path = directory / GATES_DIR / f"{cpu_kind()}.json"
        try:
            write_json_atomic(path, record, indent=2)
        except OSError as exc:
            log.warning("gate result not cached (models dir not writable); it is measured again at the "
                        "next start", extra={"model": directory.name, "path": str(path), "error": str(exc)})
        return record

    # --- which variant to serve ---------------------------------------------------------------
    @staticmethod
    def variant(manifest: Manifest, name: str) -> str:
        """``name`` if the model has that variant, else a 400 naming the ones it has."""
        if name not in manifest.variants:
            raise ServiceError(f"model {manifest.name!r} has no {name!r} variant; it has {sorted(manifest.variants)}")
        return name

    def choose(self, manifest: Manifest, device: str, requested: str | None, setting: str,
               gate: dict[str, Any] | None) -> Choice:
        """The variant to serve, and why. ``requested`` (a request's or /admin's precision) and ``setting``
        (LLM_PRECISION) are the user's choice and honoured as given; ``auto`` on CPU serves the gate's
        choice for this CPU kind, fp32 while there is none; on CUDA the manifest's CUDA default."""
        variants = manifest.variants
        for value, source in ((requested, "request"), (setting, "setting")):
            if value not in (None, "", "auto"):
                return Choice(self.variant(manifest, value), source)  # type: ignore[arg-type]
        fallback = "fp32" if "fp32" in variants else sorted(variants)[0]
        if device == "cuda":
            v = manifest.default_variant.get("cuda", "fp32")
            return Choice(v if v in variants else fallback, "device")
        if gate is not None and gate.get("chosen") in variants:
            return Choice(gate["chosen"], "gate")
        return Choice(fallback, "ungated")

