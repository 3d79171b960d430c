"""`microkube controller-manager` against a real server, driven by kubectl (pods are marked Ready by the
test, standing in for kubelets until the node agent exists)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from microkube.testing import Kubectl, ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def controller_manager(microkube_server: ServerProcess) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    process = subprocess.Popen([sys.executable, "-m", "microkube.cli", "controller-manager", "--kubeconfig",
                                str(microkube_server.kubeconfig), "--metrics-listen", "127.0.0.1:0"],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    assert process.stdout is not None
    banner = process.stdout.readline()
    assert "controller manager running" in banner
    process.metrics_url = banner.rsplit("metrics at ", 1)[1].strip()  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        process.terminate()
        process.wait(20)
        process.stdout.close()


def mark_pods_ready(kubectl: Kubectl, namespace: str) -> None:
    pods = kubectl.json("get", "pods", "-n", namespace)["items"]
    status = json.dumps({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    for pod in pods:
        if pod["status"].get("phase") != "Running" and not pod["metadata"].get("deletionTimestamp"):
            kubectl.run("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
                        "--type=merge", "-p", status, check=False)


def wait_rolled_out(kubectl: Kubectl, namespace: str, deployment: str) -> None:
    watcher = kubectl.popen("rollout", "status", f"deployment/{deployment}", "-n", namespace, "--timeout=60s")
    deadline = time.monotonic() + 60
    while watcher.poll() is None and time.monotonic() < deadline:
        mark_pods_ready(kubectl, namespace)
        time.sleep(0.3)
    out, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 0, err
    assert "successfully rolled out" in out


def test_deployment_rollout_update_and_undo(controller_manager: subprocess.Popen[str], kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "rollout")
    kubectl("create", "deployment", "web", "-n", "rollout", "--image=web:1", "--replicas=3")
    wait_rolled_out(kubectl, "rollout", "web")
    assert len(kubectl.json("get", "pods", "-n", "rollout", "-l", "app=web")["items"]) == 3
    kubectl("set", "image", "deployment/web", "-n", "rollout", "web=web:2")
    wait_rolled_out(kubectl, "rollout", "web")
    described = kubectl("describe", "deployment", "web", "-n", "rollout")
    assert "ScalingReplicaSet" in described and "Scaled up replica set web-" in described
    assert "SuccessfulCreate" in kubectl("describe", "replicaset", "-n", "rollout")
    history = kubectl("rollout", "history", "deployment/web", "-n", "rollout")
    assert "1 " in history and "2 " in history
    kubectl("rollout", "undo", "deployment/web", "-n", "rollout")
    wait_rolled_out(kubectl, "rollout", "web")
    images = {p["spec"]["containers"][0]["image"]
              for p in kubectl.json("get", "pods", "-n", "rollout", "-l", "app=web")["items"]
              if not p["metadata"].get("deletionTimestamp")}
    assert images == {"web:1"}
    kubectl("scale", "deployment/web", "-n", "rollout", "--replicas=1")
    wait_rolled_out(kubectl, "rollout", "web")
    kubectl("delete", "deployment", "web", "-n", "rollout", "--cascade=foreground", "--timeout=60s")
    assert kubectl.json("get", "replicasets", "-n", "rollout")["items"] == []


def test_unknown_controller_cannot_be_disabled(microkube_server: ServerProcess) -> None:
    result = subprocess.run([sys.executable, "-m", "microkube.cli", "controller-manager", "--kubeconfig",
                             str(microkube_server.kubeconfig), "--disable", "nope"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode != 0
    assert "nope" in result.stderr and "deployment" in result.stderr


def test_per_controller_metrics(controller_manager: subprocess.Popen[str], kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "metered")
    kubectl("create", "deployment", "web", "-n", "metered", "--image=web:1", "--replicas=1")
    url = controller_manager.metrics_url  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        if 'controller_runtime_reconcile_total{controller="deployment",result="success"} 0' not in text:
            break
        time.sleep(0.3)
    assert 'workqueue_depth{name="deployment"}' in text
    assert 'controller_runtime_reconcile_time_seconds_count{controller="replicaset"}' in text
    assert 'controller_runtime_reconcile_total{controller="deployment",result="success"} 0' not in text
    assert 'microkube_informer_objects{resource="deployments"}' in text
