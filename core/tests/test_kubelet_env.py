"""Container environments built by the kubelet, against a real API server."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from microkube.client import Client
from microkube.kubelet.envvars import CONFIGMAPS, SECRETS, EnvError, container_env, expand, format_map, mapping_for

NODE = {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"}


def _pod(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "default", "uid": "uid-123",
                         "labels": {"app": "web", "tier": "front"}, "annotations": {"note": 'say "hi"'}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "builder", "containers": [container], **spec},
            "status": {}}


async def _env(client: Client, pod: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    container = pod["spec"]["containers"][0]
    result = await container_env(client, pod, container, host_ip="192.0.2.10", pod_ip="10.244.0.5",
                                 pod_ips=["10.244.0.5", "fd00::5"], node_allocatable=NODE, **kwargs)
    return {kv.key: kv.value for kv in result}


async def _objects(client: Client) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": "app-config"},
                                     "data": {"MODE": "prod", "LEVEL": "3", "1bad": "x", "with.dot": "ok"}}, "default")
    await client.create(SECRETS, {"metadata": {"name": "creds"},
                                  "data": {"PASSWORD": base64.b64encode(b"s3cret").decode()}}, "default")


def test_expand_rules() -> None:
    lookup = mapping_for({"A": "1", "B": "two"})
    assert expand("$(A)-$(B)", lookup) == "1-two"
    assert expand("$$(A)", lookup) == "$(A)"
    assert expand("$(MISSING)", lookup) == "$(MISSING)"
    assert expand("$(A", lookup) == "$(A"
    assert expand("cost $5 $", lookup) == "cost $5 $"
    assert expand("$$$(A)", lookup) == "$1"
    assert format_map({"b": "x", "a": 'q"\n'}) == 'a="q\\"\\n"\nb="x"'


async def test_env_order_expansion_and_sources(client: Client) -> None:
    await _objects(client)
    warnings: list[str] = []
    container = {
        "name": "app", "image": "busybox",
        "envFrom": [{"configMapRef": {"name": "app-config"}}, {"secretRef": {"name": "creds"}, "prefix": "DB_"}],
        "env": [
            {"name": "MODE", "value": "dev"},  # env wins over envFrom
            {"name": "URL", "value": "http://$(MODE):$(LEVEL)/$(LATER)$$(MODE)"},
            {"name": "LATER", "value": "late"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "PASSWORD"}}},
            {"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "LEVEL"}}},
            {"name": "EMPTY"},
        ],
    }
    env = await _env(client, _pod(container), on_warning=warnings.append)
    assert env["MODE"] == "dev"
    assert env["URL"] == "http://dev:3/$(LATER)$(MODE)"
    assert env["DB_PASSWORD"] == "s3cret" and env["PW"] == "s3cret" and env["LVL"] == "3"
    assert env["with.dot"] == "ok" and "1bad" not in env and env["EMPTY"] == ""
    assert len(warnings) == 1 and "1bad" in warnings[0] and "default/app-config" in warnings[0]
    keys = list(env)
    assert keys.index("URL") < keys.index("LATER") < keys.index("PW")


async def test_missing_and_optional_sources(client: Client) -> None:
    await _objects(client)
    optional = {"name": "app", "envFrom": [{"configMapRef": {"name": "absent", "optional": True}}],
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k",
                                                                         "optional": True}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope",
                                                                      "optional": True}}},
                        {"name": "C", "value": "c"}]}
    env = await _env(client, _pod(optional))
    assert "A" not in env and "B" not in env and env["C"] == "c"

    cases: list[tuple[dict[str, Any], str]] = [
        ({"envFrom": [{"configMapRef": {"name": "absent"}}]}, 'configmap "absent" not found'),
        ({"envFrom": [{"secretRef": {"name": "absent"}}]}, 'secret "absent" not found'),
        ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "NAME"}}}]},
         "couldn't find key NAME in ConfigMap default/app-config"),
        ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "USER"}}}]},
         "couldn't find key USER in Secret default/creds"),
        ({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]},
         "unsupported fieldPath: spec.hostname"),
        ({"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]},
         "unsupported container resource : limits.gpu"),
    ]
    for extra, message in cases:
        with pytest.raises(EnvError) as caught:
            await _env(client, _pod({"name": "app", **extra}))
        assert str(caught.value) == message
        assert caught.value.reason == "CreateContainerConfigError"


async def test_field_refs(client: Client) -> None:
    def ref(path: str) -> dict[str, Any]:
        return {"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}

    paths = {"NAME": "metadata.name", "NS": "metadata.namespace", "UID": "metadata.uid",
             "APP": "metadata.labels['app']", "NONE": "metadata.labels['absent']", "LABELS": "metadata.labels",
             "NOTES": "metadata.annotations", "NOTE": "metadata.annotations['note']", "NODE": "spec.nodeName",
             "SA": "spec.serviceAccountName", "HOST": "status.hostIP", "HOSTS": "status.hostIPs",
             "IP": "status.podIP", "IPS": "status.podIPs"}
    env = await _env(client, _pod({"name": "app", "env": [{"name": k, **ref(v)} for k, v in paths.items()]}))
    assert env["NAME"] == "web-1" and env["NS"] == "default" and env["UID"] == "uid-123"
    assert env["APP"] == "web" and env["NONE"] == ""
    assert env["LABELS"] == 'app="web"\ntier="front"'
    assert env["NOTES"] == 'note="say \\"hi\\""' and env["NOTE"] == 'say "hi"'
    assert env["NODE"] == "node-a" and env["SA"] == "builder"
    assert env["HOST"] == env["HOSTS"] == "192.0.2.10"
    assert env["IP"] == "10.244.0.5" and env["IPS"] == "10.244.0.5,fd00::5"


async def test_resource_field_refs(client: Client) -> None:
    def ref(resource: str, divisor: str | None = None, container: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"resource": resource}
        if divisor:
            body["divisor"] = divisor
        if container:
            body["containerName"] = container
        return {"valueFrom": {"resourceFieldRef": body}}

    container = {"name": "app", "resources": {"limits": {"cpu": "500m", "memory": "100Mi"},
                                              "requests": {"cpu": "250m", "memory": "64Mi"}},
                 "env": [{"name": "CPU", **ref("limits.cpu")}, {"name": "CPU_M", **ref("limits.cpu", "1m")},
                         {"name": "MEM", **ref("limits.memory")}, {"name": "MEM_MI", **ref("limits.memory", "1Mi")},
                         {"name": "REQ_MEM_K", **ref("requests.memory", "1k")},
                         {"name": "REQ_CPU", **ref("requests.cpu", "100m")},
                         {"name": "EPH", **ref("limits.ephemeral-storage", "1Gi")},
                         {"name": "SIDE_CPU", **ref("limits.cpu", container="side")},
                         {"name": "REQ_EPH", **ref("requests.ephemeral-storage")}]}
    pod = _pod(container)
    pod["spec"]["containers"].append({"name": "side"})
    env = await _env(client, pod)
    assert env["CPU"] == "1"  # cpu rounds up to whole divisors
    assert env["CPU_M"] == "500"
    assert env["MEM"] == str(100 * 2**20) and env["MEM_MI"] == "100"
    assert env["REQ_MEM_K"] == str(-(-64 * 2**20 // 1000)) and env["REQ_CPU"] == "3"
    assert env["EPH"] == "100"  # unset limits default to the node's allocatable
    assert env["SIDE_CPU"] == "4" and env["REQ_EPH"] == "0"


def _service(name: str, namespace: str, ip: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"clusterIP": ip, "ports": ports}}


async def test_service_links(client: Client) -> None:
    services = [
        _service("kubernetes", "default", "10.96.0.1", [{"name": "https", "port": 443, "protocol": "TCP"}]),
        _service("my-db", "apps", "10.96.0.20", [{"port": 5432}, {"name": "metrics", "port": 9187,
                                                                   "protocol": "UDP"}]),
        _service("headless", "apps", "None", [{"port": 80}]),
        _service("v6", "apps", "fd00::20", [{"port": 80}]),
    ]
    container = {"name": "app", "env": [{"name": "MY_DB_SERVICE_HOST", "value": "override"}]}
    pod = _pod(container)
    pod["metadata"]["namespace"] = "apps"
    env = await _env(client, pod, services=services)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == "tcp://10.96.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP"] == "tcp://10.96.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP_PROTO"] == "tcp" and env["KUBERNETES_PORT_443_TCP_PORT"] == "443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.96.0.1"
    assert env["MY_DB_SERVICE_HOST"] == "override"  # explicit env wins
    assert env["MY_DB_SERVICE_PORT"] == "5432" and env["MY_DB_SERVICE_PORT_METRICS"] == "9187"
    assert env["MY_DB_PORT"] == "tcp://10.96.0.20:5432"
    assert env["MY_DB_PORT_9187_UDP"] == "udp://10.96.0.20:9187" and env["MY_DB_PORT_9187_UDP_PROTO"] == "udp"
    assert env["V6_PORT"] == "tcp://[fd00::20]:80"
    assert not any(key.startswith("HEADLESS_") for key in env)

    pod["spec"]["enableServiceLinks"] = False
    env = await _env(client, pod, services=services)
    assert "MY_DB_PORT" not in env and "V6_PORT" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"  # the master service is always there


async def test_expansion_sees_service_variables(client: Client) -> None:
    services = [_service("kubernetes", "default", "10.96.0.1", [{"name": "https", "port": 443}])]
    container = {"name": "app", "env": [{"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST)"}]}
    env = await _env(client, _pod(container), services=services)
    assert env["API"] == "https://10.96.0.1"
