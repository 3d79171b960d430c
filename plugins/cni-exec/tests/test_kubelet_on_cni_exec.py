"""Pods on Debian's reference CNI plugins: the kubelet with its node's network set to ``cni-exec`` and a
conflist (bridge + host-local + loopback), containers from the runc pack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from microkube.testing import (
    Kubectl,
    ServerProcess,
    eventually,
    kubelet_node,
    own_memory_cgroup,
    pod_running_with_ip,
    remove_cgroup_tree,
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
    ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    cgroup_parent = f"{own_memory_cgroup().rstrip('/')}/microkube-cniexec-{uuid.uuid4().hex[:8]}"
    server = ServerProcess(tmp_path / "server", components=True).start(timeout=60)
    try:
        with kubelet_node(server, NODE, tmp_path, "--network", "cni-exec", f"--network-option=conflist={conflist}",
                          f"--runtime-option=cgroupParent={cgroup_parent}", plugins="runc,cni-exec") as kubectl:
            yield kubectl
    finally:
        server.stop()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(ip_forward)
        assert remove_cgroup_tree(cgroup_parent) == []


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
