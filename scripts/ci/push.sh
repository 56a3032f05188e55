#!/usr/bin/env bash
# Push the images built by build.sh. Credentials come from Jenkins (credentials('registry-credentials')
# sets REGISTRY_CREDS_USR / REGISTRY_CREDS_PSW); nothing is written to the repository.
source "$(dirname "$0")/common.sh"
: "${REGISTRY_CREDS_USR:?registry user (REGISTRY_CREDS_USR) not set}"
: "${REGISTRY_CREDS_PSW:?registry password (REGISTRY_CREDS_PSW) not set}"
printf '%s' "$REGISTRY_CREDS_PSW" | "$CONTAINER_ENGINE" login --username "$REGISTRY_CREDS_USR" --password-stdin "${REGISTRY%%/*}"
for ref in "search-service:$IMAGE_TAG" "llm-service:$IMAGE_TAG" "llm-service:$IMAGE_TAG-cuda" "llm-service-export:$IMAGE_TAG"; do
  log "pushing $REGISTRY/$ref"
  "$CONTAINER_ENGINE" push "$REGISTRY/$ref"
done
"$CONTAINER_ENGINE" logout "${REGISTRY%%/*}" || true
