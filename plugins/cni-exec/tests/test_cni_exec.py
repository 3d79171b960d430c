"""cni-exec against fake CNI plugins (small Python executables that log what they were given): environment and
stdin per spec section 2 and 3, prevResult chaining, reverse DEL, the result cache, version negotiation, STATUS
and GC for 1.1 plugins and their fallbacks for older ones, error decoding. No root needed."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from microkube_cni import CNIExec, NetworkConfigList
from microkube_cni import plugin as cni_plugin_module
from microkube_interfaces import Registrar
from microkube_interfaces.cni import (
    Attachment,
    AttachmentRequest,
    CNIError,
    CNIPlugin,
    ErrorCode,
    PortMapping,
    RuntimeConfig,
)

FAKE = """#!{python}
import json, os, sys
VERSIONS = {versions!r}
cmd = os.environ.get("CNI_COMMAND")
conf = json.load(sys.stdin)
if cmd == "VERSION":
    if VERSIONS is None:
        sys.exit(1)
    print(json.dumps({{"cniVersion": conf["cniVersion"], "supportedVersions": VERSIONS}}))
    sys.exit(0)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_") or k == "PATH"}}
with open(conf["log"], "a") as log:
    log.write(json.dumps({{"type": os.path.basename(sys.argv[0]), "env": env, "conf": conf}}) + "\\n")
fail = conf.get("fail", {{}}).get(cmd)
if fail == "garbage":
    print("something broke", file=sys.stderr)
    sys.exit(2)
if fail:
    print(json.dumps({{"cniVersion": conf["cniVersion"], **fail}}))
    sys.exit(1)
if cmd == "ADD":
    result = dict(conf.get("prevResult") or {{"interfaces": [], "ips": [], "dns": {{}}}})
    result["cniVersion"] = conf["cniVersion"]
    if conf.get("address"):
        result["interfaces"] = result.get("interfaces", []) + [
            {{"name": env["CNI_IFNAME"], "sandbox": env["CNI_NETNS"], "mac": "02:00:00:00:00:01"}}]
        result["ips"] = result.get("ips", []) + [
            {{"address": conf["address"], "gateway": "10.0.0.1", "interface": len(result["interfaces"]) - 1}}]
    print(json.dumps(result))
