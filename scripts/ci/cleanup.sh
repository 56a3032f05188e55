#!/usr/bin/env bash
# Always-run post step: stop what the Test stage started and drop dangling build layers.
source "$(dirname "$0")/common.sh"
compose -f docker-compose.test.yml down -v --remove-orphans >/dev/null 2>&1 || true
"$CONTAINER_ENGINE" image prune -f >/dev/null 2>&1 || true
