"""kubectl's typed ``create`` commands send protobuf: the stored object must equal what the same
command sends as JSON (``--dry-run=client -o json`` piped to ``kubectl create -f -``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from microkube.testing import Kubectl

pytestmark = pytest.mark.e2e

COMMANDS: list[tuple[str, list[str], bool]] = [
    # (resource to read back, the create command after "create", namespaced)
    ("configmap/cm", ["configmap", "cm", "--from-literal=a=1", "--from-literal=b=two"], True),
    ("secret/generic", ["secret", "generic", "generic", "--from-literal=password=s3cret"], True),
    ("secret/registry", ["secret", "docker-registry", "registry", "--docker-server=registry.test",
                         "--docker-username=u", "--docker-password=p"], True),
    ("serviceaccount/robot", ["serviceaccount", "robot"], True),
    ("deployment/web", ["deployment", "web", "--image=nginx:1.27", "--port=80", "--replicas=3"], True),
    ("deployment/zero", ["deployment", "zero", "--image=nginx", "--replicas=0"], True),
    ("deployment/cmd", ["deployment", "cmd", "--image=busybox", "--", "sleep", "3600"], True),
    ("service/cip", ["service", "clusterip", "cip", "--tcp=80:8080", "--tcp=443:https"], True),
    ("service/np", ["service", "nodeport", "np", "--tcp=80:8080"], True),
    ("service/ext", ["service", "externalname", "ext", "--external-name=example.test"], True),
    ("job/job", ["job", "job", "--image=busybox", "--", "echo", "hi"], True),
    ("cronjob/cron", ["cronjob", "cron", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"], True),
    ("resourcequota/quota", ["quota", "quota", "--hard=pods=4,requests.cpu=2"], True),
    ("role/reader", ["role", "reader", "--verb=get,list", "--resource=pods"], True),
    ("rolebinding/bind", ["rolebinding", "bind", "--role=reader", "--user=alice"], True),
    ("poddisruptionbudget/pdb", ["pdb", "pdb", "--selector=app=web", "--min-available=50%"], True),
    ("ingress/ing", ["ingress", "ing", "--rule=foo.test/bar=svc:8080"], True),
]
SERVER_FIELDS = ("uid", "creationTimestamp", "resourceVersion", "managedFields", "generation", "namespace")


def normalised(obj: dict[str, Any]) -> dict[str, Any]:
    for key in SERVER_FIELDS:
        obj["metadata"].pop(key, None)
    spec = obj.get("spec") or {}
    spec.pop("clusterIP", None)
    spec.pop("clusterIPs", None)
    for port in spec.get("ports") or []:
        if isinstance(port, dict) and port.get("nodePort") and obj["kind"] == "Service":
            port.pop("nodePort")
    return obj


@pytest.mark.parametrize(("resource", "command", "namespaced"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_protobuf_and_json_bodies_store_the_same_object(kubectl: Kubectl, resource: str, command: list[str],
                                                        namespaced: bool) -> None:
    for ns in ("via-protobuf", "via-json"):
        kubectl.run("create", "namespace", ns, check=False)
    kubectl("-n", "via-protobuf", "create", *command)
    rendered = kubectl("-n", "via-json", "--dry-run=client", "-o", "json", "create", *command)
    kubectl("create", "-n", "via-json", "-f", "-", input=rendered)
    from_protobuf = normalised(kubectl.json("get", resource, "-n", "via-protobuf"))
    from_json = normalised(kubectl.json("get", resource, "-n", "via-json"))
    assert from_protobuf == from_json, json.dumps(_difference(from_protobuf, from_json), indent=1)


def _difference(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _difference(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _difference(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: protobuf={a!r} json={b!r}"]


def test_cluster_scoped_typed_creates(kubectl: Kubectl) -> None:
    kubectl("create", "clusterrole", "pod-reader", "--verb=get", "--resource=pods")
    kubectl("create", "clusterrolebinding", "pod-reader", "--clusterrole=pod-reader", "--user=bob")
    kubectl("create", "priorityclass", "high", "--value=1000", "--description=important")
    assert kubectl.json("get", "priorityclass", "high")["value"] == 1000
    assert kubectl.json("get", "clusterrolebinding", "pod-reader")["subjects"][0]["name"] == "bob"


def test_auth_can_i_and_token(kubectl: Kubectl) -> None:
    assert kubectl("auth", "can-i", "create", "deployments").strip() == "yes"
    assert kubectl("auth", "whoami", "-o", "json")
    kubectl.run("create", "serviceaccount", "tok", check=False)
    assert kubectl("create", "token", "tok", "--duration=1h").count(".") == 2
