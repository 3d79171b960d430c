"""The protobuf request decoder against bodies captured from kubectl 1.32, and against hand-built bodies
for the wire cases kubectl's typed commands do not produce (negative numbers, packed lists, timestamps,
embedded JSON, malformed input)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from microkube.apiserver import protobuf
from microkube_interfaces import errors

FIXTURES = Path(__file__).parent / "fixtures" / "protobuf"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text())


# A minimal protobuf writer, enough to build bodies field by field.
def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers as 64-bit two's complement, as Go writes int32 and int64
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def number(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def length(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return varint(field << 3 | 2) + varint(len(data)) + data


def envelope(api_version: str, kind: str, raw: bytes, content_encoding: str = "") -> bytes:
    type_meta = length(1, api_version) + length(2, kind)
    return b"k8s\x00" + length(1, type_meta) + length(2, raw) + length(3, content_encoding) + length(4, "")


def metadata(name: str) -> bytes:
    return length(1, length(1, name) + length(8, b""))  # Go always writes creationTimestamp, empty when zero


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_kubectl_bodies_decode_to_what_kubectl_would_send_as_json(name: str) -> None:
    body = (FIXTURES / f"{name}.bin").read_bytes()
    expected = json.loads((FIXTURES / f"{name}.json").read_text())
    assert MANIFEST[name]["contentType"].startswith(protobuf.MEDIA_TYPE)
    assert protobuf.decode(body) == expected


def test_fixtures_cover_the_typed_commands() -> None:
    assert len(MANIFEST) == len(list(FIXTURES.glob("*.bin"))) >= 30
    kinds = {protobuf.decode((FIXTURES / f"{name}.bin").read_bytes())["kind"] for name in MANIFEST}
    assert kinds >= {"Namespace", "ConfigMap", "Secret", "ServiceAccount", "Deployment", "Service", "Job", "CronJob",
                     "ResourceQuota", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
                     "PodDisruptionBudget", "Ingress", "HorizontalPodAutoscaler", "TokenRequest",
                     "SelfSubjectAccessReview", "SelfSubjectRulesReview", "SelfSubjectReview", "DeleteOptions"}


def test_the_namespace_body_of_the_notes() -> None:
    body = (FIXTURES / "namespace.bin").read_bytes()
    assert len(body) == 55 and body[:4] == b"k8s\x00"
    assert protobuf.decode(body) == {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": "demo", "creationTimestamp": None}}


def test_pointer_zero_is_kept_and_plain_zero_dropped() -> None:
    deployment = protobuf.decode((FIXTURES / "deployment-zero-replicas.bin").read_bytes())
    assert deployment["spec"]["replicas"] == 0  # *int32: without it the Deployment would default to 1
    spec = number(1, 0) + number(5, 0) + number(7, 0)  # replicas (pointer), minReadySeconds, paused
    decoded = protobuf.decode(envelope("apps/v1", "Deployment", metadata("d") + length(2, spec)))
    assert decoded["spec"] == {"replicas": 0}


def test_int_or_string_both_forms() -> None:
    service = protobuf.decode((FIXTURES / "service-clusterip.bin").read_bytes())
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http", 8443]
    pdb = protobuf.decode((FIXTURES / "pdb-percent.bin").read_bytes())
    assert pdb["spec"]["minAvailable"] == "50%"


def test_negative_numbers_use_ten_byte_varints() -> None:
    priority = protobuf.decode((FIXTURES / "priorityclass-negative.bin").read_bytes())
    assert priority["value"] == -5
    assert varint(-5)[-1] == 0x01 and len(varint(-5)) == 10
    toleration = length(1, "k") + number(5, -30)  # tolerationSeconds is an int64
    pod_spec = length(22, toleration)
    decoded = protobuf.decode(envelope("v1", "Pod", metadata("p") + length(2, pod_spec)))
    assert decoded["spec"]["tolerations"] == [{"key": "k", "tolerationSeconds": -30}]


def test_packed_and_unpacked_repeated_numbers() -> None:
    packed = length(4, varint(1000) + varint(2000))  # PodSecurityContext.supplementalGroups
    unpacked = number(4, 3000) + number(4, 4000)
    for security_context, groups in ((packed, [1000, 2000]), (unpacked, [3000, 4000]),
                                     (packed + unpacked, [1000, 2000, 3000, 4000])):
        decoded = protobuf.decode(envelope("v1", "Pod", metadata("p") + length(2, length(14, security_context))))
        assert decoded["spec"]["securityContext"] == {"supplementalGroups": groups}


def test_times() -> None:
    timestamp = number(1, 1700000000) + number(2, 123456789)
    micro = number(1, 1700000000) + number(2, 123456789)
    lease_spec = length(1, "holder") + length(3, micro) + length(4, b"")  # acquireTime, renewTime (pointers)
    obj_meta = length(1, "l") + length(8, timestamp) + length(9, b"")  # creationTimestamp, deletionTimestamp
    decoded = protobuf.decode(envelope("coordination.k8s.io/v1", "Lease", length(1, obj_meta) +
                                       length(2, lease_spec)))
    assert decoded["metadata"] == {"name": "l", "creationTimestamp": "2023-11-14T22:13:20Z", "deletionTimestamp": None}
    assert decoded["spec"] == {"holderIdentity": "holder", "acquireTime": "2023-11-14T22:13:20.123456Z",
                               "renewTime": None}


def test_go_duration_strings() -> None:
    cases = {0: "0s", 3600 * 10**9: "1h0m0s", 90 * 10**9: "1m30s", 2_500_000_000: "2.5s", 150 * 10**6: "150ms",
             1500: "1.5µs", 7: "7ns", -(5 * 10**9): "-5s", (3600 + 62) * 10**9 + 5 * 10**8: "1h1m2.5s"}
    for nanoseconds, text in cases.items():
        assert protobuf._go_duration(nanoseconds) == text


def test_maps_quantities_and_bytes() -> None:
    quota = protobuf.decode((FIXTURES / "quota.bin").read_bytes())
    assert quota["spec"]["hard"] == {"pods": "4", "requests.cpu": "1500m", "limits.memory": "2Gi"}
    secret = protobuf.decode((FIXTURES / "secret-generic.bin").read_bytes())
    assert secret["data"] == {"password": "czNjcjN0", "user": "YWRtaW4="}  # base64, as in JSON
    entry = length(1, "empty") + length(2, b"")
    assert protobuf.decode(envelope("v1", "Secret", metadata("s") + length(2, entry)))["data"] == {"empty": ""}


def test_embedded_json_and_embedded_protobuf() -> None:
    as_json = length(1, b'{"spec":{"replicas":2}}')
    revision = metadata("r") + length(2, as_json) + number(3, 4)
    decoded = protobuf.decode(envelope("apps/v1", "ControllerRevision", revision))
    assert decoded["data"] == {"spec": {"replicas": 2}} and decoded["revision"] == 4
    inner = envelope("v1", "ConfigMap", metadata("cm") + length(2, length(1, "k") + length(2, "v")))
    decoded = protobuf.decode(envelope("apps/v1", "ControllerRevision", metadata("r") + length(2, length(1, inner))))
    assert decoded["data"]["kind"] == "ConfigMap" and decoded["data"]["data"] == {"k": "v"}


def test_embedded_structs_are_inlined() -> None:
    volume = length(1, "v") + length(2, length(2, b""))  # Volume{name, VolumeSource{emptyDir: {}}}
    selector = length(1, length(1, "settings")) + length(2, "key")  # ConfigMapKeySelector{LocalObjectReference}
    env = length(1, "E") + length(3, length(3, selector))  # valueFrom.configMapKeyRef
    container = length(1, "c") + length(7, env)
    http_get = length(1, "/healthz") + length(2, number(1, 1) + length(3, "http"))  # port: IntOrString "http"
    probe = length(1, length(2, http_get)) + number(2, 5)  # Probe{ProbeHandler{httpGet}, initialDelaySeconds}
    container += length(10, probe)
    pod = protobuf.decode(envelope("v1", "Pod", metadata("p") + length(2, length(1, volume) + length(2, container))))
    assert pod["spec"]["volumes"] == [{"name": "v", "emptyDir": {}}]
    first = pod["spec"]["containers"][0]
    assert first["env"] == [{"name": "E", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "key"}}}]
    assert first["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 5}


def test_names_that_differ_from_the_proto_names() -> None:
    bound = length(1, "Pod") + length(3, "p") + length(4, "0b7f")  # BoundObjectReference.uID is "uid"
    request = protobuf.decode(envelope("authentication.k8s.io/v1", "TokenRequest",
                                       metadata("t") + length(2, length(3, bound))))
    assert request["spec"]["boundObjectRef"] == {"kind": "Pod", "name": "p", "uid": "0b7f"}
    status = protobuf.decode(envelope("v1", "Node", metadata("n") + length(3, length(6, length(
        1, number(1, 10250))))))  # NodeDaemonEndpoints.kubeletEndpoint.Port keeps its Go capital
    assert status["status"] == {"daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}


def test_delete_options() -> None:
    options = number(1, 0) + length(4, "Background")  # gracePeriodSeconds is a pointer: 0 is kept
    for api_version in ("v1", "meta.k8s.io/v1"):
        decoded = protobuf.decode(envelope(api_version, "DeleteOptions", options))
        assert decoded == {"apiVersion": api_version, "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                           "propagationPolicy": "Background"}


def test_zero_fields_unknown_to_the_table_are_ignored_and_others_refused() -> None:
    body = envelope("v1", "ConfigMap", metadata("cm") + length(99, b"") + number(98, 0))
    assert protobuf.decode(body)["metadata"]["name"] == "cm"
    with pytest.raises(errors.Invalid, match="unknown field number 99 in ConfigMap"):
        protobuf.decode(envelope("v1", "ConfigMap", metadata("cm") + length(99, "x")))


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"kind": "Namespace"}', "k8s"),
    (b"k8s\x00\x0a\xff", "truncated varint"),
    (b"k8s\x00\x0a\x05\x0a\x02", "past the end"),
    (b"k8s\x00" + b"\x0b", "wire type 3"),
    (b"k8s\x00" + b"\x00\x00", "field number 0"),
    (b"k8s\x00" + b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
    (b"k8s\x00" + b"\x08\x01", "envelope"),
    (envelope("v1", "", b""), "no kind"),
    (envelope("v1", "ConfigMap", number(1, 5)), "metadata must be length-delimited"),
    (envelope("apps/v1", "Deployment", length(2, length(1, "x"))), "spec.replicas must be a varint"),
    (envelope("v1", "ConfigMap", length(1, length(1, b"\xff\xfe"))), "metadata.name is not UTF-8"),
    (envelope("apps/v1", "ControllerRevision", length(2, length(1, "{not json"))), "data holds neither JSON"),
    (envelope("v1", "Pod", length(1, length(8, length(1, "x")))), "creationTimestamp: field 1 of Time"),
])
def test_malformed_bodies_are_invalid_with_the_reason(body: bytes, problem: str) -> None:
    with pytest.raises(errors.Invalid, match="invalid protobuf body") as raised:
        protobuf.decode(body)
    assert problem in str(raised.value)


def test_unknown_kinds_and_encodings_are_unsupported() -> None:
    with pytest.raises(errors.Unsupported, match="Widget"):
        protobuf.decode(envelope("example.com/v1", "Widget", b""))
    with pytest.raises(errors.Unsupported, match="Widget"):
        protobuf.decode(envelope("v1", "Widget", b""))
    with pytest.raises(errors.Unsupported, match="contentEncoding"):
        protobuf.decode(envelope("v1", "ConfigMap", metadata("cm"), content_encoding="gzip"))


@pytest.mark.parametrize(("content_type", "expected"), [
    ("application/vnd.kubernetes.protobuf", True),
    ("Application/VND.Kubernetes.Protobuf; charset=binary", True),
    ("application/vnd.kubernetes.protobuf;stream=watch", True),
    ("application/json", False),
    ("", False),
    (None, False),
])
def test_is_protobuf(content_type: str | None, expected: bool) -> None:
    assert protobuf.is_protobuf(content_type) is expected


def test_the_table_covers_the_whole_api() -> None:
    table = protobuf._table()
    messages = table["messages"]
    assert len(messages) >= 1059
    assert sum(len(fields) for fields in messages.values()) >= 3560
    assert messages["k8s.io.api.apps.v1.DeploymentSpec"]["1"] == ["replicas", "scalar", "int32", "p"]
    assert messages["k8s.io.api.core.v1.Probe"]["1"][3] == "i"  # ProbeHandler is inlined
    assert table["groups"]["k8s.io.api.rbac.v1"] == "rbac.authorization.k8s.io"
    assert table["groups"]["k8s.io.api.core.v1"] == ""


def test_go_slice_types_decode_to_plain_lists() -> None:
    extra = length(1, "scopes") + length(2, length(1, "read") + length(1, "write"))  # map<string, ExtraValue>
    review_spec = length(3, "alice") + length(5, extra)
    review = protobuf.decode(envelope("authorization.k8s.io/v1", "SubjectAccessReview",
                                      metadata("") + length(2, review_spec)))
    assert review["spec"] == {"user": "alice", "extra": {"scopes": ["read", "write"]}}
    verbs = length(1, "get") + length(1, "list")
    resource = length(1, "pods") + number(2, 1) + length(3, "Pod") + length(4, verbs)
    decoded = protobuf.decode_message("k8s.io.apimachinery.pkg.apis.meta.v1.APIResource", resource)
    assert decoded == {"name": "pods", "namespaced": True, "kind": "Pod", "verbs": ["get", "list"]}
