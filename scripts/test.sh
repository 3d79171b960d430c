#!/usr/bin/env bash
# Install what the tests need (the packages of this repository, editable, and the test tools), then run
# every test. Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e "interfaces[conformance,grpc]" -e core -e plugins/bridge -e plugins/runc -e plugins/cni-exec -e plugins/containerd -e examples/ptp -r requirements-test.txt
exec python3 -m pytest "$@"
