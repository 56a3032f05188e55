"""Model registry: finds ``models/*/manifest.json``, loads/unloads model variants and switches the
default model without restart.

Every request holds a :class:`Lease` on the model (and variant) it started on for its whole life.
``unload`` takes the model out of the registry at once (new requests no longer see it) and closes its
sessions only when the last lease is released, so requests in flight always finish on their model.
Model names are validated: only a plain directory name directly under ``models_dir`` that holds a
manifest.json is accepted (no path traversal).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from stack_common.errors import Conflict, NotFound, ServiceError, Unavailable

from .core.metrics import Metrics
from .core.settings import Settings
from .engine.batching import AdmissionGate, BatchEngine
from .engine.onnx import OnnxRunner, cuda_listed, gpu_process_memory_bytes
from .engine.tokenizer import Tokenizer

from .export.manifest import ManifestError, load_manifest

log = logging.getLogger("llm_service.registry")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelFilesError(ServiceError):
    status_code = 500
    error_type = "model_error"


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """The model's manifest, validated by the export pipeline's own schema (llm_service.export.manifest)."""
    try:
        manifest = load_manifest(model_dir).model_dump(mode="json")
    except ManifestError as exc:
        raise ModelFilesError(str(exc)) from exc
    if not manifest["variants"]:
        raise ModelFilesError(f"{model_dir / 'manifest.json'} lists no variants")
    return manifest


class LoadedModel:
    """One model: tokenizer, manifest and one batch engine per loaded precision variant."""

    def __init__(self, name: str, directory: Path, manifest: dict[str, Any], tokenizer: Tokenizer) -> None:
        self.name = name
        self.dir = directory
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.engines: dict[str, BatchEngine] = {}
        self.default_precision: str = ""
        self.refs = 0
        self.retired = False
        self.created = int(time.time())
        self.lock = asyncio.Lock()

    @property
    def context_length(self) -> int:
        return int(self.manifest["context_length"])

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset(int(t) for t in self.manifest["eos_token_ids"])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "default_precision": self.default_precision,
                "precisions": {p: {"provider": e.runner.provider, "running": e.running, "waiting": e.waiting}
                               for p, e in self.engines.items()},
                "available_precisions": sorted(self.manifest["variants"]),
                "context_length": self.context_length, "in_flight": self.refs,
                "has_chat_template": self.tokenizer.chat_template is not None}

    def close(self) -> None:
        for precision, engine in list(self.engines.items()):
            engine.close()
            log.info("model variant closed", extra={"model": self.name, "precision": precision})
        self.engines.clear()


class Lease:
    """A request's hold on one model variant; release it exactly once (``async with`` does)."""

    def __init__(self, registry: "ModelRegistry", model: LoadedModel, precision: str) -> None:
        self.registry = registry
        self.model = model
        self.precision = precision
        self.engine = model.engines[precision]
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.registry._release(self.model)

    async def __aenter__(self) -> "Lease":
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics, gate: AdmissionGate) -> None:
        self.settings = settings
        self.metrics = metrics
        self.gate = gate
        self.models_dir = Path(settings.models_dir).resolve()
        self.loaded: dict[str, LoadedModel] = {}
        self.default: str | None = None
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task] = set()

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

    def initial_default(self) -> str | None:
        if self.settings.default_model:
            return self.settings.default_model
        names = self.available()
        return names[0] if len(names) == 1 else None

    # --- load / unload / default --------------------------------------------------------------
    async def load(self, name: str, precision: str | None = None) -> LoadedModel:
        directory = self.model_dir(name)
        lock = self._load_locks.setdefault(name, asyncio.Lock())
        async with lock:
            model = self.loaded.get(name)
            if model is None:
                manifest = await asyncio.to_thread(read_manifest, directory)
                tok_dir = (directory / manifest["tokenizer_dir"]).resolve()
                if not tok_dir.is_relative_to(directory.resolve()):
                    raise ModelFilesError(f"{name}: tokenizer_dir leaves the model directory")
                tokenizer = await asyncio.to_thread(Tokenizer, tok_dir)
                model = LoadedModel(name, directory, manifest, tokenizer)
                model.default_precision = await self._load_variant(model, precision)
                self.loaded[name] = model
            elif precision and precision != "auto":   # a load with a precision makes it the default one
                model.default_precision = await self._load_variant(model, precision)
            return model

    def _pick_variant(self, model: LoadedModel, precision: str | None) -> tuple[str, str]:
        """(variant, device kind it is meant for)."""
        variants = model.manifest["variants"]
        if precision is None or precision == "auto":
            precision = self.settings.precision if self.settings.precision != "auto" else None
        kind = "cuda" if self.settings.device in ("auto", "cuda") and cuda_listed() else "cpu"
        if precision is None:
            defaults = model.manifest.get("default_variant") or {}
            precision = defaults.get(kind) or next((p for p in ("int8", "fp32", "fp16") if p in variants),
                                                   next(iter(variants)))
        if precision not in variants:
            raise ServiceError(f"model {model.name!r} has no {precision!r} variant; it has {sorted(variants)}")
        return precision, kind

    async def _load_variant(self, model: LoadedModel, precision: str | None) -> str:
        explicit = precision not in (None, "auto") or self.settings.precision != "auto"
        variant, kind = self._pick_variant(model, precision)
        async with model.lock:
            if variant in model.engines:
                return variant
            t0 = time.perf_counter()
            runner = await asyncio.to_thread(self._runner, model, variant)
            if kind == "cuda" and runner.provider != "cuda" and not explicit:
                cpu_variant = (model.manifest.get("default_variant") or {}).get("cpu")
                log.warning("CUDA listed but not usable; serving on CPU",
                            extra={"model": model.name, "precision": variant})
                if cpu_variant and cpu_variant != variant and cpu_variant in model.manifest["variants"]:
                    runner.close()
                    variant = cpu_variant
                    runner = await asyncio.to_thread(self._runner, model, variant)
            model.engines[variant] = BatchEngine(
                runner, model.tokenizer, pad_token_id=int(model.manifest["pad_token_id"]),
                max_batch_size=self.settings.max_batch_size, batch_wait_ms=self.settings.batch_wait_ms,
                gate=self.gate, metrics=self.metrics, name=f"{model.name}:{variant}")
            took = time.perf_counter() - t0
            self.metrics.load_duration.labels(model.name, variant).observe(took)
            self.metrics.model_loaded.labels(model.name, variant, runner.provider).set(1)
            if runner.provider == "cuda":
                pid = os.getpid()
                self.metrics.gpu_memory.set_function(lambda: gpu_process_memory_bytes(pid))
            log.info("model variant loaded", extra={"model": model.name, "precision": variant,
                                                    "provider": runner.provider, "seconds": round(took, 3)})
            return variant

    def _runner(self, model: LoadedModel, variant: str) -> OnnxRunner:
        rel = model.manifest["variants"][variant]["path"]
        path = (model.dir / rel).resolve()
        if not path.is_relative_to(model.dir.resolve()) or not path.is_file():
            raise ModelFilesError(f"{model.name}: variant {variant} file {rel!r} is missing")
        s = self.settings
        return OnnxRunner(path, variant, device=s.device, intra_op_threads=s.intra_op_threads,
                          gpu_memory_fraction=s.gpu_memory_fraction, graph_optimization=s.graph_optimization)

    async def unload(self, name: str) -> dict[str, Any]:
        self.model_dir(name)
        model = self.loaded.get(name)
        if model is None:
            raise NotFound(f"model {name!r} is not loaded")
        if name == self.default:
            raise Conflict(f"model {name!r} is the default model; make another model the default first "
                           "(POST /admin/default)")
        del self.loaded[name]
        model.retired = True
        for p, e in model.engines.items():
            self.metrics.model_loaded.remove(name, p, e.runner.provider)
        in_flight = model.refs
        if in_flight == 0:
            await asyncio.to_thread(model.close)
        log.info("model unloaded", extra={"model": name, "in_flight": in_flight})
        return {"model": name, "status": "unloaded" if in_flight == 0 else "draining", "in_flight": in_flight}

    async def set_default(self, name: str, precision: str | None = None) -> LoadedModel:
        model = await self.load(name, precision)
        previous, self.default = self.default, name
        log.info("default model switched", extra={"model": name, "previous": previous})
        return model

    # --- leases -------------------------------------------------------------------------------
    async def acquire(self, name: str | None = None, precision: str | None = None) -> Lease:
        """A lease on ``name`` (the default when None) at ``precision`` (its default when None/auto);
        a precision not loaded yet is loaded on first use."""
        if not name:
            if self.default is None or self.default not in self.loaded:
                raise Unavailable("no default model is loaded; load one with POST /admin/default")
            name = self.default
        model = self.loaded.get(name)
        if model is None:
            self.model_dir(name)   # 404 for unknown names, with what exists
            raise NotFound(f"model {name!r} is on disk but not loaded; load it with "
                           f"POST /admin/models/{name}/load (loaded: {sorted(self.loaded)})")
        model.refs += 1
        try:
            variant = model.default_precision if precision in (None, "auto") else precision
            if variant not in model.engines:
                await self._load_variant(model, variant)
            return Lease(self, model, variant)
        except BaseException:
            self._release(model)
            raise

    def _release(self, model: LoadedModel) -> None:
        model.refs -= 1
        if model.refs == 0 and model.retired and model.engines:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(model.close))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for name, model in list(self.loaded.items()):
            await asyncio.to_thread(model.close)
        self.loaded.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
