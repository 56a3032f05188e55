"""The model pipeline: source -> HF folder -> ONNX fp32 with KV cache -> quantized variants (dynamic int8,
weight-only w8 / int4) -> agreement + benchmark -> quality gate -> manifest.json. Each step is cached under ``models/<name>/``: it is skipped when
``build-state.json`` records the same inputs for it and its output files still have the recorded
sha256s. Outputs are written to a temporary folder and renamed into place, and a file lock per model
serialises concurrent builds of the same model (make run and the tests share ``models/``).

Needs the ``export`` extra (torch, optimum-onnx) for the source/export steps only.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from stack_common.files import write_json_atomic

from .manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest, load_manifest, sha256_file, verify_files

log = logging.getLogger("llm_service.export")

STATE_NAME = "build-state.json"
PIPELINE_VERSION = 1
ALL_PRECISIONS = ("fp32", "int8", "w8", "int4")
DEFAULT_PRECISIONS = ("fp32", "int8", "w8")
DIRS = {"hf": "hf", "fp32": "onnx-fp32", "int8": "onnx-int8", "w8": "onnx-w8", "int4": "onnx-int4"}
NBITS = {"w8": 8, "int4": 4}          # weight-only MatMulNBits variants: bits per weight

# Fixed texts for teacher-forced agreement (English prose + a chat turn), and the bench prompt.
AGREEMENT_TEXTS = [
    "The capital of France is Paris. It is known for the Eiffel Tower, the Louvre museum and its cafes. "
    "Every year, millions of tourists visit the city to enjoy its art, food and history.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make "
    "glucose and oxygen. It takes place mainly in the leaves, inside the chloroplasts.",
    "To make a cup of tea, boil some water, put a tea bag in a cup, pour the hot water over it and wait "
    "three to five minutes. Remove the bag and add milk or sugar if you like.",
    "<|im_start|>user\nWhat is the largest planet in our solar system?<|im_end|>\n<|im_start|>assistant\n"
    "The largest planet in our solar system is Jupiter. It is a gas giant more than eleven times wider "
    "than Earth.<|im_end|>\n",
]
BENCH_PROMPT = "Write a short story about a robot who learns to paint."


@dataclass
class StepResult:
    name: str
    seconds: float
    cached: bool
    info: dict = field(default_factory=dict)


@dataclass
class PipelineResult:
    model_dir: Path
    manifest: Manifest
    steps: list[StepResult]

    @property
    def all_cached(self) -> bool:
        return all(s.cached for s in self.steps)


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx", "gguf"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _hash_dir(model_dir: Path, sub: str) -> dict[str, str]:
    d = model_dir / sub
    return {str(p.relative_to(model_dir)): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


class _State:
    def __init__(self, model_dir: Path):
        self.path = model_dir / STATE_NAME
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        if self.data.get("pipeline_version") != PIPELINE_VERSION:
            self.data = {"pipeline_version": PIPELINE_VERSION, "steps": {}}

    def valid(self, step: str, key: str, model_dir: Path) -> dict | None:
        s = self.data["steps"].get(step)
        if not s or s.get("key") != key:
            return None
        if s.get("files") is not None and (not s["files"] or verify_files(model_dir, s["files"])):
            return None
        return s

    def put(self, step: str, entry: dict) -> None:
        self.data["steps"][step] = entry
        write_json_atomic(self.path, self.data, indent=2)

    def drop(self, step: str) -> None:
        self.data["steps"].pop(step, None)


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _tmp_dir(model_dir: Path, step: str) -> Path:
    t = model_dir / f".tmp-{step}-{os.getpid()}"
    shutil.rmtree(t, ignore_errors=True)
    t.mkdir(parents=True)
    return t


# ------------------------------------------------------------------------------------------- steps
def step_source(source: str, params: dict, model_dir: Path, cache_dir: Path | None) -> dict:
    from . import sources

    tmp = _tmp_dir(model_dir, "hf")
    try:
        if params["kind"] == "gguf":
            info = sources.build_from_gguf(tmp, cache_dir, Path(params["path"]))
        elif params["kind"] == "tiny":
            info = sources.build_tiny(tmp, cache_dir)
        else:
            info = sources.build_from_hf(Path(params["path"]), tmp)
        _replace_dir(tmp, model_dir / DIRS["hf"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def step_export_fp32(model_dir: Path, opset: int | None, validate: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optimum.exporters.onnx import main_export

    from .sources import _inline_chat_template

    tmp = _tmp_dir(model_dir, "fp32")
    try:
        main_export(str(model_dir / DIRS["hf"]), output=str(tmp), task="text-generation-with-past",
                    opset=opset, device="cpu", local_files_only=True, do_validation=validate,
                    library_name="transformers")
        # The tokenizer lives next to the fp32 graph (tokenizer_dir in the manifest).
        hf = model_dir / DIRS["hf"]
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "chat_template.jinja", "generation_config.json", "config.json"):
            if (hf / name).is_file() and not (tmp / name).is_file():
                shutil.copy2(hf / name, tmp / name)
        # optimum re-saves the tokenizer; make sure what it wrote matches the fixed source tokenizer.
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "chat_template.jinja", "generation_config.json"):
            if (hf / name).is_file():
                shutil.copy2(hf / name, tmp / name)
        _inline_chat_template(tmp)
        ext = [p.name for p in tmp.iterdir() if p.name.endswith((".onnx_data", ".onnx.data"))]
        _replace_dir(tmp, model_dir / DIRS["fp32"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"external_data": ext}


def step_quantize(model_dir: Path, precision: str, block_size: int, accuracy_level: int) -> dict:
    """One quantized variant (:mod:`.quantize`) from the fp32 export, written to a temp dir first."""
    from . import quantize

    tmp = _tmp_dir(model_dir, precision)
    try:
        src, dst = model_dir / DIRS["fp32"] / "model.onnx", tmp / "model.onnx"
        if precision == "int8":
            info = quantize.dynamic_int8(src, dst)
        else:
            info = quantize.weight_only(src, dst, NBITS[precision], block_size, accuracy_level)
        _replace_dir(tmp, model_dir / DIRS[precision])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def step_evaluate(model_dir: Path, precisions: list[str], bench_tokens: int, bench_runs: int) -> dict:
    from tokenizers import Tokenizer

    from .ort_lm import OrtCausalLM, agreement, bench

    tok = Tokenizer.from_file(str(model_dir / DIRS["fp32"] / "tokenizer.json"))
    seqs = [tok.encode(t).ids for t in AGREEMENT_TEXTS]
    prompt = tok.encode(BENCH_PROMPT).ids
    ref = OrtCausalLM(model_dir / DIRS["fp32"] / "model.onnx")
    out: dict = {}
    for p in precisions:
        lm = ref if p == "fp32" else OrtCausalLM(model_dir / DIRS[p] / "model.onnx")
        entry: dict = {}
        if p != "fp32":
            entry["agreement_vs_fp32"] = agreement(ref, lm, seqs)
        b = bench(lm, prompt, new_tokens=bench_tokens, runs=bench_runs)
        b["intra_op_threads"] = 1
        entry["bench"] = b
        out[p] = entry
    return out


def step_gate(model_dir: Path, precisions: list[str], variant_files: dict[str, str], eos_ids: list[int],
              echo: Callable[[str], None], workers: int) -> dict:
    """The quality gate on this machine (llm_service.quality.gate): every variant on the task suite
    through the chat template, against fp32, ``workers`` variants at a time."""
    from ..quality.gate import run_gate

    return run_gate(model_dir, model_dir / DIRS["fp32"], {p: f"{DIRS[p]}/model.onnx" for p in precisions},
                    variant_files, eos_ids, echo=echo, workers=workers)


# ---------------------------------------------------------------------------------------- pipeline
def run_pipeline(source: str, name: str | None = None, models_dir: str | os.PathLike = "models",
                 precisions: list[str] | tuple[str, ...] | None = None, force: bool = False,
                 cache_dir: str | os.PathLike | None = None, opset: int | None = None,
                 validate: bool = True, bench_tokens: int = 64, bench_runs: int = 1,
                 block_size: int = 32, accuracy_level: int = 4, gate: bool = True, gate_workers: int | None = None,
                 echo: Callable[[str], None] | None = None) -> PipelineResult:
    """Build (or reuse) ``<models_dir>/<name>/`` for ``source`` ('smollm2', 'tiny' or a HF folder).

    ``cache_dir`` (default ``<models_dir>/.cache``) keeps SmolLM2's converted tokenizer, shared by the
    'smollm2' and 'tiny' sources. ``force`` rebuilds every step. ``precisions`` None means fp32 +
    int8 + w8 plus any variant built before (so a later default run, e.g. ``make run``, keeps an int4
    built on request); an explicit list builds exactly those (fp32 always). ``block_size`` and
    ``accuracy_level`` configure the weight-only variants. ``gate`` runs the quality gate
    (llm_service.quality.gate) and makes its choice the manifest's CPU default; without it the CPU
    default is fp32 and the service gates at load. ``gate_workers`` variants are gated at once (default:
    one per core, as nothing else runs during a build; the results do not depend on it).
    """
    from filelock import FileLock

    from . import sources

    echo = echo or (lambda s: log.info("%s", s))
    explicit = precisions is not None
    precisions = list(dict.fromkeys(["fp32", *(precisions if explicit else DEFAULT_PRECISIONS)]))
    for p in precisions:
        if p not in ALL_PRECISIONS:
            raise ValueError(f"unknown precision {p!r} (choose from {', '.join(ALL_PRECISIONS)})")
    default_name, src_params = sources.source_identity(source)
    name = name or default_name
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else models_dir / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    model_dir = models_dir / name
    model_dir.mkdir(parents=True, exist_ok=True)

    with FileLock(str(models_dir / f".{name}.lock")):
        state = _State(model_dir)
        if not explicit:
            precisions += [p for p in ALL_PRECISIONS if p not in precisions and p in state.data["steps"]]
        if force:
            state.data["steps"] = {}
        results: list[StepResult] = []

        def run(step: str, key_obj, fn, outputs: str | None):
            key = _digest(key_obj)
            hit = state.valid(step, key, model_dir)
            if hit is not None:
                results.append(StepResult(step, 0.0, True, hit.get("info", {})))
                echo(f"[{name}] {step:<9} cached")
                return hit
            t0 = time.perf_counter()
            info = fn()
            dt = time.perf_counter() - t0
            entry = {"key": key, "info": info, "seconds": round(dt, 3),
                     "files": _hash_dir(model_dir, outputs) if outputs else None}
            state.put(step, entry)
            results.append(StepResult(step, dt, False, info))
            echo(f"[{name}] {step:<9} {dt:7.2f} s")
            return entry

        src = run("source", {"src": src_params, "v": PIPELINE_VERSION},
                  lambda: step_source(source, src_params, model_dir, cache), DIRS["hf"])
        fp32 = run("fp32", {"up": src["files"], "opset": opset, "versions": versions()},
                   lambda: step_export_fp32(model_dir, opset, validate), DIRS["fp32"])
        quant: dict = {}
        for p in precisions:
            if p == "fp32":
                continue
            key = {"up": fp32["files"], "reduce_range": True} if p == "int8" else \
                {"up": fp32["files"], "block_size": block_size, "accuracy_level": accuracy_level}
            quant[p] = run(p, key, lambda p=p: step_quantize(model_dir, p, block_size, accuracy_level), DIRS[p])
        # Variants built earlier but not asked for this time are dropped from the manifest.
        ev = run("evaluate", {"up": {k: v["files"] for k, v in [("fp32", fp32), *quant.items()]},
                              "tokens": bench_tokens, "runs": bench_runs,
                              "texts": AGREEMENT_TEXTS, "prompt": BENCH_PROMPT},
                 lambda: step_evaluate(model_dir, precisions, bench_tokens, bench_runs), None)

        variant_files = {p: e["files"][f"{DIRS[p]}/model.onnx"] for p, e in [("fp32", fp32), *quant.items()]}
        gate_record = None
        if gate:
            from ..quality.gate import record_key

            eos_ids = _eos_ids(model_dir)
            gate_record = run("gate", {"key": record_key(variant_files), "eos": eos_ids},
                              lambda: step_gate(model_dir, precisions, variant_files, eos_ids, echo,
                                                gate_workers or os.cpu_count() or 1), None)["info"]
        manifest = _build_manifest(name, model_dir, src_params, src["info"], precisions,
                                   {p: q["info"] for p, q in quant.items()}, ev["info"], state, gate_record)
        mpath = model_dir / MANIFEST_NAME
        old = None
        if mpath.is_file():
            try:
                old = load_manifest(model_dir)
            except Exception:  # noqa: BLE001
                old = None
        if old is not None and all(r.cached for r in results) and _same(old, manifest):
            manifest = old                          # cache hit: keep the file (and created_at) as is
        else:
            write_json_atomic(mpath, manifest.model_dump(mode="json", exclude_none=True), indent=2)
        return PipelineResult(model_dir, manifest, results)


def _same(a: Manifest, b: Manifest) -> bool:
    da = a.model_dump(mode="json", exclude={"created_at", "steps"})
    db = b.model_dump(mode="json", exclude={"created_at", "steps"})
    return da == db


def _configs(model_dir: Path) -> tuple[dict, dict]:
    """(config.json, generation_config.json) of the exported model."""
    cfg = json.loads((model_dir / DIRS["hf"] / "config.json").read_text())
    gpath = model_dir / DIRS["fp32"] / "generation_config.json"
    return cfg, (json.loads(gpath.read_text()) if gpath.is_file() else {})


def _eos_ids(model_dir: Path) -> list[int]:
    cfg, gen = _configs(model_dir)
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    return [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]


def _build_manifest(name: str, model_dir: Path, src_params: dict, src_info: dict, precisions: list[str],
                    quant_info: dict, evaluation: dict, state: _State, gate_record: dict | None) -> Manifest:
    import onnx

    tokdir = model_dir / DIRS["fp32"]
    cfg, gen = _configs(model_dir)
    tcfg = json.loads((tokdir / "tokenizer_config.json").read_text())
    eos_ids = _eos_ids(model_dir)
    pad = gen.get("pad_token_id", cfg.get("pad_token_id"))
    if pad is None:
        pad = eos_ids[0] if eos_ids else 0
    bos = gen.get("bos_token_id", cfg.get("bos_token_id"))
    heads = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    fp32_model = onnx.load(str(tokdir / "model.onnx"), load_external_data=False)
    opset = next((o.version for o in fp32_model.opset_import if o.domain in ("", "ai.onnx")), 0)

    variants = {}
    for p in precisions:
        v = {"path": f"{DIRS[p]}/model.onnx", "precision": p}
        if p in quant_info:
            v["quantization"] = quant_info[p]
        v.update(evaluation.get(p, {}))
        variants[p] = v
    files: dict[str, str] = {}
    for step in ["source", "fp32", *[p for p in precisions if p != "fp32"]]:
        files.update(state.data["steps"][step]["files"])
    source = {"kind": src_params["kind"], "path": src_params.get("path"), "sha256": src_params.get("sha256")}
    if src_info.get("package"):
        source["package"] = src_info["package"]
    if src_params["kind"] == "tiny":
        source["seed"] = src_info.get("seed")
    steps = {k: {"seconds": v.get("seconds")} for k, v in state.data["steps"].items()}
    return Manifest.model_validate({
        "name": name, "format": FORMAT_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "architecture": cfg.get("model_type", "unknown"),
        "context_length": int(cfg.get("max_position_embeddings") or 2048),
        "vocab_size": int(cfg["vocab_size"]),
        "num_layers": int(cfg["num_hidden_layers"]),
        "num_kv_heads": int(cfg.get("num_key_value_heads") or heads),
        "head_dim": head_dim,
        "eos_token_ids": eos_ids, "pad_token_id": int(pad),
        "bos_token_id": None if bos is None else int(bos),
        "has_chat_template": bool(tcfg.get("chat_template")),
        "tokenizer_dir": DIRS["fp32"],
        "variants": variants,
        # CPU: the fastest variant that passed the quality gate on this machine's CPU kind (fp32 when
        # the gate did not run; the service then gates at load). CUDA: fp32, since dynamic int8 ops have
        # no CUDA kernels and fall back to CPU (onnxruntime#10267).
        "default_variant": {"cpu": gate_record["chosen"] if gate_record else "fp32", "cuda": "fp32"},
        "gate": gate_record,
        "opset": int(opset), "versions": versions(), "files": files, "steps": steps,
    })
