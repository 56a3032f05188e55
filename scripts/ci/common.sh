#!/usr/bin/env bash
# Sourced by every scripts/ci/*.sh: strict mode, repository root, image names and tags, container tools.
# The same values in Jenkins (from the Jenkinsfile's environment) and on a laptop (defaults below).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

REGISTRY="${REGISTRY:-localhost}"
if [ -z "${IMAGE_TAG:-}" ]; then
  IMAGE_TAG="${BUILD_NUMBER:-local}-$(git rev-parse --short=7 HEAD 2>/dev/null || echo nogit)"
fi
RELEASE="${RELEASE:-search-llm}"
NAMESPACE="${NAMESPACE:-search-llm}"
PYTHON_BASE_IMAGE="${PYTHON_BASE_IMAGE:-python:3.11-slim-bookworm}"
CUDA_BASE_IMAGE="${CUDA_BASE_IMAGE:-nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04}"
export REGISTRY IMAGE_TAG RELEASE NAMESPACE PYTHON_BASE_IMAGE CUDA_BASE_IMAGE

# Container engine: docker where it runs, else podman (CONTAINER_ENGINE overrides).
if [ -z "${CONTAINER_ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then CONTAINER_ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then CONTAINER_ENGINE=podman
  else CONTAINER_ENGINE=docker; fi
fi
export CONTAINER_ENGINE

# Compose: `docker compose` (v2) with docker, `podman compose` with podman (COMPOSE overrides).
compose() {
  local files=(-f docker-compose.yml)
  [ "${CPU_ONLY:-1}" = 1 ] && files+=(-f docker-compose.cpu.yml)
  files+=("$@")
  if [ -n "${COMPOSE:-}" ]; then $COMPOSE "${files[@]}"; else "$CONTAINER_ENGINE" compose "${files[@]}"; fi
}

log() { printf '\n==> %s\n' "$*" >&2; }
