#!/usr/bin/env bash
# Make sure a real Redis answers on $REDIS_HOST:$REDIS_PORT (default 127.0.0.1:6379).
# If none does, install Debian's redis-server when missing and start one without persistence.
# Never replaced by a fake: the tests talk to this server over TCP.
set -euo pipefail
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}

ping() { (exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }

if ping; then exit 0; fi
echo "ensure_redis: no Redis on $host:$port, starting one" >&2
if ! command -v redis-server >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
mkdir -p "${TMPDIR:-/tmp}/redis-$port"
redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
  --dir "${TMPDIR:-/tmp}/redis-$port" --logfile "${TMPDIR:-/tmp}/redis-$port/redis.log"
for _ in $(seq 50); do ping && exit 0; sleep 0.1; done
echo "ensure_redis: Redis did not come up on $host:$port" >&2
exit 1
