"""The scheduler against a real in-process API server: filters, scores, messages, preemption, several
schedulers, and the queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from microkube.client import Client, Resource
from microkube.plugins import Plugins
from microkube.scheduler.framework import feasible_nodes_to_find
from microkube.scheduler.queue import SchedulingQueue
from microkube.scheduler.resources import pod_requests
from microkube.scheduler.scheduler import Scheduler
from microkube_interfaces.hookspecs import ServerSettings

PODS = Resource("", "v1", "pods")
NODES = Resource("", "v1", "nodes", namespaced=False)
EVENTS = Resource("", "v1", "events")
PRIORITY_CLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", namespaced=False)




@contextlib.asynccontextmanager
async def running(client: Client, **options: Any) -> AsyncIterator[Scheduler]:
    registrations = Plugins(autoload=False).scheduler_plugins(ServerSettings(data_dir="."))
    scheduler = Scheduler(client, registrations, **options)
    task = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(scheduler.ready.wait(), 10)
    try:
        yield scheduler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def add_node(client: Client, name: str, cpu: str = "4", memory: str = "8Gi", pods: int = 110,
                   labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
                   unschedulable: bool = False) -> None:
    node = await client.create(NODES, {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                                               **(labels or {})}},
                                       "spec": {"taints": taints or [], "unschedulable": unschedulable}})
    capacity = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    node["status"] = {"capacity": capacity, "allocatable": capacity,
                      "conditions": [{"type": "Ready", "status": "True"}]}
    await client.update(NODES, node, subresource="status")


def pod(name: str, cpu: str = "100m", **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {"app": name})
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}], **spec}}


async def node_of(client: Client, name: str, within: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        found = await client.get(PODS, name, "default")
        if found["spec"].get("nodeName"):
            return str(found["spec"]["nodeName"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"pod {name} was not scheduled")


async def failure_message(client: Client, name: str, containing: str = "", within: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        found = await client.get(PODS, name, "default")
        for condition in found.get("status", {}).get("conditions") or []:
            if condition["type"] == "PodScheduled" and condition["status"] == "False" and \
                    containing in condition["message"]:
                return str(condition["message"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"pod {name} has no PodScheduled=False condition saying {containing!r}")


def test_feasible_nodes_follow_kube_scheduler() -> None:
    assert feasible_nodes_to_find(50, None) == 50
    assert feasible_nodes_to_find(1000, None) == 420  # 50% - 1000/125 = 42%
    assert feasible_nodes_to_find(5000, None) == 500  # 10%
    assert feasible_nodes_to_find(20000, None) == 1000  # floor of 5%
    assert feasible_nodes_to_find(5000, 100) == 5000
    assert feasible_nodes_to_find(500, 1) == 100  # never fewer than 100


def test_pod_requests_count_init_containers_and_sidecars() -> None:
    spec = {"containers": [{"resources": {"requests": {"cpu": "200m"}}}, {"resources": {"limits": {"cpu": "1"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}},
                               {"restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
            "overhead": {"cpu": "50m"}}
    assert pod_requests(spec).milli_cpu == 2050  # max(2 cpu init, 1.2 + 0.1 sidecar) + overhead
    assert pod_requests({"containers": [{}]}, non_zero=True).milli_cpu == 100


async def test_queue_orders_by_priority_then_age() -> None:
    queue = SchedulingQueue(initial_backoff=0.01, max_backoff=0.02)
    queue.add("a", {}, 0)
    queue.add("b", {}, 10)
    queue.add("c", {}, 0)
    assert [(await queue.pop())[0] for _ in range(3)] == ["b", "a", "c"]
    queue.unschedulable("a")
    assert queue.stats()["unschedulable"] == 1
    queue.move_all()
    await asyncio.sleep(0.03)
    queue.flush()
    assert (await queue.pop())[0] == "a"


async def test_schedules_by_resources_and_explains_failures(client: Client) -> None:
    await add_node(client, "small", cpu="1")
    await add_node(client, "big", cpu="8")
    await add_node(client, "tainted", cpu="8", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    await add_node(client, "cordoned", cpu="8", unschedulable=True)
    async with running(client) as scheduler:
        await client.create(PODS, pod("fits", cpu="2"), "default")
        assert await node_of(client, "fits") == "big"
        bound = await client.get(PODS, "fits", "default")
        assert bound["status"]["conditions"][0]["type"] == "PodScheduled"
        assert bound["status"]["conditions"][0]["status"] == "True"
        await client.create(PODS, pod("huge", cpu="20"), "default")
        message = await failure_message(client, "huge")
        assert message.startswith("0/4 nodes are available: 2 Insufficient cpu, ")
        assert "1 node(s) had untolerated taint {dedicated: db}" in message
        assert "1 node(s) were unschedulable" in message
        assert "preemption: 0/4 nodes are available:" in message
        events = (await client.list(EVENTS, "default"))["items"]
        assert any(e["reason"] == "FailedScheduling" and e["involvedObject"]["name"] == "huge" for e in events)
        assert any(e["reason"] == "Scheduled" and "default/fits to big" in e["message"] for e in events)
        # a toleration opens the tainted node; a node added later takes a waiting pod
        await client.create(PODS, pod("tolerant", cpu="6", tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]), "default")
        assert await node_of(client, "tolerant") in ("tainted", "big")
        await add_node(client, "giant", cpu="32")
        assert await node_of(client, "huge") == "giant"
        metrics = scheduler.render_metrics().decode()
        assert 'scheduler_schedule_attempts_total{result="scheduled"} 3' in metrics
        assert 'scheduler_cache_nodes 5' in metrics


async def test_extended_resources_and_most_allocated(client: Client) -> None:
    await add_node(client, "plain", cpu="8")
    await add_node(client, "gpu", cpu="8")
    gpu = await client.get(NODES, "gpu")
    gpu["status"]["capacity"]["example.com/gpu"] = "2"
    gpu["status"]["allocatable"]["example.com/gpu"] = "2"
    await client.update(NODES, gpu, subresource="status")
    async with running(client):
        wants = pod("trainer")
        wants["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1"},
                                                       "limits": {"example.com/gpu": "2"}}
        await client.create(PODS, wants, "default")
        assert await node_of(client, "trainer") == "gpu"
        greedy = pod("greedy")
        greedy["spec"]["containers"][0]["resources"] = {"limits": {"example.com/gpu": "1"}}
        await client.create(PODS, greedy, "default")
        message = await failure_message(client, "greedy", "Insufficient example.com/gpu")
        assert message.startswith("0/2 nodes are available: 2 Insufficient example.com/gpu.")
    settings = ServerSettings(data_dir=".", options={"scoring_strategy": "MostAllocated"})
    registrations = Plugins(autoload=False).scheduler_plugins(settings)
    scheduler = Scheduler(client, registrations)
    task = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(scheduler.ready.wait(), 10)
    try:
        await client.create(PODS, pod("packed", cpu="1"), "default")
        assert await node_of(client, "packed") == "gpu"  # the fuller node wins under MostAllocated
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_node_selection_affinity_and_ports(client: Client) -> None:
    for index, zone in enumerate(["a", "a", "b"]):
        await add_node(client, f"n{index}",
                       labels={"topology.kubernetes.io/zone": zone, "disk": "ssd" if index else "hdd"})
    async with running(client):
        await client.create(PODS, pod("selected", nodeSelector={"disk": "hdd"}), "default")
        assert await node_of(client, "selected") == "n0"
        await client.create(PODS, pod("preferring", affinity={"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}}]}}), "default")
        assert await node_of(client, "preferring") == "n2"
        await client.create(PODS, pod("nowhere", nodeSelector={"disk": "tape"}), "default")
        assert "3 node(s) didn't match Pod's node affinity/selector" in await failure_message(client, "nowhere")
        ports = {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}
        for name in ("p1", "p2", "p3", "p4"):
            await client.create(PODS, {"metadata": {"name": name}, "spec": ports}, "default")
        placed = {await node_of(client, name) for name in ("p1", "p2", "p3")}
        assert placed == {"n0", "n1", "n2"}
        assert "3 node(s) didn't have free ports for the requested pod ports" in await failure_message(client, "p4")


async def test_pod_affinity_anti_affinity_and_spread(client: Client) -> None:
    for index, zone in enumerate(["a", "a", "b", "b"]):
        await add_node(client, f"n{index}", labels={"topology.kubernetes.io/zone": zone})
    async with running(client):
        anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}
        for index in range(4):
            await client.create(PODS, pod(f"web{index}", labels={"app": "web"}, affinity=anti), "default")
        assert len({await node_of(client, f"web{i}") for i in range(4)}) == 4
        await client.create(PODS, pod("web4", labels={"app": "web"}, affinity=anti), "default")
        assert "4 node(s) didn't satisfy existing pods anti-affinity rules" in await failure_message(client, "web4")
        together = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}
        await client.create(PODS, pod("cache0", labels={"app": "cache"}, affinity=together), "default")
        first_zone = "a" if await node_of(client, "cache0") in ("n0", "n1") else "b"
        await client.create(PODS, pod("cache1", labels={"app": "cache"}, affinity=together), "default")
        second = await node_of(client, "cache1")
        assert ("a" if second in ("n0", "n1") else "b") == first_zone
        spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                   "labelSelector": {"matchLabels": {"app": "spread"}}}]
        zones = []
        for index in range(4):
            await client.create(PODS, pod(f"s{index}", labels={"app": "spread"}, topologySpreadConstraints=spread),
                                "default")
            zones.append("a" if await node_of(client, f"s{index}") in ("n0", "n1") else "b")
        assert zones.count("a") == zones.count("b") == 2


async def test_preemption_evicts_lower_priority_pods(client: Client) -> None:
    await add_node(client, "only", cpu="2")
    await client.create(PRIORITY_CLASSES, {"metadata": {"name": "high"}, "value": 1000})
    async with running(client):
        await client.create(PODS, pod("low", cpu="1500m"), "default")
        assert await node_of(client, "low") == "only"
        await client.create(PODS, pod("never", cpu="1500m", priorityClassName="high",
                                      preemptionPolicy="Never"), "default")
        assert "preemption: not eligible due to preemptionPolicy=Never." in await failure_message(client, "never")
        await client.delete(PODS, "never", "default", grace_period_seconds=0)
        await client.create(PODS, pod("important", cpu="1500m", priorityClassName="high"), "default")
        for _ in range(200):  # the victim is deleted gracefully; with no kubelet here, the test finishes it
            victim = await client.get(PODS, "low", "default")
            if victim["metadata"].get("deletionTimestamp"):
                break
            await asyncio.sleep(0.05)
        assert victim["metadata"].get("deletionTimestamp")
        nominated = await client.get(PODS, "important", "default")
        assert nominated["status"].get("nominatedNodeName") == "only"
        await client.delete(PODS, "low", "default", grace_period_seconds=0)
        assert await node_of(client, "important", within=20) == "only"
        remaining = {p["metadata"]["name"] for p in (await client.list(PODS, "default"))["items"]}
        assert "low" not in remaining
        events = (await client.list(EVENTS, "default"))["items"]
        assert any(e["reason"] == "Preempted" and e["involvedObject"]["name"] == "low" for e in events)


async def test_schedulers_side_by_side(client: Client) -> None:
    await add_node(client, "n0")
    async with running(client), running(client, names=["custom"], disabled=["DefaultPreemption"]):
        await client.create(PODS, pod("mine", schedulerName="custom"), "default")
        await client.create(PODS, pod("default"), "default")
        assert await node_of(client, "mine") == "n0"
        assert await node_of(client, "default") == "n0"
        await client.create(PODS, pod("orphan", schedulerName="nobody"), "default")
        await asyncio.sleep(0.5)
        assert not (await client.get(PODS, "orphan", "default"))["spec"].get("nodeName")


async def test_unknown_plugin_cannot_be_disabled(client: Client) -> None:
    registrations = Plugins(autoload=False).scheduler_plugins(ServerSettings(data_dir="."))
    with pytest.raises(ValueError, match="unknown scheduler plugins \\['Nope'\\]"):
        Scheduler(client, registrations, disabled=["Nope"])


async def test_unbound_claims_keep_a_pod_pending(client: Client) -> None:
    await add_node(client, "n0")
    async with running(client):
        volume = [{"name": "data", "persistentVolumeClaim": {"claimName": "missing"}}]
        await client.create(PODS, pod("claims", volumes=volume), "default")
        assert 'persistentvolumeclaim "missing" not found' in await failure_message(client, "claims")
        await client.create(Resource("", "v1", "persistentvolumeclaims"), {
            "metadata": {"name": "missing"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}, "default")
        await failure_message(client, "claims", "pod has unbound immediate PersistentVolumeClaims")


def test_vector_forms_agree_with_per_node_plugins() -> None:
    """The built-in plugins' column fast path gives exactly the per-node answers."""
    import random

    import numpy as np

    from microkube.scheduler.cache import SchedulerCache
    from microkube.scheduler.plugins.noderesources import NodeResourcesBalancedAllocation, NodeResourcesFit
    from microkube.scheduler.plugins.nodes import NodeUnschedulable, TaintToleration
    from microkube.scheduler.resources import pod_info
    from microkube_interfaces.scheduling import CycleState

    rng = random.Random(7)
    cache = SchedulerCache()
    for index in range(300):
        capacity = {"cpu": str(rng.choice([0, 1, 2, 8])), "memory": f"{rng.choice([0, 1, 4, 16])}Gi",
                    "pods": str(rng.choice([0, 2, 110])), "ephemeral-storage": "10Gi"}
        taints = rng.choice([[], [], [{"key": "a", "value": "b", "effect": "NoSchedule"}],
                             [{"key": "p", "effect": "PreferNoSchedule"}]])
        cache.update_node({"metadata": {"name": f"n{index}"}, "spec": {"taints": taints,
                                                                      "unschedulable": rng.random() < 0.1},
                           "status": {"allocatable": capacity}})
        for number in range(rng.randint(0, 3)):
            resident = pod_info({"metadata": {"name": f"r{index}-{number}", "namespace": "d"}, "spec": {
                "containers": [{"resources": {"requests": {"cpu": f"{rng.randint(0, 900)}m"}}}]}})
            cache.add_pod(resident, f"n{index}")
    rows = np.arange(len(cache.table))
    for case in range(40):
        requests = {"cpu": f"{rng.randint(0, 3000)}m", "memory": f"{rng.randint(0, 3000)}Mi"}
        if case % 3 == 0:
            requests.pop("cpu")
        tolerations = [{"key": "a", "operator": "Exists"}] if case % 4 == 0 else []
        pod = pod_info({"metadata": {"name": "p", "namespace": "d"}, "spec": {
            "tolerations": tolerations, "containers": [{"resources": {"requests": requests}}]}})
        for plugin in (NodeResourcesFit(None, "LeastAllocated"), NodeResourcesFit(None, "MostAllocated"),  # type: ignore[arg-type]
                       NodeUnschedulable(None), TaintToleration(None)):  # type: ignore[arg-type]
            mask = plugin.vector_filter(CycleState(), pod, cache.table)
            assert mask is not None
            expected = [plugin.filter(CycleState(), pod, node) is None for node in cache.table.nodes]
            assert mask.tolist() == expected, plugin.name
        for scorer in (NodeResourcesFit(None, "LeastAllocated"), NodeResourcesFit(None, "MostAllocated"),  # type: ignore[arg-type]
                       NodeResourcesBalancedAllocation(None), TaintToleration(None)):  # type: ignore[arg-type]
            scores = {node.name: scorer.score(CycleState(), pod, node) for node in cache.table.nodes}
            if hasattr(scorer, "normalize_score"):
                scorer.normalize_score(CycleState(), pod, scores)
            vector = scorer.vector_score(CycleState(), pod, cache.table, rows)
            assert vector.tolist() == [scores[node.name] for node in cache.table.nodes], scorer.name
