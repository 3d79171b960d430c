"""The node lifecycle controller against a real in-process API server: heartbeats, condition taints and
taint-based eviction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from microkube.client import Client, Resource
from microkube.controllers.daemonset import NODES as NODE_REF
from microkube.controllers.nodelifecycle import NodeLifecycleController, desired_taints, eviction_time
from microkube.testing import running_controllers
from microkube.timestamps import format_micro_time, format_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerRegistration

NODES = Resource("", "v1", "nodes", namespaced=False)
PODS = Resource("", "v1", "pods")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
EVENTS = Resource("", "v1", "events")
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"




async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def controller(client: Client, **options: float) -> AsyncIterator[None]:
    registration = ControllerRegistration("nodelifecycle", NODE_REF,
                                          lambda ctx: NodeLifecycleController(ctx, **options))
    async with running_controllers(client, registration):
        yield


def ready_condition(status: str) -> dict[str, Any]:
    now = format_time(utcnow())
    return {"type": "Ready", "status": status, "reason": "KubeletReady" if status == "True" else "KubeletNotReady",
            "message": "", "lastHeartbeatTime": now, "lastTransitionTime": now}


async def make_node(client: Client, name: str, ready: str | None = None, **spec: Any) -> None:
    await client.create(NODES, {"metadata": {"name": name}, "spec": spec})
    if ready is not None:
        await client.patch(NODES, name, {"status": {"conditions": [ready_condition(ready)]}}, subresource="status")


async def renew(client: Client, name: str) -> None:
    """Stand in for a kubelet: keep the node's Lease renewed."""
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": name, "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": format_micro_time(utcnow())}}
    await client.create(LEASES, lease, "kube-node-lease")
    while True:
        await asyncio.sleep(0.2)
        await client.patch(LEASES, name, {"spec": {"renewTime": format_micro_time(utcnow())}}, "kube-node-lease")


async def node(client: Client, name: str) -> dict[str, Any]:
    return await client.get(NODES, name)


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def taints(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in (obj.get("spec") or {}).get("taints") or []}


