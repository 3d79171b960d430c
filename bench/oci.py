"""OCI runtime figures for the runc pack: runc against crun (option ``ociRuntime``). Prints one JSON line per figure.

Per pod, through the pack's RuntimeService (no kubelet, no network): run_pod_sandbox (the pause container), then
create_container + start_container of one busybox container, then stop and remove of the sandbox. ``--pods`` pods
per runtime (default 20), one after another, the runtimes alternating pod by pod so that load from elsewhere on the
machine falls on both alike; one warm-up pod per runtime first is not counted.

- sandbox start p50 and p99 (ms), container create + start p50 (ms), sandbox + container p50 and p99 (ms),
  teardown p50 (ms), per runtime; ratio of the sandbox + container medians, crun / runc

crun runs through the pack's mount-namespace wrapper on a hybrid cgroup host. Needs root, runc and crun. Uses a
temporary root and a cgroup parent under this process's memory cgroup, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from microkube_interfaces import cri
from microkube_runc import cgroups
from microkube_runc.busybox import import_busybox
from microkube_runc.runtime import OCI_RUNTIMES, RuncRuntimePack, create_runtime


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def one_pod(pack: RuncRuntimePack, name: str, logs: Path) -> tuple[float, float, float]:
    """(sandbox ms, container create + start ms, teardown ms) of one pod."""
    runtime = pack.runtime
    sandbox = cri.PodSandboxConfig(cri.PodSandboxMetadata(name, f"uid-{name}", "bench"), log_directory=str(logs))
    container = cri.ContainerConfig(cri.ContainerMetadata("c"), cri.ImageSpec("busybox"),
                                    command=("sleep", "3600"), log_path=f"{name}.log")
    start = time.perf_counter()
    sid = await runtime.run_pod_sandbox(sandbox)
    ready = time.perf_counter()
    cid = await runtime.create_container(sid, container, sandbox)
    await runtime.start_container(cid)
    started = time.perf_counter()
    await runtime.stop_pod_sandbox(sid)
    await runtime.remove_pod_sandbox(sid)
    gone = time.perf_counter()
    return (ready - start) * 1000, (started - ready) * 1000, (gone - started) * 1000


async def run(pods: int, workdir: Path, parent: str) -> dict[str, list[tuple[float, float, float]]]:
    images = workdir / "images"
    packs = {name: create_runtime({"root": str(workdir / name), "imageDir": str(images), "ociRuntime": name,
                                   "cgroupParent": f"{parent}/{name}"}) for name in OCI_RUNTIMES}
    await import_busybox(packs["runc"].images)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in packs}
    try:
        for i in range(pods + 1):
            for name, pack in packs.items():
                figures = await one_pod(pack, f"{name}-{i}", workdir / "logs")
                if i:  # the first pod of each runtime is the warm-up
                    results[name].append(figures)
    finally:
        for pack in packs.values():
            for sandbox in await pack.runtime.list_pod_sandbox():
                await pack.runtime.remove_pod_sandbox(sandbox.id)
            await pack.runtime.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/oci.py needs root (containers, namespaces, cgroups, mounts)")
    missing = [path for path in OCI_RUNTIMES.values() if not os.path.exists(path)]
    if missing:
        raise SystemExit(f"bench/oci.py needs {', '.join(missing)} (Debian packages runc and crun)")
    workdir = Path(tempfile.mkdtemp(prefix="mk-bench-oci-"))
    parent = os.path.join(cgroups.own_cgroup("memory"), f"mk-bench-oci-{os.getpid()}")
    try:
        results = asyncio.run(run(args.pods, workdir, parent))
    finally:
        cgroups.remove_tree(parent)
        shutil.rmtree(workdir, ignore_errors=True)
    both: dict[str, float] = {}
    for name, rows in results.items():
        sandbox = [r[0] for r in rows]
        container = [r[1] for r in rows]
        total = [r[0] + r[1] for r in rows]
        extra = {"runtime": name, "pods": len(rows)}
        emit(f"{name}_sandbox_start_p50", statistics.median(sandbox), "ms", **extra)
        emit(f"{name}_sandbox_start_p99", percentile(sandbox, 0.99), "ms", **extra)
        emit(f"{name}_container_create_start_p50", statistics.median(container), "ms", **extra)
        emit(f"{name}_pod_start_p50", statistics.median(total), "ms", **extra)
        emit(f"{name}_pod_start_p99", percentile(total, 0.99), "ms", **extra)
        emit(f"{name}_pod_teardown_p50", statistics.median(r[2] for r in rows), "ms", **extra)
        both[name] = statistics.median(total)
    emit("pod_start_ratio_crun_over_runc", both["crun"] / both["runc"], "ratio")


if __name__ == "__main__":
    main()
