"""Pods on crun: the kubelet with the runc pack's option ``ociRuntime=crun`` (through the pack's mount-namespace
wrapper on a hybrid cgroup host) and the bridge pack; kubectl sees the pod Running, its logs, an exec, a clean delete.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("microkube.testing", reason="the kubelet e2e needs microkube core")

from microkube.testing import (
    Kubectl,
    ServerProcess,
    eventually,
    kubelet_node,
    pod_running_with_ip,
)
from microkube_runc.runtime import DEFAULT_CRUN

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

NODE = "mk-crun-node"
BRIDGE = "mkcrun0"
NFT_TABLE = "microkube-crun"
CLUSTER_CIDR = "10.242.0.0/16"
IMAGE = "microkube.local/busybox:latest"

if os.geteuid() != 0 or not os.path.exists(DEFAULT_CRUN):
    pytest.skip("needs root and crun (Debian package crun)", allow_module_level=True)


def crun(tmp_path: Path, *args: str) -> str:
    """crun on the node's runtime state (through the pack's wrapper when it wrote one); its output."""
    state = tmp_path / "node" / "runc" / "state"
    binary = str(state / "crun-wrapper") if (state / "crun-wrapper").exists() else DEFAULT_CRUN
    return subprocess.run([binary, "--root", str(state / "runc"), *args], capture_output=True, text=True,
                          check=False).stdout


def crun_containers(tmp_path: Path) -> list[str]:
    return crun(tmp_path, "list", "-q").split()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Kubectl]:
    server = ServerProcess(tmp_path / "server", components=True,
                           extra_args=["--cluster-cidr", CLUSTER_CIDR]).start(timeout=60)
    try:
        with kubelet_node(server, NODE, tmp_path, "--runtime-option=ociRuntime=crun",
                          f"--network-option=bridge={BRIDGE}", f"--network-option=nftTable={NFT_TABLE}",
                          plugins="runc,bridge") as kubectl:
            yield kubectl
    finally:
        server.stop()
        leftovers = crun_containers(tmp_path)
        for container in leftovers:
            crun(tmp_path, "delete", "--force", container)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if line.split()[4].startswith(str(tmp_path)):
                subprocess.run(["umount", "-l", line.split()[4]], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True, check=False)
        assert leftovers == [], "crun containers left behind"


def test_a_pod_runs_on_crun(node: Kubectl, tmp_path: Path) -> None:
    node("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: on-crun}}
spec:
  containers:
  - {{name: c, image: {IMAGE}, command: ["sh", "-c", "echo hello from crun; exec sleep 3600"]}}
""")

    pod = pod_running_with_ip(node, "on-crun")
    assert (tmp_path / "node" / "runc" / "state" / "oci-runtime").read_text() == "crun\n"
    assert pod["status"]["podIP"].startswith("10.242.")
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("crun://")
    runtime = node("get", "node", NODE, "-o", "jsonpath={.status.nodeInfo.containerRuntimeVersion}")
    assert runtime.startswith("crun://1.")
    eventually(lambda: "hello from crun" in node("logs", "on-crun"), 30, "its log")
    assert node("exec", "on-crun", "--", "echo", "via crun").strip() == "via crun"
    # crun placed the container in v1 cgroups below the kubelet's parent (no cgroup2 namespace of its own).
    cgroup = node("exec", "on-crun", "--", "cat", "/proc/self/cgroup")
    assert f"microkube-{NODE}-" in next(line for line in cgroup.splitlines() if ":memory:" in line)
    node("delete", "pod", "on-crun", "--grace-period=1", "--wait=true", timeout=60)
    assert node.json("get", "pods")["items"] == []
    assert crun_containers(tmp_path) == []  # the kubelet removed the sandbox before it deleted the pod
