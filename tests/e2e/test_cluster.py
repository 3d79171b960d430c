"""A whole control plane (`microkube server` with its controller manager and scheduler) and simulated
nodes, driven by the real kubectl: workloads are scheduled, run, roll out, fail over and clean up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from microkube.testing import Kubectl, ServerProcess, find_kubectl

pytestmark = pytest.mark.e2e

GRACE = "3"  # node-monitor-grace-period, seconds: a stopped node goes NotReady quickly


def start_cluster(data_dir: Path, nodes: int) -> ServerProcess:
    return ServerProcess(data_dir, components=True, extra_args=[
        "--simulate-nodes", str(nodes), "--node-monitor-grace-period", GRACE]).start()


def kubectl_for(server: ServerProcess, home: Path) -> Kubectl:
    binary = find_kubectl()
    if binary is None:
        pytest.fail("kubectl 1.32 is not installed; .ci/run installs it")
    return Kubectl(binary, server.kubeconfig, home)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_cluster(tmp_path_factory.mktemp("cluster"), 3)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def k(cluster: ServerProcess, tmp_path: Path) -> Kubectl:
    kubectl = kubectl_for(cluster, tmp_path / "home")
    wait_for(lambda: len(ready_nodes(kubectl)) >= 3, "3 Ready nodes")
    return kubectl


def wait_for(condition: Callable[[], Any], what: str, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def ready_nodes(k: Kubectl) -> list[str]:
    nodes = k.json("get", "nodes")["items"]
    return [n["metadata"]["name"] for n in nodes
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in (n.get("status") or {}).get("conditions") or [])]


def pods(k: Kubectl, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", namespace] + (["-l", selector] if selector else [])
    return list(k.json(*args)["items"])


def running(k: Kubectl, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    return [p for p in pods(k, namespace, selector)
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def apply(k: Kubectl, manifest: dict[str, Any]) -> None:
    k("apply", "-f", "-", input=json.dumps(manifest))


def test_deployment_rollout_scale_undo_pause_resume(k: Kubectl) -> None:
    k("create", "namespace", "roll")
    k("create", "deployment", "web", "-n", "roll", "--image=web:1", "--replicas=4")
    out = k("rollout", "status", "deployment/web", "-n", "roll", "--timeout=60s")
    assert "successfully rolled out" in out
    assert len(running(k, "roll")) == 4
    assert all(p["spec"]["nodeName"].startswith("sim-node-") and p["status"]["podIP"] for p in running(k, "roll"))
    k("set", "image", "deployment/web", "-n", "roll", "web=web:2")
    k("rollout", "status", "deployment/web", "-n", "roll", "--timeout=60s")
    images = {p["spec"]["containers"][0]["image"] for p in running(k, "roll")}
    assert images == {"web:2"}
    assert "2 " in k("rollout", "history", "deployment/web", "-n", "roll")
    k("rollout", "undo", "deployment/web", "-n", "roll")
    k("rollout", "status", "deployment/web", "-n", "roll", "--timeout=60s")
    wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in running(k, "roll")} == {"web:1"}, "undo")
    k("rollout", "pause", "deployment/web", "-n", "roll")
    k("set", "image", "deployment/web", "-n", "roll", "web=web:3")
    time.sleep(1.5)
    assert {p["spec"]["containers"][0]["image"] for p in running(k, "roll")} == {"web:1"}, "paused rollouts wait"
    k("rollout", "resume", "deployment/web", "-n", "roll")
    k("rollout", "status", "deployment/web", "-n", "roll", "--timeout=60s")
    before = {p["metadata"]["name"] for p in running(k, "roll")}
    k("rollout", "restart", "deployment/web", "-n", "roll")
    k("rollout", "status", "deployment/web", "-n", "roll", "--timeout=60s")
    wait_for(lambda: not before & {p["metadata"]["name"] for p in running(k, "roll")}
             and len(running(k, "roll")) == 4, "every pod replaced by the restart")
    k("scale", "deployment/web", "-n", "roll", "--replicas=7")
    wait_for(lambda: len(running(k, "roll")) == 7, "7 running replicas")
    wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in running(k, "roll")} == {"web:3"}, "web:3")
    k("scale", "deployment/web", "-n", "roll", "--replicas=2")
    wait_for(lambda: len(pods(k, "roll")) == 2, "scale down to 2")
    k("delete", "namespace", "roll", "--wait=true", "--timeout=60s")


def test_daemonset_statefulset_and_jobs(k: Kubectl) -> None:
    k("create", "namespace", "wl")
    apply(k, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "wl"},
              "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                  "metadata": {"labels": {"app": "agent"}},
                  "spec": {"containers": [{"name": "a", "image": "agent"}]}}}})
    wait_for(lambda: len(running(k, "wl", "app=agent")) == 3, "a daemon pod per node")
    assert {p["spec"]["nodeName"] for p in running(k, "wl", "app=agent")} == set(ready_nodes(k))
    apply(k, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "wl"},
              "spec": {"serviceName": "db", "replicas": 3, "selector": {"matchLabels": {"app": "db"}}, "template": {
                  "metadata": {"labels": {"app": "db"}},
                  "spec": {"containers": [{"name": "db", "image": "db"}]}}}})
    k("rollout", "status", "statefulset/db", "-n", "wl", "--timeout=60s")
    started = sorted(running(k, "wl", "app=db"), key=lambda p: p["status"]["startTime"])
    assert [p["metadata"]["name"] for p in started] == ["db-0", "db-1", "db-2"]
    for name, job_annotations in (("ok", {"microkube.io/simulate-duration": "0.5"}),
                                  ("bad", {"microkube.io/simulate-duration": "0.2",
                                           "microkube.io/simulate-exit-code": "3"})):
        apply(k, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "wl"},
                  "spec": {"completions": 2, "parallelism": 2, "backoffLimit": 1, "template": {
                      "metadata": {"annotations": job_annotations},
                      "spec": {"restartPolicy": "Never", "containers": [{"name": "j", "image": "job"}]}}}})
    k("wait", "--for=condition=Complete", "job/ok", "-n", "wl", "--timeout=60s")
    k("wait", "--for=condition=Failed", "job/bad", "-n", "wl", "--timeout=60s")
    assert "BackoffLimitExceeded" in k("describe", "job/bad", "-n", "wl")


def test_scheduling_failures_explain_and_preemption(k: Kubectl) -> None:
    k("create", "namespace", "prio")
    apply(k, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "urgent"},
              "value": 100000})

    def big(name: str, priority: str = "") -> dict[str, Any]:
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "20"}}}]}
        if priority:
            spec["priorityClassName"] = priority
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "prio"}, "spec": spec}

    for index in range(3):
        apply(k, big(f"low-{index}"))
    wait_for(lambda: len(running(k, "prio")) == 3, "three big pods, one per node")
    apply(k, big("waiting"))
    wait_for(lambda: "0/3 nodes are available: 3 Insufficient cpu." in k("describe", "pod", "waiting", "-n", "prio"),
             "a FailedScheduling explanation")
    k("delete", "pod", "waiting", "-n", "prio")
    apply(k, big("vip", "urgent"))
    vip = wait_for(lambda: next((p for p in running(k, "prio") if p["metadata"]["name"] == "vip"), None),
                   "the high-priority pod running after preemption")
    remaining = {p["metadata"]["name"] for p in pods(k, "prio")}
    assert len(remaining & {"low-0", "low-1", "low-2"}) == 2
    assert vip["spec"]["nodeName"]
    assert "Preempted" in k("get", "events", "-n", "prio")
    k("delete", "namespace", "prio", "--wait=true", "--timeout=60s")


def test_a_stopped_node_loses_its_pods_to_the_others(tmp_path: Path) -> None:
    server = start_cluster(tmp_path / "data", 2)
    extra = None
    try:
        k = kubectl_for(server, tmp_path / "home")
        wait_for(lambda: len(ready_nodes(k)) == 2, "2 Ready nodes")
        for node in ready_nodes(k):
            k("cordon", node)
        env = {**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "1"}
        extra = subprocess.Popen([sys.executable, "-m", "microkube.cli", "simulate", "--kubeconfig",
                                  str(server.kubeconfig), "--nodes", "1", "--prefix", "doomed-",
                                  "--lease-interval", "1"], env=env, stdout=subprocess.DEVNULL)
        wait_for(lambda: "doomed-0" in ready_nodes(k), "the extra node")
        tolerate_briefly = [{"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
                            for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]
        apply(k, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": "default"},
                  "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "app"}}, "template": {
                      "metadata": {"labels": {"app": "app"}},
                      "spec": {"tolerations": tolerate_briefly, "containers": [{"name": "c", "image": "app"}]}}}})
        wait_for(lambda: len(running(k, "default", "app=app")) == 3, "3 pods on the extra node")
        assert {p["spec"]["nodeName"] for p in running(k, "default", "app=app")} == {"doomed-0"}
        for node in ("sim-node-0", "sim-node-1"):
            k("uncordon", node)
        extra.terminate()
        extra.wait(20)
        wait_for(lambda: "doomed-0" not in ready_nodes(k), "the stopped node NotReady")
        taints = k.json("get", "node", "doomed-0")["spec"].get("taints") or []
        assert {"node.kubernetes.io/unreachable"} <= {t["key"] for t in taints}
        wait_for(lambda: {p["spec"]["nodeName"] for p in running(k, "default", "app=app")} <= {"sim-node-0",
                                                                                                  "sim-node-1"}
                 and len(running(k, "default", "app=app")) == 3, "pods replaced on the live nodes")
        assert "TaintManagerEviction" in k("get", "events")
    finally:
        if extra is not None and extra.poll() is None:
            extra.kill()
        server.stop()


def test_the_control_plane_converges_after_a_restart_mid_rollout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_cluster(data, 2)
    try:
        k = kubectl_for(server, tmp_path / "home")
        k("create", "deployment", "web", "--image=web:1", "--replicas=6")
        k("rollout", "status", "deployment/web", "--timeout=60s")
        k("set", "image", "deployment/web", "web=web:2")
        server.stop()  # everything stops mid-rollout: API server, controllers, scheduler, nodes
        server = ServerProcess(data, port=server.port, components=True, extra_args=[
            "--simulate-nodes", "2", "--node-monitor-grace-period", GRACE]).start()
        k("rollout", "status", "deployment/web", "--timeout=90s")
        wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in running(k, "default", "app=web")} == {"web:2"}
                 and len(running(k, "default", "app=web")) == 6, "6 replicas of web:2")
        replicasets = k.json("get", "replicasets")["items"]
        assert sorted(rs["spec"]["replicas"] for rs in replicasets) == [0, 6]
    finally:
        server.stop()


def test_logs_and_exec_on_a_simulated_pod_answer_with_a_simulated_response(k: Kubectl) -> None:
    k("run", "sim", "--image=busybox", "-n", "default")
    wait_for(lambda: any(p["metadata"]["name"] == "sim" for p in running(k, "default")), "the pod running")
    logs = k("logs", "sim")
    assert "[microkube simulated] container sim of pod default/sim on simulated node sim-node-" in logs
    out = k("exec", "sim", "--", "ls", "-l")
    assert "would run 'ls -l'; no process runs here" in out
    failed = k.run("port-forward", "pod/sim", "18080:80", check=False, timeout=20)
    assert failed.returncode != 0
    assert "cannot be port-forwarded" in failed.stderr
    k("delete", "pod", "sim", "--wait=true", "--timeout=30s")


def test_a_stuck_rollout_exceeds_its_progress_deadline(k: Kubectl) -> None:
    apply(k, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "stuck", "namespace": "default"},
              "spec": {"replicas": 2, "progressDeadlineSeconds": 2, "selector": {"matchLabels": {"app": "stuck"}},
                       "template": {"metadata": {"labels": {"app": "stuck"}}, "spec": {
                           "nodeSelector": {"no-such-label": "anywhere"},
                           "containers": [{"name": "c", "image": "stuck"}]}}}})
    failed = k.run("rollout", "status", "deployment/stuck", "--timeout=60s", check=False)
    assert failed.returncode != 0
    assert 'deployment "stuck" exceeded its progress deadline' in failed.stderr
    conditions = {c["type"]: c for c in k.json("get", "deployment", "stuck")["status"]["conditions"]}
    assert conditions["Progressing"]["reason"] == "ProgressDeadlineExceeded"
    k("delete", "deployment", "stuck")


def test_a_pod_failure_policy_fails_the_job_at_once(k: Kubectl) -> None:
    apply(k, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "policy", "namespace": "default"},
              "spec": {"backoffLimit": 6, "podFailurePolicy": {"rules": [
                  {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]},
                  "template": {"metadata": {"annotations": {"microkube.io/simulate-duration": "0.2",
                                                            "microkube.io/simulate-exit-code": "42"}},
                               "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "x"}]}}}})
    k("wait", "--for=condition=Failed", "job/policy", "--timeout=60s")
    conditions = {c["type"]: c for c in k.json("get", "job", "policy")["status"]["conditions"]}
    assert conditions["Failed"]["reason"] == "PodFailurePolicy"
    assert "failed with exit code 42 matching FailJob rule at index 0" in conditions["Failed"]["message"]
    k("delete", "job", "policy")
