#!/usr/bin/env bash
# Container smoke test: the images really build and run.
#
# Builds the search-service and llm-service (CPU) images with podman on a local Debian base
# (debootstrap --variant=minbase bookworm + podman import: no registry is needed), starts them with Redis
# on a podman network (netavark + aardvark-dns: service names resolve), checks /readyz, a hybrid search
# and a generate request over HTTP, and tears everything down. search-api runs its embedded Qdrant engine
# (Qdrant's image cannot be pulled without a registry); llm-service serves a model exported on the host
# into a volume (no weights in the image). Containers run with a read-only root filesystem, as in Helm.
#
#   scripts/container_smoke.sh            # SMOKE_MODEL=tiny (default) or smollm2
#
# Podman settings that work on these machines (written to $SMOKE_DIR, used through CONTAINERS_CONF /
# CONTAINERS_STORAGE_CONF, nothing global is changed): runtime runc (crun fails on hybrid cgroups),
# netavark, default ulimits within the hard limits, storage in the project's own folder ($SMOKE_DIR).
# There is no systemd: health is driven with `podman healthcheck run`.
# If `podman info` fails, the script says SKIPPED and why, and exits 0.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# Podman storage, configs, the debootstrap rootfs and the exported model: kept across clones of the project
# on this machine, so a later run rebuilds only the layers whose inputs changed.
SMOKE_DIR="${SMOKE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/search-llm-stack/podman}"
BASE_IMAGE="${SMOKE_BASE_IMAGE:-localhost/stack-base:bookworm}"
TAG="${IMAGE_TAG:-smoke}"
PREFIX="stack-smoke-$$"
SMOKE_MODEL="${SMOKE_MODEL:-tiny}"
START=$(date +%s)
log() { printf '[container_smoke +%3ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }

mkdir -p "$SMOKE_DIR"
# Podman's defaults raise nofile/nproc past this machine's hard limits (runc: "error setting rlimit").
hard_nofile=$(ulimit -Hn); [ "$hard_nofile" = unlimited ] && hard_nofile=1048576
hard_nproc=$(ulimit -Hu); [ "$hard_nproc" = unlimited ] && hard_nproc=65536
nofile=$(( hard_nofile < 65536 ? hard_nofile : 65536 ))
nproc=$(( hard_nproc < 32768 ? hard_nproc : 32768 ))
cat > "$SMOKE_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > "$SMOKE_DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$SMOKE_DIR/storage"
runroot = "$SMOKE_DIR/run"
CONF
export CONTAINERS_CONF="$SMOKE_DIR/containers.conf" CONTAINERS_STORAGE_CONF="$SMOKE_DIR/storage.conf"

if ! command -v podman >/dev/null 2>&1; then
  echo "container_smoke: SKIPPED: podman is not installed (bash scripts/ensure_tools.sh --podman installs it)"
  exit 0
fi
if ! why=$(podman info 2>&1 >/dev/null); then
  echo "container_smoke: SKIPPED: \`podman info\` fails here: $(printf '%s' "$why" | tail -n 3)"
  exit 0
fi

# ---- base image: Debian bookworm minbase with Python 3.11 ---------------------------------------------
if ! podman image exists "$BASE_IMAGE"; then
  rootfs="$SMOKE_DIR/rootfs"
  if [ ! -x "$rootfs/usr/bin/python3" ]; then
    log "debootstrap bookworm (minbase + python3) into $rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
      "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$SMOKE_DIR/debootstrap.log" 2>&1
    rm -f "$rootfs"/var/cache/apt/archives/*.deb
  fi
  log "importing $BASE_IMAGE"
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_IMAGE" >/dev/null
fi

# ---- pip inside the builds: the host's package sources and CA bundle, mounted read-only, never baked in
pipconf="$SMOKE_DIR/pip.conf"
build_mounts=()
{
  echo "[global]"
  cert="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
  [ -z "$cert" ] && [ -f /etc/ssl/certs/ca-certificates.crt ] && cert=/etc/ssl/certs/ca-certificates.crt
  if [ -n "$cert" ] && [ -f "$cert" ]; then echo "cert = /etc/pip-ca.pem"; build_mounts+=(--volume "$cert:/etc/pip-ca.pem:ro"); fi
  links=(); indexes=()
  for d in /opt/wheels; do [ -d "$d" ] && links+=("$d") && build_mounts+=(--volume "$d:$d:ro"); done
  for d in /opt/pypi/simple /opt/pypi-more/simple; do
    [ -d "$d" ] && indexes+=("file://$d") && build_mounts+=(--volume "$(dirname "$d"):$(dirname "$d"):ro")
  done
  [ "${#links[@]}" -gt 0 ] && echo "find-links = ${links[*]}"
  [ "${#indexes[@]}" -gt 0 ] && echo "extra-index-url = ${indexes[*]}"
  echo "default-timeout = 120"
} > "$pipconf"
chmod 0644 "$pipconf"
build_mounts+=(--volume "$pipconf:/etc/pip.conf:ro")

# --format docker: the OCI image format drops SHELL and HEALTHCHECK.
build() {  # build NAME DOCKERFILE [args...]
  local name=$1 file=$2; shift 2
  log "building localhost/$name:$TAG ($file; log: $SMOKE_DIR/build-$name.log)"
  podman build --format docker --network host --layers "${build_mounts[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -f "$file" -t "localhost/$name:$TAG" "$@" . > "$SMOKE_DIR/build-$name.log" 2>&1 \
    || { grep -v "^WARNING: Location" "$SMOKE_DIR/build-$name.log" | tail -25 >&2; return 1; }
}
build search-service search-service/Dockerfile
build llm-service llm-service/Dockerfile --target runtime --build-arg ORT_PACKAGE=onnxruntime
if ! podman image exists "localhost/stack-redis:bookworm"; then
  log "building localhost/stack-redis:bookworm (Debian redis-server on the same base)"
  mkdir -p "$SMOKE_DIR/redis"
  printf 'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n# hadolint ignore=DL3008\nRUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*\nUSER redis\nCMD ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--bind", "0.0.0.0"]\n' \
    > "$SMOKE_DIR/redis/Containerfile"
  podman build --format docker --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t localhost/stack-redis:bookworm \
    "$SMOKE_DIR/redis" > "$SMOKE_DIR/build-redis.log" 2>&1 || { tail -25 "$SMOKE_DIR/build-redis.log" >&2; exit 1; }
fi

# ---- a model for llm-service, exported on the host into a volume directory -------------------------------
models="$SMOKE_DIR/models"
mkdir -p "$models"
case "$SMOKE_MODEL" in
  tiny) model_name=tiny-llama ;;
  smollm2) model_name=smollm2-135m-instruct ;;
  *) echo "SMOKE_MODEL must be tiny or smollm2" >&2; exit 2 ;;
esac
log "exporting the $SMOKE_MODEL model into $models (cached)"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$ROOT/.venv/bin/python" scripts/optimize_model.py --source "$SMOKE_MODEL" \
  --models-dir "$models" --precisions int8 > "$SMOKE_DIR/export.log" 2>&1 \
  || { tail -20 "$SMOKE_DIR/export.log" >&2; exit 1; }
chmod -R a+rX "$models"

# ---- run: network, redis, llm-service, search-api ------------------------------------------------------
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    for c in search-api llm-service redis; do
      echo "---- logs of $c" >&2; podman logs --tail 40 "$PREFIX-$c" >&2 2>/dev/null || true
    done
  fi
  podman rm -f -t 5 "$PREFIX-search-api" "$PREFIX-llm-service" "$PREFIX-redis" >/dev/null 2>&1 || true
  podman volume rm -f "$PREFIX-search-data" "$PREFIX-search-models" >/dev/null 2>&1 || true
  podman network rm -f "$PREFIX" >/dev/null 2>&1 || true
  log "torn down (exit $rc)"
}
trap cleanup EXIT
podman network create "$PREFIX" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
search_port=$(free_port); llm_port=$(free_port)
common=(--network "$PREFIX" --read-only --tmpfs /tmp:rw,size=256m --security-opt no-new-privileges --cap-drop ALL)
log "starting redis, llm-service (:$llm_port) and search-api (:$search_port)"
podman run -d --name "$PREFIX-redis" --network-alias redis "${common[@]}" localhost/stack-redis:bookworm >/dev/null
podman run -d --name "$PREFIX-llm-service" --health-interval disable --network-alias llm-service "${common[@]}" -p "127.0.0.1:$llm_port:8002" \
  -v "$models:/models:ro" -e LLM_DEFAULT_MODEL="$model_name" -e LLM_DEVICE=cpu -e LLM_LOG_JSON=false \
  "localhost/llm-service:$TAG" >/dev/null
podman volume create "$PREFIX-search-data" >/dev/null
podman volume create "$PREFIX-search-models" >/dev/null
podman run -d --name "$PREFIX-search-api" --health-interval disable --network-alias search-api "${common[@]}" -p "127.0.0.1:$search_port:8001" \
  -v "$PREFIX-search-data:/data" -v "$PREFIX-search-models:/models" -e SEARCH_REDIS_URL=redis://redis:6379/0 -e SEARCH_LLM_URL=http://llm-service:8002 \
  -e SEARCH_LOG_JSON=false "localhost/search-service:$TAG" >/dev/null

wait_healthy() {  # the image's HEALTHCHECK, driven by hand (no systemd timers here)
  local c="$PREFIX-$1" deadline=$(( $(date +%s) + ${2:-180} ))
  until podman healthcheck run "$c" >/dev/null 2>&1; do
    [ "$(podman inspect -f '{{.State.Running}}' "$c")" = true ] || { echo "$1 exited" >&2; return 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "$1 not healthy in time" >&2; return 1; }
    sleep 2
  done
  log "$1 healthy"
}
wait_healthy llm-service
wait_healthy search-api

SEARCH="http://127.0.0.1:$search_port" LLM="http://127.0.0.1:$llm_port" "$ROOT/.venv/bin/python" - <<'PY'
import os, sys, time
import httpx
search, llm = os.environ["SEARCH"], os.environ["LLM"]
def ready(url):
    deadline = time.monotonic() + 120
    while True:
        r = httpx.get(url + "/readyz", timeout=5)
        if r.status_code == 200:
            return r.json()
        if time.monotonic() > deadline:
            sys.exit(f"FAIL: {url}/readyz -> {r.status_code} {r.text[:300]}")
        time.sleep(1)
print("search-api /readyz:", ready(search))
print("llm-service /readyz:", ready(llm))
with httpx.Client(base_url=search, timeout=60) as c:
    c.delete("/collections/smoke")
    assert c.post("/collections", json={"name": "smoke"}).status_code == 201
    r = c.post("/collections/smoke/documents", json={"documents": [
        {"id": "qdrant", "title": "Qdrant", "text": "Qdrant is a vector database written in Rust for similarity search."},
        {"id": "bread", "title": "Bread", "text": "Sourdough bread needs flour, water, salt and a starter."}]})
    assert r.status_code == 200, r.text
    hits = c.post("/search/hybrid", json={"query": "vector similarity search database", "collection": "smoke"})
    assert hits.status_code == 200, hits.text
    ids = [h["id"] for h in hits.json()["results"]]
    assert ids and ids[0] == "qdrant", ids
    print("hybrid search:", ids)
    for path, kind in (("/ui", "text/html"), ("/ui/app.js", "text/javascript")):     # package data in the image
        r = c.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), (path, r.status_code)
    print("page: /ui and its assets served")
with httpx.Client(base_url=llm, timeout=120) as c:
    r = c.post("/generate", json={"prompt": "Hello, my name is", "max_new_tokens": 8, "seed": 1})
    assert r.status_code == 200, r.text
    print("generate:", str(r.json())[:200])
PY
log "OK: both images built and served /readyz, a hybrid search, the /ui page and a generate request"