async def make_pod(client: Client, name: str, node_name: str, tolerations: list[dict[str, Any]] | None = None,
                   **labels: str) -> None:
    spec: dict[str, Any] = {"nodeName": node_name, "containers": [{"name": "c", "image": "i"}]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    await client.create(PODS, {"metadata": {"name": name, "labels": labels}, "spec": spec}, "default")


async def gone(client: Client, name: str) -> bool:
    """Deleted, or being deleted (a bound pod waits for its kubelet)."""
    try:
        pod = await client.get(PODS, name, "default")
    except errors.NotFound:
        return True
    return bool(pod["metadata"].get("deletionTimestamp"))


async def events(client: Client, reason: str) -> list[dict[str, Any]]:
    return [e for e in (await client.list(EVENTS, "default"))["items"] if e.get("reason") == reason]


def test_taints_follow_conditions() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    user = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    fresh = {"metadata": {"name": "n"}, "spec": {"unschedulable": True, "taints": [user]},
             "status": {"conditions": [{"type": "Ready", "status": "Unknown"},
                                       {"type": "DiskPressure", "status": "True"}]}}
    assert {(t["key"], t["effect"]) for t in desired_taints(fresh, now)} == {
        ("dedicated", "NoSchedule"), (UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute"),
        (UNSCHEDULABLE, "NoSchedule"), ("node.kubernetes.io/disk-pressure", "NoSchedule")}
    assert next(t for t in desired_taints(fresh, now) if t["effect"] == "NoExecute")["timeAdded"] == \
        "2026-01-01T00:00:00Z"
    swapped = {"spec": {"taints": desired_taints(fresh, now)},
               "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert {(t["key"], t["effect"]) for t in desired_taints(swapped, now)} == {
        ("dedicated", "NoSchedule"), (NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")}
    healthy = {"spec": {"taints": desired_taints(swapped, now)},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert desired_taints(healthy, now) == [user]


def test_eviction_time_is_the_earliest_toleration_to_run_out() -> None:
    added = datetime(2026, 1, 1, tzinfo=UTC)
    taint = {"key": UNREACHABLE, "effect": "NoExecute"}
    other = {"key": "dedicated", "value": "x", "effect": "NoExecute"}

    def pod(*tolerations: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"tolerations": list(tolerations)}}

    assert eviction_time(pod(), [(taint, added)]) == datetime.min.replace(tzinfo=UTC)
    assert eviction_time(pod({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                              "tolerationSeconds": 300}), [(taint, added)]) == added + timedelta(seconds=300)
    forever = {"operator": "Exists"}
    assert eviction_time(pod(forever), [(taint, added), (other, added)]) is None
    assert eviction_time(pod({"key": "dedicated", "operator": "Equal", "value": "x", "tolerationSeconds": 5},
                             forever), [(taint, added), (other, added)]) == added + timedelta(seconds=5)


async def test_silent_nodes_go_unknown_and_unreachable(cluster: tuple[object, Client]) -> None:
    _, client = cluster
    await make_node(client, "alive", "True")
    await make_node(client, "silent", "True")
    await make_node(client, "never")  # registered, never posted a status nor a Lease
    renewing = asyncio.create_task(renew(client, "alive"))
    try:
        async with controller(client, grace_period=1.5, startup_grace_period=1.5):
            async def silent_unknown() -> bool:
                obj = await node(client, "silent")
                return conditions(obj)["Ready"]["status"] == "Unknown" and \
                    {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")} <= taints(obj)

            await eventually(silent_unknown)
            silent = await node(client, "silent")
            for kind in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
                assert conditions(silent)[kind]["status"] == "Unknown"
            assert conditions(silent)["Ready"]["reason"] == "NodeStatusUnknown"
            assert conditions(silent)["Ready"]["message"] == "Kubelet stopped posting node status."
            assert conditions(silent)["MemoryPressure"]["reason"] == "NodeStatusNeverUpdated"
            assert next(t for t in silent["spec"]["taints"] if t["effect"] == "NoExecute").get("timeAdded")

            async def never_unknown() -> bool:
                obj = await node(client, "never")
                return (conditions(obj).get("Ready") or {}).get("status") == "Unknown" and \
                    (UNREACHABLE, "NoExecute") in taints(obj)

            await eventually(never_unknown)
            assert conditions(await node(client, "never"))["Ready"]["reason"] == "NodeStatusNeverUpdated"
            # The node whose Lease kept being renewed stayed Ready and untainted all along.
            alive = await node(client, "alive")
            assert conditions(alive)["Ready"]["status"] == "True"
            assert taints(alive) == set()
            assert {e["involvedObject"]["name"] for e in await events(client, "NodeNotReady")} >= {"silent", "never"}
            message = next(e for e in await events(client, "NodeNotReady") if e["involvedObject"]["name"] == "silent")
            assert message["message"] == "Node silent status is now: NodeNotReady"
            assert message["involvedObject"]["kind"] == "Node"

            # The kubelet comes back: a fresh Ready condition and Lease clear both taints.
            await client.patch(NODES, "silent", {"status": {"conditions": [ready_condition("True")]}},
                               subresource="status")
            back = asyncio.create_task(renew(client, "silent"))
            try:
                async def recovered() -> bool:
                    obj = await node(client, "silent")
                    return conditions(obj)["Ready"]["status"] == "True" and taints(obj) == set()

                await eventually(recovered)
            finally:
                back.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await back
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing


async def test_not_ready_and_unschedulable_taints(cluster: tuple[object, Client]) -> None:
    _, client = cluster
    await make_node(client, "sick", "False")
    await make_node(client, "cordoned", "True", unschedulable=True)
    await make_pod(client, "on-sick", "sick")
    await client.patch(PODS, "on-sick", {"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": format_time(utcnow())}]}},
        "default", subresource="status")
    async with controller(client, grace_period=600, startup_grace_period=600):
        async def tainted() -> bool:
            return taints(await node(client, "sick")) == {(NOT_READY, "NoExecute"), (NOT_READY, "NoSchedule")} \
                and taints(await node(client, "cordoned")) == {(UNSCHEDULABLE, "NoSchedule")}

        await eventually(tainted)

        async def pod_not_ready() -> bool:  # the pods of a node that is not ready are not Ready either
            pod = await client.get(PODS, "on-sick", "default")
            return bool(conditions(pod)["Ready"]["status"] == "False")

        await eventually(pod_not_ready)
        assert not await gone(client, "on-sick")  # the default tolerations give it 300 s
        assert [e["involvedObject"]["name"] for e in await events(client, "NodeNotReady")] == ["sick"]

        await client.patch(NODES, "sick", {"status": {"conditions": [ready_condition("True")]}},
                           subresource="status")
        await client.patch(NODES, "cordoned", {"spec": {"unschedulable": False}})

        async def cleared() -> bool:
            return taints(await node(client, "sick")) == set() and taints(await node(client, "cordoned")) == set()

        await eventually(cleared)


async def test_taint_eviction(cluster: tuple[object, Client]) -> None:
    _, client = cluster
    dedicated = {"key": "dedicated", "value": "db", "effect": "NoExecute"}
    await make_node(client, "db", "True")
    await make_node(client, "other", "True")
    await make_pod(client, "plain", "db")
    await make_pod(client, "brief", "db", [{"key": "dedicated", "operator": "Equal", "value": "db",
                                            "effect": "NoExecute", "tolerationSeconds": 1}])
    await make_pod(client, "forever", "db", [{"key": "dedicated", "operator": "Exists"}])
    await make_pod(client, "elsewhere", "other")
    async with controller(client, grace_period=600, startup_grace_period=600):
        await client.patch(NODES, "db", {"spec": {"taints": [dedicated]}})
        await eventually(lambda: gone(client, "plain"))

        async def evicted_event() -> bool:
            return any(e["involvedObject"]["name"] == "plain" for e in await events(client, "TaintManagerEviction"))

        await eventually(evicted_event)
        event = next(e for e in await events(client, "TaintManagerEviction") if e["involvedObject"]["name"] == "plain")
        assert event["message"] == "Marking for deletion Pod default/plain"
        assert event["involvedObject"]["kind"] == "Pod" and event["type"] == "Normal"
        await eventually(lambda: gone(client, "brief"))
        assert not await gone(client, "forever")  # tolerates the taint without a time limit
        assert not await gone(client, "elsewhere")  # on an untainted node
        # A taint arriving later with a timeAdded in the past: the toleration has already run out.
        late = {"key": "maintenance", "effect": "NoExecute", "timeAdded": "2020-01-01T00:00:00Z"}
        await make_pod(client, "patient", "other", [{"key": "maintenance", "operator": "Exists",
                                                     "effect": "NoExecute", "tolerationSeconds": 3600}])
        await client.patch(NODES, "other", {"spec": {"taints": [late]}})
        await eventually(lambda: gone(client, "patient"))
        await eventually(lambda: gone(client, "elsewhere"))
        assert not await gone(client, "forever")


async def test_simulated_kubelets_stay_ready_until_they_stop(cluster: tuple[object, Client]) -> None:
    from microkube.simulator import NodeSimulator

    _, client = cluster
    simulator = NodeSimulator(client, 2, lease_interval=0.3, status_interval=0.3)
    await make_node(client, "silent", "True")
    async with controller(client, grace_period=1.5, startup_grace_period=1.5):
        simulating = asyncio.create_task(simulator.run())
        try:
            await asyncio.wait_for(simulator.ready.wait(), 15)
            await make_pod(client, "web", "sim-node-0")

            async def web_ready() -> bool:
                pod = await client.get(PODS, "web", "default")
                return (conditions(pod).get("Ready") or {}).get("status") == "True"

            await eventually(web_ready)
            await eventually(lambda: _unreachable(client, "silent"))
            for name in simulator.nodes:  # their kubelets kept posting: still Ready, untainted
                obj = await node(client, name)
                assert conditions(obj)["Ready"]["status"] == "True"
                assert not {key for key, _ in taints(obj)} & {NOT_READY, UNREACHABLE}
        finally:
            simulating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await simulating
        for name in simulator.nodes:  # the kubelets died: their nodes are lost, their pods not Ready
            await eventually(lambda name=name: _unreachable(client, name))  # type: ignore[misc]

        async def web_not_ready() -> bool:
            pod = await client.get(PODS, "web", "default")
            return bool(conditions(pod)["Ready"]["status"] == "False")

        await eventually(web_not_ready)
        assert not await gone(client, "web")  # the default 300 s toleration of unreachable


async def _unreachable(client: Client, name: str) -> bool:
    obj = await node(client, name)
    return bool((conditions(obj).get("Ready") or {}).get("status") == "Unknown") and \
        {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")} <= taints(obj)
