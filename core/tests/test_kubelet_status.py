"""The kubelet's pure parts: pod phase and status from container instances, CRI configs from a pod spec,
static pod manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from microkube.kubelet import containerspec, static
from microkube.kubelet import status as podstatus
from microkube_interfaces import cri


def pod(policy: str = "Always", init: list[dict[str, Any]] | None = None,
        containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"restartPolicy": policy, "initContainers": init or [],
                     "containers": containers or [{"name": "a", "image": "i"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}


def instance(state: cri.ContainerState, exit_code: int = 0, restarts: int = 0, reason: str = "") -> podstatus.Instance:
    return podstatus.Instance(
        status=cri.ContainerStatus(id=f"id{restarts}", metadata=cri.ContainerMetadata("a", restarts), state=state,
                                   created_at=1, started_at=2_000_000_000, finished_at=3_000_000_000,
                                   exit_code=exit_code, reason=reason),
        restart_count=restarts, kind="", spec_hash="")


RUNNING = cri.ContainerState.CONTAINER_RUNNING
EXITED = cri.ContainerState.CONTAINER_EXITED


def view(p: dict[str, Any], **containers: podstatus.ContainerView) -> podstatus.PodView:
    return podstatus.PodView(pod=p, sandbox_ready=True, pod_ips=["10.0.0.2"], host_ip="192.0.2.1",
                             start_time="2026-01-01T00:00:00Z", runtime_scheme="runc", containers=containers)


@pytest.mark.parametrize(("policy", "exit_code", "expected"), [
    ("Always", 0, "Running"), ("Always", 1, "Running"),
    ("OnFailure", 0, "Succeeded"), ("OnFailure", 1, "Running"),
    ("Never", 0, "Succeeded"), ("Never", 1, "Failed"),
])
def test_phase_of_an_exited_container_follows_the_restart_policy(policy: str, exit_code: int, expected: str) -> None:
    done = podstatus.ContainerView(latest=instance(EXITED, exit_code))
    assert podstatus.phase(view(pod(policy), a=done)) == expected


def test_phase_is_pending_while_initialising_and_failed_when_an_init_container_fails_for_good() -> None:
    p = pod("Never", init=[{"name": "setup", "image": "i"}])
    assert podstatus.phase(view(p, setup=podstatus.ContainerView(latest=instance(RUNNING)))) == "Pending"
    assert podstatus.phase(view(p, setup=podstatus.ContainerView(latest=instance(EXITED, 1)))) == "Failed"
    assert podstatus.phase(view(p, setup=podstatus.ContainerView(latest=instance(EXITED, 0)),
                                a=podstatus.ContainerView(latest=instance(RUNNING)))) == "Running"


def test_crash_loop_status_shows_waiting_with_the_last_termination() -> None:
    looping = podstatus.ContainerView(latest=instance(EXITED, 2, restarts=3),
                                      waiting=("CrashLoopBackOff", "back-off 40s restarting failed container=a"))
    status = podstatus.pod_status(view(pod(), a=looping), "2026-01-01T00:00:05Z")
    container = status["containerStatuses"][0]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["lastState"]["terminated"]["exitCode"] == 2
    assert container["lastState"]["terminated"]["reason"] == "Error"
    assert container["restartCount"] == 3
    assert status["phase"] == "Running"  # restartPolicy Always: it will run again
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] == "ContainersNotReady"
    assert conditions["PodScheduled"]["status"] == "True"  # not the kubelet's: kept


def test_ready_running_pod_status() -> None:
    ok = podstatus.ContainerView(latest=instance(RUNNING), ready=True, started=True)
    status = podstatus.pod_status(view(pod(), a=ok), "2026-01-01T00:00:05Z")
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.0.0.2" and status["podIPs"] == [{"ip": "10.0.0.2"}]
    assert status["containerStatuses"][0]["containerID"] == "runc://id0"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["qosClass"] == "BestEffort"


def test_oom_killed_is_reported_as_the_runtime_says() -> None:
    oom = podstatus.ContainerView(latest=instance(EXITED, 137, reason=cri.REASON_OOM_KILLED))
    status = podstatus.pod_status(view(pod("Never"), a=oom), "2026-01-01T00:00:05Z")
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    assert status["phase"] == "Failed"


def test_container_resources_and_qos() -> None:
    guaranteed = {"name": "a", "image": "i", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}
    resources = containerspec.container_resources(guaranteed)
    assert resources.cpu_quota == 50_000 and resources.cpu_period == 100_000
    assert resources.cpu_shares == 512 and resources.memory_limit_in_bytes == 64 * 2**20
    assert resources.oom_score_adj >= 0  # never negative: the bounding set lacks CAP_SYS_RESOURCE
    assert containerspec.qos_class(pod(containers=[guaranteed])) == "Guaranteed"
    burstable = {"name": "a", "image": "i", "resources": {"requests": {"cpu": "100m"}}}
    assert containerspec.qos_class(pod(containers=[burstable])) == "Burstable"
    assert containerspec.container_resources(burstable).cpu_shares == 102
    assert containerspec.qos_class(pod()) == "BestEffort"


@pytest.mark.parametrize(("image", "policy"), [
    ("busybox", "Always"), ("busybox:latest", "Always"), ("busybox:1.36", "IfNotPresent"),
    ("registry:5000/app", "Always"), ("registry:5000/app:v1", "IfNotPresent"), ("app@sha256:" + "a" * 64,
                                                                                "IfNotPresent"),
])
def test_default_pull_policy(image: str, policy: str) -> None:
    assert containerspec.pull_policy({"image": image}) == policy


def test_sandbox_config_carries_what_the_runtime_needs() -> None:
    p = pod()
    p["spec"]["hostNetwork"] = True
    p["spec"]["dnsPolicy"] = "None"
    p["spec"]["dnsConfig"] = {"nameservers": ["10.0.0.10"], "searches": ["svc"], "options": [{"name": "ndots",
                                                                                               "value": "2"}]}
    config = containerspec.sandbox_config(p, log_directory="/logs", attempt=2)
    assert config.metadata.attempt == 2 and config.metadata.uid == "u1"
    assert config.linux.security_context.namespace_options.network == cri.NamespaceMode.NODE
    assert config.dns_config == cri.DNSConfig(("10.0.0.10",), ("svc",), ("ndots:2",))
    assert config.labels[containerspec.POD_UID] == "u1"


def test_static_manifests(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
                                        "spec: {containers: [{name: c, image: busybox}]}\n")
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n")
    (tmp_path / "notes.txt").write_text("ignored")
    pods = static.ManifestDirectory(tmp_path, "node1").scan()
    assert len(pods) == 1
    (found,) = pods.values()
    assert found["metadata"]["name"] == "web-node1"
    assert found["spec"]["nodeName"] == "node1"
    assert found["metadata"]["annotations"][static.CONFIG_SOURCE] == "file"
    again = static.ManifestDirectory(tmp_path, "node1").scan()
    assert set(again) == set(pods)  # the uid is the manifest's hash: stable across scans
    with pytest.raises(static.ManifestError, match="must be one v1 Pod"):
        static.load_manifest(tmp_path / "broken.yaml", "node1")
    mirror = static.mirror_pod(found, "node-uid")
    assert static.is_mirror(mirror) and mirror["metadata"]["ownerReferences"][0]["uid"] == "node-uid"
