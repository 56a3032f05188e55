"""The serving side of llm-service stays lean: the export pipeline's packages (torch, transformers, optimum,
...) are an extra that the service never imports, so the serving image can leave them out."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

from tests.conftest import REPO

EXPORT_ONLY = ("torch", "transformers", "optimum", "accelerate", "gguf", "onnx")


def _name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_export_packages_are_an_extra_not_a_runtime_dependency():
    project = tomllib.loads((REPO / "llm-service" / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    assert not runtime & set(EXPORT_ONLY), runtime & set(EXPORT_ONLY)
    assert {"torch", "transformers", "optimum"} <= {_name(r) for r in project["optional-dependencies"]["export"]}


def test_the_service_imports_none_of_them(tmp_path):
    code = ("import sys, llm_service.main; app = llm_service.main.create_app(); "
            f"print('LOADED', sorted(m for m in {EXPORT_ONLY!r} if m in sys.modules))")
    env = {**os.environ, "LLM_MODELS_DIR": str(tmp_path), "LLM_LOG_JSON": "false", "LLM_LOG_LEVEL": "WARNING"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout.splitlines(), r.stdout + r.stderr
