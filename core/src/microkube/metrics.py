"""Prometheus text exposition (format 0.0.4) for every component, and the small /metrics + /healthz
endpoint the controller manager and scheduler serve (the API server serves /metrics itself)."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable

from aiohttp import web

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = dict[str, str]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: Labels) -> list[str]:
        result = []
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            result.append(f"{name}_bucket{_labels({**labels, 'le': str(bound)})} {cumulative}")
        result.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {self.count}")
        result.append(f"{name}_sum{_labels(labels)} {self.sum:.6f}")
        result.append(f"{name}_count{_labels(labels)} {self.count}")
        return result


class Exposition:
    """Builds one exposition: families with HELP and TYPE, then their samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Labels, float | int | Histogram]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            if isinstance(value, Histogram):
                self.lines += value.lines(name, labels)
            else:
                self.lines.append(f"{name}{_labels(labels)} {value}")

    def render(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


async def serve_metrics(host: str, port: int, render: Callable[[], bytes]) -> web.AppRunner | None:
    """Serve /metrics and /healthz on ``host:port`` (plain HTTP: bind it to loopback); None, with a
    warning, when the address is taken (e.g. by another replica of the same component)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        log.warning("metrics not served: cannot listen on %s:%s: %s", host, port, exc.strerror or exc)
        await runner.cleanup()
        return None
    return runner


def bound_port(runner: web.AppRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or []:
            return int(sock.getsockname()[1])
    return 0
