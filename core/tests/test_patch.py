"""JSON patch, merge patch and strategic merge patch."""

from __future__ import annotations

import copy

import pytest

from microkube.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from microkube_interfaces import errors

DEPLOYMENT = {"$ref": "#/$defs/io.k8s.api.apps.v1.Deployment"}
SERVICE = {"$ref": "#/$defs/io.k8s.api.core.v1.Service"}
POD = {"$ref": "#/$defs/io.k8s.api.core.v1.Pod"}


def deployment() -> dict:  # type: ignore[type-arg]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "annotations": {"a": "1"}},
            "spec": {"replicas": 1, "strategy": {"type": "RollingUpdate",
                                                 "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"spec": {"containers": [
                         {"name": "nginx", "image": "nginx:1.27", "env": [{"name": "A", "value": "1"}]},
                         {"name": "side", "image": "busybox"}]}}}}


def test_kubectl_apply_body_changes_only_the_image() -> None:
    original = deployment()
    patch = {"metadata": {"annotations": {"b": "2"}},
             "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}, {"name": "side"}],
                                            "containers": [{"image": "nginx:1.28", "name": "nginx"}]}}}}
    result = strategic_merge_patch(original, patch, DEPLOYMENT)
    containers = result["spec"]["template"]["spec"]["containers"]
    assert containers[0] == {"name": "nginx", "image": "nginx:1.28", "env": [{"name": "A", "value": "1"}]}
    assert containers[1] == {"name": "side", "image": "busybox"}
    assert result["metadata"]["annotations"] == {"a": "1", "b": "2"}
    assert original == deployment()  # inputs are never modified


def test_set_element_order_reorders() -> None:
    patch = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "nginx"}]}}}}
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [c["name"] for c in result["spec"]["template"]["spec"]["containers"]] == ["side", "nginx"]


def test_service_ports_merge_on_port() -> None:
    service = {"spec": {"ports": [{"name": "a", "port": 80}]}}
    result = strategic_merge_patch(service, {"spec": {"ports": [{"name": "b", "port": 81}]}}, SERVICE)
    assert [p["port"] for p in result["spec"]["ports"]] == [80, 81]


def test_patch_delete_directive_in_a_list() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [c["name"] for c in result["spec"]["template"]["spec"]["containers"]] == ["nginx"]


def test_patch_replace_directive_on_a_map() -> None:
    patch = {"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}
    assert strategic_merge_patch(deployment(), patch, DEPLOYMENT)["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys() -> None:
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert strategic_merge_patch(deployment(), patch, DEPLOYMENT)["spec"]["strategy"] == {"type": "Recreate"}


def test_delete_from_primitive_list_and_set_merge() -> None:
    pod = {"metadata": {"finalizers": ["a", "b"]}}
    result = strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, POD)
    assert result["metadata"]["finalizers"] == ["b"]
    merged = strategic_merge_patch(pod, {"metadata": {"finalizers": ["c"]}}, POD)
    assert merged["metadata"]["finalizers"] == ["a", "b", "c"]


def test_null_deletes_and_unknown_directive_fails() -> None:
    result = strategic_merge_patch(deployment(), {"metadata": {"annotations": None}}, DEPLOYMENT)
    assert "annotations" not in result["metadata"]
    with pytest.raises(errors.Invalid):
        strategic_merge_patch(deployment(), {"spec": {"$patch": "explode"}}, DEPLOYMENT)
    with pytest.raises(errors.Unsupported):
        strategic_merge_patch(deployment(), {}, None)


def test_non_merge_lists_are_replaced() -> None:
    pod = {"spec": {"containers": [{"name": "c", "args": ["a", "b"]}]}}
    patch = {"spec": {"containers": [{"name": "c", "args": ["z"]}]}}
    assert strategic_merge_patch(pod, patch, POD)["spec"]["containers"][0]["args"] == ["z"]


def test_merge_patch() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3]}) == {"a": {"c": 2, "d": 3}, "l": [3]}
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1, 2]}


def test_json_patch_operations() -> None:
    doc = {"a": [1, 2], "b": {"c~d": 1, "e/f": 2}}
    result = json_patch(doc, [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "add", "path": "/a/0", "value": 0},
        {"op": "remove", "path": "/b/c~0d"},
        {"op": "replace", "path": "/b/e~1f", "value": 9},
        {"op": "copy", "from": "/a", "path": "/copy"},
        {"op": "move", "from": "/copy", "path": "/moved"},
        {"op": "test", "path": "/a/3", "value": 3},
    ])
    assert result == {"a": [0, 1, 2, 3], "b": {"e/f": 9}, "moved": [0, 1, 2, 3]}
    assert doc == {"a": [1, 2], "b": {"c~d": 1, "e/f": 2}}


@pytest.mark.parametrize("operations", [
    [{"op": "test", "path": "/a", "value": 2}],
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "remove", "path": "/a/5"}],
    [{"op": "frobnicate", "path": "/a"}],
    [{"op": "add", "path": "no-slash", "value": 1}],
    ["not an object"],
])
def test_json_patch_failures_name_the_operation(operations: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(errors.Invalid) as error:
        json_patch({"a": 1}, copy.deepcopy(operations))
    assert "operation 0" in str(error.value)
