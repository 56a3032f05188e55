"""scripts/openai_conformance.py against the real stack: llm-service (the tiny random model) and search-service as
real processes behind API keys, the official ``openai`` client driving every OpenAI-compatible feature of issue 15
(structured output, tools, logprobs, penalties, n, no silent ignoring, embeddings, tokenize, LangChain).

The tiny model is random, so this is the hard case for constrained decoding: whatever it would write, the JSON
it returns must parse and validate, and every generation must end by itself (bounded schemas).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from stack_dev.procs import ROOT, ServiceProcess, free_port, stop_all
from tests.conftest import TINY_NAME

SCRIPT = ROOT / "scripts" / "openai_conformance.py"
KEY = "conformance-key"
# Every feature of issue 15 has its row (the script's names); none of them may be skipped here.
REQUIRED = [
    "models list", "chat basic", "completions basic", "chat stream include_usage", "completions stream include_usage",
    "seed reproducible", "stop (4 strings)", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "response_format json_object", "response_format json_schema flat", "response_format json_schema nested",
    "response_format json_schema array", "response_format json_schema boolean", "chat.completions.parse (pydantic)",
    "tools tool_choice=required", "tools tool_choice=named function", "tools tool_choice=none",
    "tools tool_choice=auto", "tools streamed (required)", "tools cut at max_tokens",
    "tools follow-up turn (role tool)",
    "chat logprobs top_logprobs=3", "completions logprobs=2", "chat stream logprobs", "chat n=3", "completions n=3",
    "chat stream n=2", "unknown field -> 400", "no-op fields (user, metadata, store, service_tier)",
    "embeddings (search-service)", "embeddings base64 (search-service)", "tokenize / detokenize",
    "constrained decoding throughput",
]
# Real clients: must pass where the package is installed (langchain-openai is pinned in requirements-dev; LlamaIndex
# is not installable beside the pinned openai, so its rows skip with the reason).
CLIENT_ROWS = {
    "langchain_openai": ["langchain ChatOpenAI invoke", "langchain bind_tools required",
                         "langchain with_structured_output json_schema",
                         "langchain with_structured_output function_calling"],
    "llama_index.llms.openai_like": ["llamaindex OpenAILike chat", "llamaindex OpenAILike complete"],
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:          # a parent package is missing
        return False


@pytest.fixture(scope="module")
def stack(tiny_model_dir, redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conformance")
    llm = ServiceProcess("llm_service.main:create_app", log_path=tmp / "llm.log", ready_path="/readyz", env={
        "LLM_MODELS_DIR": str(tiny_model_dir), "LLM_DEFAULT_MODEL": TINY_NAME, "LLM_DEVICE": "cpu",
        "LLM_LOG_JSON": "false", "LLM_API_KEYS": KEY})
    search = ServiceProcess("search_service.main:create_app", log_path=tmp / "search.log", ready_path="/readyz", env={
        "SEARCH_DATA_DIR": str(tmp / "data"), "SEARCH_REDIS_URL": redis_url, "SEARCH_CACHE_PREFIX": "conf-" + tmp.name,
        "SEARCH_LOG_JSON": "false", "SEARCH_API_KEYS": KEY})
    try:
        llm.spawn()
        search.spawn()          # both start at once; the waits overlap
        llm.wait_ready(timeout=180)
        search.wait_ready(timeout=180)
        yield {"llm": llm, "search": search, "tmp": tmp}
    finally:
        stop_all([search, llm])


def _run(*args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--api-key", KEY, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{proc.stderr[-4000:]}"
    return proc, json.loads(lines[-1])


def test_every_feature_passes_through_the_official_client(stack):
    proc, summary = _run("--llm-url", stack["llm"].url, "--search-url", stack["search"].url, "--generations", "25",
                         "--timeout", "60")
    table = proc.stdout.rsplit("\n", 2)[0]
    rows = {r["feature"]: r for r in summary["rows"]}
    failed = [f"{r['feature']}: {r['detail']}" for r in summary["rows"] if r["result"] == "fail"]
    assert not failed, "failed rows:\n" + "\n".join(failed) + "\n\n" + table
    assert summary["failed"] == 0 and proc.returncode == 0, table
    must_pass = REQUIRED + [name for module, names in CLIENT_ROWS.items() if _installed(module) for name in names]
    missing = [name for name in must_pass if name not in rows]
    assert not missing, f"rows missing: {missing}\n{table}"
    not_passed = [f"{name}: {rows[name]['result']}: {rows[name]['detail']}" for name in must_pass
                  if rows[name]["result"] != "pass"]
    assert not not_passed, "\n".join(not_passed) + "\n\n" + table
    skipped = [r["feature"] for r in summary["rows"] if r["result"] == "skip"]
    assert set(skipped) <= {name for names in CLIENT_ROWS.values() for name in names}, table
    assert summary["passed"] == len(summary["rows"]) - len(skipped)
    assert summary["model"] == TINY_NAME


def test_search_rows_skip_when_search_service_does_not_answer_and_only_filters(stack):
    proc, summary = _run("--llm-url", stack["llm"].url, "--search-url", f"http://127.0.0.1:{free_port()}",
                         "--only", "embeddings,unknown field", timeout=120)
    rows = {r["feature"]: r for r in summary["rows"]}
    # --only keeps the matching rows (and the model look-up they need)
    assert set(rows) == {"models list", "embeddings (search-service)", "embeddings base64 (search-service)",
                         "unknown field -> 400"}, proc.stdout
    for name in ("embeddings (search-service)", "embeddings base64 (search-service)"):
        assert rows[name]["result"] == "skip" and "does not answer" in rows[name]["detail"]
    assert summary["skipped"] == 2


def test_a_failed_row_fails_the_run(stack):
    """A wrong key: every request is refused, the rows say so, the exit status is 1."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--api-key", "wrong-key", "--llm-url", stack["llm"].url,
                           "--search-url", "", "--only", "chat basic"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and summary["failed"] >= 1
    assert "HTTP 401" in summary["rows"][0]["detail"], proc.stdout
