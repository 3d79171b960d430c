#!/usr/bin/env bash
# Install microkube from this checkout and bring up a cluster on the embedded defaults.
# Usage: bash scripts/up.sh [microkube up flags]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e interfaces -e core
exec microkube up "$@"
