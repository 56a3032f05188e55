"""The precision quality gate: which of a model's variants may be served on this CPU kind.

Every variant answers the task suite (:mod:`.tasks`) greedily through the model's real chat template, and
is compared with fp32 *on the same machine*: its task score, and its teacher-forced agreement with fp32 on
fp32's own answers (top-1 and KL over the answer tokens, the distribution a chat user is served). A
variant passes when

    task_score >= fp32's task_score - TASK_TOLERANCE   and   agreement_top1 >= AGREEMENT_FLOOR

and ``chosen`` is the fastest variant (decode tok/s, measured here) that passed; fp32, the reference,
always passes. Why these two numbers: README "Precision and the quality gate" (the agreement floor
separates variants whose answers stop being fp32's from those that keep them; the tolerance absorbs the
few knife-edge answers that flip even in a variant that agrees).

A gate record is valid for one CPU kind (:func:`.cpu.cpu_kind`), one suite and the exact variant files;
``record_key`` identifies that combination. Importable without torch: numpy + onnxruntime + tokenizers.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable


from .cpu import cpu_info, cpu_kind
from .tasks import TASKS, Task, score, suite_digest

log = logging.getLogger("llm_service.quality")

TASK_TOLERANCE = 0.10      # fraction of the suite: 5 of 50 tasks
AGREEMENT_FLOOR = 0.90     # teacher-forced top-1 agreement with fp32 over fp32's answer tokens
MAX_NEW_TOKENS = 20        # the answer is in the first sentence
GATE_VERSION = 1
SPEED_PROMPTS = 8          # prompts timed per variant, one variant at a time, when the gate ran variants at once


@dataclass(frozen=True)
class Policy:
    task_tolerance: float = TASK_TOLERANCE
    agreement_floor: float = AGREEMENT_FLOOR
    max_new_tokens: int = MAX_NEW_TOKENS

    def as_dict(self) -> dict:
        return {"task_tolerance": self.task_tolerance, "agreement_floor": self.agreement_floor,
                "max_new_tokens": self.max_new_tokens}


def record_key(variant_files: dict[str, str], policy: Policy = Policy(), tasks: tuple[Task, ...] = TASKS) -> str:
    """What a gate record was measured for: CPU kind, suite, policy and each variant's file digest."""
    blob = json.dumps({"v": GATE_VERSION, "kind": cpu_kind(), "suite": suite_digest(tasks),
                       "policy": policy.as_dict(), "files": dict(sorted(variant_files.items()))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _answer(lm, ids: list[int], eos: set[int], max_new: int) -> tuple[list[int], int, float, float]:
    """Greedy answer ids (without the eos), tokens generated, prefill seconds, decode seconds."""
    t: dict = {}
    out = lm.greedy(ids, max_new, eos_ids=eos, timings=t)
    n = len(out)
    if out and out[-1] in eos:
        out = out[:-1]
    return out, n, t["prefill_s"], t["decode_s"]


class GateStopped(Exception):
    """The gate was asked to stop (service shutdown or model unloaded)."""


def evaluate_variant(lm, tok, prompts: list[list[int]], tasks: tuple[Task, ...], eos: set[int],
                     max_new: int, stop: threading.Event | None = None) -> dict[str, Any]:
    answers, ids_out, prefill, decode, steps = [], [], 0.0, 0.0, 0
    for ids in prompts:
        if stop is not None and stop.is_set():
            raise GateStopped()
        out, n, p, d = _answer(lm, ids, eos, max_new)
        ids_out.append(out)
        answers.append(tok.decode(out))
        prefill += p
        decode += d
        steps += n - 1                # decode steps: every token after the prefill's
    correct = [t.correct(a) for t, a in zip(tasks, answers)]
    return {"answers": answers, "ids": ids_out, "correct": correct, "task_score": round(score(answers, tasks), 4),
            "tokens_per_s": round(steps / decode, 2) if decode > 0 else None,
            "ttft_ms": round(1000 * prefill / len(prompts), 2)}


def decide(results: dict[str, dict], policy: Policy) -> tuple[dict[str, dict], str]:
    """Pass/fail per variant against fp32's results, and the fastest variant that passed."""
    ref = results["fp32"]["task_score"]
    for name, r in results.items():
        if name == "fp32":
            r["passed"], r["reason"] = True, "reference"
            continue
        low_task = r["task_score"] < ref - policy.task_tolerance - 1e-9
        low_agree = r["agreement"]["top1"] < policy.agreement_floor
        r["passed"] = not (low_task or low_agree)
        why = []
        if low_task:
            why.append(f"task score {r['task_score']:.3f} < fp32 {ref:.3f} - {policy.task_tolerance}")
        if low_agree:
            why.append(f"agreement {r['agreement']['top1']:.3f} < floor {policy.agreement_floor}")
        r["reason"] = "; ".join(why) or "within tolerance"
    passed = [n for n, r in results.items() if r["passed"]]
    chosen = max(passed, key=lambda n: results[n]["tokens_per_s"] or 0.0)
    return results, chosen


def run_gate(model_dir: Path, tokenizer_dir: Path, variant_paths: dict[str, str],
             variant_files: dict[str, str], eos_token_ids: Iterable[int], policy: Policy = Policy(),
             tasks: tuple[Task, ...] = TASKS, intra_op_threads: int = 1,
             echo: Callable[[str], None] | None = None, stop: threading.Event | None = None,
             workers: int = 1) -> dict[str, Any]:
    """Measure every variant (``{name: path relative to model_dir}``; must include fp32) on this machine
    and return the gate record (JSON-ready). ``variant_files`` are the variants' sha256s (record key).
    ``stop`` set: :class:`GateStopped` at the next prompt.

    ``workers`` variants are measured at once, each on its own thread with its own session of
    ``intra_op_threads`` threads (onnxruntime releases the GIL while it runs): the answers and agreement
    are the same as one at a time (same sessions, same thread count). Speed, which picks the variant served,
    is not measured while variants share the machine: with more than one worker, each variant's decode
    tok/s and TTFT are timed afterwards, one variant at a time, on the first ``SPEED_PROMPTS`` prompts. The
    build pipeline uses one worker per core; the service's background gate one, so it never takes the
    serving core."""
    from ..engine.tokenizer import Tokenizer
    from ..export.ort_lm import OrtCausalLM, agreement

    if "fp32" not in variant_paths:
        raise ValueError("the gate compares with fp32: the model has no fp32 variant")
    echo = echo or (lambda s: log.info("%s", s))
    tok = Tokenizer(tokenizer_dir)
    if tok.chat_template is not None:
        texts = [tok.apply_chat_template([{"role": "user", "content": t.prompt}]) for t in tasks]
        prompts = [tok.encode(s, add_special_tokens=False) for s in texts]
    else:
        prompts = [tok.encode(f"Question: {t.prompt}\nAnswer:") for t in tasks]
    eos = set(int(e) for e in eos_token_ids)
    t0 = time.perf_counter()
    order = ["fp32", *sorted(n for n in variant_paths if n != "fp32")]
    workers = max(1, min(int(workers), len(order)))
    lms = {name: OrtCausalLM(Path(model_dir) / variant_paths[name], intra_op_threads=intra_op_threads)
           for name in order}
    ref = lms["fp32"]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gate") as pool:
        answered = pool.map(lambda n: evaluate_variant(lms[n], tok, prompts, tasks, eos, policy.max_new_tokens,
                                                       stop), order)
        results: dict[str, dict] = dict(zip(order, answered))
        ref_ids = results["fp32"]["ids"]
        results["fp32"]["agreement"] = {"top1": 1.0, "kl_nats": 0.0,
                                        "positions": sum(len(a) + 1 for a in ref_ids)}
        # positions that predict fp32's answer tokens and its end: from the prompt's last token on
        seqs, starts = [p + a for p, a in zip(prompts, ref_ids)], [len(p) - 1 for p in prompts]
        others = order[1:]
        for name, agree in zip(others, pool.map(lambda n: agreement(ref, lms[n], seqs, starts=starts), others)):
            results[name]["agreement"] = agree
    if workers > 1:          # time each variant alone (see the docstring)
        for name in order:
            alone = evaluate_variant(lms[name], tok, prompts[:SPEED_PROMPTS], tasks[:SPEED_PROMPTS], eos,
                                     policy.max_new_tokens, stop)
            results[name]["tokens_per_s"], results[name]["ttft_ms"] = alone["tokens_per_s"], alone["ttft_ms"]
    for name in order:
        r = results[name]
        del r["ids"]
        echo(f"gate {name:<5} tasks {sum(r['correct']):>2}/{len(tasks)}  agreement {r['agreement']['top1']:.3f}"
             f"  KL {r['agreement']['kl_nats']:.3f}  {r['tokens_per_s'] or 0:.1f} tok/s")
    results, chosen = decide(results, policy)
    return {"gate_version": GATE_VERSION, "key": record_key(variant_files, policy, tasks),
            "cpu": cpu_info(), "suite": {"digest": suite_digest(tasks), "tasks": len(tasks)},
            "policy": policy.as_dict(), "files": dict(sorted(variant_files.items())),
            "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - t0, 1), "intra_op_threads": intra_op_threads, "workers": workers,
            "variants": results, "chosen": chosen}


def summary(record: dict | None) -> dict:
    """The per-variant scores without the answers (for /v1/models, /admin/models, /readyz); {} for none."""
    if not record:
        return {}
    return {"cpu_kind": record["cpu"]["kind"], "chosen": record["chosen"], "measured_at": record["measured_at"],
            "policy": record["policy"],
            "variants": {n: {"passed": r["passed"], "task_score": r["task_score"],
                             "agreement_top1": r["agreement"]["top1"], "kl_nats": r["agreement"]["kl_nats"],
                             "tokens_per_s": r["tokens_per_s"], "reason": r["reason"]}
                         for n, r in record["variants"].items()}}