"""


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.log = tmp / "log.jsonl"
        self.cache = tmp / "cache"
        self.netns = tmp / "netns"
        self.netns.write_text("")

    def fake(self, name: str, versions: Sequence[str] | None = ("0.4.0", "1.0.0", "1.1.0")) -> None:
        path = self.bin / name
        path.write_text(FAKE.format(python=sys.executable, versions=None if versions is None else list(versions)))
        path.chmod(0o755)

    def network(self, *plugins: dict[str, Any], version: str = "1.1.0", **top: Any) -> CNIExec:
        conf = {"cniVersion": version, "name": "fakenet",
                "plugins": [{**p, "log": str(self.log)} for p in plugins], **top}
        return CNIExec.from_options({"conflist": conf, "binDir": str(self.bin), "cacheDir": str(self.cache)})

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        self.log.unlink()
        return calls

    def request(self, container_id: str = "c1", **kwargs: Any) -> AttachmentRequest:
        return AttachmentRequest(container_id, str(self.netns), **kwargs)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    e.fake("main")
    e.fake("chained")
    return e


def two(env: Env, **top: Any) -> CNIExec:
    return env.network({"type": "main", "address": "10.0.0.5/24", "custom": {"kept": True}},
                       {"type": "chained", "capabilities": {"portMappings": True}}, **top)


async def test_add_runs_the_list_in_order_with_the_spec_environment(env: Env) -> None:
    network = two(env)
    assert isinstance(network, CNIPlugin)
    request = env.request(args={"K8S_POD_NAME": "web", "IgnoreUnknown": "1"},
                          runtime_config=RuntimeConfig(port_mappings=(PortMapping(8080, 80),)))
    result = await network.add(request)
    assert result.cni_version == "1.1.0"
    assert result.addresses() == ["10.0.0.5"]
    assert result.interfaces[0].sandbox == str(env.netns)
    first, second = env.calls()
    assert [first["type"], second["type"]] == ["main", "chained"]
    for call in (first, second):
        assert call["env"]["CNI_COMMAND"] == "ADD"
        assert call["env"]["CNI_CONTAINERID"] == "c1"
        assert call["env"]["CNI_NETNS"] == str(env.netns)
        assert call["env"]["CNI_IFNAME"] == "eth0"
        assert call["env"]["CNI_ARGS"] == "K8S_POD_NAME=web;IgnoreUnknown=1"
        assert call["env"]["CNI_PATH"] == str(env.bin)
        assert call["env"]["PATH"]
        assert call["conf"]["cniVersion"] == "1.1.0"
        assert call["conf"]["name"] == "fakenet"
        assert "capabilities" not in call["conf"]
    assert "prevResult" not in first["conf"]  # section 3: not set for the first ADD in a chain
    assert "runtimeConfig" not in first["conf"]  # main declares no capability
    assert first["conf"]["custom"] == {"kept": True}  # unknown fields pass through
    assert second["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                                                  "protocol": "tcp"}]}
    assert second["conf"]["prevResult"]["ips"][0]["address"] == "10.0.0.5/24"
    cached = json.loads((env.cache / "results" / "fakenet-c1-eth0").read_text())
    assert cached["kind"] == "cniCacheV1"
    assert (cached["containerId"], cached["ifName"], cached["networkName"]) == ("c1", "eth0", "fakenet")
    assert cached["result"]["ips"][0]["address"] == "10.0.0.5/24"
    assert cached["cniArgs"] == [["K8S_POD_NAME", "web"], ["IgnoreUnknown", "1"]]


async def test_del_runs_in_reverse_with_the_cached_result_then_forgets_it(env: Env) -> None:
    network = two(env)
    request = env.request()
    await network.add(request)
    final = env.calls()[-1]
    await network.delete(request)
    calls = env.calls()
    assert [c["type"] for c in calls] == ["chained", "main"]
    assert all(c["env"]["CNI_COMMAND"] == "DEL" for c in calls)
    assert all(c["conf"]["prevResult"]["ips"] == final["conf"]["prevResult"]["ips"] for c in calls)
    assert not (env.cache / "results" / "fakenet-c1-eth0").exists()
    await network.delete(request)  # again: no cached result, no prevResult
    assert all("prevResult" not in c["conf"] for c in env.calls())
    await network.delete(AttachmentRequest("c1", ""))  # CNI_NETNS is optional for DEL
    assert {c["env"]["CNI_NETNS"] for c in env.calls()} == {""}


async def test_check_runs_in_order_with_the_cached_result(env: Env) -> None:
    network = two(env)
    request = env.request()
    result = await network.add(request)
    env.calls()
    await network.check(request)
    calls = env.calls()
    assert [c["type"] for c in calls] == ["main", "chained"]
    assert all(c["env"]["CNI_COMMAND"] == "CHECK" and c["conf"]["prevResult"]["ips"] for c in calls)
    await network.delete(request)
    env.calls()
    with pytest.raises(CNIError) as info:
        await network.check(request)
    assert info.value.code == ErrorCode.UNKNOWN_CONTAINER
    await network.check(request, result)  # no cache, but the caller's previous result
    assert env.calls()[0]["conf"]["prevResult"]["ips"][0]["address"] == "10.0.0.5/24"
    disabled = two(env, disableCheck=True)
    await disabled.check(request)
    assert env.calls() == []


async def test_second_add_of_an_attachment_is_refused(env: Env) -> None:
    network = two(env)
    await network.add(env.request())
    env.calls()
    with pytest.raises(CNIError) as info:
        await network.add(env.request())
    assert info.value.code == ErrorCode.ATTACHMENT_EXISTS
    assert env.calls() == []
    await network.add(env.request(ifname="net1"))  # another interface of the same container is fine


async def test_plugin_errors_are_decoded(env: Env) -> None:
    network = env.network({"type": "main", "fail": {"ADD": {"code": 7, "msg": "Invalid Configuration",
                                                             "details": "Network too small"}}})
    with pytest.raises(CNIError) as info:
        await network.add(env.request())
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert info.value.msg == "Invalid Configuration"
    assert "Network too small" in info.value.details
    assert "plugin main, ADD" in info.value.details
    assert not (env.cache / "results").exists() or not list((env.cache / "results").iterdir())
    garbage = env.network({"type": "main", "fail": {"DEL": "garbage"}})
    with pytest.raises(CNIError) as info:
        await garbage.delete(env.request())
    assert info.value.code == ErrorCode.INTERNAL
    assert "something broke" in info.value.details
    custom = env.network({"type": "main", "fail": {"ADD": {"code": 123, "msg": "vendor"}}})
    with pytest.raises(CNIError) as info:
        await custom.add(env.request())
    assert info.value.code == 123


async def test_chain_stops_at_the_first_failing_plugin(env: Env) -> None:
    network = env.network({"type": "main", "fail": {"ADD": {"code": 11, "msg": "busy"}}}, {"type": "chained"})
    with pytest.raises(CNIError) as info:
        await network.add(env.request())
    assert info.value.retryable
    assert [c["type"] for c in env.calls()] == ["main"]


async def test_old_plugins_get_1_0_and_status_gc_degrade(env: Env) -> None:
    env.fake("main", ["0.3.1", "0.4.0", "1.0.0"])
    network = two(env)
    keep, stale = env.request("keep"), env.request("stale")
    result = await network.add(keep)
    await network.add(stale)
    assert result.cni_version == "1.1.0"  # the caller's version, converted from the plugins' 1.0.0
    assert {c["conf"]["cniVersion"] for c in env.calls()} == {"1.0.0"}
    await network.status()  # 1.0 plugins know no STATUS: only the binaries are checked
    assert env.calls() == []
    await network.gc([Attachment("keep", "eth0")])
    calls = env.calls()
    assert [(c["type"], c["env"]["CNI_COMMAND"], c["env"]["CNI_CONTAINERID"]) for c in calls] == [
        ("chained", "DEL", "stale"), ("main", "DEL", "stale")]
    assert calls[0]["conf"]["prevResult"]["ips"]
    assert (env.cache / "results" / "fakenet-keep-eth0").exists()
    assert not (env.cache / "results" / "fakenet-stale-eth0").exists()
    await network.gc([Attachment("keep", "eth0")])
    assert env.calls() == []


async def test_1_1_plugins_get_status_and_gc(env: Env) -> None:
    network = two(env)
    await network.add(env.request("keep"))
    await network.add(env.request("stale"))
    env.calls()
    await network.status()
    calls = env.calls()
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls] == [("main", "STATUS"), ("chained", "STATUS")]
    assert "CNI_CONTAINERID" not in calls[0]["env"]
    await network.gc([Attachment("keep", "eth0")])
    calls = env.calls()
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls] == [("main", "GC"), ("chained", "GC")]
    for call in calls:
        assert call["conf"]["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
        assert "prevResult" not in call["conf"]
        assert "runtimeConfig" not in call["conf"]
        assert call["env"]["CNI_PATH"] == str(env.bin)
    assert (env.cache / "results" / "fakenet-keep-eth0").exists()
    assert not (env.cache / "results" / "fakenet-stale-eth0").exists()
    await two(env, disableGC=True).gc([])
    assert env.calls() == []


async def test_gc_continues_past_errors_and_reports_them(env: Env) -> None:
    network = env.network({"type": "main", "fail": {"GC": {"code": 5, "msg": "disk"}}}, {"type": "chained"})
    with pytest.raises(CNIError) as info:
        await network.gc([])
    assert info.value.code == ErrorCode.IO_FAILURE
    assert [c["type"] for c in env.calls()] == ["main", "chained"]


async def test_status_failure_of_a_1_1_plugin_is_reported(env: Env) -> None:
    network = env.network({"type": "main", "fail": {"STATUS": {"code": 50, "msg": "no addresses"}}})
    with pytest.raises(CNIError) as info:
        await network.status()
    assert info.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE


async def test_missing_binary_and_incompatible_versions(env: Env) -> None:
    missing = env.network({"type": "nosuch"})
    for call in (missing.status(), missing.add(env.request())):
        with pytest.raises(CNIError) as info:
            await call
        assert info.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE
    env.fake("old", ["0.3.0", "0.3.1"])
    old = env.network({"type": "old"})
    with pytest.raises(CNIError) as info:
        await old.add(env.request())
    assert info.value.code == ErrorCode.INCOMPATIBLE_VERSION
    with pytest.raises(CNIError) as info:
        await old.status()
    assert info.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE
    env.fake("mute", None)  # no VERSION answer: treated as a 0.1.0 plugin
    with pytest.raises(CNIError) as info:
        await env.network({"type": "mute"}).add(env.request())
    assert info.value.code == ErrorCode.INCOMPATIBLE_VERSION
    with pytest.raises(CNIError) as info:
        await env.network({"type": "main"}).add(env.request(cni_version="0.4.0"))
    assert info.value.code == ErrorCode.INCOMPATIBLE_VERSION


async def test_cni_versions_pick_the_highest_shared(env: Env) -> None:
    env.fake("main", ["1.0.0"])
    network = env.network({"type": "main", "address": "10.0.0.9/24"}, version="1.0.0", cniVersions=["1.0.0", "1.1.0"])
    await network.add(env.request())
    assert env.calls()[0]["conf"]["cniVersion"] == "1.0.0"
    assert (await network.version()).supported_versions == ("1.0.0", "1.1.0")


async def test_capability_nobody_declares_is_refused(env: Env) -> None:
    network = env.network({"type": "main"})
    with pytest.raises(CNIError) as info:
        await network.add(env.request(runtime_config=RuntimeConfig(port_mappings=(PortMapping(80, 80),))))
    assert info.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert "portMappings" in info.value.details


def test_options_and_config_files(tmp_path: Path) -> None:
    conf = tmp_path / "10-net.conf"
    conf.write_text(json.dumps({"cniVersion": "1.0.0", "name": "single", "type": "bridge", "bridge": "x"}))
    loaded = NetworkConfigList.load(conf)
    assert (loaded.name, [p["type"] for p in loaded.plugins]) == ("single", ["bridge"])
    assert loaded.versions() == ["1.0.0"]
    network = CNIExec.from_options({"conflist": str(conf), "binDir": "/a:/b", "cacheDir": str(tmp_path)})
    assert network.bin_dirs == ("/a", "/b")
    bad = tmp_path / "bad.conflist"
    bad.write_text("{not json")
    for options, code in (({"conflist": str(bad)}, ErrorCode.DECODING_FAILURE),
                          ({"conflist": str(tmp_path / "missing")}, ErrorCode.IO_FAILURE),
                          ({"conflist": str(conf), "bogus": 1}, ErrorCode.UNSUPPORTED_FIELD),
                          ({}, ErrorCode.INVALID_NETWORK_CONFIG)):
        with pytest.raises(CNIError) as info:
            CNIExec.from_options(options)
        assert info.value.code == code, options


def test_registers_as_cni_exec() -> None:
    registrar = Registrar()
    cni_plugin_module.microkube_register(registrar)
    registration = registrar.networks.get("cni-exec")
    assert registration.plugin == "cni-exec"
    assert registration.versions == ("1.1",)
    assert cni_plugin_module.microkube_plugin_info().interfaces == {"cni": ("1.1",)}
