#!/usr/bin/env bash
# Deploy (or upgrade) the release: atomic (rolled back on failure) and waiting for every pod to be ready.
# KUBECONFIG and STACK_API_KEY come from Jenkins credentials; VALUES_FILE adds an environment's values.
source "$(dirname "$0")/common.sh"
extra=()
[ -n "${VALUES_FILE:-}" ] && extra+=(-f "$VALUES_FILE")
[ -n "${STACK_API_KEY:-}" ] && extra+=(--set-string "apiKey.value=$STACK_API_KEY")
log "helm upgrade --install $RELEASE ($IMAGE_TAG) in $NAMESPACE"
helm upgrade --install "$RELEASE" helm-chart \
  --namespace "$NAMESPACE" --create-namespace \
  --atomic --wait --timeout "${HELM_TIMEOUT:-15m}" \
  --set-string "imageRegistry=$REGISTRY" \
  --set-string "searchApi.image.tag=$IMAGE_TAG" \
  --set-string "llmService.image.tag=$IMAGE_TAG" \
  --set-string "llmService.modelInit.image.tag=$IMAGE_TAG" \
  "${extra[@]}"
