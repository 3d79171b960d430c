"""cgroup v1 helpers for the runc runtime: where hierarchies are, the default parent, stats, OOM, cleanup.

Paths handed to runc (``cgroupsPath``) are cgroupfs paths relative to every hierarchy's mount point
(``/process_api/<id>/microkube/pod-<sandbox>/<container>``); runc creates them in every v1 hierarchy (and
in the cgroup2 ``unified`` mount of a hybrid host) and removes only the leaf, so the pod level is the
runtime's to remove.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """The mount points of every cgroup hierarchy (v1 controllers, the unified v2 mount), deduplicated."""
    found: list[Path] = []
    seen: set[str] = set()
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fstype = right.split(" ", 1)[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mount_point = left.split(" ")[4]
        if mount_point in seen:
            continue
        seen.add(mount_point)
        found.append(Path(mount_point))
    return found


def hybrid_v2_controllers() -> list[str]:
    """The controllers of a cgroup2 mount at ``/sys/fs/cgroup/unified`` beside the v1 hierarchies (a hybrid
    host); empty when there is no such mount or it carries no controller."""
    unified = CGROUP_ROOT / "unified"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2" and left.split(" ")[4] == str(unified):
            try:
                return (unified / "cgroup.controllers").read_text().split()
            except OSError:
                return []
    return []


def controller_dir(controller: str) -> Path:
    """The mount point of a v1 controller (``memory``, ``cpuacct``…)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = right.split(" ")
        if parts[0] == "cgroup" and len(parts) >= 3 and controller in parts[2].split(","):
            return Path(left.split(" ")[4])
    return CGROUP_ROOT / controller


def own_cgroup(controller: str = "memory") -> str:
    """This process's cgroupfs path in ``controller``'s hierarchy (``/`` when unknown)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return path or "/"
    return "/"


def default_parent() -> str:
    """``<this process's memory cgroup>/microkube``: containers stay inside the agent's memory accounting."""
    return os.path.join(own_cgroup("memory"), "microkube")


def path_in(controller: str, cgroup_path: str) -> Path:
    return controller_dir(controller) / cgroup_path.lstrip("/")


def read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def read_keyed(path: Path) -> dict[str, int]:
    """A ``key value`` per line file (``memory.stat``, ``memory.oom_control``)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                values[key] = int(value)
    return values


def oom_recorded(cgroup_path: str) -> bool:
    """The memory cgroup recorded an OOM kill (``oom_kill``), is under OOM, or hit its limit."""
    memory = path_in("memory", cgroup_path)
    control = read_keyed(memory / "memory.oom_control")
    return control.get("oom_kill", 0) > 0 or control.get("under_oom", 0) > 0


def memory_failcnt(cgroup_path: str) -> int:
    return read_int(path_in("memory", cgroup_path) / "memory.failcnt")


def make_memory(cgroup_path: str, limit: int = 0) -> None:
    directory = path_in("memory", cgroup_path)
    directory.mkdir(parents=True, exist_ok=True)
    if limit > 0:
        (directory / "memory.limit_in_bytes").write_text(str(limit))


def remove_tree(cgroup_path: str) -> list[str]:
    """rmdir ``cgroup_path`` and everything below it, bottom-up, in every hierarchy; returns what remains."""
    remaining: list[str] = []
    rel = cgroup_path.strip("/")
    if not rel:
        return remaining
    for hierarchy in hierarchies():
        top = hierarchy / rel
        if not top.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(dirpath)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    remaining.append(f"{dirpath}: {exc.strerror}")
    return remaining


def exists_anywhere(cgroup_path: str) -> list[Path]:
    rel = cgroup_path.strip("/")
    return [h / rel for h in hierarchies() if rel and (h / rel).exists()]


def procs(cgroup_path: str) -> list[int]:
    """PIDs in the memory cgroup ``cgroup_path`` and below."""
    found: list[int] = []
    top = path_in("memory", cgroup_path)
    for dirpath, _, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError):
                found += [int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()]
    return found
