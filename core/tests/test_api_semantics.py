"""Kubernetes API semantics of the server, in-process over HTTP (memory store, bearer token)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from microkube.apiserver.server import APIServer
from microkube.testing import in_process_server

JSON = {"Content-Type": "application/json"}


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, server: APIServer) -> None:
        self.session = session
        self.url = url
        self.server = server

    async def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
        data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        async with self.session.request(method, self.url + path, data=data,
                                        headers={"Content-Type": content_type, **(headers or {})}) as response:
            raw = await response.read()
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = raw.decode()
            return response.status, parsed, response


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Client]:
    async with in_process_server(tmp_path) as (server, url, token):
        session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})
        try:
            yield Client(session, url, server)
        finally:
            await session.close()


def configmap(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **extra}, "data": {"k": "v"}}


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
CM = "/api/v1/namespaces/default/configmaps"


async def test_create_sets_metadata_and_generate_name(api: Client) -> None:
    code, obj, _ = await api.call("POST", CM, {"metadata": {"generateName": "gen-"}, "data": {}})
    assert code == 201
    meta = obj["metadata"]
    assert meta["name"].startswith("gen-") and len(meta["name"]) == 9
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    code, status, _ = await api.call("POST", CM, {"metadata": {}})
    assert code == 422
    assert status["details"]["causes"][0]["field"] == "metadata.name"


async def test_invalid_pod_names_every_field(api: Client) -> None:
    bad = {**POD, "spec": {"restartPolicy": "Sometimes", "containers": [{"name": "Bad_Name"}]}}
    code, status, _ = await api.call("POST", "/api/v1/namespaces/default/pods", bad)
    assert code == 422 and status["reason"] == "Invalid"
    fields = {c["field"] for c in status["details"]["causes"]}
    assert {"spec.restartPolicy", "spec.containers[0].name", "spec.containers[0].image"} <= fields
    code, pod, _ = await api.call("POST", "/api/v1/namespaces/default/pods", POD)
    assert code == 201
    assert pod["spec"]["restartPolicy"] == "Always" and pod["status"]["phase"] == "Pending"
    assert pod["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    assert pod["status"]["qosClass"] == "BestEffort"


async def test_stale_resource_version_conflicts(api: Client) -> None:
    _, created, _ = await api.call("POST", CM, configmap("c"))
    _, updated, _ = await api.call("PUT", f"{CM}/c", {**created, "data": {"k": "2"}})
    code, status, _ = await api.call("PUT", f"{CM}/c", {**created, "data": {"k": "3"}})
    assert code == 409 and status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    code, _, _ = await api.call("PATCH", f"{CM}/c", {"metadata": {"resourceVersion": created["metadata"][
        "resourceVersion"]}, "data": {"k": "4"}}, content_type="application/merge-patch+json")
    assert code == 409
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]


async def test_generation_and_status_split(api: Client) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}},
                                        "spec": {"containers": [{"name": "c", "image": "i"}]}}},
                  "status": {"replicas": 9}}
    path = "/apis/apps/v1/namespaces/default/deployments"
    _, created, _ = await api.call("POST", path, deployment)
    assert created["metadata"]["generation"] == 1 and created.get("status", {}).get("replicas") is None
    _, labelled, _ = await api.call("PATCH", f"{path}/d", {"metadata": {"labels": {"x": "y"}}},
                                    content_type="application/merge-patch+json")
    assert labelled["metadata"]["generation"] == 1  # metadata changes do not bump generation
    _, status, _ = await api.call("PATCH", f"{path}/d/status", {"status": {"replicas": 3}, "spec": {"replicas": 7}},
                                  content_type="application/merge-patch+json")
    assert status["status"]["replicas"] == 3 and status["spec"]["replicas"] == 1
    _, scaled, _ = await api.call("PATCH", f"{path}/d", {"spec": {"replicas": 2}, "status": {"replicas": 0}},
                                  content_type="application/merge-patch+json")
    assert scaled["metadata"]["generation"] == 2 and scaled["status"]["replicas"] == 3
    code, scale, _ = await api.call("GET", f"{path}/d/scale")
    assert code == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    assert scale["status"]["selector"] == "a=b"


async def test_dry_run_never_persists(api: Client) -> None:
    code, obj, _ = await api.call("POST", f"{CM}?dryRun=All", configmap("dry"))
    assert code == 201 and obj["metadata"]["name"] == "dry"
    assert (await api.call("GET", f"{CM}/dry"))[0] == 404
    await api.call("POST", CM, configmap("real"))
    before = api.server.cache.revision
    _, patched, _ = await api.call("PATCH", f"{CM}/real?dryRun=All", {"data": {"k": "changed"}},
                                   content_type="application/merge-patch+json")
    assert patched["data"]["k"] == "changed"
    await api.call("DELETE", f"{CM}/real?dryRun=All")
    _, live, _ = await api.call("GET", f"{CM}/real")
    assert live["data"]["k"] == "v"
    assert await api.server.store.current_revision() == before
    code, _status, _ = await api.call("POST", f"{CM}?dryRun=Some", configmap("x"))
    assert code == 400


async def test_field_validation_modes(api: Client) -> None:
    body = {**configmap("f"), "extra": 1}
    code, status, _ = await api.call("POST", f"{CM}?fieldValidation=Strict", body)
    assert code == 400 and 'unknown field "extra"' in status["message"]
    code, _, response = await api.call("POST", f"{CM}?fieldValidation=Warn", body)
    assert code == 201 and 'unknown field \\"extra\\"' in response.headers.get("Warning", "").replace('"', '\\"')
    code, _, _ = await api.call("POST", f"{CM}?fieldValidation=Ignore", {**body, "metadata": {"name": "g"}})
    assert code == 201
    duplicated = b'{"metadata": {"name": "dup"}, "data": {"a": "1", "a": "2"}}'
    code, status, _ = await api.call("POST", f"{CM}?fieldValidation=Strict", duplicated)
    assert code == 400 and 'duplicate field "a"' in status["message"]
    assert (await api.call("POST", f"{CM}?fieldValidation=Ignore", duplicated))[0] == 201


async def test_finalizers_and_deletion_timestamp(api: Client) -> None:
    await api.call("POST", CM, configmap("fin", finalizers=["example.com/hold"]))
    code, deleting, _ = await api.call("DELETE", f"{CM}/fin")
    assert code == 202 and deleting["metadata"]["deletionTimestamp"]
    code, status, _ = await api.call("PATCH", f"{CM}/fin", {"metadata": {"finalizers": ["example.com/hold", "new"]}},
                                     content_type="application/merge-patch+json")
    assert code == 422 and "no new finalizers" in status["message"]
    code, _, _ = await api.call("PATCH", f"{CM}/fin", {"metadata": {"finalizers": None}},
                                content_type="application/merge-patch+json")
    assert code == 200
    assert (await api.call("GET", f"{CM}/fin"))[0] == 404


async def test_delete_options_in_query_and_preconditions(api: Client) -> None:
    _, created, _ = await api.call("POST", CM, configmap("pre"))
    code, status, _ = await api.call("DELETE", f"{CM}/pre", {"preconditions": {"uid": "wrong"}})
    assert code == 409 and "Precondition failed" in status["message"]
    code, _, _ = await api.call("DELETE", f"{CM}/pre?propagationPolicy=Background&gracePeriodSeconds=0")
    assert code == 200
    code, _, _ = await api.call("DELETE", f"{CM}/pre?propagationPolicy=Sideways")
    assert code == 400
    del created


async def test_selectors(api: Client) -> None:
    for name, labels in (("a", {"env": "prod", "tier": "web"}), ("b", {"env": "dev"}), ("c", {})):
        await api.call("POST", CM, configmap(name, labels=labels))

    async def names(query: str) -> list[str]:
        code, body, _ = await api.call("GET", f"{CM}?{query}")
        assert code == 200, body
        return [i["metadata"]["name"] for i in body["items"]]

    assert await names("labelSelector=env%3Dprod") == ["a"]
    assert await names("labelSelector=env%20in%20(prod,dev)") == ["a", "b"]
    assert await names("labelSelector=env%20notin%20(prod)") == ["b", "c"]
    assert await names("labelSelector=!env") == ["c"]
    assert await names("labelSelector=tier,env!%3Ddev") == ["a"]
    assert await names("fieldSelector=metadata.name!%3Db") == ["a", "c"]
    code, status, _ = await api.call("GET", f"{CM}?fieldSelector=spec.nodeName%3Dx")
    assert code == 400 and "field label not supported" in status["message"]
    code, _, _ = await api.call("GET", f"{CM}?labelSelector=%3D%3D%3D")
    assert code == 400


async def test_pagination_and_expired_continue(api: Client) -> None:
    for i in range(5):
        await api.call("POST", CM, configmap(f"page-{i}"))
    _, first, _ = await api.call("GET", f"{CM}?limit=2")
    token = first["metadata"]["continue"]
    assert [i["metadata"]["name"] for i in first["items"]] == ["page-0", "page-1"]
    await api.call("POST", CM, configmap("page-00"))
    names = []
    while token:
        _, page, _ = await api.call("GET", f"{CM}?limit=2&continue={token}")
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
    assert names == ["page-2", "page-3", "page-4"]  # one snapshot: page-00 came later
    await api.server.store.compact(await api.server.store.current_revision())
    code, status, _ = await api.call("GET", f"{CM}?limit=2&continue={first['metadata']['continue']}")
    assert code == 410 and status["reason"] == "Expired"
    assert (await api.call("GET", f"{CM}?continue=garbage"))[0] == 400


async def read_events(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events = []
    while len(events) < count:
        line = await asyncio.wait_for(response.content.readline(), 10)
        if not line:
            break
        events.append(orjson.loads(line))
    return events


async def test_watch_from_now_from_a_version_and_too_old(api: Client) -> None:
    _, created, _ = await api.call("POST", CM, configmap("w1"))
    rv = created["metadata"]["resourceVersion"]
    async with api.session.get(f"{api.url}{CM}?watch=true&resourceVersion={rv}&labelSelector=watched") as stream:
        await api.call("POST", CM, configmap("w2", labels={"watched": "yes"}))
        await api.call("POST", CM, configmap("w3"))
        await api.call("PATCH", f"{CM}/w2", {"metadata": {"labels": None}},
                       content_type="application/merge-patch+json")
        events = await read_events(stream, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w2"), ("DELETED", "w2")]
    async with api.session.get(f"{api.url}{CM}?watch=true&timeoutSeconds=1") as stream:
        initial = await stream.read()
    assert {orjson.loads(line)["object"]["metadata"]["name"] for line in initial.splitlines()} == {"w1", "w2", "w3"}
    api.server.cache.cache_for("/registry/configmaps/").history_start = 10**9  # history no longer reaches back
    async with api.session.get(f"{api.url}{CM}?watch=true&resourceVersion={rv}") as stream:
        events = await read_events(stream, 1)
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def test_bookmarks(api: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("microkube.apiserver.handlers.BOOKMARK_INTERVAL", 0.2)
    async with api.session.get(f"{api.url}{CM}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"
                               "&resourceVersion=1") as stream:
        body = await stream.read()
    kinds = [orjson.loads(line)["type"] for line in body.splitlines()]
    assert "BOOKMARK" in kinds


async def test_table_and_yaml_output(api: Client) -> None:
    await api.call("POST", "/api/v1/namespaces/default/pods", POD)
    code, table, response = await api.call(
        "GET", "/api/v1/namespaces/default/pods",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    assert code == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert table["rows"][0]["cells"][:3] == ["p", "0/1", "Pending"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    code, text, response = await api.call("GET", "/api/v1/namespaces/default/pods/p",
                                          headers={"Accept": "application/yaml"})
    assert code == 200 and response.content_type == "application/yaml" and "kind: Pod" in text


async def test_discovery_documents(api: Client) -> None:
    _, version, _ = await api.call("GET", "/version")
    assert version["minor"] == "32"
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    _, aggregated, response = await api.call("GET", "/apis", headers={"Accept": accept})
    assert response.headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    assert "apps" in {g["metadata"]["name"] for g in aggregated["items"]}
    _, legacy, response = await api.call("GET", "/api/v1")
    pods = next(r for r in legacy["resources"] if r["name"] == "pods")
    assert pods["shortNames"] == ["po"] and "watch" in pods["verbs"]
    assert any(r["name"] == "pods/exec" for r in legacy["resources"])
    _, index, _ = await api.call("GET", "/openapi/v3")
    assert "apis/apps/v1" in index["paths"]
    code, metrics, _ = await api.call("GET", "/metrics")
    assert code == 200 and "apiserver_request_total" in metrics


async def test_namespace_lifecycle(api: Client) -> None:
    code, status, _ = await api.call("POST", "/api/v1/namespaces/nowhere/configmaps", configmap("x"))
    assert code == 404 and "nowhere" in status["message"]
    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "temp"}})
    await api.call("POST", "/api/v1/namespaces/temp/configmaps", configmap("inside"))
    code, ns, _ = await api.call("DELETE", "/api/v1/namespaces/temp")
    assert ns["status"]["phase"] == "Terminating"
    for _ in range(50):
        if (await api.call("GET", "/api/v1/namespaces/temp"))[0] == 404:
            break
        await asyncio.sleep(0.1)
    assert (await api.call("GET", "/api/v1/namespaces/temp"))[0] == 404
    assert (await api.call("GET", "/api/v1/namespaces/temp/configmaps/inside"))[0] == 404


async def test_custom_resources_are_served_at_once(api: Client) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                                           "statusReplicasPath": ".status.replicas"}},
                                  "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                      "spec": {"type": "object", "properties": {
                                          "replicas": {"type": "integer", "minimum": 0},
                                          "mode": {"type": "string", "enum": ["a", "b"], "default": "a"}}},
                                      "status": {"type": "object", "properties": {
                                          "replicas": {"type": "integer"}}}}}}}]}}
    code, _, _ = await api.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 201
    path = "/apis/example.com/v1/namespaces/default/gadgets"
    code, gadget, _ = await api.call("POST", path, {"apiVersion": "example.com/v1", "kind": "Gadget",
                                                    "metadata": {"name": "g"}, "spec": {"replicas": 1},
                                                    "junk": True})
    assert code == 201, gadget
    assert gadget["spec"]["mode"] == "a" and "junk" not in gadget
    code, status, _ = await api.call("POST", path, {"apiVersion": "example.com/v1", "kind": "Gadget",
                                                    "metadata": {"name": "h"}, "spec": {"mode": "z"}})
    assert code == 422 and status["details"]["causes"][0]["field"] == "spec.mode"
    code, _, _ = await api.call("PATCH", f"{path}/g/scale", {"spec": {"replicas": 4}},
                                content_type="application/merge-patch+json")
    assert code == 200
    assert (await api.call("GET", f"{path}/g"))[1]["spec"]["replicas"] == 4
    code, _, _ = await api.call("PATCH", f"{path}/g", {"spec": {"replicas": 5}},
                                content_type="application/strategic-merge-patch+json")
    assert code == 415
    bad = {**crd, "metadata": {"name": "bads.example.com"},
           "spec": {**crd["spec"], "names": {"plural": "bads", "kind": "Bad"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"properties": {"x": {"type": "string"}}}}}}}]}}
    code, status, _ = await api.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad)
    assert code == 422 and "spec.versions[0].schema.openAPIV3Schema" in status["details"]["causes"][0]["field"]
    code, _, _ = await api.call("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com")
    assert code == 200
    assert (await api.call("GET", path))[0] == 404


async def test_eviction_binding_and_token(api: Client) -> None:
    await api.call("POST", "/api/v1/namespaces/default/pods", POD)
    code, _, _ = await api.call("POST", "/api/v1/namespaces/default/pods/p/binding",
                                {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                                 "target": {"kind": "Node", "name": "node-1"}})
    assert code == 201
    assert (await api.call("GET", "/api/v1/namespaces/default/pods/p"))[1]["spec"]["nodeName"] == "node-1"
    code, _, _ = await api.call("POST", "/api/v1/namespaces/default/pods/p/binding",
                                {"target": {"kind": "Node", "name": "node-2"}})
    assert code == 409
    code, status, _ = await api.call("GET", "/api/v1/namespaces/default/pods/p/log")
    assert code == 503 and "kubelet" in status["message"]
    code, _, _ = await api.call("POST", "/api/v1/namespaces/default/pods/p/eviction",
                                {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"},
                                 "deleteOptions": {"gracePeriodSeconds": 0}})
    assert code == 201
    assert (await api.call("GET", "/api/v1/namespaces/default/pods/p"))[0] == 404
    await api.call("POST", "/api/v1/namespaces/default/serviceaccounts", {"metadata": {"name": "sa"}})
    code, token, _ = await api.call("POST", "/api/v1/namespaces/default/serviceaccounts/sa/token",
                                    {"spec": {"expirationSeconds": 3600}})
    assert code == 201 and token["status"]["token"].count(".") == 2
    code, review, _ = await api.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                     {"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}})
    assert code == 201 and review["status"]["allowed"] is True


async def test_unauthenticated_and_bad_token(api: Client) -> None:
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{api.url}{CM}") as response:
            assert response.status == 401
        async with anonymous.get(f"{api.url}/healthz") as response:
            assert response.status == 200
        async with anonymous.get(f"{api.url}{CM}", headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
