"""Prometheus metrics of the API server (text exposition format 0.0.4)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from microkube.metrics import Exposition, Histogram

if TYPE_CHECKING:
    from microkube.apiserver.server import APIServer


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.watchers = 0

    def observe_request(self, verb: str, resource: str, subresource: str, code: int, seconds: float) -> None:
        self.requests[(verb, resource, subresource, code)] += 1
        if verb == "watch":
            return  # a watch lasts as long as the client wants: its duration is no latency
        histogram = self.latency.get((verb, resource))
        if histogram is None:
            histogram = self.latency[(verb, resource)] = Histogram()
        histogram.observe(seconds)

    def render(self, server: APIServer) -> bytes:
        out = Exposition()
        out.family("apiserver_request_total", "counter",
                   "Counter of API requests by verb, resource, subresource and code.",
                   (({"verb": verb, "resource": resource, "subresource": sub, "code": str(code)}, count)
                    for (verb, resource, sub, code), count in sorted(self.requests.items())))
        out.family("apiserver_request_duration_seconds", "histogram", "Response latency by verb and resource.",
                   (({"verb": verb, "resource": resource}, histogram)
                    for (verb, resource), histogram in sorted(self.latency.items())))
        out.family("apiserver_registered_watchers", "gauge", "Open watches.", [({}, self.watchers)])
        out.family("apiserver_storage_objects", "gauge", "Objects in the watch cache by resource.",
                   (({"resource": prefix.strip("/").split("/", 1)[-1]}, len(cache.entries))
                    for prefix, cache in sorted(server.cache.caches.items())))
        out.family("microkube_store_revision", "gauge", "The store revision the watch cache has applied.",
                   [({}, server.cache.revision)])
        return out.render()
