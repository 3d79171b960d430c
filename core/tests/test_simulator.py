"""Simulated nodes against a real in-process API server."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from microkube.client import Client, Resource
from microkube.simulator import NodeSimulator
from microkube_interfaces import errors

NODES = Resource("", "v1", "nodes", namespaced=False)
PODS = Resource("", "v1", "pods")
LEASES = Resource("coordination.k8s.io", "v1", "leases")




async def eventually(probe: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    """Poll ``probe`` until it returns something truthy; that value."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(simulator: NodeSimulator) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(simulator.run())
    try:
        await asyncio.wait_for(simulator.ready.wait(), 15)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def pod(name: str, node: str, *, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "nodeName": node,
            "initContainers": [{"name": "setup", "image": "busybox:1.36"}],
            "containers": [{"name": "app", "image": "nginx:1.27",
                            "resources": {"requests": {"cpu": "100m"}}},
                           {"name": "sidecar", "image": "registry.example:5000/team/side@sha256:abc"}],
        },
    }


async def status_of(client: Client, name: str) -> dict[str, Any]:
    return (await client.get(PODS, name, "default")).get("status") or {}


async def phase_is(client: Client, name: str, phase: str) -> dict[str, Any] | None:
    status = await status_of(client, name)
    return status if status.get("phase") == phase else None


async def set_pod_cidr(client: Client, node: str, cidr: str) -> None:
    await client.patch(NODES, node, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})


async def test_nodes_register_with_status_labels_and_leases(client: Client) -> None:
    taint = {"key": "simulated", "value": "yes", "effect": "NoSchedule"}
    simulator = NodeSimulator(client, 3, cpu="8", memory="32Gi", pods=50, labels={"team": "sim"}, taints=[taint])
    await simulator.register()
    nodes = {n["metadata"]["name"]: n for n in (await client.list(NODES))["items"]}
    assert sorted(nodes) == ["sim-node-0", "sim-node-1", "sim-node-2"]
    zones = []
    for name, node in nodes.items():
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name
        assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"] == "amd64"
        assert labels["node.kubernetes.io/instance-type"] == "microkube-simulated"
        assert labels["team"] == "sim" and labels["topology.kubernetes.io/region"]
        zones.append(labels["topology.kubernetes.io/zone"])
        assert node["metadata"]["annotations"]["microkube.io/simulated"] == "true"
        assert node["spec"]["taints"] == [taint]
        status = node["status"]
        for field in ("capacity", "allocatable"):
            assert status[field]["cpu"] == "8" and status[field]["memory"] == "32Gi"
            assert status[field]["pods"] == "50" and status[field]["ephemeral-storage"]
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["reason"] == "KubeletReady"
        assert conditions["Ready"]["lastHeartbeatTime"]
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            assert conditions[kind]["status"] == "False"
        info = status["nodeInfo"]
        assert info["kubeletVersion"] == "v1.32.0-microkube-sim"
        assert info["containerRuntimeVersion"] == "microkube-sim://1"
        assert info["architecture"] == "amd64" and info["operatingSystem"] == "linux" and info["machineID"]
        addresses = {a["type"]: a["address"] for a in status["addresses"]}
        assert addresses["Hostname"] == name
        assert ipaddress.ip_address(addresses["InternalIP"]) in ipaddress.ip_network("10.200.0.0/16")
        assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
        lease = await client.get(LEASES, name, "kube-node-lease")
        assert lease["spec"]["holderIdentity"] == name and lease["spec"]["leaseDurationSeconds"] == 40
        assert lease["spec"]["renewTime"]
        assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    assert sorted(zones) == ["zone-a", "zone-b", "zone-c"]
    assert len({n["status"]["addresses"][0]["address"] for n in nodes.values()}) == 3

    # A second simulator adopts the existing nodes instead of failing.
    again = NodeSimulator(client, 3, labels={"round": "two"}, lease_interval=0.1, status_interval=0.1)
    await again.register()
    node = await client.get(NODES, "sim-node-1")
    assert node["metadata"]["labels"]["round"] == "two"
    assert node["metadata"]["uid"] == nodes["sim-node-1"]["metadata"]["uid"]

    async with running(again):
        await again.remove_nodes()  # the running simulator neither re-registers nor renews them any more
        await asyncio.sleep(0.3)
    assert (await client.list(NODES))["items"] == []
    with pytest.raises(errors.NotFound):
        await client.get(LEASES, "sim-node-0", "kube-node-lease")


