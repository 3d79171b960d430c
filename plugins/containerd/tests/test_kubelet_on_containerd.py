"""Pods on containerd: the kubelet with its node's runtime set to ``containerd`` (this pack, over CRI v1 gRPC to
the private containerd the tests start), containerd networking the pods itself with its CNI config."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from containerd_testenv import BUSYBOX_IMAGE, Daemon

from microkube import bootstrap
from microkube.testing import Kubectl, ServerProcess, eventually, find_kubectl

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

NODE = "mk-ctrd-node"


@pytest.fixture
def node(containerd_daemon: Daemon, tmp_path: Path) -> Iterator[Kubectl]:
    binary = find_kubectl()
    if binary is None:
        pytest.fail("kubectl 1.32 is not installed; .ci/run installs it")
    server = ServerProcess(tmp_path / "server", components=True).start(timeout=60)
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    kubeconfig, cert, key = bootstrap.local_credentials(server.data_dir, NODE, node_dir, ["127.0.0.1"])
    log = (tmp_path / "kubelet.log").open("w")
    kubelet = subprocess.Popen(
        [sys.executable, "-m", "microkube.cli", "kubelet", "--kubeconfig", str(kubeconfig), "--root-dir",
         str(node_dir), "--tls-cert-file", str(cert), "--tls-private-key-file", str(key), "--client-ca-file",
         str(server.data_dir / "pki" / "ca.crt"), "--node-name", NODE, "--node-ip", "127.0.0.1",
         "--kubelet-port", "0", "--runtime", "containerd", f"--runtime-option=endpoint={containerd_daemon.endpoint}"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "0", "MICROKUBE_PLUGINS": "containerd"})
    kubectl = Kubectl(binary, server.kubeconfig, tmp_path / "kubectl-home")
    try:
        eventually(lambda: "True" in kubectl("get", "node", NODE, "-o",
                                             "jsonpath={.status.conditions[?(@.type=='Ready')].status}"),
                   60, "the node Ready")
        yield kubectl
    finally:
        kubectl.run("delete", "pods", "--all", "--grace-period=1", "--wait=true", check=False, timeout=60)
        kubelet.terminate()
        kubelet.wait(30)
        log.close()
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
