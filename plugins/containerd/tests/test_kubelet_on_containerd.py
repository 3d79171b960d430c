"""Pods on containerd: the kubelet with its node's runtime set to ``containerd`` (this pack, over CRI v1 gRPC to
the private containerd the tests start), containerd networking the pods itself with its CNI config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from containerd_testenv import BUSYBOX_IMAGE, Daemon

from microkube.testing import Kubectl, ServerProcess, eventually, kubelet_node

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

NODE = "mk-ctrd-node"


@pytest.fixture
def node(containerd_daemon: Daemon, tmp_path: Path) -> Iterator[Kubectl]:
    server = ServerProcess(tmp_path / "server", components=True).start(timeout=60)
    try:
        with kubelet_node(server, NODE, tmp_path, "--runtime", "containerd",
                          f"--runtime-option=endpoint={containerd_daemon.endpoint}", plugins="containerd") as kubectl:
            yield kubectl
    finally:
        server.stop()


def test_pods_run_on_containerd(node: Kubectl, containerd_daemon: Daemon) -> None:
    node("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: on-containerd}}
spec:
  containers:
  - name: c
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hello from containerd; exec sleep 3600"]
""")

    def running() -> dict[str, Any] | None:
        pod: dict[str, Any] = node.json("get", "pod", "on-containerd")
        return pod if pod["status"].get("phase") == "Running" and pod["status"].get("podIP") else None

    pod = eventually(running, 90, "the pod Running with an IP")
    prefix = containerd_daemon.subnet.rsplit(".", 1)[0] + "."
    assert pod["status"]["podIP"].startswith(prefix)  # containerd's CNI gave it, not the kubelet
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
    eventually(lambda: "hello from containerd" in node("logs", "on-containerd"), 30, "its log")
    assert node("exec", "on-containerd", "--", "echo", "via containerd").strip() == "via containerd"
    node("delete", "pod", "on-containerd", "--grace-period=1", "--wait=true", timeout=60)
