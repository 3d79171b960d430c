"""The official Python ``kubernetes`` client against a real ``microkube server``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

from microkube.testing import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(microkube_server: ServerProcess, tmp_path, monkeypatch) -> Iterator[client.ApiClient]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the dynamic client caches discovery there
    api_client = config.new_client_from_config(str(microkube_server.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def namespace(api: client.ApiClient) -> str:
    name = f"py-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def test_crud_and_errors(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"a": "1"})
    created = core.create_namespaced_config_map(namespace, body)
    assert created.metadata.uid and created.metadata.resource_version
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(namespace, body)
    assert exists.value.status == 409
    created.data["a"] = "2"
    updated = core.replace_namespaced_config_map("settings", namespace, created)
    assert updated.data == {"a": "2"}
    stale = created
    stale.data["a"] = "3"
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("settings", namespace, stale)
    assert conflict.value.status == 409
    patched = core.patch_namespaced_config_map("settings", namespace, {"data": {"b": "x"}})
    assert patched.data == {"a": "2", "b": "x"}
    items = core.list_namespaced_config_map(namespace).items
    assert [i.metadata.name for i in items] == ["settings"]
    core.delete_namespaced_config_map("settings", namespace)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("settings", namespace)
    assert missing.value.status == 404


def test_typed_deployment_and_service(api: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    container = client.V1Container(name="web", image="nginx:1.27",
                                   ports=[client.V1ContainerPort(container_port=80)])
    template = client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "web"}),
                                        spec=client.V1PodSpec(containers=[container]))
    spec = client.V1DeploymentSpec(replicas=2, selector=client.V1LabelSelector(match_labels={"app": "web"}),
                                   template=template)
    deployment = apps.create_namespaced_deployment(
        namespace, client.V1Deployment(metadata=client.V1ObjectMeta(name="web"), spec=spec))
    assert deployment.spec.strategy.type == "RollingUpdate"
    assert deployment.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    service = core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, name="a")])))
    assert service.status is not None
    patched = core.patch_namespaced_service("web", namespace, {"spec": {"ports": [{"port": 81, "name": "b"}]}})
    assert sorted(p.port for p in patched.spec.ports) == [80, 81]


def test_watch_with_timeout(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w")))
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, namespace, timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name))
    assert ("ADDED", "w") in seen


def test_dynamic_client_server_side_apply(api: client.ApiClient, namespace: str) -> None:
    dyn = dynamic.DynamicClient(api)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": namespace},
                "data": {"x": "1", "y": "2"}}
    configmaps.server_side_apply(body=manifest, field_manager="python-client")
    del manifest["data"]["y"]
    result = configmaps.server_side_apply(body=manifest, field_manager="python-client")
    assert result.data.to_dict() == {"x": "1"}  # a field the manager stopped applying is removed
