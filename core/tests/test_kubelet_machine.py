"""The node's machine facts, read from this machine: values parse and are sane; pressure from chosen thresholds."""

from __future__ import annotations

import ipaddress
import os
import platform
import re
from decimal import Decimal
from pathlib import Path

import pytest

from microkube.apiserver.quantity import parse_quantity
from microkube.kubelet import machine
from microkube.kubelet.machine import Thresholds


def test_capacity_matches_the_machine(tmp_path: Path) -> None:
    cap = machine.capacity(tmp_path, max_pods=50)
    assert {"cpu", "memory", "ephemeral-storage", "pods"} <= set(cap)
    assert int(cap["cpu"]) == len(os.sched_getaffinity(0))
    assert cap["pods"] == "50"
    mem_total_kib = int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    assert parse_quantity(cap["memory"]) == mem_total_kib * 1024
    assert re.fullmatch(r"\d+(Ki|Mi|Gi)?", cap["memory"])
    disk = os.statvfs(tmp_path)
    assert parse_quantity(cap["ephemeral-storage"]) == disk.f_blocks * disk.f_frsize
    for name, value in cap.items():
        if name.startswith("hugepages-"):
            assert re.fullmatch(r"hugepages-\d+(Ki|Mi|Gi)", name) and parse_quantity(value) >= 0
    if Path("/sys/kernel/mm/hugepages/hugepages-2048kB").exists():
        assert "hugepages-2Mi" in cap
    with pytest.raises(ValueError, match="maxPods"):
        machine.capacity(tmp_path, max_pods=0)


def test_allocatable_subtracts_reservations_and_eviction() -> None:
    cap = {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1000Mi", "pods": "110", "hugepages-2Mi": "0"}
    alloc = machine.allocatable(cap, {"cpu": "100m", "memory": "156Mi"})
    assert alloc == {"cpu": "1900m", "memory": "3840Mi", "ephemeral-storage": "900Mi", "pods": "110",
                     "hugepages-2Mi": "0"}
    assert machine.allocatable(cap)["memory"] == "3996Mi"
    assert machine.allocatable({"cpu": "1", "memory": "50Mi"})["memory"] == "0"  # never negative
    with pytest.raises(ValueError, match=r"reserved\[cpu\]"):
        machine.allocatable(cap, {"cpu": "lots"})
    with pytest.raises(ValueError, match=r"nodefs\.available"):
        machine.allocatable(cap, eviction_nodefs="x%")


def test_allocatable_of_the_real_capacity(tmp_path: Path) -> None:
    cap = machine.capacity(tmp_path)
    alloc = machine.allocatable(cap)
    assert parse_quantity(alloc["memory"]) == parse_quantity(cap["memory"]) - 100 * 1024 * 1024
    assert Decimal(0) < parse_quantity(alloc["ephemeral-storage"]) < parse_quantity(cap["ephemeral-storage"])


def test_node_info() -> None:
    info = machine.node_info("runc://1.1.5", "v1.32.0")
    assert info["machineID"] == Path("/etc/machine-id").read_text().strip()
    assert re.fullmatch(r"[0-9a-fA-F-]{36}", info["systemUUID"])
    assert info["systemUUID"] == machine.node_info("x", "y")["systemUUID"]  # stable
    assert info["bootID"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert info["kernelVersion"] == platform.release()
    assert info["osImage"] and info["osImage"] != "Linux"
    assert info["containerRuntimeVersion"] == "runc://1.1.5" and info["kubeletVersion"] == "v1.32.0"
    assert info["operatingSystem"] == "linux"
    assert info["architecture"] in ("amd64", "arm64")


def test_addresses() -> None:
    given = machine.addresses("node-a", "10.1.2.3")
    assert given == [{"type": "InternalIP", "address": "10.1.2.3"}, {"type": "Hostname", "address": "node-a"}]
    found = machine.addresses("node-a", None)
    assert found[0]["type"] == "InternalIP" and found[1] == {"type": "Hostname", "address": "node-a"}
    assert ipaddress.ip_address(found[0]["address"]).version == 4
    with pytest.raises(ValueError, match="nodeIP"):
        machine.addresses("node-a", "not-an-ip")


def test_pressure_conditions(tmp_path: Path) -> None:
    calm = machine.pressure_conditions(tmp_path, Thresholds(memory_available=0, nodefs_available=0,
                                                            nodefs_inodes_free=0, pid_available=0))
    assert [c["type"] for c in calm] == ["MemoryPressure", "DiskPressure", "PIDPressure"]
    assert all(c["status"] == "False" for c in calm)
    assert calm[0]["reason"] == "KubeletHasSufficientMemory"
    assert calm[0]["message"] == "kubelet has sufficient memory available"
    assert calm[1]["reason"] == "KubeletHasNoDiskPressure" and calm[2]["reason"] == "KubeletHasSufficientPID"

    stressed = machine.pressure_conditions(tmp_path, Thresholds(memory_available=2**62, nodefs_available=1.01,
                                                                nodefs_inodes_free=0, pid_available=1.01))
    assert all(c["status"] == "True" for c in stressed)
    assert [c["reason"] for c in stressed] == ["KubeletHasInsufficientMemory", "KubeletHasDiskPressure",
                                               "KubeletHasInsufficientPID"]
    assert stressed[1]["message"] == "kubelet has disk pressure"
    assert stressed[2]["message"] == "kubelet has insufficient PID available"
    inodes = machine.pressure_conditions(tmp_path, Thresholds(nodefs_available=0, nodefs_inodes_free=1.01))
    assert inodes[1]["status"] == "True" or os.statvfs(tmp_path).f_files == 0

    used, most = machine.pid_usage()
    assert 0 < used < most
