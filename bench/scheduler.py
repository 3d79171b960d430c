"""Scheduler figures (issue: control loops). Prints one JSON line per figure.

- scheduling throughput, pods bound per second, with 10,000 pending pods at 1,000 and at 5,000 nodes
  (kube-scheduler's published floor: 680 pods/s at 5,000 nodes; target >= 700 pods/s)

As kube-scheduler's scheduler_perf: the nodes and the pending pods are created first, then the
scheduler starts and the clock runs from its first scheduling attempt until every pod is bound
through pods/binding on the real ``microkube server`` process (TLS, SQLite). The scheduler runs in
this process with the built-in plugins and default settings (percentageOfNodesToScore adaptive).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from microkube.client import Client, Resource
from microkube.plugins import Plugins
from microkube.scheduler.scheduler import Scheduler
from microkube.testing import ServerProcess
from microkube_interfaces.hookspecs import ServerSettings

PODS = Resource("", "v1", "pods")
NODES = Resource("", "v1", "nodes", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
NAMESPACE = "bench"


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bounded(jobs: list[Any], limit: int) -> None:
    iterator = iter(jobs)

    async def worker() -> None:
        for job in iterator:
            await job()

    await asyncio.gather(*(worker() for _ in range(limit)))


async def create_nodes(client: Client, count: int) -> None:
    async def one(index: int) -> None:
        name = f"node-{index}"
        node = await client.create(NODES, {"metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": f"zone-{index % 3}"}}})
        capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        node["status"] = {"capacity": capacity, "allocatable": capacity,
                          "conditions": [{"type": "Ready", "status": "True"}]}
        await client.update(NODES, node, subresource="status")

    await bounded([lambda i=i: one(i) for i in range(count)], 16)


async def create_pods(client: Client, count: int) -> None:
    async def one(index: int) -> None:
        await client.create(PODS, {"metadata": {"name": f"pod-{index}", "labels": {"app": "bench"}},
                                   "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {
                                       "requests": {"cpu": "100m", "memory": "128Mi"}}}]}}, NAMESPACE)

    await bounded([lambda i=i: one(i) for i in range(count)], 16)


async def throughput(nodes: int, pods: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp)).start()
        client = Client.from_kubeconfig(server.kubeconfig)
        try:
            await client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
            await create_nodes(client, nodes)
            await create_pods(client, pods)
            registrations = Plugins(autoload=False).scheduler_plugins(ServerSettings(data_dir=tmp))
            scheduler = Scheduler(client, registrations)
            task = asyncio.create_task(scheduler.run())
            await scheduler.ready.wait()
            server_cpu, own_cpu = cpu_seconds(server.process.pid), time.process_time()
            started = time.perf_counter()
            while scheduler.metrics.scheduled < pods:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            server_cpu, own_cpu = cpu_seconds(server.process.pid) - server_cpu, time.process_time() - own_cpu
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            emit(f"scheduler_throughput_{nodes}_nodes", pods / elapsed, "pods/s", nodes=nodes, pods=pods,
                 seconds=round(elapsed, 2), scheduling_ms_per_pod=round(
                     scheduler.metrics.scheduling_seconds * 1000 / max(1, scheduler.metrics.attempts), 3),
                 server_cpu_ms_per_pod=round(server_cpu * 1000 / pods, 3),
                 scheduler_cpu_ms_per_pod=round(own_cpu * 1000 / pods, 3),
                 target=">= 700 pods/s at 5,000 nodes")
        finally:
            await client.close()
            server.stop()


async def main(args: argparse.Namespace) -> None:
    for nodes in args.nodes:
        await throughput(nodes, args.pods)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--pods", type=int, default=10_000)
    asyncio.run(main(parser.parse_args()))
