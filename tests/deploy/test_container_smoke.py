"""The images really build and run: scripts/container_smoke.sh under podman (Debian).

Runs only where `podman info` works with the script's settings; anywhere else it is skipped and says
why. Podman is not installed by `make test` (`ENSURE_PODMAN=1 bash scripts/ensure_tools.sh` does), so a
machine without it skips. Image layers are cached under $SMOKE_DIR (default ~/.cache/search-llm-stack/
podman): the first run on a machine builds everything (~8 min here, debootstrap included); later runs
rebuild only the layers whose inputs changed (~2 min when only code changed, ~5 min after a
constraints.txt change). STACK_CONTAINER_SMOKE=0 switches it off.
"""
from __future__ import annotations

import os
import shutil

import pytest

from .conftest import ROOT, run


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_images_build_and_serve():
    if os.environ.get("STACK_CONTAINER_SMOKE") == "0":
        pytest.skip("STACK_CONTAINER_SMOKE=0: container smoke test switched off")
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (ENSURE_PODMAN=1 bash scripts/ensure_tools.sh installs it)")
    r = run(["bash", str(ROOT / "scripts/container_smoke.sh")], timeout=1200)
    if r.returncode == 0 and "SKIPPED" in r.stdout:
        pytest.skip(r.stdout.strip())
    assert r.returncode == 0, r.output[-6000:]
    assert "OK: both images built" in r.stderr, r.output[-6000:]
