"""Pods on ptp: microkube's node agent with ``--network ptp`` (found through the entry point), containers from the
runc pack. Runs where microkube itself is installed (not in the vendor's conformance env)."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("microkube") is None or importlib.util.find_spec("microkube_runc") is None:
    pytest.skip("needs microkube and its runc pack installed", allow_module_level=True)
if os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("busybox"):
    pytest.skip("needs root, runc and busybox", allow_module_level=True)

from microkube.testing import (
    Kubectl,
    ServerProcess,
    eventually,
    kubelet_node,
    pod_running_with_ip,
)

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

NODE = "mk-ptp-node"
CLUSTER_CIDR = "10.218.0.0/16"  # the node gets a /24 of it from the controller manager
IMAGE = "microkube.local/busybox:latest"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Kubectl, Path]]:
    server = ServerProcess(tmp_path / "server", components=True,
                           extra_args=["--cluster-cidr", CLUSTER_CIDR]).start(timeout=60)
    try:
        with kubelet_node(server, NODE, tmp_path, "--network", "ptp", "--network-option=mtu=1400",
                          plugins="runc,ptp") as kubectl:
            yield kubectl, tmp_path / "node"
    finally:
        server.stop()


def _host_route(address: str) -> list[dict[str, Any]]:
    done = subprocess.run(["ip", "-j", "route", "show", f"{address}/32"], capture_output=True, text=True, check=True)
    routes: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    return routes


def test_pods_run_on_ptp(node: tuple[Kubectl, Path]) -> None:
    kubectl, node_dir = node
    kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: on-ptp}}
spec:
  containers:
  - {{name: c, image: {IMAGE}, command: ["sh", "-c", "ip -4 addr show eth0; ip route; exec sleep 3600"]}}
""")

    address = pod_running_with_ip(kubectl, "on-ptp")["status"]["podIP"]
    pod_cidr = kubectl("get", "node", NODE, "-o", "jsonpath={.spec.podCIDR}").strip()
    assert ipaddress.ip_address(address) in ipaddress.ip_network(pod_cidr), (address, pod_cidr)
    logs = eventually(lambda: (out := kubectl("logs", "on-ptp")) and "default" in out and out, 30, "the pod's view")
    assert f"inet {address}/32" in logs and "mtu 1400" in logs and "default via 169.254.1.1 dev eth0" in logs, logs
    assert (node_dir / "cni" / "ptp" / "addresses" / address).is_file()  # stateDir: <root-dir>/cni
    (route,) = _host_route(address)
    ping = subprocess.run(["busybox", "ping", "-c", "1", "-W", "5", address], capture_output=True, text=True,
                          check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    kubectl("delete", "pod", "on-ptp", "--grace-period=1", "--wait=true", timeout=60)
    eventually(lambda: not _host_route(address), 30, "the host route gone (CNI DEL)")
    assert not Path(f"/sys/class/net/{route['dev']}").exists()
    assert not (node_dir / "cni" / "ptp" / "addresses" / address).exists()
