"""Node-agent figures (issue: node agent). Prints one JSON line per figure.

- pod start latency, create to Running as seen on a watch, image present, 50 pods: p50 and p99, created
  paced (one every 200 ms, as the Kubernetes density tests pace creates) and in one burst
- kubelet RSS with 100 pods Running
- 110 pods on one node held for ``--hold`` seconds (600 for the issue's figure): restarts, pods not Running,
  warnings the kubelet logged

The cluster is the real ``microkube up`` (API server, controller manager, scheduler, and this machine as a
node: runc containers, bridge network) on its own bridge, nft table and pod CIDR. Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from microkube.client import Client, Resource
from microkube.testing import ServerProcess

PODS = Resource("", "v1", "pods")
NODES = Resource("", "v1", "nodes", namespaced=False)
NODE = "mk-bench-node"
BRIDGE = "mkbench0"
NFT_TABLE = "microkube-bench"
IMAGE = "microkube.local/busybox:latest"


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def pod(name: str, group: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"bench": group}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "c", "image": IMAGE, "command": ["sleep", "100000"],
                 "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}}


def kubelet_pid(node_dir: Path) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kubelet" in argv and str(node_dir).encode() in argv:
                return int(entry.name)
    raise RuntimeError("no kubelet process")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def start_latencies(client: Client, group: str, count: int, pace: float) -> list[float]:
    """Create ``count`` pods (one every ``pace`` seconds, 0: all at once); seconds from each create call to
    the watch event that shows it Running."""
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    done = asyncio.Event()
    listing = await client.list(PODS, "default", label_selector=f"bench={group}")
    version = listing["metadata"]["resourceVersion"]

    async def watch() -> None:
        async for event in client.watch(PODS, "default", resource_version=version, label_selector=f"bench={group}"):
            obj = event["object"]
            name = obj["metadata"]["name"]
            if (obj.get("status") or {}).get("phase") == "Running" and name not in running:
                running[name] = time.monotonic()
                if len(running) == count:
                    done.set()
                    return

    watcher = asyncio.create_task(watch())

    async def create(name: str) -> None:
        created[name] = time.monotonic()
        await client.create(PODS, pod(name, group), "default")

    names = [f"{group}-{i}" for i in range(count)]
    if pace:
        for name in names:
            await create(name)
            await asyncio.sleep(pace)
    else:
        await asyncio.gather(*(create(name) for name in names))
    await asyncio.wait_for(done.wait(), 300)
    watcher.cancel()
    return [running[n] - created[n] for n in names]


async def delete_group(client: Client, group: str) -> None:
    await client.request("DELETE", PODS.path("default"), query={"labelSelector": f"bench={group}"})
    for _ in range(600):
        if not (await client.list(PODS, "default", label_selector=f"bench={group}"))["items"]:
            return
        await asyncio.sleep(0.5)


async def run(server: ServerProcess, args: argparse.Namespace) -> None:
    client = Client.from_kubeconfig(server.kubeconfig)
    node_dir = server.data_dir / "node"
    try:
        for _ in range(120):
            node = await client.get(NODES, NODE) if any(
                n["metadata"]["name"] == NODE for n in (await client.list(NODES))["items"]) else None
            ready = [c for c in ((node or {}).get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
            if ready and ready[0]["status"] == "True":
                break
            await asyncio.sleep(0.5)
        await start_latencies(client, "warm", 1, 0)  # the busybox image imported, the bridge made
        await delete_group(client, "warm")

        for mode, pace in (("paced", 0.2), ("burst", 0.0)):
            latencies = await start_latencies(client, mode, args.pods, pace)
            emit(f"pod_start_p50_{mode}", statistics.median(latencies) * 1000, "ms", pods=args.pods)
            emit(f"pod_start_p99_{mode}", percentile(latencies, 0.99) * 1000, "ms", pods=args.pods)
            await delete_group(client, mode)

        await start_latencies(client, "hold", args.rss_pods, 0)
        emit("kubelet_rss_100_pods", rss_mb(kubelet_pid(node_dir)), "MB", pods=args.rss_pods)
        extra = args.hold_pods - args.rss_pods
        if extra > 0:
            await start_latencies(client, "hold2", extra, 0)
        log_before = server.log_path.read_text().count("WARNING") if server.log_path else 0
        await asyncio.sleep(args.hold)
        pods = (await client.list(PODS, "default"))["items"]
        not_running = [p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") != "Running"]
        restarts = sum(s.get("restartCount", 0) for p in pods for s in (p.get("status") or {}).get(
            "containerStatuses") or [])
        warnings = (server.log_path.read_text().count("WARNING") if server.log_path else 0) - log_before
        emit("pods_held", len(pods) - len(not_running), "pods", seconds=args.hold, not_running=len(not_running),
             restarts=restarts, kubelet_warnings=warnings,
             kubelet_rss_mb=round(rss_mb(kubelet_pid(node_dir)), 1))
        await delete_group(client, "hold")
        await delete_group(client, "hold2")
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=50, help="pods per start-latency run (50)")
    parser.add_argument("--rss-pods", type=int, default=100, help="pods running when the kubelet RSS is read (100)")
    parser.add_argument("--hold-pods", type=int, default=110, help="pods held on the node (110)")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds to hold them (the issue's figure: 600)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/pods.py needs root (containers, network namespaces, cgroups)")
    with tempfile.TemporaryDirectory(prefix="microkube-bench-pods-") as tmp:
        server = ServerProcess(
            Path(tmp), subcommand="up", components=True,
            env={"MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "0", "MICROKUBE_PLUGINS": "runc,bridge"},
            extra_args=["--node-name", NODE, "--kubelet-port", "0", "--cluster-cidr", "10.237.0.0/16",
                        "--max-pods", str(max(110, args.hold_pods)),
                        f"--network-option=bridge={BRIDGE}", f"--network-option=nftTable={NFT_TABLE}"])
        server.start(timeout=60)
        try:
            asyncio.run(run(server, args))
        finally:
            server.stop(timeout=60)
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
            subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True, check=False)


if __name__ == "__main__":
    main()
