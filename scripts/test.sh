#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script).
# Works on a fresh Debian 12 machine as root with the Rust toolchain installed:
# it installs the cache servers the end-to-end tests start, then runs
# rustfmt, clippy and the tests. Stops at the first failing step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$1"; }
fail() { printf '\ntest.sh: FAILED: %s\n' "$1" >&2; exit 1; }
skip() { printf '\n==> skipped: %s\n' "$1"; }

# Runs one step; on failure names it and stops with a non-zero exit.
run() {
  local what=$1; shift
  step "$what: $*"
  "$@" || fail "$what"
}

command -v cargo >/dev/null 2>&1 \
  || fail "cargo is not on PATH: install the Rust toolchain (https://rustup.rs) first"

# rustfmt and clippy are rustup components; a minimal toolchain lacks them.
for component in rustfmt clippy; do
  sub=${component/rustfmt/fmt}
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 \
      || fail "cargo $sub is missing and rustup is not available to add $component"
    run "add the $component component" rustup component add "$component"
  fi
done

run "install the cache servers (redis-server, redis-tools, memcached, valkey-server)" \
  bash scripts/install-servers.sh

run "install moto (AWS stand-in) into .venv" bash scripts/install-python-tools.sh

run "check formatting" cargo fmt --all --check

run "lint" cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  run "unit and end-to-end tests" cargo nextest run --workspace --no-fail-fast
else
  echo
  echo "cargo-nextest is not installed; running the tests with cargo test instead"
  run "unit and end-to-end tests" cargo test --workspace --no-fail-fast
fi

# The deploy templates, checked offline: template.yaml expanded with
# samtranslator and linted with cfn-lint; terraform/ validated and tested
# from the provider mirror, and checked with checkov (check-terraform.sh says
# plainly, and goes on, when terraform or its mirror is missing).
run "lint template.yaml (samtranslator + cfn-lint)" bash scripts/check-template.sh
run "check terraform/ (validate, test, checkov)" bash scripts/check-terraform.sh

printf '\ntest.sh: all steps passed\n'
