"""ResourceQuota: usage in status (the controller) and enforcement at admission, against a real in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from microkube.apiserver.quota import Quantity, format_quantity, missing_requests, pod_requests, usage
from microkube.client import Client, Resource
from microkube.controllers.resourcequota import RESOURCEQUOTAS, ResourceQuotaController
from microkube.testing import running_controllers
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerRegistration

PODS = Resource("", "v1", "pods")
QUOTAS = Resource("", "v1", "resourcequotas")
CONFIGMAPS = Resource("", "v1", "configmaps")
SERVICES = Resource("", "v1", "services")
DEPLOYMENTS = Resource("apps", "v1", "deployments")




@contextlib.asynccontextmanager
async def controller(client: Client) -> AsyncIterator[None]:
    registration = ControllerRegistration("resourcequota", RESOURCEQUOTAS, ResourceQuotaController)
    async with running_controllers(client, registration):
        yield


async def used_becomes(client: Client, name: str, expected: dict[str, str], namespace: str = "default") -> None:
    status: dict[str, Any] = {}
    for _ in range(400):
        status = (await client.get(QUOTAS, name, namespace)).get("status") or {}
        if status.get("used") == expected:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"status.used of {name} is {status.get('used')}, expected {expected}")


def pod(name: str, *containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (),
        **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": list(containers), "initContainers": list(init),
                                                 **spec}}


def container(name: str, cpu: str | None = None, memory: str | None = None, *, limit_cpu: str | None = None,
              limit_memory: str | None = None) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    limits = {k: v for k, v in (("cpu", limit_cpu), ("memory", limit_memory)) if v is not None}
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": name, "image": "busybox", "resources": resources}


def quota(name: str, hard: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"hard": hard, **spec}}


async def names(client: Client, resource: Resource) -> list[str]:
    return sorted(o["metadata"]["name"] for o in (await client.list(resource, "default"))["items"])


def test_quantities_print_as_kubernetes_does() -> None:
    assert [str(Quantity.parse(t)) for t in ("500m", "1000m", "1Gi", "1.5Gi", "1000", "1500", "0", "2e3")] == [
        "500m", "1", "1Gi", "1536Mi", "1k", "1500", "0", "2e3"]
    assert str(Quantity.parse("500m") + Quantity.parse("500m")) == "1"
    assert str(Quantity.parse("1Gi") + Quantity.parse("512Mi")) == "1536Mi"
    assert format_quantity(Decimal("0.25")) == "250m"


def test_pod_usage_takes_the_larger_of_containers_and_init_containers() -> None:
    spec = pod("p", container("a", "100m", "64Mi"), container("b", "200m"),
               init=(container("i", "500m", "32Mi"),), overhead={"cpu": "10m"})["spec"]
    requests = pod_requests(spec)
    assert {k: str(v) for k, v in requests.items()} == {"cpu": "510m", "memory": "64Mi"}
    sidecar = {**container("s", "100m"), "restartPolicy": "Always"}
    spec = pod("p", container("a", "300m"), init=(sidecar, container("i", "350m")))["spec"]
    assert str(pod_requests(spec)["cpu"]) == "450m"  # sidecar + max(300m, sidecar + 350m)
    costs = usage("pods", pod("p", container("a", "1", limit_memory="1Gi")))
    assert {k: str(v) for k, v in costs.items()} == {
        "count/pods": "1", "pods": "1", "cpu": "1", "requests.cpu": "1", "limits.memory": "1Gi"}
    done = {**pod("p", container("a", "1")), "status": {"phase": "Succeeded"}}
    assert {k: str(v) for k, v in usage("pods", done).items()} == {"count/pods": "1"}
    assert missing_requests(["limits.cpu", "pods"], pod("p", container("b"), container("a", limit_cpu="1"),
                                                        container("c"))) == "must specify limits.cpu for: b,c"


async def test_status_used_follows_pods_as_they_come_and_go(cluster: tuple[Any, Client]) -> None:
    _, client = cluster
    await client.create(QUOTAS, quota("compute", {"pods": "10", "requests.cpu": "4", "requests.memory": "4Gi",
                                                  "limits.memory": "8Gi", "count/configmaps": "20",
                                                  "configmaps": "20"}), "default")
    async with controller(client):
        await used_becomes(client, "compute", {"pods": "0", "requests.cpu": "0", "requests.memory": "0",
                                               "limits.memory": "0", "count/configmaps": "0", "configmaps": "0"})
        status = (await client.get(QUOTAS, "compute", "default"))["status"]
        assert status["hard"] == {"pods": "10", "requests.cpu": "4", "requests.memory": "4Gi",
                                  "limits.memory": "8Gi", "count/configmaps": "20", "configmaps": "20"}
        await client.create(PODS, pod("a", container("c", "500m", "1Gi", limit_memory="2Gi")), "default")
        await client.create(PODS, pod("b", container("c", "250m", "512Mi", limit_memory="512Mi"),
                                      container("d", "250m", "512Mi", limit_memory="512Mi")), "default")
        await client.create(CONFIGMAPS, {"metadata": {"name": "settings"}}, "default")
        await used_becomes(client, "compute", {"pods": "2", "requests.cpu": "1", "requests.memory": "2Gi",
                                               "limits.memory": "3Gi", "count/configmaps": "1", "configmaps": "1"})
        await client.delete(PODS, "a", "default")  # unscheduled pods go at once
        await used_becomes(client, "compute", {"pods": "1", "requests.cpu": "500m", "requests.memory": "1Gi",
                                               "limits.memory": "1Gi", "count/configmaps": "1", "configmaps": "1"})
        # A pod that has finished costs nothing any more.
        await client.patch(PODS, "b", {"status": {"phase": "Succeeded"}}, "default", subresource="status")
        await used_becomes(client, "compute", {"pods": "0", "requests.cpu": "0", "requests.memory": "0",
                                               "limits.memory": "0", "count/configmaps": "1", "configmaps": "1"})
        # Changing the quota's hard limits is reflected in status.hard at once.
        await client.patch(QUOTAS, "compute", {"spec": {"hard": {"pods": "3", "requests.cpu": None,
                                                                 "requests.memory": None, "limits.memory": None,
                                                                 "configmaps": None}}}, "default")
        await used_becomes(client, "compute", {"pods": "0", "count/configmaps": "1"})
        assert (await client.get(QUOTAS, "compute", "default"))["status"]["hard"] == {
            "pods": "3", "count/configmaps": "20"}


async def test_a_create_beyond_the_quota_is_forbidden_and_not_stored(cluster: tuple[Any, Client]) -> None:
    _, client = cluster
    await client.create(QUOTAS, quota("cpu", {"requests.cpu": "1", "pods": "5"}), "default")
    await client.create(PODS, pod("first", container("c", "600m")), "default")
    await client.create(PODS, pod("second", container("c", "400m")), "default")
    with pytest.raises(errors.Forbidden) as denied:
        await client.create(PODS, pod("third", container("c", "500m")), "default")
    assert str(denied.value) == ('pods "third" is forbidden: exceeded quota: cpu, requested: requests.cpu=500m, '
                                 'used: requests.cpu=1, limited: requests.cpu=1')
    assert await names(client, PODS) == ["first", "second"]
    # A dry run is judged the same way and changes nothing.
    await client.delete(PODS, "second", "default")
    created = await client.request("POST", PODS.path("default"), body=pod("dry", container("c", "400m")),
                                   query={"dryRun": "All"})
    assert created["metadata"]["name"] == "dry"
    assert await names(client, PODS) == ["first"]
    await client.create(PODS, pod("fits", container("c", "400m")), "default")
    with pytest.raises(errors.Forbidden, match=re.escape("exceeded quota: cpu, requested: requests.cpu=1m")):
        await client.create(PODS, pod("tiny", container("c", "1m")), "default")


async def test_counts_are_enforced_for_any_kind(cluster: tuple[Any, Client]) -> None:
    _, client = cluster
    await client.create(QUOTAS, quota("objects", {"count/configmaps": "2", "count/deployments.apps": "1",
                                                  "services.nodeports": "1"}), "default")
    await client.create(CONFIGMAPS, {"metadata": {"name": "one"}}, "default")
    await client.create(CONFIGMAPS, {"metadata": {"name": "two"}}, "default")
    with pytest.raises(errors.Forbidden) as denied:
        await client.create(CONFIGMAPS, {"metadata": {"name": "three"}}, "default")
    assert str(denied.value) == ('configmaps "three" is forbidden: exceeded quota: objects, requested: '
                                 'count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2')
    # Other namespaces have quotas of their own (none here).
    await client.create(CONFIGMAPS, {"metadata": {"name": "three"}}, "kube-public")
    template = {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    deployment = {"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
                                                        "template": template}}
    await client.create(DEPLOYMENTS, deployment, "default")
    with pytest.raises(errors.Forbidden, match=re.escape("count/deployments.apps=1")):
        await client.create(DEPLOYMENTS, {**deployment, "metadata": {"name": "web2"}}, "default")
    two_ports = [{"name": "a", "port": 80}, {"name": "b", "port": 81}]
    node_port = {"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": two_ports}}
    with pytest.raises(errors.Forbidden, match=re.escape("services.nodeports=2, used: services.nodeports=0")):
        await client.create(SERVICES, node_port, "default")
    await client.create(SERVICES, {"metadata": {"name": "cluster-ip"}, "spec": {"ports": [{"port": 80}]}},
                        "default")
    # Turning a Service into a NodePort one is charged too.
    with pytest.raises(errors.Forbidden, match=re.escape("services.nodeports=2, used: services.nodeports=0")):
        await client.patch(SERVICES, "cluster-ip", {"spec": {"type": "NodePort", "ports": two_ports}}, "default")
    await client.patch(SERVICES, "cluster-ip", {"spec": {"type": "NodePort"}}, "default")
    async with controller(client):
        await used_becomes(client, "objects", {"count/configmaps": "2", "count/deployments.apps": "1",
                                               "services.nodeports": "1"})


async def test_pods_must_state_what_a_quota_limits(cluster: tuple[Any, Client]) -> None:
    _, client = cluster
    await client.create(QUOTAS, quota("limits", {"limits.cpu": "4", "requests.memory": "1Gi"}), "default")
    with pytest.raises(errors.Forbidden) as denied:
        await client.create(PODS, pod("bare", container("app", limit_cpu="1", memory="10Mi"), container("side"),
                                      init=(container("setup", memory="1Mi"),)), "default")
    assert str(denied.value) == ('pods "bare" is forbidden: failed quota: limits: must specify limits.cpu for: '
                                 'setup,side; requests.memory for: side')
    assert await names(client, PODS) == []
    # Limits alone are enough: requests default to them.
    await client.create(PODS, pod("ok", container("app", limit_cpu="1", limit_memory="10Mi")), "default")


async def test_concurrent_creates_cannot_share_the_last_unit(cluster: tuple[Any, Client]) -> None:
    _, client = cluster
    await client.create(QUOTAS, quota("pods", {"pods": "3"}), "default")
    results = await asyncio.gather(*(client.create(PODS, pod(f"p{i}", container("c")), "default")
                                     for i in range(8)), return_exceptions=True)
    assert sum(1 for r in results if isinstance(r, errors.Forbidden)) == 5
    assert len(await names(client, PODS)) == 3


async def test_scopes_choose_the_pods_a_quota_counts(cluster: tuple[Any, Client]) -> None:
    _, client = cluster
    await client.create(QUOTAS, quota("best-effort", {"pods": "1"}, scopes=["BestEffort"]), "default")
    await client.create(QUOTAS, quota("burstable", {"pods": "2", "requests.cpu": "1"}, scopes=["NotBestEffort"]),
                        "default")
    await client.create(QUOTAS, quota("terminating", {"pods": "1"}, scopes=["Terminating"]), "default")
    await client.create(QUOTAS, quota("high", {"pods": "1"}, scopeSelector={"matchExpressions": [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}), "default")
    async with controller(client):
        await client.create(PODS, pod("free", container("c")), "default")
        with pytest.raises(errors.Forbidden, match="exceeded quota: best-effort, requested: pods=1"):
            await client.create(PODS, pod("free2", container("c")), "default")
        await client.create(PODS, pod("paid", container("c", "500m")), "default")
        await client.create(PODS, pod("job", container("c", "100m"), activeDeadlineSeconds=60), "default")
        with pytest.raises(errors.Forbidden, match="exceeded quota: burstable, requested: pods=1"):
            await client.create(PODS, pod("paid2", container("c", "100m")), "default")
        await used_becomes(client, "best-effort", {"pods": "1"})
        await used_becomes(client, "burstable", {"pods": "2", "requests.cpu": "600m"})
        await used_becomes(client, "terminating", {"pods": "1"})
        await used_becomes(client, "high", {"pods": "0"})
        # Scoped quotas count pods only; a ConfigMap is no concern of theirs.
        await client.create(CONFIGMAPS, {"metadata": {"name": "cm"}}, "default")
        await client.delete(PODS, "paid", "default")
        await used_becomes(client, "burstable", {"pods": "1", "requests.cpu": "100m"})
        await client.create(PODS, pod("paid2", container("c", "100m")), "default")
        await used_becomes(client, "burstable", {"pods": "2", "requests.cpu": "200m"})
