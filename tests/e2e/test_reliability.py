"""Reliability of a real server process: crashes, concurrency, resumed watches, hostile bodies."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from microkube.testing import ServerProcess, client_ssl_context

pytestmark = pytest.mark.e2e


async def _session(server: ServerProcess) -> tuple[str, aiohttp.ClientSession]:
    url, ssl = client_ssl_context(server.kubeconfig)
    return url, aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl, limit=16),
                                      headers={"Content-Type": "application/json"})


async def test_kill_9_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    acknowledged: list[str] = []
    try:
        url, session = await _session(server)
        async with session:
            async def writer(worker: int) -> None:
                for i in range(10_000):
                    name = f"w{worker}-{i}"
                    try:
                        async with session.post(f"{url}/api/v1/namespaces/default/configmaps",
                                                data=orjson.dumps({"metadata": {"name": name},
                                                                   "data": {"i": str(i)}})) as r:
                            if r.status == 201:
                                acknowledged.append(name)
                    except aiohttp.ClientError:
                        return

            tasks = [asyncio.create_task(writer(w)) for w in range(4)]
            while len(acknowledged) < 300:
                await asyncio.sleep(0.05)
            assert server.process is not None
            server.process.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)
        server.stop()
        server.start()
        url, session = await _session(server)
        async with session, session.get(f"{url}/api/v1/namespaces/default/configmaps") as r:
            stored = {item["metadata"]["name"] for item in (await r.json())["items"]}
        missing = [name for name in acknowledged if name not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    finally:
        server.stop()


async def test_concurrent_updates_exactly_one_wins(microkube_server: ServerProcess) -> None:
    url, session = await _session(microkube_server)
    async with session:
        async with session.post(f"{url}/api/v1/namespaces/default/configmaps",
                                data=orjson.dumps({"metadata": {"name": "race"}, "data": {"v": "0"}})) as r:
            base = await r.json()

        async def update(i: int) -> int:
            body = json.loads(json.dumps(base))
            body["data"]["v"] = str(i + 1)  # every update changes the object: none is a no-op
            async with session.put(f"{url}/api/v1/namespaces/default/configmaps/race",
                                   data=orjson.dumps(body)) as response:
                await response.read()
                return response.status

        codes = await asyncio.gather(*(update(i) for i in range(12)))
    assert sorted(codes).count(200) == 1, codes
    assert codes.count(409) == 11


async def test_resumed_watch_misses_nothing(microkube_server: ServerProcess) -> None:
    url, session = await _session(microkube_server)
    async with session:
        async with session.post(f"{url}/api/v1/namespaces",
                                data=orjson.dumps({"metadata": {"name": "resume"}})) as r:
            assert r.status == 201
        async with session.get(f"{url}/api/v1/namespaces/resume/configmaps") as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        seen: list[str] = []

        async def create(name: str) -> None:
            async with session.post(f"{url}/api/v1/namespaces/resume/configmaps",
                                    data=orjson.dumps({"metadata": {"name": name}})) as response:
                assert response.status == 201

        async with session.get(f"{url}/api/v1/namespaces/resume/configmaps?watch=true&resourceVersion={rv}") as w:
            for i in range(3):
                await create(f"a{i}")
            for _ in range(3):
                event = orjson.loads(await w.content.readline())
                seen.append(event["object"]["metadata"]["name"])
                rv = event["object"]["metadata"]["resourceVersion"]
        for i in range(3):  # written while nobody watches
            await create(f"b{i}")
        async with session.get(f"{url}/api/v1/namespaces/resume/configmaps?watch=true&resourceVersion={rv}") as w:
            for _ in range(3):
                event = orjson.loads(await w.content.readline())
                seen.append(event["object"]["metadata"]["name"])
    assert seen == ["a0", "a1", "a2", "b0", "b1", "b2"]


def _hostile_bodies(rng: random.Random) -> list[bytes]:
    bodies: list[Any] = [
        b"", b"{", b"[]", b"null", b"42", b'"text"', b"\xff\xfe\x00garbage", b"k8s\x00\x01\x02\x03",
        orjson.dumps({"metadata": "not-an-object"}),
        orjson.dumps({"metadata": {"name": 5}}),
        orjson.dumps({"metadata": {"name": "x", "labels": {"a": 1}}}),
        orjson.dumps({"apiVersion": "v9", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        orjson.dumps({"kind": "Pod", "metadata": {"name": "x"}}),
        orjson.dumps({"metadata": {"name": "Invalid_Name!"}}),
        orjson.dumps({"metadata": {"name": "x"}, "data": ["list"]}),
        orjson.dumps({"metadata": {"name": "x"}, "data": {"k": {"nested": True}}}),
        b"- a\n- b\n", b"a: [unclosed",
    ]
    for _ in range(40):
        bodies.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))))
    return bodies


async def test_malformed_bodies_get_4xx_never_5xx(microkube_server: ServerProcess) -> None:
    rng = random.Random(20261123)
    url, session = await _session(microkube_server)
    targets = [
        ("POST", "/api/v1/namespaces/default/configmaps", "application/json"),
        ("POST", "/api/v1/namespaces/default/pods", "application/yaml"),
        ("POST", "/apis/apps/v1/namespaces/default/deployments", "application/vnd.kubernetes.protobuf"),
        ("PATCH", "/api/v1/namespaces/default", "application/strategic-merge-patch+json"),
        ("PATCH", "/api/v1/namespaces/default", "application/json-patch+json"),
        ("PATCH", "/api/v1/namespaces/default", "application/merge-patch+json"),
        ("PATCH", "/api/v1/namespaces/default", "application/apply-patch+yaml"),
        ("PUT", "/api/v1/namespaces/default", "application/json"),
        ("DELETE", "/api/v1/namespaces/default/configmaps/none", "application/json"),
    ]
    failures = []
    async with session:
        async with session.get(f"{url}/api/v1/namespaces/default") as r:
            before = await r.json()
        for body in _hostile_bodies(rng):
            for method, path, content_type in targets:
                async with session.request(method, f"{url}{path}?fieldManager=fuzz", data=body,
                                           headers={"Content-Type": content_type}) as response:
                    text = await response.text()
                    if response.status >= 500:
                        failures.append((method, path, content_type, body[:40], response.status, text[:200]))
                    elif response.status >= 400:
                        status = json.loads(text)
                        assert status["kind"] == "Status" and status["code"] == response.status
        async with session.get(f"{url}/api/v1/namespaces/default") as r:
            after = await r.json()
        async with session.get(f"{url}/healthz") as r:
            assert r.status == 200
    assert not failures, failures[:5]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]


def test_second_start_on_same_data_dir_keeps_objects(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        async def create() -> None:
            url, session = await _session(server)
            async with session, session.post(f"{url}/api/v1/namespaces/default/configmaps",
                                             data=orjson.dumps({"metadata": {"name": "kept"}})) as r:
                assert r.status == 201

        asyncio.run(create())
        assert server.stop() == 0  # SIGTERM shuts down cleanly
        started = time.monotonic()
        server.start()
        assert time.monotonic() - started < 30

        async def read() -> int:
            url, session = await _session(server)
            async with session, session.get(f"{url}/api/v1/namespaces/default/configmaps/kept") as r:
                return r.status

        assert asyncio.run(read()) == 200
    finally:
        server.stop()


async def test_anonymous_requests_get_401_but_health_answers(microkube_server: ServerProcess) -> None:
    url, context = client_ssl_context(microkube_server.kubeconfig)
    anonymous = ssl.create_default_context(cafile=str(microkube_server.data_dir / "pki" / "ca.crt"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=anonymous)) as session:
        async with session.get(f"{url}/api/v1/namespaces") as response:
            assert response.status == 401
            status = await response.json()
            assert status["reason"] == "Unauthorized"
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200
    del context
