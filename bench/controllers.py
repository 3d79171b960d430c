"""Control-loop figures (issue: control loops). Prints one JSON line per figure.

- a 5,000-replica Deployment from create to all replicas available (Running and Ready) on 100
  simulated nodes
- control-plane RSS (API server, controller manager, scheduler; the simulator is reported apart) with
  5,000 simulated nodes and 50,000 pods Running

The cluster is the real ``microkube server`` with its controller manager and scheduler child processes
and ``--simulate-nodes``; the load comes from this process through the API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from microkube.client import Client, Resource
from microkube.testing import ServerProcess

DEPLOYMENTS = Resource("apps", "v1", "deployments")
NODES = Resource("", "v1", "nodes", namespaced=False)


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def component(pid: int) -> str:
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    for name in (b"controller-manager", b"scheduler"):
        if name in command:
            return name.decode()
    return "other"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


async def wait_nodes(client: Client, count: int) -> None:
    while True:
        nodes = (await client.list(NODES))["items"]
        if sum(1 for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in n.get("status", {}).get("conditions") or [])) >= count:
            return
        await asyncio.sleep(1)


async def available(client: Client, names: list[str]) -> int:
    total = 0
    for name in names:
        status = (await client.get(DEPLOYMENTS, name, "default")).get("status") or {}
        total += int(status.get("availableReplicas") or 0)
    return total


async def run(nodes: int, deployments: int, replicas: int, figure: str, lease_interval: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # a /24 per node: 5,000 nodes need more than the default /16
        # nodes renew their Leases four times per grace period, as kubelets do (10 s of 40 s)
        server = ServerProcess(Path(tmp), components=True, extra_args=[
            "--cluster-cidr", "10.128.0.0/11", "--node-monitor-grace-period", str(4 * lease_interval)]).start(
            timeout=120)
        simulator = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measurement
            [sys.executable, "-m", "microkube.cli", "simulate", "--kubeconfig", str(server.kubeconfig), "--nodes",
             str(nodes), "--lease-interval", str(lease_interval)], stdout=subprocess.DEVNULL,
            env={**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "1"})
        client = Client.from_kubeconfig(server.kubeconfig)
        try:
            await wait_nodes(client, nodes)
            names = [f"app-{i}" for i in range(deployments)]
            started = time.perf_counter()
            for name in names:
                await client.create(DEPLOYMENTS, deployment(name, replicas), "default")
            wanted = deployments * replicas
            while await available(client, names) < wanted:  # noqa: ASYNC110 - polling the API is the point
                await asyncio.sleep(1)
            elapsed = time.perf_counter() - started
            assert server.process is not None
            pid = server.process.pid
            sizes = {"apiserver": rss_mb(pid), "simulator": rss_mb(simulator.pid)}
            for child in children(pid):
                sizes[component(child)] = rss_mb(child)
            control_plane = sizes["apiserver"] + sizes.get("controller-manager", 0) + sizes.get("scheduler", 0)
            if figure == "deployment":
                emit("deployment_5000_replicas_to_available", elapsed, "s", nodes=nodes, replicas=wanted,
                     pods_per_second=round(wanted / elapsed, 1), lease_interval_s=lease_interval)
            else:
                emit("control_plane_rss", control_plane, "MB", nodes=nodes, pods=wanted,
                     seconds_to_running=round(elapsed, 1), lease_interval_s=lease_interval,
                     **{f"{name}_mb": round(size, 1) for name, size in sizes.items()})
        finally:
            await client.close()
            simulator.terminate()
            simulator.wait(30)
            server.stop(timeout=60)


async def main(args: argparse.Namespace) -> None:
    if "deployment" in args.figures:
        await run(100, 1, 5000, "deployment", 10.0)
    if "rss" in args.figures:
        await run(5000, 10, 5000, "rss", args.lease_interval)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("figures", nargs="*", default=["deployment", "rss"], choices=["deployment", "rss"])
    parser.add_argument("--lease-interval", type=float, default=10.0,
                        help="Lease renewal interval of the 5,000 simulated nodes (Kubernetes: 10 s)")
    asyncio.run(main(parser.parse_args()))