async def test_leases_and_heartbeats_are_renewed_until_cancelled(client: Client) -> None:
    simulator = NodeSimulator(client, 3, lease_interval=0.3, status_interval=0.3)
    await simulator.register()
    first = {n: (await client.get(LEASES, n, "kube-node-lease"))["spec"]["renewTime"] for n in simulator.nodes}
    heartbeat = next(c["lastHeartbeatTime"] for c in (await client.get(NODES, "sim-node-2"))["status"]["conditions"]
                     if c["type"] == "Ready")

    async def renewed() -> bool:
        for name, before in first.items():
            if (await client.get(LEASES, name, "kube-node-lease"))["spec"]["renewTime"] == before:
                return False
        return True

    async def heartbeat_moved() -> bool:
        node = await client.get(NODES, "sim-node-2")
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        return bool(ready["status"] == "True" and ready["lastHeartbeatTime"] != heartbeat)

    async with running(simulator):
        await eventually(renewed)
        await eventually(heartbeat_moved)
        # A node deleted under a live simulator registers again, as a kubelet does.
        uid = (await client.get(NODES, "sim-node-1"))["metadata"]["uid"]
        await client.delete(NODES, "sim-node-1")

        async def registered_again() -> bool:
            try:
                node = await client.get(NODES, "sim-node-1")
            except errors.NotFound:
                return False
            return node["metadata"]["uid"] != uid and bool((node.get("status") or {}).get("conditions"))

        await eventually(registered_again)
    # Cancelled: nothing renews any more (the node lifecycle controller takes it from here).
    stopped = {n: (await client.get(LEASES, n, "kube-node-lease"))["spec"]["renewTime"] for n in simulator.nodes}
    await asyncio.sleep(1.0)
    after = {n: (await client.get(LEASES, n, "kube-node-lease"))["spec"]["renewTime"] for n in simulator.nodes}
    assert after == stopped


async def test_bound_pod_runs_with_an_address_from_the_node_pod_cidr(client: Client) -> None:
    simulator = NodeSimulator(client, 2, lease_interval=0.5, pod_cidr_wait=60)
    async with running(simulator):
        await client.create(PODS, pod("web", "sim-node-0"), "default")
        await asyncio.sleep(0.3)  # the node has no podCIDR yet: the pod waits for one
        assert (await status_of(client, "web")).get("phase") == "Pending"
        await set_pod_cidr(client, "sim-node-0", "10.244.7.0/24")
        status = await eventually(lambda: phase_is(client, "web", "Running"))
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network("10.244.7.0/24")
        assert status["podIPs"] == [{"ip": status["podIP"]}]
        assert status["hostIP"] == (await client.get(NODES, "sim-node-0"))["status"]["addresses"][0]["address"]
        assert status["startTime"] and status["qosClass"] == "Burstable"
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            assert conditions[kind] == "True"
        containers = {c["name"]: c for c in status["containerStatuses"]}
        assert sorted(containers) == ["app", "sidecar"]
        for container in containers.values():
            assert container["ready"] is True and container["started"] is True and container["restartCount"] == 0
            assert container["state"]["running"]["startedAt"]
            assert container["containerID"].startswith("microkube-sim://") and container["imageID"]
        assert containers["app"]["image"] == "nginx:1.27"
        (init,) = status["initContainerStatuses"]
        assert init["state"]["terminated"]["reason"] == "Completed" and init["state"]["terminated"]["exitCode"] == 0
        # The simulator's pod cache keeps only what it reads.
        cached = simulator.informer.get("default/web") if simulator.informer else None
        assert cached is not None and "managedFields" not in cached["metadata"]
        assert "tolerations" not in cached["spec"] and cached["spec"]["nodeName"] == "sim-node-0"

        # Addresses are unique per node; another node's pods come from that node's range.
        await client.create(PODS, pod("web2", "sim-node-0"), "default")
        await set_pod_cidr(client, "sim-node-1", "10.244.8.0/24")
        await client.create(PODS, pod("other", "sim-node-1"), "default")
        second = await eventually(lambda: phase_is(client, "web2", "Running"))
        other = await eventually(lambda: phase_is(client, "other", "Running"))
        assert second["podIP"] != status["podIP"]
        assert ipaddress.ip_address(second["podIP"]) in ipaddress.ip_network("10.244.7.0/24")
        assert ipaddress.ip_address(other["podIP"]) in ipaddress.ip_network("10.244.8.0/24")


