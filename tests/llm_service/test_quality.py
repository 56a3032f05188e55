"""The precision quality gate: the task suite, the CPU kind, the pass rule, and what LLM_PRECISION=auto
serves — the gate's choice on this CPU kind, a re-gate (cached) when a models dir comes from another kind
of CPU, fp32 when nothing passed or no gate ran, and an explicit precision as given."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from llm_service.catalog import GATES_DIR
from llm_service.core.metrics import Metrics
from llm_service.core.settings import Settings
from llm_service.engine.batching import AdmissionGate
from llm_service.quality.cpu import KERNEL_FLAGS, cpu_info, cpu_kind
from llm_service.quality.gate import Policy, decide
from llm_service.quality.tasks import TASKS, Task, suite_digest
from llm_service.registry import ModelRegistry

from tests.conftest import TINY_NAME

OTHER_KIND = "GenuineIntel-avx2+avx512f+avx512_vnni-ort0.0.0"


def test_suite_is_large_and_well_formed():
    assert len(TASKS) >= 40
    assert len({t.prompt for t in TASKS}) == len(TASKS)
    assert all(t.accepted and all(a.strip() for a in t.accepted) for t in TASKS)
    assert len(suite_digest()) == 16 and suite_digest() != suite_digest(TASKS[:-1])


@pytest.mark.parametrize("answer,ok", [("The capital of France is Paris.", True), ("paris, of course", True),
                                       ("Parisian cafés", False), ("It is Lyon.", False), ("", False)])
def test_answers_match_whole_words(answer, ok):
    assert Task("capital of France?", ("Paris",)).correct(answer) is ok


def test_numbers_match_whole_numbers():
    t = Task("How many legs does a spider have?", ("eight", "8"))
    assert t.correct("A spider has 8 legs.") and t.correct("Eight.")
    assert not t.correct("It has 18 legs.") and not t.correct("weight")


def test_cpu_kind_names_vendor_isa_and_onnxruntime():
    import onnxruntime

    info = cpu_info()
    assert info["kind"] == cpu_kind() and cpu_kind().endswith(f"-ort{onnxruntime.__version__}")
    assert set(info["flags"]) <= set(KERNEL_FLAGS) and info["vendor"] in cpu_kind()
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    assert info["flags"] == [f for f in KERNEL_FLAGS if f in flags]
    assert "/" not in cpu_kind() and " " not in cpu_kind()      # a file name under gates/


def _result(score, top1, tps):
    return {"task_score": score, "agreement": {"top1": top1, "kl_nats": 0.0}, "tokens_per_s": tps}


def test_pass_rule_and_fastest_passing_variant():
    policy = Policy(task_tolerance=0.1, agreement_floor=0.9)
    results, chosen = decide({"fp32": _result(0.7, 1.0, 20), "int8": _result(0.8, 0.64, 55),   # low agreement
                              "w8": _result(0.62, 0.97, 45), "w8b": _result(0.6, 0.95, 50),     # 0.6 + 0.1 = fp32
                              "int4": _result(0.5, 0.95, 60)}, policy)                          # lost tasks
    assert {n: r["passed"] for n, r in results.items()} == {"fp32": True, "int8": False, "w8": True,
                                                            "w8b": True, "int4": False}
    assert chosen == "w8b"                                    # the fastest of those that passed
    assert "agreement" in results["int8"]["reason"] and "task score" in results["int4"]["reason"]
    _, chosen = decide({"fp32": _result(0.7, 1.0, 20), "int8": _result(0.7, 0.5, 55)}, policy)
    assert chosen == "fp32"                                   # nothing passes: fp32


# --- what auto serves (registry in-process, the real tiny model and its real gate) ----------------
def _models_copy(tiny_model_dir: Path, dst: Path) -> Path:
    """A models dir with a copy of the tiny model (graphs hard-linked; manifest and gates/ are its own)."""
    def link(src, d):
        if Path(src).name == "manifest.json":
            return shutil.copy2(src, d)
        try:
            os.link(src, d)
        except OSError:
            shutil.copy2(src, d)
    shutil.copytree(tiny_model_dir / TINY_NAME, dst / TINY_NAME, copy_function=link,
                    ignore=shutil.ignore_patterns(GATES_DIR))
    return dst


def _edit_manifest(models: Path, fn) -> dict:
    path = models / TINY_NAME / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))
    return m


def _registry(models: Path, **kw) -> ModelRegistry:
    metrics = Metrics()
    return ModelRegistry(Settings(models_dir=models, device="cpu", **kw), metrics, AdmissionGate(8, metrics=metrics))


async def _gated(model, timeout=120.0):
    for _ in range(int(timeout / 0.1)):
        if model.gate_state != "measuring":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the gate did not finish")


async def test_auto_serves_the_gates_choice(tiny_model_dir, tmp_path):
    models = _models_copy(tiny_model_dir, tmp_path)

    def make_int4_the_choice(m):     # same key (CPU kind, files): only the verdict differs
        m["gate"]["variants"]["int4"].update(passed=True, reason="within tolerance")
        m["gate"]["chosen"] = "int4"
    _edit_manifest(models, make_int4_the_choice)
    reg = _registry(models)
    try:
        model = await reg.set_default(TINY_NAME)
        assert (model.default_precision, model.precision_source, model.gate_state) == ("int4", "gate", "measured")
        assert list(model.engines) == ["int4"] and model.quality()["gate"]["chosen"] == "int4"
    finally:
        await reg.close()


async def test_explicit_precision_is_honoured_even_where_the_gate_failed_it(tiny_model_dir, tmp_path):
    models = _models_copy(tiny_model_dir, tmp_path)

    def fail_int8(m):
        m["gate"]["variants"]["int8"].update(passed=False, reason="agreement below floor")
        m["gate"]["chosen"] = "fp32"
    _edit_manifest(models, fail_int8)
    reg = _registry(models, precision="int8")
    try:
        model = await reg.set_default(TINY_NAME)
        assert (model.default_precision, model.precision_source) == ("int8", "setting")
        lease = await reg.acquire(TINY_NAME, "w8")           # a request's precision: loaded on first use
        assert lease.precision == "w8"
        lease.release()
    finally:
        await reg.close()


async def test_models_from_another_cpu_kind_are_regated_once(tiny_model_dir, tmp_path):
    """A manifest gated on another CPU kind: fp32 at once, the gate in the background, then its choice;
    the record is cached under gates/<kind>.json and the next start uses it without measuring."""
    models = _models_copy(tiny_model_dir, tmp_path)

    def elsewhere(m):
        m["gate"]["cpu"]["kind"] = OTHER_KIND
        m["gate"]["key"] = "measured-on-another-cpu"
        m["gate"]["chosen"] = "int8"
    _edit_manifest(models, elsewhere)
    cache = models / TINY_NAME / GATES_DIR / f"{cpu_kind()}.json"
    reg = _registry(models)
    try:
        model = await reg.set_default(TINY_NAME)
        assert (model.default_precision, model.precision_source, model.gate_state) == ("fp32", "ungated", "measuring")
        lease = await reg.acquire()                           # serving meanwhile
        assert lease.precision == "fp32"
        lease.release()
        await _gated(model)
        record = json.loads(cache.read_text())
        assert record["cpu"]["kind"] == cpu_kind() and set(record["variants"]) == {"fp32", "int8", "w8", "int4"}
        passed = [n for n, r in record["variants"].items() if r["passed"]]
        assert record["chosen"] in passed and record["chosen"] == max(
            passed, key=lambda n: record["variants"][n]["tokens_per_s"])
        assert model.gate_state == "measured" and model.precision_source == "gate"
        assert model.default_precision == record["chosen"]
    finally:
        await reg.close()
    mtime = cache.stat().st_mtime_ns
    reg = _registry(models)
    try:
        model = await reg.set_default(TINY_NAME)               # cached: no second measurement
        assert (model.precision_source, model.gate_state) == ("gate", "measured")
        assert model.default_precision == record["chosen"] and cache.stat().st_mtime_ns == mtime
    finally:
        await reg.close()


async def test_gate_on_load_off_and_ungated_manifest_serve_fp32(tiny_model_dir, tmp_path):
    models = _models_copy(tiny_model_dir, tmp_path)
    _edit_manifest(models, lambda m: (m.pop("gate"), m.update(default_variant={"cpu": "fp32", "cuda": "fp32"})))
    reg = _registry(models, gate_on_load=False)
    try:
        model = await reg.set_default(TINY_NAME)
        assert (model.default_precision, model.precision_source, model.gate_state) == ("fp32", "ungated", "disabled")
        assert not (models / TINY_NAME / GATES_DIR).exists()
    finally:
        await reg.close()


async def test_unloading_stops_a_running_gate(tiny_model_dir, tmp_path):
    models = _models_copy(tiny_model_dir, tmp_path)
    _edit_manifest(models, lambda m: m.pop("gate"))
    reg = _registry(models)
    try:
        await reg.set_default(TINY_NAME)
        model = reg.loaded[TINY_NAME]
        assert model.gate_state == "measuring"
        await reg.close()                                     # shutdown: the gate thread is told to stop
        assert not reg._gating
    finally:
        await reg.close()


async def test_nothing_passed_serves_fp32_and_says_why(tiny_model_dir, tmp_path, caplog):
    models = _models_copy(tiny_model_dir, tmp_path)

    def all_fail(m):
        for n, r in m["gate"]["variants"].items():
            if n != "fp32":
                r.update(passed=False, reason="agreement 0.5 < floor 0.9")
        m["gate"]["chosen"] = "fp32"
    _edit_manifest(models, all_fail)
    reg = _registry(models)
    try:
        with caplog.at_level("WARNING", logger="llm_service.registry"):
            model = await reg.set_default(TINY_NAME)
        assert (model.default_precision, model.precision_source) == ("fp32", "gate")
        lines = [r for r in caplog.records if "no quantized variant passed" in r.getMessage()]
        assert len(lines) == 1 and lines[0].reasons["int8"] == "agreement 0.5 < floor 0.9"
    finally:
        await reg.close()
