#!/usr/bin/env bash
# Starts the broker in laptop mode: the OSB API on 127.0.0.1:${PORT:-8080} and
# the worker in the same process, with local redis/valkey/memcached processes
# instead of ElastiCache. No AWS account needed. The environment passes through
# (PORT, BROKER_USERNAME, BROKER_PASSWORD, BROKER_STATE_DIR, CATALOG_FILE, RUST_LOG).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! bash scripts/install-servers.sh; then
  echo "run-local: the cache servers laptop mode needs are not installed (see above)" >&2
  exit 1
fi

exec cargo run -p broker-api
