"""The facts of this machine a node reports: capacity, allocatable, system info, addresses, pressure.

Everything is read from /proc, /sys and a statvfs, with no subprocess: cheap enough for every status
update. Quantities are written as Kubernetes serializes them (``24684092Ki``, ``1900m``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import platform
import socket
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from microkube.apiserver.quantity import parse_quantity
from microkube.apiserver.quota import BINARY_SI, DECIMAL_SI, format_quantity

PROC = Path("/proc")
SYS = Path("/sys")
MIB = 1024 * 1024
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
                  "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386",
                  "i386": "386"}
#: Resources counted in bytes (printed in binary units), the others in decimal units.
_BYTE_RESOURCES = ("memory", "ephemeral-storage")
#: The address whose route tells the node's primary IPv4 (TEST-NET-3): a UDP connect() only looks the
#: route up and sends nothing.
_ROUTE_PROBE = ("203.0.113.1", 9)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out: dict[str, int] = {}
    for line in (_read(PROC / "meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[name] = int(fields[0]) * (1024 if len(fields) > 1 and fields[1] == "kB" else 1)
    return out


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours the cpuset this process is confined to
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _hugepages() -> dict[str, str]:
    """``hugepages-2Mi`` → total bytes of that page size reserved, for every page size the kernel offers."""
    out: dict[str, str] = {}
    base = SYS / "kernel" / "mm" / "hugepages"
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return out
    for entry in entries:
        size = entry.name.removeprefix("hugepages-").removesuffix("kB")
        if not size.isdigit():
            continue
        size_bytes = int(size) * 1024
        count = (_read(entry / "nr_hugepages") or "0").strip()
        total = size_bytes * (int(count) if count.isdigit() else 0)
        out[f"hugepages-{format_quantity(Decimal(size_bytes), BINARY_SI)}"] = format_quantity(Decimal(total),
                                                                                              BINARY_SI)
    return out


def capacity(root_dir: Path, max_pods: int = 110) -> dict[str, str]:
    """cpu, memory, ephemeral-storage (the filesystem of ``root_dir``), pods and hugepages-<size>."""
    if max_pods < 1:
        raise ValueError(f"maxPods: {max_pods} must be at least 1")
    disk = os.statvfs(root_dir)
    out = {
        "cpu": str(_cpus()),
        "memory": format_quantity(Decimal(meminfo().get("MemTotal", 0)), BINARY_SI),
        "ephemeral-storage": format_quantity(Decimal(disk.f_blocks * disk.f_frsize), BINARY_SI),
        "pods": str(max_pods),
    }
    out.update(_hugepages())
    return out


def allocatable(capacity: dict[str, str], reserved: dict[str, str] | None = None,
                eviction_memory: str = "100Mi", eviction_nodefs: str = "10%") -> dict[str, str]:
    """Capacity less what is reserved for the system and kubelet (``reserved``, e.g. kubeReserved plus
    systemReserved) and the hard eviction thresholds (memory.available, nodefs.available), never below 0."""
    minus: dict[str, Decimal] = {}
    for name, text in (reserved or {}).items():
        try:
            minus[name] = minus.get(name, Decimal(0)) + parse_quantity(text)
        except ValueError as exc:
            raise ValueError(f"reserved[{name}]: {exc}") from None
    try:
        minus["memory"] = minus.get("memory", Decimal(0)) + parse_quantity(eviction_memory)
    except ValueError as exc:
        raise ValueError(f"evictionHard memory.available: {exc}") from None
    if "ephemeral-storage" in capacity:
        total = parse_quantity(capacity["ephemeral-storage"])
        try:
            nodefs = (total * Decimal(eviction_nodefs[:-1]) / 100 if eviction_nodefs.endswith("%")
                      else parse_quantity(eviction_nodefs))
        except (ValueError, ArithmeticError):
            raise ValueError(f"evictionHard nodefs.available: {eviction_nodefs!r} is not a quantity or a "
                             "percentage such as 10%") from None
        minus["ephemeral-storage"] = minus.get("ephemeral-storage", Decimal(0)) + nodefs.to_integral_value()
    out: dict[str, str] = {}
    for name, text in capacity.items():
        value = max(Decimal(0), parse_quantity(text) - minus.get(name, Decimal(0)))
        binary = name in _BYTE_RESOURCES or name.startswith("hugepages-")
        out[name] = format_quantity(value, BINARY_SI if binary else DECIMAL_SI)
    return out


def _os_image() -> str:
    for line in (_read(Path("/etc/os-release")) or "").splitlines():
        key, _, value = line.partition("=")
        if key == "PRETTY_NAME":
            return value.strip().strip('"').strip("'")
    return "Linux"


def node_info(runtime_version: str, kubelet_version: str) -> dict[str, str]:
    """status.nodeInfo: machineID, systemUUID, bootID, kernel, OS image, versions, OS and architecture."""
    machine_id = (_read(Path("/etc/machine-id")) or "").strip()
    system_uuid = (_read(SYS / "class" / "dmi" / "id" / "product_uuid") or "").strip()
    if not system_uuid:
        # No readable DMI (VMs without firmware tables): a stable UUID derived from the machine id.
        seed = machine_id or socket.gethostname()
        system_uuid = str(uuid.UUID(bytes=hashlib.sha256(seed.encode()).digest()[:16], version=4))
    machine = platform.machine()
    return {
        "machineID": machine_id,
        "systemUUID": system_uuid,
        "bootID": (_read(PROC / "sys" / "kernel" / "random" / "boot_id") or "").strip(),
        "kernelVersion": platform.release(),
        "osImage": _os_image(),
        "containerRuntimeVersion": runtime_version,
        "kubeletVersion": kubelet_version,
        "kubeProxyVersion": kubelet_version,
        "operatingSystem": "linux",
        "architecture": _ARCHITECTURES.get(machine, machine.lower()),
    }


def _route_source() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_ROUTE_PROBE)
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address in ("0.0.0.0", "") or address.startswith("127.") else address


def _local_ipv4() -> str | None:
    """The first non-loopback local IPv4 address in the kernel's routing tables (/proc/net/fib_trie)."""
    last = None
    for line in (_read(PROC / "net" / "fib_trie") or "").splitlines():
        text = line.strip()
        if text.startswith(("|--", "+--")):
            last = text[3:].strip().split("/")[0]
        elif text.startswith("/32 host LOCAL") and last:
            try:
                address = ipaddress.IPv4Address(last)
            except ValueError:
                continue
            if not address.is_loopback and not address.is_link_local:
                return str(address)
    return None


