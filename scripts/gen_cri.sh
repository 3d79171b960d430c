#!/usr/bin/env bash
# Regenerate the CRI v1 Python modules (api_pb2.py, api_pb2.pyi, api_pb2_grpc.py) from
# interfaces/src/microkube_interfaces/criapi/runtime/v1/api.proto with grpcio-tools.
#
#   bash scripts/gen_cri.sh          # regenerate in place
#   bash scripts/gen_cri.sh --check  # regenerate into a temp dir and fail if the checked-in files differ
#
# The proto is compiled at its package path (-I interfaces/src), so the gRPC module imports
# `microkube_interfaces.criapi.runtime.v1.api_pb2` absolutely and protobuf's descriptor pool registers the
# file as microkube_interfaces/criapi/runtime/v1/api.proto, not a bare api.proto that could clash.
# Bumping grpcio-tools changes the gencode version: raise the protobuf/grpcio floors of the
# microkube-interfaces[grpc] extra to match (see the header of the generated files).
set -euo pipefail
cd "$(dirname "$0")/.."
REL=microkube_interfaces/criapi/runtime/v1
SRC=interfaces/src
check=0
[[ "${1:-}" == "--check" ]] && check=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 -m grpc_tools.protoc -I"$SRC" --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "$SRC/$REL/api.proto"
# Generated code is not ours to lint; the gRPC module has no stubs (our code builds calls from api_pb2 itself).
for f in api_pb2.py api_pb2.pyi api_pb2_grpc.py; do
  { echo "# ruff: noqa"; [[ $f != api_pb2.py ]] && echo "# mypy: ignore-errors"; cat "$out/$REL/$f"; } > "$out/$f"
done
if (( check )); then
  status=0
  for f in api_pb2.py api_pb2.pyi api_pb2_grpc.py; do
    diff -u "$SRC/$REL/$f" "$out/$f" || status=1
  done
  if (( status )); then echo "CRI modules drifted from api.proto: run bash scripts/gen_cri.sh" >&2; fi
  exit $status
fi
cp "$out"/api_pb2.py "$out"/api_pb2.pyi "$out"/api_pb2_grpc.py "$SRC/$REL/"
echo "regenerated $SRC/$REL/api_pb2{.py,.pyi,_grpc.py}"