async def test_node_without_pod_cidr_falls_back_to_a_deterministic_range(client: Client) -> None:
    simulator = NodeSimulator(client, 2, pod_cidr_wait=0.2)
    async with running(simulator):
        await client.create(PODS, pod("lonely", "sim-node-1"), "default")
        status = await eventually(lambda: phase_is(client, "lonely", "Running"))
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network("100.64.1.0/24")


async def test_simulated_duration_ends_in_succeeded_or_failed(client: Client) -> None:
    simulator = NodeSimulator(client, 1)
    await simulator.register()
    await set_pod_cidr(client, "sim-node-0", "10.244.3.0/24")
    async with running(simulator):
        await client.create(PODS, pod("ok", "sim-node-0", annotations={"microkube.io/simulate-duration": "0.5"}),
                            "default")
        await client.create(PODS, pod("bad", "sim-node-0", annotations={"microkube.io/simulate-duration": "0.2",
                                                                       "microkube.io/simulate-exit-code": "3"}),
                            "default")
        succeeded = await eventually(lambda: phase_is(client, "ok", "Succeeded"))
        failed = await eventually(lambda: phase_is(client, "bad", "Failed"))
        for container in succeeded["containerStatuses"]:
            terminated = container["state"]["terminated"]
            assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
            assert terminated["finishedAt"] and container["ready"] is False
        for container in failed["containerStatuses"]:
            terminated = container["state"]["terminated"]
            assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
        assert {c["type"]: c["status"] for c in succeeded["conditions"]}["Ready"] == "False"
        # A finished pod's address is free again.
        assert not simulator.nodes["sim-node-0"].used


async def test_deleting_a_pod_with_a_grace_period_completes(client: Client) -> None:
    simulator = NodeSimulator(client, 1, pod_cidr_wait=0.1)
    async with running(simulator):
        await client.create(PODS, pod("doomed", "sim-node-0"), "default")
        await eventually(lambda: phase_is(client, "doomed", "Running"))
        assert simulator.nodes["sim-node-0"].used

        # Marked NotReady (as the node lifecycle controller does to pods of an unreachable node): the
        # "kubelet" reports it ready again.
        conditions = [{"type": "Ready", "status": "False", "reason": "NodeNotReady"},
                      {"type": "PodScheduled", "status": "True"}]
        await client.patch(PODS, "doomed", {"status": {"conditions": conditions}}, "default", subresource="status")

        async def ready_again() -> bool:
            status = await status_of(client, "doomed")
            return {c["type"]: c["status"] for c in status["conditions"]}.get("Ready") == "True"

        await eventually(ready_again)
        deleted = await client.delete(PODS, "doomed", "default", grace_period_seconds=30)
        assert deleted is not None and deleted["metadata"]["deletionTimestamp"]

        async def gone() -> bool:
            try:
                await client.get(PODS, "doomed", "default")
            except errors.NotFound:
                return True
            return False

        await eventually(gone)
        await eventually(lambda: _true(not simulator.nodes["sim-node-0"].used))


async def _true(value: bool) -> bool:
    return value


async def test_pods_of_other_nodes_are_left_alone(client: Client) -> None:
    simulator = NodeSimulator(client, 1, pod_cidr_wait=0.1)
    async with running(simulator):
        await client.create(PODS, pod("elsewhere", "real-node"), "default")
        await client.create(PODS, {"metadata": {"name": "unbound"},
                                   "spec": {"containers": [{"name": "c", "image": "nginx"}]}}, "default")
        await client.create(PODS, pod("mine", "sim-node-0"), "default")
        await eventually(lambda: phase_is(client, "mine", "Running"))
        await asyncio.sleep(0.3)
        for name in ("elsewhere", "unbound"):
            status = await status_of(client, name)
            assert status.get("phase") == "Pending" and "podIP" not in status and "containerStatuses" not in status
