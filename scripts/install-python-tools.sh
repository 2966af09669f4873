#!/usr/bin/env bash
# Installs the Python tools the test command uses into .venv at the repository
# root: moto in server mode (the AWS stand-in for DynamoDB, SQS, Secrets
# Manager and ElastiCache). Does nothing when they are already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv
# The release the tests are written against: moto changes what it answers
# between releases, and a test run must not depend on the day it ran.
moto_version=5.2.4
if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
  exit 0
fi
if ! python3 -m venv "$venv" 2>/dev/null; then
  # Debian's python3 needs python3-venv for `python3 -m venv`.
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv "$venv"
  else
    echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "moto[server]==$moto_version"
