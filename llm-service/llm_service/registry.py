"""The model registry: loaded models, their variants' engines, and the leases requests hold on them.

Loading a model asks the catalog (:mod:`.catalog`) which variant to serve and the engine factory
(:mod:`.engine.factory`) for its engine; the default model switches without restart. With
``LLM_PRECISION=auto`` on CPU a model is served the variant its quality gate chose on this CPU kind; when
no gate result exists for this kind (a ``models/`` volume built on another CPU), fp32 is served at once
and the gate runs in the background, after which the model switches to the gate's choice
(``LLM_GATE_ON_LOAD=false``: stay on fp32).

Every request holds a :class:`Lease` on the model (and variant) it started on for its whole life.
``unload`` takes the model out of the registry at once (new requests no longer see it) and closes its
sessions only when the last lease is released, so requests in flight always finish on their model.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from stack_common.errors import Conflict, NotFound, Unavailable

from .catalog import ModelCatalog
from .core.metrics import Metrics
from .core.settings import Settings
from .engine.batching import AdmissionGate, BatchEngine
from .engine.factory import EngineFactory
from .engine.grammar import GrammarCompiler
from .engine.tokenizer import Tokenizer
from .export.manifest import Manifest
from .quality.gate import summary

log = logging.getLogger("llm_service.registry")


class LoadedModel:
    """One model: tokenizer, manifest and one batch engine per loaded precision variant."""

    def __init__(self, name: str, directory: Path, manifest: Manifest, tokenizer: Tokenizer) -> None:
        self.name = name
        self.dir = directory
        self.manifest = manifest
        self.tokenizer = tokenizer
        # structured output: the llguidance tokenizer is built on the first constrained request
        self.grammars = GrammarCompiler(tokenizer.to_json(), self.eos_token_ids)
        self.engines: dict[str, BatchEngine] = {}
        self.default_precision: str = ""
        self.precision_source: str = ""
        self.gate: dict[str, Any] | None = None      # the gate record valid on this CPU kind
        self.gate_state = "none"                      # measured | measuring | failed | disabled | none
        self.refs = 0
        self.retired = False
        self.created = int(time.time())
        self.lock = asyncio.Lock()

    @property
    def context_length(self) -> int:
        return int(self.manifest.context_length)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset(int(t) for t in self.manifest.eos_token_ids)

    def quality(self) -> dict[str, Any]:
        """The served precision, why, and the gate's scores on this CPU kind."""
        return {"precision": self.default_precision, "precision_source": self.precision_source,
                "gate": {"state": self.gate_state, **summary(self.gate)}}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "default_precision": self.default_precision,
                "precisions": {p: {"provider": e.runner.provider, "running": e.running, "waiting": e.waiting}
                               for p, e in self.engines.items()},
                "available_precisions": sorted(self.manifest.variants),
                "context_length": self.context_length, "in_flight": self.refs,
                "has_chat_template": self.tokenizer.chat_template is not None, **self.quality()}

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

    def share(self) -> "Lease":
        """Another hold on the same model variant (for a request's further choices); released on its own."""
        self.model.refs += 1
        return Lease(self.registry, self.model, self.precision)

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
        self.catalog = ModelCatalog(settings.models_dir)
        self.factory = EngineFactory(settings, metrics, gate)
        self.loaded: dict[str, LoadedModel] = {}
        self.default: str | None = None
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task] = set()
        self._gating: dict[str, asyncio.Task] = {}

    # --- discovery ----------------------------------------------------------------------------
    def available(self) -> list[str]:
        return self.catalog.available()

    def model_dir(self, name: str) -> Path:
        return self.catalog.model_dir(name)

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
                manifest = await asyncio.to_thread(self.catalog.manifest, directory)
                tokenizer = await asyncio.to_thread(Tokenizer, directory / manifest.tokenizer_dir)
                model = LoadedModel(name, directory, manifest, tokenizer)
                model.gate = await asyncio.to_thread(self.catalog.gate_record, directory, manifest)
                model.gate_state = "measured" if model.gate else "none"
                await self._serve(model, precision)
                self.loaded[name] = model
            elif precision and precision != "auto":   # a load with a precision makes it the default one
                await self._serve(model, precision)
            return model

    async def _serve(self, model: LoadedModel, requested: str | None) -> None:
        """Choose the model's default variant (catalog), load its engine, and start the gate when this
        CPU kind has no result yet."""
        device = "cuda" if self.factory.wants_cuda() else "cpu"
        choice = self.catalog.choose(model.manifest, device, requested, self.settings.precision, model.gate)
        variant = await self._load_variant(model, choice.variant)
        if device == "cuda" and choice.source == "device" and model.engines[variant].runner.provider != "cuda":
            log.warning("CUDA listed but not usable; serving on CPU", extra={"model": model.name, "precision": variant})
            choice = self.catalog.choose(model.manifest, "cpu", requested, self.settings.precision, model.gate)
            if choice.variant != variant and model.refs == 0:
                self._drop_engine(model, variant)
            variant = await self._load_variant(model, choice.variant)
        model.default_precision, model.precision_source = variant, choice.source
        if choice.source == "ungated":
            self._start_gate(model)
        elif choice.source == "gate" and variant == "fp32" and len(model.gate["variants"]) > 1:
            log.warning("no quantized variant passed the quality gate on this CPU kind; serving fp32",
                        extra={"model": model.name, "cpu_kind": model.gate["cpu"]["kind"],
                               "reasons": {n: r["reason"] for n, r in model.gate["variants"].items() if n != "fp32"}})
        log.info("serving precision", extra={"model": model.name, "precision": variant, "source": choice.source})

    def _drop_engine(self, model: LoadedModel, variant: str) -> None:
        engine = model.engines.pop(variant)
        self.metrics.model_loaded.remove(model.name, variant, engine.runner.provider)
        engine.close()

    def _start_gate(self, model: LoadedModel) -> None:
        if not self.settings.gate_on_load:
            model.gate_state = "disabled"
            log.warning("no quality gate result for this CPU kind; serving fp32 (LLM_GATE_ON_LOAD=false)",
                        extra={"model": model.name})
            return
        if model.name in self._gating:
            return
        model.gate_state = "measuring"
        log.warning("no quality gate result for this CPU kind: serving fp32 while the gate measures the "
                    "variants in the background", extra={"model": model.name})
        task = asyncio.get_running_loop().create_task(self._gate(model))
        self._gating[model.name] = task
        task.add_done_callback(lambda _t, n=model.name: self._gating.pop(n, None))

    async def _gate(self, model: LoadedModel) -> None:
        """The gate in a daemon thread (not the default executor: a shutdown must not wait for it); a
        cancelled task stops the thread at the next prompt."""
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        stop = threading.Event()

        def settle(result: Any, exc: BaseException | None) -> None:
            if not done.done():
                done.set_exception(exc) if exc is not None else done.set_result(result)

        def work() -> None:
            try:
                r, e = self.catalog.regate(model.dir, model.manifest, self.settings.intra_op_threads, stop), None
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                r, e = None, exc
            try:
                loop.call_soon_threadsafe(settle, r, e)
            except RuntimeError:
                pass                     # the loop is gone (shutdown)

        threading.Thread(target=work, name=f"gate-{model.name}", daemon=True).start()
        try:
            record = await done
        except asyncio.CancelledError:
            stop.set()
            raise
        except Exception:   # noqa: BLE001 - logged; the model stays on fp32
            model.gate_state = "failed"
            log.exception("quality gate failed; staying on fp32", extra={"model": model.name})
            return
        model.gate = record
        if not model.retired and model.precision_source == "ungated":   # else a user chose: theirs stands
            async with self._load_locks.setdefault(model.name, asyncio.Lock()):
                await self._serve(model, None)
        model.gate_state = "measured"
        log.info("quality gate measured", extra={
            "model": model.name, "precision": model.default_precision, "seconds": round(time.perf_counter() - t0, 1),
            "passed": [n for n, r in record["variants"].items() if r["passed"]]})

    async def _load_variant(self, model: LoadedModel, variant: str) -> str:
        async with model.lock:
            if variant in model.engines:
                return variant
            t0 = time.perf_counter()
            path = self.catalog.variant_path(model.dir, model.manifest, variant)
            runner = await asyncio.to_thread(self.factory.runner, path, variant)
            model.engines[variant] = self.factory.engine(runner, model.tokenizer, int(model.manifest.pad_token_id),
                                                         f"{model.name}:{variant}")
            took = time.perf_counter() - t0
            self.metrics.load_duration.labels(model.name, variant).observe(took)
            self.metrics.model_loaded.labels(model.name, variant, runner.provider).set(1)
            log.info("model variant loaded", extra={"model": model.name, "precision": variant,
                                                    "provider": runner.provider, "seconds": round(took, 3)})
            return variant

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
        if name in self._gating:
            self._gating[name].cancel()
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
            variant = model.default_precision
            if precision not in (None, "auto", variant):
                variant = self.catalog.variant(model.manifest, precision)
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
        gating = list(self._gating.values())
        for task in gating:
            task.cancel()    # the gate's thread stops at its next prompt
        await asyncio.gather(*gating, return_exceptions=True)
        for name, model in list(self.loaded.items()):
            await asyncio.to_thread(model.close)
        self.loaded.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
