"""cni/1.1 data types: the spec's JSON shapes, error codes and request validation."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from microkube_interfaces.cni import (
    DNS,
    SPEC_VERSION,
    Attachment,
    AttachmentRequest,
    CNIError,
    CNIPlugin,
    ErrorCode,
    Interface,
    IPConfig,
    NetworkAttacher,
    PortMapping,
    Result,
    Route,
    RuntimeConfig,
    VersionResult,
)
from microkube_interfaces.errors import MicrokubeError
from microkube_interfaces.versioning import INTERFACE_VERSIONS


def test_reserved_error_codes_match_the_spec() -> None:
    assert {c.name: int(c) for c in ErrorCode if c < 100} == {
        "INCOMPATIBLE_VERSION": 1, "UNSUPPORTED_FIELD": 2, "UNKNOWN_CONTAINER": 3, "INVALID_ENVIRONMENT": 4,
        "IO_FAILURE": 5, "DECODING_FAILURE": 6, "INVALID_NETWORK_CONFIG": 7, "TRY_AGAIN_LATER": 11,
        "PLUGIN_NOT_AVAILABLE": 50, "LIMITED_CONNECTIVITY": 51,
    }
    assert all(c >= 100 for c in ErrorCode if c.name in ("ATTACHMENT_EXISTS", "ATTACHMENT_BROKEN", "NO_ADDRESSES"))


def test_error_json_is_the_spec_error_object() -> None:
    error = CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Invalid Configuration", "Network 192.168.0.0/31 too small")
    assert isinstance(error, MicrokubeError)
    assert json.loads(error.to_json()) == {"cniVersion": "1.1.0", "code": 7, "msg": "Invalid Configuration",
                                           "details": "Network 192.168.0.0/31 too small"}
    assert "7" in str(error) and "too small" in str(error)
    back = CNIError.from_json(error.to_json())
    assert (back.code, back.msg, back.details) == (ErrorCode.INVALID_NETWORK_CONFIG, error.msg, error.details)
    assert CNIError(ErrorCode.TRY_AGAIN_LATER, "busy").retryable
    assert not CNIError(5, "io").retryable
    plugin_specific = CNIError(250, "vendor")
    assert plugin_specific.code == 250 and json.loads(plugin_specific.to_json()) == {
        "cniVersion": "1.1.0", "code": 250, "msg": "vendor"}


def test_error_decoding_failures_are_code_6() -> None:
    with pytest.raises(CNIError) as info:
        CNIError.from_json("{not json")
    assert info.value.code == ErrorCode.DECODING_FAILURE
    with pytest.raises(CNIError) as info:
        Result.from_json("[1]")
    assert info.value.code == ErrorCode.DECODING_FAILURE
    with pytest.raises(CNIError) as info:
        Result.from_json({"ips": []})
    assert info.value.code == ErrorCode.DECODING_FAILURE


def _result() -> Result:
    return Result(
        interfaces=(Interface("mkbr0", mac="aa:bb:cc:dd:ee:01"), Interface("mk1234", mac="aa:bb:cc:dd:ee:02"),
                    Interface("eth0", mac="aa:bb:cc:dd:ee:03", sandbox="/run/netns/pod1")),
        ips=(IPConfig("10.99.0.2/24", gateway="10.99.0.1", interface=2),),
        routes=(Route("0.0.0.0/0", gw="10.99.0.1"), Route("10.0.0.0/8", priority=5, mtu=1400)),
        dns=DNS(nameservers=("10.96.0.10",), search=("default.svc.cluster.local",)),
    )


def test_result_json_has_the_spec_shape() -> None:
    assert json.loads(_result().to_json()) == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "mkbr0", "mac": "aa:bb:cc:dd:ee:01"}, {"name": "mk1234", "mac": "aa:bb:cc:dd:ee:02"},
                       {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/pod1"}],
        "ips": [{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}, {"dst": "10.0.0.0/8", "mtu": 1400, "priority": 5}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]},
    }
    assert json.loads(Result().to_json()) == {"cniVersion": SPEC_VERSION, "dns": {}}


def test_result_round_trips_and_names_addresses() -> None:
    result = _result()
    assert Result.from_json(result.to_json()) == result
    assert Result.from_json(result.to_dict()) == result
    assert result.addresses() == ["10.99.0.2"]
    # interface index 0 is kept (it is not "unset")
    assert IPConfig("10.0.0.2/24", interface=0).to_dict() == {"address": "10.0.0.2/24", "interface": 0}


def test_version_result() -> None:
    assert json.loads(VersionResult().to_json()) == {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}
    assert INTERFACE_VERSIONS["cni"] == ("1.1",)


def test_runtime_config_port_mappings() -> None:
    raw = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
                            {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}],
           "bandwidth": {"ingressRate": 1000}}
    config = RuntimeConfig.from_dict(raw)
    assert config.port_mappings == (PortMapping(8080, 80, "tcp"), PortMapping(53, 53, "udp", "127.0.0.1"))
    assert config.extra == {"bandwidth": {"ingressRate": 1000}}
    assert config.to_dict()["portMappings"][1] == {"hostPort": 53, "containerPort": 53, "protocol": "udp",
                                                   "hostIP": "127.0.0.1"}
    with pytest.raises(CNIError) as info:
        RuntimeConfig.from_dict({"portMappings": [{"hostPort": "x"}]})
    assert info.value.code == ErrorCode.DECODING_FAILURE


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"container_id": ""}, ErrorCode.INVALID_ENVIRONMENT),
        ({"container_id": "../etc"}, ErrorCode.INVALID_ENVIRONMENT),
        ({"ifname": ""}, ErrorCode.INVALID_ENVIRONMENT),
        ({"ifname": "a" * 16}, ErrorCode.INVALID_ENVIRONMENT),
        ({"ifname": ".."}, ErrorCode.INVALID_ENVIRONMENT),
        ({"ifname": "eth/0"}, ErrorCode.INVALID_ENVIRONMENT),
        ({"ifname": "eth 0"}, ErrorCode.INVALID_ENVIRONMENT),
        ({"netns": ""}, ErrorCode.INVALID_ENVIRONMENT),
        ({"cni_version": "0.3.1"}, ErrorCode.INCOMPATIBLE_VERSION),
    ],
)
def test_request_validation(changes: dict[str, Any], code: ErrorCode) -> None:
    fields: dict[str, Any] = {"container_id": "abc123", "netns": "/run/netns/x", "ifname": "eth0", **changes}
    with pytest.raises(CNIError) as info:
        AttachmentRequest(**fields).validate()
    assert info.value.code == code


def test_valid_request_and_del_without_netns() -> None:
    request = AttachmentRequest("abc-123_x.y", "", "net1", args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "p"})
    request.validate(need_netns=False)
    assert request.cni_args() == "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"
    assert Attachment("abc").to_dict() == {"containerID": "abc", "ifname": "eth0"}


class _Fake:
    async def add(self, request: AttachmentRequest) -> Result:
        return Result()

    async def delete(self, request: AttachmentRequest) -> None:
        return None

    async def check(self, request: AttachmentRequest, previous: Result | None = None) -> None:
        return None

    async def status(self) -> None:
        return None

    async def gc(self, valid: Sequence[Attachment]) -> None:
        return None

    async def version(self) -> VersionResult:
        return VersionResult()


def test_protocols_are_role_cut_and_runtime_checkable() -> None:
    def factory(options: Mapping[str, Any]) -> CNIPlugin:
        return _Fake()

    plugin = factory({})
    assert isinstance(plugin, CNIPlugin)
    assert isinstance(plugin, NetworkAttacher)
    assert not isinstance(object(), NetworkAttacher)
