#!/usr/bin/env bash
# Run the chart's `helm test` hook (a pod that indexes two documents and runs /search/hybrid).
source "$(dirname "$0")/common.sh"
log "helm test $RELEASE in $NAMESPACE"
helm test "$RELEASE" --namespace "$NAMESPACE" --logs --timeout "${HELM_TEST_TIMEOUT:-5m}"
