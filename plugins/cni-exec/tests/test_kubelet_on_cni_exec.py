"""Pods on Debian's reference CNI plugins: the kubelet with its node's network set to ``cni-exec`` and a
conflist (bridge + host-local + loopback), containers from the runc pack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from microkube.testing import (
    Kubectl,
    ServerProcess,
    eventually,
    kubelet_node,
    pod_running_with_ip,
)

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

NODE = "mk-cniexec-node"
BRIDGE = "mkcnie0"
SUBNET = "10.239.5.0/24"
IMAGE = "microkube.local/busybox:latest"

if os.geteuid() != 0 or not shutil.which("runc") or not Path("/usr/lib/cni/bridge").exists():
    pytest.skip("needs root, runc and containernetworking-plugins", allow_module_level=True)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Kubectl]:
    conflist = tmp_path / "pods.conflist"
    conflist.write_text(json.dumps({"cniVersion": "1.0.0", "name": "mk-cniexec-e2e", "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "dataDir": str(tmp_path / "ipam")}},
        {"type": "loopback"}]}))
    server = ServerProcess(tmp_path / "server", components=True).start(timeout=60)
    try:
        with kubelet_node(server, NODE, tmp_path, "--network", "cni-exec", f"--network-option=conflist={conflist}",
                          plugins="runc,cni-exec") as kubectl:
            yield kubectl
    finally:
        server.stop()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


def test_pods_run_on_the_reference_plugins(node: Kubectl) -> None:
    node("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: on-cni}}
spec:
  containers:
  - {{name: c, image: {IMAGE}, command: ["sh", "-c", "ip -4 addr show eth0; exec sleep 3600"]}}
""")

    pod = pod_running_with_ip(node, "on-cni")
    address = pod["status"]["podIP"]
    assert address.startswith("10.239.5.")  # host-local's range from the conflist
    assert eventually(lambda: address in node("logs", "on-cni"), 30, "the address inside the pod")
    links = json.loads(subprocess.run(["ip", "-j", "link", "show", "master", BRIDGE], capture_output=True,
                                      text=True, check=True).stdout)
    assert len(links) == 1  # the pod's veth on the reference bridge
    node("delete", "pod", "on-cni", "--grace-period=1", "--wait=true", timeout=60)
    after = json.loads(subprocess.run(["ip", "-j", "link", "show", "master", BRIDGE], capture_output=True,
                                      text=True, check=True).stdout)
    assert after == []  # CNI DEL through the reference plugins
