#!/usr/bin/env bash
# The Test stage: bring the stack up with compose (CPU-only unless CPU_ONLY=0), run the test suite in a
# container against it (docker-compose.test.yml) and exit with the suite's status; always tear down.
source "$(dirname "$0")/common.sh"
mkdir -p reports && chmod 0777 reports
trap 'compose -f docker-compose.test.yml logs --no-color > reports/compose.log 2>&1 || true;
      compose -f docker-compose.test.yml down -v --remove-orphans >/dev/null 2>&1 || true' EXIT
log "building and starting the stack ($IMAGE_TAG)"
compose -f docker-compose.test.yml build
compose -f docker-compose.test.yml up -d --wait --wait-timeout 600 qdrant redis search-api llm-service
log "running the test suite in a container"
# --no-deps: only the tests container is attached, so the one-shot llm-init exit does not abort the run.
compose -f docker-compose.test.yml up --no-deps --abort-on-container-exit --exit-code-from tests tests
