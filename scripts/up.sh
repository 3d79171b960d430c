#!/usr/bin/env bash
# Install microkube from this checkout (with the default runtime and network packs, and as root the
# system packages they drive) and bring up a one-machine cluster on the embedded defaults.
# Usage: bash scripts/up.sh [microkube up flags]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for package in runc busybox-static nftables iptables; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
python3 -m pip install --quiet --disable-pip-version-check -e interfaces -e core -e plugins/runc -e plugins/bridge
exec microkube up "$@"
