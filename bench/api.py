"""API server figures (issue: foundation). Prints one JSON line per figure.

- creates/s with 8 concurrent clients on the SQLite store (target >= 2,000/s)
- p99 latency of a create at a steady 50 writes/s (target <= 25 ms)
- LIST of 10,000 pods (target <= 300 ms)
- one change delivered to 1,000 concurrent watchers, p99 (target <= 200 ms)
- server RSS with 10,000 pods stored (target <= 300 MB)

The server is the real ``microkube server`` process on loopback; the load comes from this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from microkube.testing import ServerProcess, client_ssl_context

NAMESPACE = "bench"


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "web", "image": "busybox:1.36", "command": ["httpd", "-f"],
                                 "ports": [{"containerPort": 80}],
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def create(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with session.post(f"{url}/api/v1/namespaces/{NAMESPACE}/pods", data=orjson.dumps(body),
                            headers={"Content-Type": "application/json"}) as response:
        if response.status != 201:
            raise RuntimeError(f"create failed: {response.status} {await response.text()}")
        await response.read()


async def concurrent_creates(url: str, ssl: Any, total: int, clients: int) -> float:
    counter = iter(range(total))

    async def client() -> None:
        connector = aiohttp.TCPConnector(ssl=ssl, limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in counter:
                await create(session, url, pod(f"c-{i}"))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return total / (time.perf_counter() - started)


async def steady_latency(url: str, ssl: Any, rate: float, seconds: float) -> list[float]:
    connector = aiohttp.TCPConnector(ssl=ssl, limit=8)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> None:
            started = time.perf_counter()
            await create(session, url, pod(f"s-{i}"))
            latencies.append((time.perf_counter() - started) * 1000)

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return latencies


async def fill(url: str, ssl: Any, count: int) -> None:
    connector = aiohttp.TCPConnector(ssl=ssl, limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
        counter = iter(range(count))

        async def client() -> None:
            for i in counter:
                await create(session, url, pod(f"f-{i}"))

        await asyncio.gather(*(client() for _ in range(8)))


async def list_latency(url: str, ssl: Any, runs: int) -> tuple[list[float], int]:
    connector = aiohttp.TCPConnector(ssl=ssl, limit=1)
    timings = []
    count = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(runs):
            started = time.perf_counter()
            async with session.get(f"{url}/api/v1/namespaces/{NAMESPACE}/pods") as response:
                body = await response.read()
            timings.append((time.perf_counter() - started) * 1000)
            count = len(orjson.loads(body)["items"])
    return timings, count


async def watch_fanout(url: str, ssl: Any, watchers: int, changes: int) -> list[float]:
    connector = aiohttp.TCPConnector(ssl=ssl, limit=0)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        async with session.post(f"{url}/api/v1/namespaces/{NAMESPACE}/configmaps",
                                headers={"Content-Type": "application/json"},
                                data=orjson.dumps({"metadata": {"name": "fanout"}, "data": {"n": "0"}})) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        sent: dict[str, float] = {}
        ready = asyncio.Event()
        connected = 0
        received: dict[str, int] = {}

        async def watcher() -> None:
            nonlocal connected
            async with session.get(f"{url}/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true&"
                                   f"fieldSelector=metadata.name%3Dfanout&resourceVersion={rv}") as response:
                connected += 1
                if connected == watchers:
                    ready.set()
                async for line in response.content:
                    event = orjson.loads(line)
                    value = event["object"]["data"]["n"]
                    latencies.append((time.perf_counter() - sent[value]) * 1000)
                    received[value] = received.get(value, 0) + 1
                    if value == str(changes):
                        return

        tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(0.5)
        for n in range(1, changes + 1):
            sent[str(n)] = time.perf_counter()
            async with session.patch(f"{url}/api/v1/namespaces/{NAMESPACE}/configmaps/fanout",
                                     data=orjson.dumps({"data": {"n": str(n)}}),
                                     headers={"Content-Type": "application/merge-patch+json"}) as r:
                await r.read()
            await asyncio.sleep(1.0)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return latencies


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp)).start()
        try:
            url, ssl = client_ssl_context(server.kubeconfig)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl)) as session, session.post(
                f"{url}/api/v1/namespaces", headers={"Content-Type": "application/json"},
                data=orjson.dumps({"metadata": {"name": NAMESPACE}}),
            ) as r:
                assert r.status == 201, await r.text()
            rate = await concurrent_creates(url, ssl, args.creates, 8)
            emit("creates_per_second_8_clients_sqlite", rate, "creates/s", target=">=2000", n=args.creates)
            latencies = await steady_latency(url, ssl, 50, args.steady_seconds)
            emit("create_p99_latency_at_50_writes_per_second", percentile(latencies, 0.99), "ms",
                 p50=round(statistics.median(latencies), 3), target="<=25", n=len(latencies))
            await fill(url, ssl, max(0, args.pods - args.creates - len(latencies)))
            timings, count = await list_latency(url, ssl, 5)
            emit("list_10000_pods", statistics.median(timings), "ms", items=count, min=round(min(timings), 3),
                 target="<=300")
            assert server.process is not None
            emit("server_rss_with_10000_pods", rss_mb(server.process.pid), "MB", target="<=300")
            fanout = await watch_fanout(url, ssl, args.watchers, 5)
            emit("watch_fanout_1000_watchers_p99", percentile(fanout, 0.99), "ms",
                 p50=round(statistics.median(fanout), 3), deliveries=len(fanout), target="<=200")
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--creates", type=int, default=4000)
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=1000)
    asyncio.run(main(parser.parse_args()))
