"""The checked-in CRI v1 modules match api.proto, and carry CRI's wire facts."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("google.protobuf", reason="needs microkube-interfaces[grpc]")


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="needs grpcio-tools")
def test_generated_modules_match_the_proto() -> None:
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gen_cri.sh"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_wire_facts() -> None:
    from microkube_interfaces.criapi.runtime.v1 import api_pb2

    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    services = api_pb2.DESCRIPTOR.services_by_name
    assert {"RuntimeService", "ImageService"} <= set(services)
    assert services["RuntimeService"].methods_by_name["RunPodSandbox"].input_type.name == "RunPodSandboxRequest"
    env = api_pb2.KeyValue(key="FOO", value="bar")  # string, not bytes (cri-api before master's change)
    assert env.SerializeToString() == b"\n\x03FOO\x12\x03bar"
    config = api_pb2.ContainerConfig.DESCRIPTOR.fields_by_name
    assert config["envs"].number == 6 and config["log_path"].number == 11 and config["linux"].number == 15
    status = api_pb2.PodSandboxStatusResponse.DESCRIPTOR.fields_by_name
    assert status["info"].number == 2
