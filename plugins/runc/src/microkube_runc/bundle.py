"""OCI runtime spec (``config.json``) generation for pause and workload containers."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from microkube_interfaces import cri
from microkube_interfaces.errors import Invalid

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Capability numbers → names (linux/capability.h).
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
#: Docker's (and containerd's) default set.
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def bounding_capabilities() -> tuple[str, ...]:
    """The capabilities in this process's bounding set (what a privileged container may get)."""
    mask = (1 << len(CAPABILITIES)) - 1
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
    return tuple(name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1)


def _cap(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def capability_set(security: cri.LinuxContainerSecurityContext) -> list[str]:
    available = bounding_capabilities()
    if security.privileged:
        return [_cap(c) for c in available]
    caps = {_cap(c) for c in DEFAULT_CAPABILITIES}
    added = {c.upper() for c in security.capabilities.add_capabilities}
    dropped = {c.upper() for c in security.capabilities.drop_capabilities}
    if "ALL" in dropped:
        caps = set()
    if "ALL" in added:
        caps = {_cap(c) for c in available}
    caps |= {_cap(c) for c in added - {"ALL"}}
    caps -= {_cap(c) for c in dropped - {"ALL"}}
    allowed = {_cap(c) for c in available}
    return sorted(caps & allowed)


def standard_mounts(*, privileged: bool = False, cgroup: bool = True) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
    ]
    if cgroup:
        mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"]})
    return mounts


def bind_mount(mount: cri.Mount) -> dict[str, Any]:
    if not mount.container_path.startswith("/"):
        raise Invalid.field("mounts.containerPath", f"must be absolute: {mount.container_path!r}")
    if not os.path.exists(mount.host_path):
        raise Invalid.field("mounts.hostPath", f"does not exist: {mount.host_path!r}")
    propagation = {
        cri.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
        cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
        cri.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
    }[mount.propagation]
    return {"destination": mount.container_path, "type": "bind", "source": mount.host_path,
            "options": ["rbind", propagation, "ro" if mount.readonly else "rw"]}


def resources(res: cri.LinuxContainerResources | None) -> dict[str, Any]:
    """OCI ``linux.resources`` from CRI resources (0 = unset). Swap is capped at the memory limit."""
    out: dict[str, Any] = {}
    if res is None:
        return out
    memory: dict[str, Any] = {}
    if res.memory_limit_in_bytes > 0:
        memory["limit"] = res.memory_limit_in_bytes
        memory["swap"] = max(res.memory_swap_limit_in_bytes, res.memory_limit_in_bytes)
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if res.cpu_shares > 0:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota > 0:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period > 0:
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if res.pids_limit > 0:
        out["pids"] = {"limit": res.pids_limit}
    if res.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": k, "limit": v} for k, v in res.hugepage_limits.items()]
    return out


def device_entry(device: cri.Device) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``linux.devices`` entry, ``linux.resources.devices`` allow rule) for a host device."""
    try:
        info = os.stat(device.host_path)
    except OSError as exc:
        raise Invalid.field("devices.hostPath", f"{device.host_path}: {exc.strerror}") from exc
    if stat.S_ISCHR(info.st_mode):
        kind = "c"
    elif stat.S_ISBLK(info.st_mode):
        kind = "b"
    else:
        raise Invalid.field("devices.hostPath", f"{device.host_path} is not a device")
    major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
    entry = {"path": device.container_path, "type": kind, "major": major, "minor": minor,
             "fileMode": stat.S_IMODE(info.st_mode), "uid": 0, "gid": 0}
    rule = {"allow": True, "type": kind, "major": major, "minor": minor, "access": device.permissions or "rwm"}
    return entry, rule


def lookup_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """Resolve an image ``User`` (``name``, ``uid``, ``uid:gid``, ``name:group``) against the root's files."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    uid = gid = -1
    if name.isdigit():
        uid = int(name)
    passwd = _read_table(rootfs / "etc" / "passwd")
    for fields in passwd:
        if len(fields) >= 4 and ((uid < 0 and fields[0] == name) or (uid >= 0 and fields[2] == str(uid))):
            uid, gid = int(fields[2]), int(fields[3]) if gid < 0 else gid
            break
    if uid < 0:
        raise Invalid.field("image.config.User", f"user {name!r} not found in the image's /etc/passwd")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            matches = [f for f in _read_table(rootfs / "etc" / "group") if len(f) >= 3 and f[0] == group]
            if not matches:
                raise Invalid.field("image.config.User", f"group {group!r} not found in the image's /etc/group")
            gid = int(matches[0][2])
    return uid, max(gid, 0), []


def _read_table(path: Path) -> list[list[str]]:
    try:
        return [line.split(":") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    except OSError:
        return []


def merge_env(image_env: list[str], envs: tuple[cri.KeyValue, ...], extra: dict[str, str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in image_env:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.setdefault("PATH", DEFAULT_PATH)
    merged.update(extra)
    for kv in envs:
        merged[kv.key] = kv.value
    return [f"{k}={v}" for k, v in merged.items()]


def process_args(config: cri.ContainerConfig, image: dict[str, Any]) -> list[str]:
    """Kubernetes' rule: ``command`` replaces Entrypoint, ``args`` replaces Cmd."""
    entrypoint = list(config.command) if config.command else list(image.get("Entrypoint") or [])
    cmd = list(config.args) if config.command or config.args else list(image.get("Cmd") or [])
    argv = entrypoint + cmd
    if not argv:
        raise Invalid.field("command", "no command: neither the container nor the image says what to run")
    return argv


def spec(*, args: list[str], env: list[str], cwd: str, uid: int, gid: int, additional_gids: list[int],
         hostname: str, readonly: bool, capabilities: list[str], mounts: list[dict[str, Any]],
         namespaces: list[dict[str, Any]], cgroups_path: str, linux_resources: dict[str, Any],
         devices: list[dict[str, Any]] | None = None, device_rules: list[dict[str, Any]] | None = None,
         privileged: bool = False, no_new_privileges: bool = False, oom_score_adj: int = 0,
         sysctl: dict[str, str] | None = None, masked: tuple[str, ...] = MASKED_PATHS,
         readonly_paths: tuple[str, ...] = READONLY_PATHS, terminal: bool = False) -> dict[str, Any]:
    rules = [{"allow": True, "access": "rwm"}] if privileged else [{"allow": False, "access": "rwm"}]
    rules += device_rules or []
    process: dict[str, Any] = {
        "terminal": terminal,
        "user": {"uid": uid, "gid": gid, **({"additionalGids": additional_gids} if additional_gids else {})},
        "args": args,
        "env": env,
        "cwd": cwd or "/",
        "capabilities": dict.fromkeys(("bounding", "effective", "permitted"), capabilities),
        "noNewPrivileges": no_new_privileges,
    }
    if oom_score_adj > 0:
        process["oomScoreAdj"] = oom_score_adj
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": {"devices": rules, **linux_resources},
    }
    if devices:
        linux["devices"] = devices
    if sysctl:
        linux["sysctl"] = sysctl
    if not privileged:
        linux["maskedPaths"] = list(masked)
        linux["readonlyPaths"] = list(readonly_paths)
    config: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": "rootfs", "readonly": readonly},
        "mounts": mounts,
        "linux": linux,
    }
    if hostname:
        config["hostname"] = hostname
    return config
