"""Simulated nodes (like kwok): Nodes that register, heartbeat and "run" pods without running anything.

A :class:`NodeSimulator` registers ``count`` Nodes with realistic status, renews one
coordination.k8s.io Lease per node in ``kube-node-lease`` and refreshes the Ready condition's
heartbeat, so the node lifecycle controller sees them as healthy kubelets. One shared pod Informer
(pods with ``spec.nodeName`` set) drives every node: a Pending pod bound to a simulated node gets a
Running status with a pod IP from the node's ``spec.podCIDR``; ``microkube.io/simulate-duration``
makes it finish (Succeeded, or Failed with ``microkube.io/simulate-exit-code``); a pod being deleted
is removed for real (grace period 0), as a kubelet does once its containers stopped.

Cancelling :meth:`NodeSimulator.run` simply stops: leases lapse and the nodes go NotReady through
the node lifecycle controller, like real nodes whose kubelet died.

Every API call is bounded (``concurrency`` requests in flight per kind of work) and lease renewals
and heartbeats are spread evenly over their interval, so thousands of nodes cost a steady trickle
of requests instead of bursts. Per pod the simulator keeps only its allocated IP (and, for pods
with a simulated duration, the moment they finish); the pod objects themselves live once, in the
Informer's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from microkube.apiserver.simulated import SIMULATED_ANNOTATION
from microkube.client import ApiStatusError, Client, Resource
from microkube.controllers.runtime import Informer, WorkQueue, object_key
from microkube.kubelet.node import LEASE_DURATION_SECONDS, LEASE_NAMESPACE, LEASES, NAMESPACES, NODES, merge_conditions
from microkube.timestamps import format_micro_time, format_time, parse_time, utcnow
from microkube_interfaces import errors

__all__ = ["DURATION_ANNOTATION", "EXIT_CODE_ANNOTATION", "SIMULATED_ANNOTATION", "NodeSimulator"]

log = logging.getLogger(__name__)

Object = dict[str, Any]
T = TypeVar("T")

PODS = Resource("", "v1", "pods")
DURATION_ANNOTATION = "microkube.io/simulate-duration"
EXIT_CODE_ANNOTATION = "microkube.io/simulate-exit-code"
FIELD_MANAGER = "microkube-simulator"
KUBELET_VERSION = "v1.32.0-microkube-sim"
RUNTIME_VERSION = "microkube-sim://1"
RUNTIME_SCHEME = "microkube-sim"
ZONES = ("zone-a", "zone-b", "zone-c")
REGION = "microkube-sim"
#: Node addresses: 10.200.0.0/16, one per node index (index 0 is 10.200.0.1).
NODE_ADDRESS_BASE = int(ipaddress.IPv4Address("10.200.0.0"))
#: Pod ranges for nodes that never get a spec.podCIDR (no node IPAM controller): one /24 per index in
#: 100.64.0.0/10, outside the default cluster CIDR (10.244.0.0/16) and service range.
FALLBACK_POD_BASE = int(ipaddress.IPv4Address("100.64.0.0"))
FALLBACK_POD_PREFIX = 24
RETRIES = 8
PENDING = ("", "Pending")
TERMINAL = ("Succeeded", "Failed")


class _SimNode:
    """What the simulator knows about one of its nodes (small: thousands of these exist)."""

    __slots__ = ("address", "cidr", "cidr_checked", "cidr_wanted_since", "cursor", "index", "name", "uid", "used")

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index
        self.uid = ""
        self.address = str(ipaddress.IPv4Address(NODE_ADDRESS_BASE + index + 1))
        self.cidr: ipaddress.IPv4Network | None = None
        self.cidr_wanted_since: float | None = None  # loop time a pod first needed the CIDR
        self.cidr_checked = 0.0  # loop time of the last GET looking for it
        self.used: set[int] = set()
        self.cursor = 0

    def set_cidr(self, text: str | None) -> None:
        if not text:
            return
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            log.warning("node %s has an unusable spec.podCIDR %r", self.name, text)
            return
        if isinstance(network, ipaddress.IPv4Network) and network != self.cidr:
            self.cidr = network

    def allocate(self) -> int | None:
        """A free address of the node's range (never the network, .1 — the bridge — or broadcast)."""
        assert self.cidr is not None
        first = int(self.cidr.network_address) + 2
        size = max(0, self.cidr.num_addresses - 3)
        for step in range(size):
            offset = (self.cursor + step) % size
            address = first + offset
            if address not in self.used:
                self.cursor = offset + 1
                self.used.add(address)
                return address
        return None


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _duration(pod: Object) -> float | None:
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(DURATION_ANNOTATION)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def _exit_code(pod: Object) -> int:
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(EXIT_CODE_ANNOTATION)
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 1


