"""Prometheus metrics of the API server (text exposition format 0.0.4)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from microkube.apiserver.server import APIServer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.watchers = 0

    def observe_request(self, verb: str, resource: str, subresource: str, code: int, seconds: float) -> None:
        self.requests[(verb, resource, subresource, code)] += 1
        if verb == "watch":
            return  # a watch lasts as long as the client wants: its duration is no latency
        key = (verb, resource)
        buckets = self.latency.get(key)
        if buckets is None:
            buckets = self.latency[key] = [0] * len(LATENCY_BUCKETS)
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if index < len(buckets):
            buckets[index] += 1
        self.latency_sum[key] += seconds
        self.latency_count[key] += 1

    def render(self, server: APIServer) -> bytes:
        lines = [
            "# HELP apiserver_request_total Counter of API requests by verb, resource, subresource and code.",
            "# TYPE apiserver_request_total counter",
        ]
        for (verb, resource, sub, code), count in sorted(self.requests.items()):
            lines.append(f'apiserver_request_total{{verb="{verb}",resource="{resource}",subresource="{sub}",'
                         f'code="{code}"}} {count}')
        lines += [
            "# HELP apiserver_request_duration_seconds Response latency by verb and resource.",
            "# TYPE apiserver_request_duration_seconds histogram",
        ]
        for (verb, resource), buckets in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, buckets, strict=True):
                cumulative += count
                lines.append(f'apiserver_request_duration_seconds_bucket{{verb="{verb}",resource="{resource}",'
                             f'le="{bound}"}} {cumulative}')
            total = self.latency_count[(verb, resource)]
            lines.append(f'apiserver_request_duration_seconds_bucket{{verb="{verb}",resource="{resource}",'
                         f'le="+Inf"}} {total}')
            lines.append(f'apiserver_request_duration_seconds_sum{{verb="{verb}",resource="{resource}"}} '
                         f"{self.latency_sum[(verb, resource)]:.6f}")
            lines.append(f'apiserver_request_duration_seconds_count{{verb="{verb}",resource="{resource}"}} {total}')
        lines += [
            "# HELP apiserver_registered_watchers Open watches.",
            "# TYPE apiserver_registered_watchers gauge",
            f"apiserver_registered_watchers {self.watchers}",
            "# HELP apiserver_storage_objects Objects in the watch cache by resource.",
            "# TYPE apiserver_storage_objects gauge",
        ]
        for prefix, cache in sorted(server.cache.caches.items()):
            resource = prefix.strip("/").split("/", 1)[-1]
            lines.append(f'apiserver_storage_objects{{resource="{resource}"}} {len(cache.entries)}')
        lines += [
            "# HELP microkube_store_revision The store revision the watch cache has applied.",
            "# TYPE microkube_store_revision gauge",
            f"microkube_store_revision {server.cache.revision}",
        ]
        return ("\n".join(lines) + "\n").encode()