def addresses(hostname: str, node_ip: str | None) -> list[dict[str, str]]:
    """status.addresses: the InternalIP (``node_ip`` when given) and the Hostname."""
    if node_ip:
        try:
            internal = str(ipaddress.ip_address(node_ip))
        except ValueError:
            raise ValueError(f"nodeIP: {node_ip!r} is not an IP address") from None
    else:
        internal = _route_source() or _local_ipv4() or "127.0.0.1"
    return [{"type": "InternalIP", "address": internal}, {"type": "Hostname", "address": hostname}]


@dataclass(frozen=True)
class Thresholds:
    """When a pressure condition turns True (kubelet's default hard eviction thresholds)."""

    memory_available: int = 100 * MIB  # bytes
    nodefs_available: float = 0.10  # share of the filesystem's blocks
    nodefs_inodes_free: float = 0.05  # share of its inodes
    pid_available: float = 0.10  # share of the maximum number of processes


_CONDITIONS = {
    "MemoryPressure": (("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                       ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available")),
    "DiskPressure": (("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                     ("KubeletHasDiskPressure", "kubelet has disk pressure")),
    "PIDPressure": (("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    ("KubeletHasInsufficientPID", "kubelet has insufficient PID available")),
}


def _condition(kind: str, pressure: bool) -> dict[str, str]:
    reason, message = _CONDITIONS[kind][1 if pressure else 0]
    return {"type": kind, "status": "True" if pressure else "False", "reason": reason, "message": message}


def pid_usage() -> tuple[int, int]:
    """(threads in use, the most the kernel allows: min of pid_max and threads-max)."""
    limits = [int(text) for name in ("pid_max", "threads-max")
              if (text := (_read(PROC / "sys" / "kernel" / name) or "").strip()).isdigit()]
    fields = (_read(PROC / "loadavg") or "").split()
    running = int(fields[3].split("/")[1]) if len(fields) > 3 and "/" in fields[3] else 0
    return running, min(limits) if limits else 0


def pressure_conditions(root_dir: Path, thresholds: Thresholds | None = None) -> list[dict[str, str]]:
    """MemoryPressure, DiskPressure and PIDPressure with kubelet's reasons and messages."""
    limits = thresholds or Thresholds()
    available = meminfo().get("MemAvailable")
    memory = available is not None and available < limits.memory_available
    disk_stats = os.statvfs(root_dir)
    disk = bool(disk_stats.f_blocks) and disk_stats.f_bavail < disk_stats.f_blocks * limits.nodefs_available
    disk = disk or (bool(disk_stats.f_files) and disk_stats.f_favail < disk_stats.f_files * limits.nodefs_inodes_free)
    used, most = pid_usage()
    pids = bool(most) and most - used < most * limits.pid_available
    return [_condition("MemoryPressure", memory), _condition("DiskPressure", disk), _condition("PIDPressure", pids)]
