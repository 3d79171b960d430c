"""Server-side apply and managedFields."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from microkube.apiserver.apply import ApplyConflict, apply, update_managed_fields

DEPLOYMENT = {"$ref": "#/$defs/io.k8s.api.apps.v1.Deployment"}
CONFIGMAP = {"$ref": "#/$defs/io.k8s.api.core.v1.ConfigMap"}


def config(replicas: int = 2, ports: bool = True) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "nginx", "image": "nginx"}
    if ports:
        container["ports"] = [{"containerPort": 80}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}}}}


def managers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f'{e["manager"]}/{e["operation"]}': e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def test_apply_creates_ownership() -> None:
    obj = apply(None, config(), manager="kubectl", force=False, schema=DEPLOYMENT, now="t1")
    fields = managers(obj)["kubectl/Apply"]
    assert "f:replicas" in fields["f:spec"]
    containers = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers['k:{"name":"nginx"}']["f:ports"]['k:{"containerPort":80,"protocol":"TCP"}'] == {
        ".": {}, "f:containerPort": {}}
    assert "f:name" not in fields.get("f:metadata", {})  # identity fields are never owned


def test_another_manager_changing_a_field_conflicts_unless_forced() -> None:
    live = apply(None, config(), manager="kubectl", force=False, schema=DEPLOYMENT, now="t1")
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    scaled["metadata"]["managedFields"] = update_managed_fields(live, scaled, manager="kubectl-scale",
                                                                operation="Update", schema=DEPLOYMENT, now="t2")
    assert "f:replicas" not in managers(scaled)["kubectl/Apply"]["f:spec"]
    with pytest.raises(ApplyConflict) as conflict:
        apply(scaled, config(), manager="kubectl", force=False, schema=DEPLOYMENT, now="t3")
    assert conflict.value.conflicts == [("kubectl-scale", ".spec.replicas")]
    assert "Apply failed with 1 conflict" in str(conflict.value)
    forced = apply(scaled, config(), manager="kubectl", force=True, schema=DEPLOYMENT, now="t3")
    assert forced["spec"]["replicas"] == 2
    assert "kubectl-scale/Update" not in managers(forced)
    same = apply(scaled, config(replicas=5), manager="kubectl", force=False, schema=DEPLOYMENT, now="t3")
    assert same["spec"]["replicas"] == 5  # applying the value already there is no conflict: shared ownership


def test_fields_dropped_from_the_config_are_removed() -> None:
    live = apply(None, config(), manager="kubectl", force=False, schema=DEPLOYMENT, now="t1")
    again = apply(live, config(ports=False), manager="kubectl", force=False, schema=DEPLOYMENT, now="t2")
    assert again["spec"]["template"]["spec"]["containers"] == [{"name": "nginx", "image": "nginx"}]


def test_fields_another_manager_owns_are_kept() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}}
    first = apply(None, cm, manager="one", force=False, schema=CONFIGMAP, now="t")
    second = apply(first, {**cm, "data": {"b": "2"}}, manager="two", force=False, schema=CONFIGMAP, now="t")
    dropped = apply(second, {**cm, "data": {"a": "1"}}, manager="one", force=False, schema=CONFIGMAP, now="t")
    assert dropped["data"] == {"a": "1", "b": "2"}  # "two" still owns b
    gone = apply(dropped, {**cm, "data": {}}, manager="two", force=False, schema=CONFIGMAP, now="t")
    assert gone["data"] == {"a": "1"}


def test_update_ownership_moves_to_the_writer() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}}
    created = update_managed_fields(None, cm, manager="create", operation="Update", schema=CONFIGMAP, now="t")
    assert created[0]["fieldsV1"] == {"f:data": {"f:a": {}}}
    old = {**cm, "metadata": {"name": "x", "managedFields": created}}
    new = {**old, "data": {"a": "2", "b": "3"}}
    entries = update_managed_fields(old, new, manager="edit", operation="Update", schema=CONFIGMAP, now="t2")
    assert [e["manager"] for e in entries] == ["edit"]
    assert entries[0]["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}
