"""Run schemathesis (the CLI, as a user would) against a running service's OpenAPI spec.

Checks: not_a_server_error (no 5xx) and response_schema_conformance (every documented response matches its
own schema). Bounded: a fixed number of examples per operation and a fixed seed, so a CI run is repeatable
(~10-20 s per service on 2 cores)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ST = Path(sys.executable).with_name("st")


def run_schemathesis(base_url: str, workdir: Path, max_examples: int = 25, seed: int = 1,
                     headers: dict[str, str] | None = None, extra: list[str] | None = None) -> str:
    cmd = [str(ST), "run", f"{base_url}/openapi.json", "--checks", "not_a_server_error,response_schema_conformance",
           "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1", "--request-timeout", "30",
           "--generation-database", "none", "--no-color"]
    cmd += extra or []
    for k, v in (headers or {}).items():
        cmd += ["--header", f"{k}: {v}"]
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"schemathesis found problems (rc={res.returncode}):\n{out[-6000:]}"
    assert " passed" in out and "failed" not in out.split("SUMMARY")[-1], out[-3000:]
    return out
