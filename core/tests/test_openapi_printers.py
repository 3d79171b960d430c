"""OpenAPI v3 documents, the definitions data they come from, and kubectl's Table columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from microkube.apiserver import printers
from microkube.apiserver.builtin import builtin_registrations
from microkube.apiserver.definitions import load_definitions
from microkube.apiserver.openapi import OpenAPIDocuments
from microkube.apiserver.protobuf import decode


def test_definitions_data_layout_is_what_we_read() -> None:
    """Pins the kubernetes-validate 1.32.0 layout: a change of the data package fails here first."""
    definitions = load_definitions()
    assert len(definitions) == 638
    ports = definitions["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "port"
    assert ports["x-kubernetes-list-map-keys"] == ["port", "protocol"]
    with_gvk = [d for d in definitions.values() if "x-kubernetes-group-version-kind" in d]
    assert len(with_gvk) == 162


def test_documents_carry_paths_schemas_and_field_validation() -> None:
    docs = OpenAPIDocuments([r.resource for r in builtin_registrations()])
    index = docs.index()
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    body = docs.document("apis/apps/v1")
    assert body is not None
    document = orjson.loads(body)
    schemas = document["components"]["schemas"]
    strategy = schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}]
    assert strategy["description"].startswith("The deployment strategy")
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    patch = document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert {p["name"] for p in patch["parameters"]} >= {"fieldValidation", "dryRun", "fieldManager"}
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    refs = orjson.dumps(document).decode().count("#/$defs/")
    assert refs == 0


def test_printer_durations_and_pod_status() -> None:
    assert [printers.human_duration(s) for s in (5, 119, 192, 3 * 3600 + 60, 49 * 3600, 400 * 86400)] == [
        "5s", "119s", "3m12s", "3h1m", "2d1h", "400d"]
    now = datetime.now(UTC)
    pod = {"metadata": {"name": "p", "creationTimestamp": (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")},
           "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
           "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
               {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
               {"name": "b", "ready": False, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    cells = printers.cells("", "Pod", pod)
    assert cells[:3] == ["p", "1/2", "CrashLoopBackOff"] and cells[4] == "5m" and cells[5:7] == ["10.0.0.5", "n1"]
    assert [c.name for c in printers.columns("apps", "Deployment")][:5] == [
        "Name", "Ready", "Up-to-date", "Available", "Age"]


def test_crd_printer_jsonpath() -> None:
    obj = {"spec": {"size": 3, "items": [{"n": "a"}, {"n": "b"}]},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    columns = [{"jsonPath": ".spec.size", "type": "integer"},
               {"jsonPath": '.status.conditions[?(@.type=="Ready")].status', "type": "string"},
               {"jsonPath": ".spec.items[*].n", "type": "string"}, {"jsonPath": ".spec.missing", "type": "string"}]
    assert printers.custom_columns(columns, obj) == [3, "True", "a,b", None]


def test_protobuf_rejects_garbage_with_clear_errors() -> None:
    import pytest

    from microkube_interfaces import errors

    with pytest.raises(errors.Invalid, match="k8s"):
        decode(b"garbage")
    with pytest.raises(errors.Invalid):
        decode(b"k8s\x00\x0a\xff")
    unknown_kind = b"k8s\x00" + bytes([0x0A, 0x0C, 0x0A, 0x02]) + b"v1" + bytes([0x12, 0x06]) + b"Widget"
    with pytest.raises(errors.Unsupported, match="Widget"):
        decode(unknown_kind)


def test_quota_columns_show_used_over_hard_like_kubectl() -> None:
    quota = {"metadata": {"name": "q", "creationTimestamp": "2026-01-01T00:00:00Z"},
             "status": {"hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "1Gi"},
                        "used": {"pods": "2", "requests.cpu": "500m"}}}
    _name, _age, request, limit = printers._quota_cells(quota)
    assert request == "pods: 2/10, requests.cpu: 500m/1"
    assert limit == "limits.memory: 0/1Gi"