def _ready(pod: Object) -> bool:
    conditions = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
    return conditions.get("Ready") == "True" and conditions.get("ContainersReady") == "True"


_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp")
_KEPT_CONTAINER = ("name", "image", "resources", "restartPolicy")
_KEPT_STATUS = ("phase", "podIP", "qosClass", "startTime")


class _NeedWhole(Exception):
    """The trimmed cached pod is not enough for this step: read the whole pod from the server."""


def _trim(pod: Object) -> None:
    """Cut a cached pod down, in place, to the fields the simulator reads.

    The pod Informer is the simulator's own and holds every bound pod of the cluster (50,000 of them
    at scale); a full pod object costs ~9 KB of Python objects, spec and managedFields mostly. What
    is left: identity and resourceVersion (the Informer's relist compares it), the simulate
    annotations, nodeName, hostNetwork, the containers' names, images and resources, phase, podIP,
    startTime, qosClass and the conditions (only Ready and ContainersReady, as type and status, once it
    runs). A step that writes a running pod's status reads the whole pod first (``_NeedWhole``).
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    kept_meta = {k: meta[k] for k in _KEPT_METADATA if k in meta}
    annotations = meta.get("annotations") or {}
    kept_annotations = {k: annotations[k] for k in (DURATION_ANNOTATION, EXIT_CODE_ANNOTATION) if k in annotations}
    if kept_annotations:
        kept_meta["annotations"] = kept_annotations
    kept_spec = {k: spec[k] for k in ("nodeName", "hostNetwork") if k in spec}
    for field in ("initContainers", "containers"):
        if spec.get(field):
            kept_spec[field] = [{k: c[k] for k in _KEPT_CONTAINER if k in c}
                                for c in spec[field] if isinstance(c, dict)]
    kept_status = {k: status[k] for k in _KEPT_STATUS if k in status}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if (status.get("phase") or "") in PENDING:  # starting it keeps its PodScheduled condition
        kept_status["conditions"] = conditions
    else:  # once it runs, only whether it is ready (writes past the start read the whole pod first)
        kept_status["conditions"] = [{"type": c.get("type"), "status": c.get("status")} for c in conditions
                                     if c.get("type") in ("Ready", "ContainersReady")]
    pod.clear()
    pod.update(metadata=kept_meta, spec=kept_spec, status=kept_status)


def _image_id(image: str) -> str:
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return f"{repository}@sha256:{_digest(image)}"


def _qos_class(pod: Object) -> str:
    from microkube.apiserver.defaults import qos_class

    return qos_class(pod.get("spec") or {})


class NodeSimulator:
    """``count`` simulated nodes named ``f"{prefix}{i}"``; :meth:`run` keeps them alive until cancelled."""

    def __init__(self, client: Client, count: int, *, prefix: str = "sim-node-", cpu: str = "32",
                 memory: str = "256Gi", pods: int = 110, labels: dict[str, str] | None = None,
                 taints: list[dict[str, Any]] | None = None, lease_interval: float = 10.0,
                 status_interval: float = 300.0, start_delay: float = 0.0, concurrency: int = 32,
                 pod_cidr_wait: float = 5.0) -> None:
        """``start_delay``: seconds between a pod being seen Pending on a node and it running (container
        start latency). ``concurrency``: requests in flight for each kind of work (registration, leases
        and heartbeats, pod status writes). ``pod_cidr_wait``: how long a pod waits for its node's
        spec.podCIDR (from a node IPAM controller) before the node falls back to a range of 100.64.0.0/10."""
        if count < 0:
            raise ValueError("count must not be negative")
        self.client = client
        self.count = count
        self.prefix = prefix
        self.cpu = cpu
        self.memory = memory
        self.pods = pods
        self.labels = dict(labels or {})
        self.taints = list(taints) if taints is not None else None
        self.lease_interval = lease_interval
        self.status_interval = status_interval
        self.start_delay = start_delay
        self.concurrency = max(1, concurrency)
        self.pod_cidr_wait = pod_cidr_wait
        self.nodes: dict[str, _SimNode] = {f"{prefix}{i}": _SimNode(f"{prefix}{i}", i) for i in range(count)}
        #: Set once every node is registered and the pod cache is synced.
        self.ready = asyncio.Event()
        self.registered = False
        self.informer: Informer | None = None
        self._queue = WorkQueue(base_delay=0.05, max_delay=30.0)
        self._pod_ips: dict[str, tuple[_SimNode, int]] = {}  # pod key -> (its node, its address)
        self._deadlines: dict[str, float] = {}  # pod key -> loop time it finishes (simulated durations only)
        self._pending_since: dict[str, float] = {}  # pod key -> loop time first seen Pending (start_delay only)
        self._removed = False
        self._fallbacks = 0
        self.boot_id = str(uuid.uuid4())

    # -- node objects ----------------------------------------------------------------------------

    def node_labels(self, node: _SimNode) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "microkube-simulated",
            "topology.kubernetes.io/zone": ZONES[node.index % len(ZONES)],
            "topology.kubernetes.io/region": REGION,
            **self.labels,
        }

    def node_object(self, node: _SimNode) -> Object:
        obj: Object = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": self.node_labels(node),
                         "annotations": {SIMULATED_ANNOTATION: "true",
                                         "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {},
        }
        if self.taints:
            obj["spec"]["taints"] = [dict(t) for t in self.taints]
        return obj

    def _conditions(self, previous: list[Object] | None = None) -> list[Object]:
        """The healthy node conditions; a condition keeps its lastTransitionTime when its status stays."""
        return merge_conditions([
            {"type": kind, "status": status, "reason": reason, "message": message}
            for kind, status, reason, message in (
                ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            )], previous, format_time(utcnow()))

    def node_status(self, node: _SimNode) -> Object:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods),
                    "ephemeral-storage": "100Gi", "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
        return {
            "capacity": capacity,
            "allocatable": {**capacity, "ephemeral-storage": "95Gi"},
            "conditions": self._conditions(),
            "addresses": [{"type": "InternalIP", "address": node.address}, {"type": "Hostname", "address": node.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _digest("machine", node.name)[:32],
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node.name}.microkube-sim")),
                "bootID": self.boot_id,
                "kernelVersion": "6.1.0-microkube-sim",
                "osImage": "microkube simulated node",
                "containerRuntimeVersion": RUNTIME_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [],
        }

    def lease_spec(self, node: _SimNode) -> Object:
        return {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                "renewTime": format_micro_time(utcnow())}

    def lease_object(self, node: _SimNode) -> Object:
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node.name, "namespace": LEASE_NAMESPACE,
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name,
                                              "uid": node.uid}] if node.uid else []},
            "spec": self.lease_spec(node),
        }

    def _learn(self, node: _SimNode, obj: Object) -> None:
        node.uid = str((obj.get("metadata") or {}).get("uid") or node.uid)
        node.set_cidr((obj.get("spec") or {}).get("podCIDR"))

    # -- registration ----------------------------------------------------------------------------

    async def register(self) -> None:
        """Create (or adopt) every node, write its status through nodes/status, create its Lease."""
        started = time.monotonic()
        self._removed = False
        await self._ensure_namespace()
        await self._bounded(self.nodes.values(), self._register_node)
        self.registered = True
        log.info("registered %d simulated nodes in %.1fs", len(self.nodes), time.monotonic() - started)

    async def _ensure_namespace(self) -> None:
        try:
            await _retrying(lambda: self.client.get(NAMESPACES, LEASE_NAMESPACE))
        except errors.NotFound:
            with contextlib.suppress(errors.AlreadyExists):
                await _retrying(lambda: self.client.create(
                    NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}))

    async def _register_node(self, node: _SimNode) -> None:
        wanted = self.node_object(node)
        node.cidr, node.cidr_wanted_since = None, None  # a new Node object: its podCIDR comes with it
        try:
            obj = await _retrying(lambda: self.client.create(NODES, wanted, field_manager=FIELD_MANAGER))
        except errors.AlreadyExists:  # adopt it: our labels, annotation and taints on top of what is there
            adopt: Object = {"metadata": {"labels": wanted["metadata"]["labels"],
                                          "annotations": wanted["metadata"]["annotations"]}}
            if self.taints is not None:
                adopt["spec"] = {"taints": wanted["spec"].get("taints") or None}
            obj = await _retrying(lambda: self.client.patch(NODES, node.name, adopt, field_manager=FIELD_MANAGER))
        self._learn(node, obj)
        # The API server drops status on create (as Kubernetes does for kinds with a status
        # subresource), and an adopted node's status is stale: write it through nodes/status.
        obj = await _retrying(lambda: self.client.patch(NODES, node.name, {"status": self.node_status(node)},
                                                        subresource="status", field_manager=FIELD_MANAGER))
        self._learn(node, obj)
        await self._renew_lease(node, owner=True)  # a Lease left from an earlier Node object gets this one

    # -- leases and heartbeats -------------------------------------------------------------------

    async def _renew_lease(self, node: _SimNode, *, owner: bool = False) -> None:
        """Renew (or create) the node's Lease; ``owner`` also points its ownerReference at this Node."""
        if self._removed:
            return
        patch: Object = {"spec": self.lease_spec(node)}
        if owner:
            patch["metadata"] = {"ownerReferences": self.lease_object(node)["metadata"]["ownerReferences"]}
        try:
            await _retrying(lambda: self.client.patch(LEASES, node.name, patch, LEASE_NAMESPACE,
                                                      field_manager=FIELD_MANAGER))
        except errors.NotFound:
            with contextlib.suppress(errors.AlreadyExists):
                await _retrying(lambda: self.client.create(LEASES, self.lease_object(node), LEASE_NAMESPACE,
                                                           field_manager=FIELD_MANAGER))

    async def _heartbeat(self, node: _SimNode) -> None:
        """Refresh the conditions' lastHeartbeatTime (and learn a podCIDR that arrived meanwhile)."""
        for _ in range(RETRIES):
            try:
                current = await _retrying(lambda: self.client.get(NODES, node.name))
            except errors.NotFound:
                if self._removed:
                    return
                log.info("simulated node %s was deleted; registering it again", node.name)
                await self._register_node(node)  # as a kubelet does
                return
            self._learn(node, current)
            patch = {"metadata": {"resourceVersion": current["metadata"].get("resourceVersion")},
                     "status": {"conditions": self._conditions((current.get("status") or {}).get("conditions"))}}
            try:
                await self.client.patch(NODES, node.name, patch, subresource="status", field_manager=FIELD_MANAGER)
                return
            except errors.Conflict:
                continue
            except errors.NotFound:
                return

    async def _periodically(self, interval: float, action: Callable[[_SimNode], Awaitable[None]],
                            what: str) -> None:
        """``action`` for every node once per ``interval``, node i at offset i/count of it, bounded."""
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()

        async def one(node: _SimNode) -> None:
            try:
                await action(node)
            except errors.MicrokubeError as exc:
                log.warning("%s of simulated node %s failed: %s", what, node.name, exc)
            finally:
                limit.release()

        nodes = list(self.nodes.values())
        start = loop.time()
        try:
            for round_ in itertools.count():
                for i, node in enumerate(nodes):
                    delay = start + interval * (round_ + i / len(nodes)) - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await limit.acquire()
                    task = asyncio.create_task(one(node))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in list(running):
                task.cancel()

    # -- pods ------------------------------------------------------------------------------------

    async def _pod_field_selector(self) -> str:
        """``spec.nodeName!=`` when the server supports it (an empty selector filters client-side)."""
        selector = "spec.nodeName!="
        try:
            await _retrying(lambda: self.client.request("GET", PODS.path(),
                                                        query={"fieldSelector": selector, "limit": 1}))
        except (errors.Invalid, ApiStatusError) as exc:
            log.info("the API server cannot select pods by spec.nodeName (%s); filtering pods here", exc)
            return ""
        return selector

    def _on_pod(self, event: str, pod: Object, old: Object | None) -> None:
        """Informer handler: bookkeeping that must not wait, and queueing what needs an API call."""
        key = object_key(pod)
        _trim(pod)  # in place: the cache holds every bound pod of the cluster, it keeps only what is used here
        if event == "DELETED":
            self._forget(key)
            return
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is None:
            if key in self._pod_ips:  # it moved off our nodes (a recreated pod with the same name)
                self._forget(key)
            return
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        phase = status.get("phase") or ""
        if meta.get("deletionTimestamp"):
            self._queue.add(key)
        elif phase in TERMINAL:
            self._forget(key)
        elif phase in PENDING:
            self._queue.add(key)
        elif phase == "Running":
            if key not in self._pod_ips:
                self._adopt(key, node, pod)
            if _duration(pod) is not None or not _ready(pod):
                self._queue.add(key)

    def _adopt(self, key: str, node: _SimNode, pod: Object) -> None:
        """A Running pod from before this simulator started: its address stays taken."""
        if (pod.get("spec") or {}).get("hostNetwork"):
            return
        try:
            address = int(ipaddress.IPv4Address((pod.get("status") or {}).get("podIP") or ""))
        except ValueError:
            return
        node.used.add(address)
        self._pod_ips[key] = (node, address)

    def _forget(self, key: str) -> None:
        held = self._pod_ips.pop(key, None)
        if held is not None:
            held[0].used.discard(held[1])
        self._deadlines.pop(key, None)
        self._pending_since.pop(key, None)

    async def _pod_worker(self) -> None:
        while True:
            key = await self._queue.get()
            if key is None:
                return
            try:
                delay = await self._sync_pod(key)
            except asyncio.CancelledError:
                self._queue.done(key)
                raise
            except Exception as exc:
                self._queue.done(key)
                after = exc.after if isinstance(exc, errors.Retryable) else None
                log.warning("simulated pod %s: %s", key, exc)
                if after is not None:
                    self._queue.add_after(key, after)
                else:
                    self._queue.add_rate_limited(key)
                continue
            self._queue.done(key)
            self._queue.forget(key)
            if delay is not None:
                self._queue.add_after(key, delay)

    async def _sync_pod(self, key: str) -> float | None:
        """Move one pod along; returns when to look at it again (None: when something changes)."""
        assert self.informer is not None
        pod = self.informer.get(key)
        whole = False  # the cached pod is trimmed (see _trim); one read from the server is whole
        for _ in range(RETRIES):
            if pod is None:
                self._forget(key)
                return None
            try:
                return await self._step(key, pod, whole)
            except (errors.Conflict, _NeedWhole):  # the cache was behind or is not enough: read the pod, decide again
                pod, whole = await self._read_pod(key), True
        raise errors.Retryable(f"pod {key} kept changing under the simulator", after=0.5)

    async def _read_pod(self, key: str) -> Object | None:
        namespace, _, name = key.partition("/")
        try:
            return await self.client.get(PODS, name, namespace)
        except errors.NotFound:
            return None

    async def _step(self, key: str, pod: Object, whole: bool) -> float | None:
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is None:
            self._forget(key)
            return None
        meta = pod["metadata"]
        phase = (pod.get("status") or {}).get("phase") or ""
        if meta.get("deletionTimestamp"):  # the "containers" stopped: finish the graceful deletion
            try:
                await self.client.delete(PODS, meta["name"], meta["namespace"], grace_period_seconds=0,
                                         preconditions={"uid": meta["uid"]})
            except errors.NotFound:
                pass
            self._forget(key)
            return None
        if phase in TERMINAL:
            self._forget(key)
            return None
        if phase in PENDING:
            return await self._start(key, node, pod)
        if phase == "Running":
            return await self._running(key, pod, whole)
        return None

    async def _pod_address(self, key: str, node: _SimNode) -> int | None:
        """The pod's address from the node's range; None while the node still waits for a podCIDR."""
        held = self._pod_ips.get(key)
        if held is not None and held[0] is node:
            return held[1]
        if held is not None:
            self._forget(key)
        loop = asyncio.get_running_loop()
        if node.cidr is None:
            now = loop.time()
            if node.cidr_wanted_since is None:
                node.cidr_wanted_since = now
            if now - node.cidr_checked >= 0.25:
                node.cidr_checked = now
                with contextlib.suppress(errors.NotFound):
                    self._learn(node, await self.client.get(NODES, node.name))
            if node.cidr is None:
                if now - node.cidr_wanted_since < self.pod_cidr_wait:
                    return None
                fallback = ipaddress.IPv4Network((FALLBACK_POD_BASE + (node.index << (32 - FALLBACK_POD_PREFIX)),
                                                  FALLBACK_POD_PREFIX))
                self._fallbacks += 1
                log.log(logging.WARNING if self._fallbacks == 1 else logging.DEBUG,
                        "simulated node %s has no spec.podCIDR after %.1fs (is a node IPAM controller running?); "
                        "its pods get addresses from %s (and other such nodes from 100.64.0.0/10)", node.name,
                        self.pod_cidr_wait, fallback)
                node.cidr = fallback
        address = node.allocate()
        if address is None:
            raise errors.Retryable(f"no pod address left on simulated node {node.name} ({node.cidr})", after=1)
        self._pod_ips[key] = (node, address)
        return address

    async def _start(self, key: str, node: _SimNode, pod: Object) -> float | None:
        loop = asyncio.get_running_loop()
        if self.start_delay > 0:
            since = self._pending_since.setdefault(key, loop.time())
            remaining = since + self.start_delay - loop.time()
            if remaining > 0:
                return remaining
        spec = pod.get("spec") or {}
        if spec.get("hostNetwork"):
            pod_ip = node.address
        else:
            address = await self._pod_address(key, node)
            if address is None:
                return 0.25  # the node has no podCIDR yet
            pod_ip = str(ipaddress.IPv4Address(address))
        meta = pod["metadata"]
        now = format_time(utcnow())
        status = pod.get("status") or {}
        scheduled = next((c for c in status.get("conditions") or []
                          if c.get("type") == "PodScheduled" and c.get("status") == "True"), None)

        def condition(kind: str) -> Object:
            return {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}

        uid = str(meta.get("uid", ""))
        new_status = {
            "phase": "Running",
            "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"),
                           condition("ContainersReady"), scheduled or condition("PodScheduled")],
            "hostIP": node.address, "hostIPs": [{"ip": node.address}],
            "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "initContainerStatuses": [self._init_status(uid, c, now) for c in spec.get("initContainers") or []],
            "containerStatuses": [self._running_status(uid, c, now) for c in spec.get("containers") or []],
            "qosClass": status.get("qosClass") or _qos_class(pod),
        }
        await self.client.patch(PODS, meta["name"], {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                                                      "status": new_status},
                                 meta["namespace"], subresource="status", field_manager=FIELD_MANAGER)
        self._pending_since.pop(key, None)
        duration = _duration(pod)
        if duration is None:
            return None
        self._deadlines[key] = loop.time() + duration
        return duration

    async def _make_ready(self, pod: Object) -> None:
        meta = pod["metadata"]
        now = format_time(utcnow())
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or []
                      if c.get("type") not in ("Ready", "ContainersReady")]
        for kind in ("Ready", "ContainersReady"):
            conditions.append({"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": now})
        await self.client.patch(PODS, meta["name"], {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                                                      "status": {"conditions": conditions}},
                                 meta["namespace"], subresource="status", field_manager=FIELD_MANAGER)

    @staticmethod
    def _container_id(uid: str, name: str) -> str:
        return f"{RUNTIME_SCHEME}://{_digest(uid, name)}"

    def _running_status(self, uid: str, container: Object, now: str) -> Object:
        image = str(container.get("image", ""))
        return {"name": container.get("name", ""), "image": image, "imageID": _image_id(image),
                "containerID": self._container_id(uid, str(container.get("name", ""))),
                "ready": True, "started": True, "restartCount": 0,
                "state": {"running": {"startedAt": now}}, "lastState": {}}

    def _init_status(self, uid: str, container: Object, now: str) -> Object:
        if container.get("restartPolicy") == "Always":  # a sidecar keeps running
            return self._running_status(uid, container, now)
        image = str(container.get("image", ""))
        container_id = self._container_id(uid, str(container.get("name", "")))
        return {"name": container.get("name", ""), "image": image, "imageID": _image_id(image),
                "containerID": container_id, "ready": True, "started": False, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                                         "containerID": container_id}},
                "lastState": {}}

    async def _running(self, key: str, pod: Object, whole: bool) -> float | None:
        """A Running pod finishes once its simulated duration is over; marked NotReady, it is made ready."""
        duration = _duration(pod)
        remaining: float | None = None
        if duration is not None:
            loop = asyncio.get_running_loop()
            deadline = self._deadlines.get(key)
            if deadline is None:  # started before this simulator ran: count from its startTime
                started = parse_time((pod.get("status") or {}).get("startTime"))
                elapsed = (utcnow() - started).total_seconds() if started else 0.0
                deadline = self._deadlines[key] = loop.time() + duration - elapsed
            remaining = deadline - loop.time()
        due = remaining is not None and remaining <= 0
        if not due and _ready(pod):
            return remaining
        if not whole:  # a status write builds on the whole status, which the cache does not keep
            raise _NeedWhole
        if due:
            await self._finish(key, pod)
            return None
        # Marked NotReady while its node was (the node lifecycle controller, while the simulator was
        # down): a kubelet that is back reports it ready again.
        await self._make_ready(pod)
        return remaining

    async def _finish(self, key: str, pod: Object) -> None:
        meta = pod["metadata"]
        status = pod.get("status") or {}
        exit_code = _exit_code(pod)
        phase, reason = ("Succeeded", "Completed") if exit_code == 0 else ("Failed", "Error")
        now = format_time(utcnow())
        containers = []
        for container in status.get("containerStatuses") or []:
            started_at = ((container.get("state") or {}).get("running") or {}).get("startedAt") or now
            containers.append({
                **container, "ready": False, "started": False,
                "state": {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": started_at,
                                         "finishedAt": now, "containerID": container.get("containerID", "")}},
            })
        conditions = []
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Ready", "ContainersReady", "PodReadyToStartContainers"):
                condition = {**condition, "status": "False", "lastTransitionTime": now}
                if condition["type"] != "PodReadyToStartContainers":
                    condition["reason"] = "PodCompleted" if exit_code == 0 else "PodFailed"
            conditions.append(condition)
        await self.client.patch(PODS, meta["name"], {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                                                      "status": {"phase": phase, "conditions": conditions,
                                                                 "containerStatuses": containers}},
                                 meta["namespace"], subresource="status", field_manager=FIELD_MANAGER)
        self._forget(key)  # a finished pod's sandbox is gone: its address is free again

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Register (unless :meth:`register` ran already), then keep the nodes alive until cancelled."""
        if not self.registered:
            await self.register()
        self.informer = Informer(self.client, PODS, field_selector=await self._pod_field_selector())
        self.informer.add_handler(self._on_pod)
        self._queue = WorkQueue(base_delay=0.05, max_delay=30.0)
        tasks = [asyncio.create_task(self.informer.run(), name="simulator-pods")]
        tasks += [asyncio.create_task(self._pod_worker(), name=f"simulator-pod-{i}") for i in range(self.concurrency)]
        if self.nodes:
            tasks.append(asyncio.create_task(self._periodically(self.lease_interval, self._renew_lease, "lease"),
                                             name="simulator-leases"))
            tasks.append(asyncio.create_task(self._periodically(self.status_interval, self._heartbeat, "heartbeat"),
                                             name="simulator-heartbeats"))
        try:
            await self.informer.synced.wait()
            self.ready.set()
            await asyncio.gather(*tasks)
        finally:
            self.ready.clear()
            self._queue.shutdown(0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def remove_nodes(self) -> None:
        """Delete the simulated nodes and their Leases (their pods are left to pod GC)."""
        self._removed = True

        async def remove(node: _SimNode) -> None:
            for resource, namespace in ((NODES, ""), (LEASES, LEASE_NAMESPACE)):
                with contextlib.suppress(errors.NotFound):
                    await _retrying(lambda: self.client.delete(resource, node.name, namespace))  # noqa: B023

        await self._bounded(self.nodes.values(), remove)
        self.registered = False

    async def _bounded(self, nodes: Iterable[_SimNode], action: Callable[[_SimNode], Awaitable[None]]) -> None:
        """``action`` for every node with at most ``concurrency`` in flight; the first failure propagates."""
        pending = iter(list(nodes))

        async def worker() -> None:
            for node in pending:
                await action(node)

        async with asyncio.TaskGroup() as group:
            for _ in range(self.concurrency):
                group.create_task(worker())


async def _retrying(call: Callable[[], Awaitable[T]], attempts: int = 6) -> T:
    """``call()``, again after the server's hint while it answers Retryable (429, 503, lost connection)."""
    for attempt in range(attempts):
        try:
            return await call()
        except errors.Retryable as exc:
            if attempt + 1 == attempts:
                raise
            await asyncio.sleep(min(float(exc.after or 1), 5.0) * (1 + attempt) / 2)
    raise AssertionError("unreachable")
