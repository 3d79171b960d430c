"""Node IPAM bookkeeping (a fake cache and client: the API side is covered by the DaemonSet test)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from microkube.controllers.nodeipam import NodeIpamController
from microkube_interfaces import errors

Handler = Callable[[str, dict[str, Any], dict[str, Any] | None], None]


class FakeNodes:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.handlers: list[Handler] = []

    def get(self, key: str) -> dict[str, Any] | None:
        return self.nodes.get(key)

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def put(self, name: str, cidr: str | None = None) -> None:
        old = self.nodes.get(name)
        node = {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {}}
        self.nodes[name] = node
        for handler in self.handlers:
            handler("MODIFIED" if old else "ADDED", node, old)

    def remove(self, name: str) -> None:
        node = self.nodes.pop(name)
        for handler in self.handlers:
            handler("DELETED", node, node)


class FakeClient:
    def __init__(self, nodes: FakeNodes) -> None:
        self.nodes = nodes

    async def patch(self, resource: Any, name: str, patch: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.nodes.put(name, patch["spec"]["podCIDR"])
        return self.nodes.nodes[name]


class FakeContext:
    def __init__(self) -> None:
        self.nodes = FakeNodes()
        self.client = FakeClient(self.nodes)

    def cache(self, resource: Any) -> FakeNodes:
        return self.nodes


async def test_ranges_are_unique_exhaustible_and_freed() -> None:
    context = FakeContext()
    ipam = NodeIpamController(context, "10.0.0.0/23")  # type: ignore[arg-type]
    context.nodes.put("kept", "10.0.1.0/24")  # assigned before this controller started
    for name in ("a", "b"):
        context.nodes.put(name)
    await ipam.reconcile("a")
    assert context.nodes.get("a")["spec"]["podCIDR"] == "10.0.0.0/24"  # type: ignore[index]
    with pytest.raises(errors.Retryable, match="larger --cluster-cidr"):
        await ipam.reconcile("b")
    context.nodes.remove("a")
    await ipam.reconcile("b")
    assert context.nodes.get("b")["spec"]["podCIDR"] == "10.0.0.0/24"  # type: ignore[index]


def test_a_cluster_cidr_smaller_than_a_node_range_is_refused() -> None:
    with pytest.raises(ValueError, match="smaller than one node"):
        NodeIpamController(FakeContext(), "10.0.0.0/25")  # type: ignore[arg-type]
