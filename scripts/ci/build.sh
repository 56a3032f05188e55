#!/usr/bin/env bash
# Build one image, tagged <registry>/<name>:<build>-<commit> (and :latest-<branch> for caching).
#   scripts/ci/build.sh search-service | llm-service | llm-service-cuda | llm-service-export | stack-tests
source "$(dirname "$0")/common.sh"
what="${1:?usage: build.sh search-service|llm-service|llm-service-cuda|llm-service-export|stack-tests}"
args=(--build-arg "BASE_IMAGE=$PYTHON_BASE_IMAGE")
case "$what" in
  search-service)     file=search-service/Dockerfile; image=search-service; tag="$IMAGE_TAG" ;;
  llm-service)        file=llm-service/Dockerfile; image=llm-service; tag="$IMAGE_TAG"
                      args+=(--target runtime --build-arg ORT_PACKAGE=onnxruntime) ;;
  llm-service-cuda)   file=llm-service/Dockerfile; image=llm-service; tag="$IMAGE_TAG-cuda"
                      args=(--target runtime --build-arg "BASE_IMAGE=$CUDA_BASE_IMAGE" --build-arg ORT_PACKAGE=onnxruntime-gpu) ;;
  llm-service-export) file=llm-service/Dockerfile; image=llm-service-export; tag="$IMAGE_TAG"; args+=(--target exporter) ;;
  stack-tests)        file=tests/Dockerfile; image=stack-tests; tag="$IMAGE_TAG" ;;
  *) echo "build.sh: unknown image '$what'" >&2; exit 2 ;;
esac
# A host CA bundle (TLS-intercepting proxies) is mounted for pip at build time, never baked in.
# pip reads /etc/pip.conf, so the bundle and a pip.conf naming it are bind-mounted into the build (podman).
if [ -n "${PIP_CERT_FILE:-}" ] && [ "$CONTAINER_ENGINE" = podman ]; then
  pipconf="$(mktemp)"; trap 'rm -f "$pipconf"' EXIT
  printf '[global]\ncert = /etc/pip-ca.pem\n' > "$pipconf"; chmod 0644 "$pipconf"
  args+=(--volume "$PIP_CERT_FILE:/etc/pip-ca.pem:ro" --volume "$pipconf:/etc/pip.conf:ro")
fi
log "building $REGISTRY/$image:$tag from $file"
"$CONTAINER_ENGINE" build -f "$file" "${args[@]}" \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t "$REGISTRY/$image:$tag" .
