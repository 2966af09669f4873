#!/usr/bin/env bash
# Installs the cache servers laptop mode and the end-to-end tests run:
# redis-server and memcached from Debian, valkey-server from bookworm-backports,
# and chromium, the headless browser the dashboard page's test renders it in.
# Does nothing when they are already on PATH. Needs root (or names what to install).
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v valkey-server >/dev/null 2>&1 || missing+=(valkey-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${missing[*]}" >&2
  echo "install them as root: apt-get install redis-server redis-tools memcached chromium" >&2
  echo "and valkey-server from bookworm-backports: apt-get install -t bookworm-backports valkey-server" >&2
  exit 1
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
if [[ " ${missing[*]} " == *" valkey-server "* ]] && [ "$codename" = "bookworm" ] \
  && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The distribution's own service units are not wanted: the broker starts its own
# processes on free ports. policy-rc.d keeps apt from starting them.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
base=()
for p in "${missing[@]}"; do [ "$p" = valkey-server ] || base+=("$p"); done
[ ${#base[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${base[@]}"
if [[ " ${missing[*]} " == *" valkey-server "* ]]; then
  if [ "$codename" = "bookworm" ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports valkey-server
  else
    apt-get install -y -qq --no-install-recommends valkey-server
  fi
fi
