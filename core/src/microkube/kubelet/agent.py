"""The kubelet: wires the node's runtime and network packs, its Node and Lease, the pod workers, the
pod lifecycle event generator (a relist of the runtime every second), static pods and the kubelet API.

Pods come from two sources: the API server (pods whose ``spec.nodeName`` is this node, one watch) and the
static pod directory. Mirror pods in the API stand for static pods and are never run themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microkube.client import Client, Resource
from microkube.controllers.runtime import EventRecorder, Informer
from microkube.kubelet import containerspec, static
from microkube.kubelet.node import NodeAgent
from microkube.kubelet.server import ContainerLocation, KubeletServer
from microkube.kubelet.volumes import VolumeManager
from microkube.kubelet.worker import NAMESPACE_INDEX, SERVICES, PodState, PodWorkers
from microkube_interfaces import cni, cri, errors

log = logging.getLogger(__name__)

Object = dict[str, Any]
PODS = Resource("", "v1", "pods")
TOKEN_REVIEWS = Resource("authentication.k8s.io", "v1", "tokenreviews", namespaced=False)
RELIST_PERIOD = 1.0
HOUSEKEEPING_PERIOD = 30.0
STATIC_SCAN_PERIOD = 5.0
RUNTIME_CHECK_PERIOD = 2.0


@dataclass
class KubeletConfig:
    node_name: str
    root: Path
    runtime: str = "runc"
    runtime_options: dict[str, Any] = field(default_factory=dict)
    network: str = "bridge"
    network_options: dict[str, Any] = field(default_factory=dict)
    node_ip: str | None = None
    listen_host: str = "0.0.0.0"
    port: int = 10250
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    pod_manifest_path: Path | None = None
    max_pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    lease_interval: float = 10.0
    status_interval: float = 10.0


class Kubelet:
    def __init__(self, client: Client, config: KubeletConfig, registrar: Any) -> None:
        self.client = client
        self.config = config
        self.registrar = registrar
        self.root = config.root
        pack = registrar.runtimes.get(config.runtime).factory(
            {"root": str(self.root / config.runtime), **config.runtime_options})
        self.pack = pack
        self.runtime: cri.RuntimeService = pack.runtime
        self.images: cri.ImageService = pack.images
        self.capabilities: cri.RuntimeCapabilities = pack.capabilities
        self.network: cni.CNIPlugin | None = None
        self.network_error = "the pod network is not set up yet: waiting for the node's spec.podCIDR"
        self.recorder = EventRecorder(client, "kubelet")
        self.volumes = VolumeManager(client, self.root, config.node_name)
        self.server: KubeletServer | None = None
        self.bound_port = 0
        self.node: NodeAgent | None = None
        self.workers: PodWorkers | None = None
        self.informer: Informer | None = None
        self.static_pods: dict[str, Object] = {}
        self.ready = asyncio.Event()
        self._runtime_ready = (False, "container runtime status check may not have completed yet")
        self._relisted: dict[str, tuple[tuple[str, int], ...]] = {}
        self._tokens: dict[str, tuple[float, str | None]] = {}
        self._background: set[asyncio.Future[None]] = set()

    # -- readiness -------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        ready, message = self._runtime_ready
        if not ready:
            return False, message
        if not self.capabilities.networks_pods_itself and self.network is None:
            return False, ("container runtime network not ready: NetworkReady=false "
                           f"reason:NetworkPluginNotReady message:{self.network_error}")
        return True, ""

    async def _check_runtime(self) -> None:
        try:
            status = await self.runtime.status()
        except errors.MicrokubeError as exc:
            self._runtime_ready = (False, f"container runtime is down: {exc}")
            return
        runtime = status.condition(cri.RUNTIME_READY)
        if runtime is None or not runtime.status:
            self._runtime_ready = (False, "container runtime not ready: RuntimeReady=false "
                                   f"reason:{runtime.reason if runtime else ''} "
                                   f"message:{runtime.message if runtime else ''}")
        elif self.capabilities.networks_pods_itself and not status.ready:
            network = status.condition(cri.NETWORK_READY)
            self._runtime_ready = (False, "container runtime network not ready: NetworkReady=false "
                                   f"reason:{network.reason if network else ''} "
                                   f"message:{network.message if network else ''}")
        else:
            self._runtime_ready = (True, "")

    async def _ensure_network(self) -> None:
        """Create the pod network once the node has its podCIDR (from the node IPAM controller)."""
        if self.network is not None or self.capabilities.networks_pods_itself or self.node is None:
            return
        cidr = self.node.pod_cidr or str(self.config.network_options.get("podCIDR") or "")
        if not cidr:
            return
        options = {"stateDir": str(self.root / "cni"), **self.config.network_options, "podCIDR": cidr}
        try:
            network = self.registrar.networks.get(self.config.network).factory(options)
            await network.status()
        except (errors.MicrokubeError, cni.CNIError, OSError) as exc:
            self.network_error = f"network {self.config.network} is not ready: {exc}"
            log.warning("%s", self.network_error)
            return
        self.network = network
        if self.workers is not None:
            self.workers.network = network
            for uid in self.workers.pods:
                self.workers.queue.add(uid)
        log.info("pod network %s ready on %s", self.config.network, cidr)

    # -- the kubelet API's view of pods ----------------------------------------------------------

    def _state(self, namespace: str, name: str) -> PodState:
        assert self.workers is not None
        for state in self.workers.pods.values():
            meta = state.pod["metadata"]
            if meta["name"] == name and meta.get("namespace", "default") == namespace and not state.gone:
                return state
        raise errors.NotFound(f'pod "{name}" in namespace "{namespace}" is not running on node '
                              f"{self.config.node_name}")

    def pod(self, namespace: str, name: str) -> Object:
        return self._state(namespace, name).pod

    def sandbox_id(self, namespace: str, name: str) -> str:
        assert self.workers is not None
        state = self._state(namespace, name)
        locations = self.workers.locations.get(state.uid)
        if locations is None or not locations.sandbox_id:
            raise errors.NotFound(f'pod "{name}" in namespace "{namespace}" has no running sandbox')
        return locations.sandbox_id

    def container(self, namespace: str, name: str, container: str, *, previous: bool = False) -> ContainerLocation:
        assert self.workers is not None
        state = self._state(namespace, name)
        specs = containerspec.containers(state.pod) + containerspec.init_containers(state.pod)
        spec = next((c for c in specs if c["name"] == container), None)
        if spec is None:
            raise errors.NotFound(f'container "{container}" in pod "{name}" is not valid')
        locations = self.workers.locations.get(state.uid)
        instances = locations.containers.get(container) if locations is not None else None
        if not instances:
            raise errors.NotFound(f'container "{container}" in pod "{name}" is waiting to start')
        if previous and len(instances) < 2:
            raise errors.NotFound(f'previous terminated container "{container}" in pod "{name}" not found')
        chosen = instances[-2] if previous else instances[-1]
        return dataclasses.replace(chosen, tty=bool(spec.get("tty")), stdin=bool(spec.get("stdin")))

    async def _refresh_locations(self, uids: set[str]) -> None:
        """Container states for the kubelet API of pods whose containers changed since the last relist."""
        assert self.workers is not None
        for uid in uids:
            state = self.workers.pods.get(uid)
            if state is None:
                continue
            self.workers.remember(state, state.sandbox_id, await self.workers.instances(uid))

    # -- sources ---------------------------------------------------------------------------------

    def _on_pod(self, event: str, pod: Object, old: Object | None) -> None:
        assert self.workers is not None
        if static.is_mirror(pod):
            # a mirror pod deleted (or being deleted) by someone else comes back, as long as its manifest stays
            if event == "DELETED" or pod["metadata"].get("deletionTimestamp"):
                uid = (pod["metadata"].get("annotations") or {}).get(static.CONFIG_MIRROR, "")
                if uid in self.static_pods:
                    self._background_task(self._ensure_mirror(self.static_pods[uid]))
                elif event != "DELETED":  # the mirror of a manifest that is gone
                    meta = pod["metadata"]
                    self._background_task(self._delete_mirror(meta["namespace"], meta["name"]))
            return
        if event == "DELETED":
            self.workers.remove(pod["metadata"]["uid"])
        else:
            self.workers.update(pod)

    def _background_task(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delete_mirror(self, namespace: str, name: str) -> None:
        """Mirror pods go at once: nothing runs for them (their static pod is the kubelet's own)."""
        with contextlib.suppress(errors.NotFound):
            await self.client.request("DELETE", PODS.path(namespace, name), body={"gracePeriodSeconds": 0})

    async def _scan_static(self) -> None:
        if self.config.pod_manifest_path is None or self.workers is None:
            return
        found = await asyncio.to_thread(static.ManifestDirectory(self.config.pod_manifest_path,
                                                                 self.config.node_name).scan)
        for uid in set(self.static_pods) - set(found):
            pod = self.static_pods.pop(uid)
            self.workers.remove(uid)
            await self._delete_mirror(pod["metadata"]["namespace"], pod["metadata"]["name"])
        for uid, pod in found.items():
            if uid not in self.static_pods:
                self.static_pods[uid] = pod
                self.workers.update(pod)
                await self._ensure_mirror(pod)

    async def _ensure_mirror(self, pod: Object) -> None:
        meta = pod["metadata"]
        try:
            existing = await self.client.get(PODS, meta["name"], meta["namespace"])
        except errors.NotFound:
            existing = None
        if existing is not None and (existing["metadata"].get("annotations") or {}).get(
                static.CONFIG_MIRROR) == meta["uid"] and not existing["metadata"].get("deletionTimestamp"):
            return
        if existing is not None:  # an outdated mirror (the manifest changed) or a pod in the way
            await self._delete_mirror(meta["namespace"], meta["name"])
        try:
            await self.client.create(PODS, static.mirror_pod(pod, self.node.uid if self.node else ""),
                                     meta["namespace"])
        except errors.MicrokubeError as exc:
            log.warning("mirror pod %s/%s not created: %s", meta["namespace"], meta["name"], exc)
            return
        assert self.workers is not None
        state = self.workers.pods.get(meta["uid"])
        if state is not None:
            state.last_status = None  # write the status to the new mirror
            self.workers.queue.add(meta["uid"])

    async def _write_status(self, state: PodState, status: Object) -> None:
        meta = state.pod["metadata"]
        namespace = meta.get("namespace", "default")
        if PodWorkers.is_static(state.pod):
            try:
                mirror = await self.client.get(PODS, meta["name"], namespace)
            except errors.NotFound:
                return
            if (mirror["metadata"].get("annotations") or {}).get(static.CONFIG_MIRROR) != state.uid:
                return
            previous = (mirror.get("status") or {}).get("conditions") or []
            kept = [c for c in previous if c.get("type") not in [x["type"] for x in status["conditions"]]]
            status = {**status, "conditions": kept + status["conditions"]}
        try:
            await self.client.patch(PODS, meta["name"], {"status": status}, namespace, subresource="status",
                                    field_manager="microkube-kubelet")
        except errors.NotFound:
            pass

    # -- the loops -------------------------------------------------------------------------------

    async def _relist(self) -> None:
        """The pod lifecycle event generator: wake the worker of every pod whose containers changed."""
        assert self.workers is not None
        now: dict[str, list[tuple[str, int]]] = {}
        for container in await self.runtime.list_containers():
            uid = container.labels.get(containerspec.POD_UID, "")
            now.setdefault(uid, []).append((container.id, int(container.state)))
        frozen = {uid: tuple(sorted(items)) for uid, items in now.items()}
        changed = {uid for uid in set(frozen) | set(self._relisted)
                   if frozen.get(uid) != self._relisted.get(uid) and uid in self.workers.pods}
        for uid in changed:
            self.workers.queue.add(uid)
        self._relisted = frozen
        await self._refresh_locations(changed)

    async def _housekeeping(self) -> None:
        """Remove what belongs to no known pod: sandboxes (with their network) and pod directories."""
        assert self.workers is not None
        assert self.informer is not None
        if not self.informer.synced.is_set():
            return
        known = set(self.workers.pods)
        for sandbox in await self.runtime.list_pod_sandbox():
            uid = sandbox.labels.get(containerspec.POD_UID, "")
            if uid and uid not in known:
                log.info("removing sandbox %s of pod %s/%s, which no longer exists", sandbox.id,
                         sandbox.metadata.namespace, sandbox.metadata.name)
                orphan = PodState(uid, {"metadata": {"name": sandbox.metadata.name, "uid": uid,
                                                     "namespace": sandbox.metadata.namespace}, "spec": {}})
                await self.runtime.stop_pod_sandbox(sandbox.id)
                if self.workers._networked(orphan.pod):
                    with contextlib.suppress(errors.MicrokubeError, cni.CNIError):
                        await self.workers._network_del(orphan, sandbox.id)
                await self.runtime.remove_pod_sandbox(sandbox.id)
        await self.volumes.cleanup_orphans(known)

    async def _every(self, period: float, action: Any, what: str) -> None:
        while True:
            try:
                await action()
            except (errors.MicrokubeError, OSError) as exc:
                log.warning("%s failed: %s", what, exc)
            await asyncio.sleep(period)

    async def authenticate_token(self, token: str) -> str | None:
        cached = self._tokens.get(token)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        review = await self.client.create(TOKEN_REVIEWS, {"apiVersion": "authentication.k8s.io/v1",
                                                          "kind": "TokenReview", "spec": {"token": token}})
        status = review.get("status") or {}
        user = (status.get("user") or {}).get("username") if status.get("authenticated") else None
        self._tokens[token] = (time.monotonic() + 10.0, user)
        return user

    async def run(self) -> None:
        config = self.config
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        version = await self.runtime.version()
        await self._check_runtime()
        self.node = NodeAgent(self.client, config.node_name, root=self.root, node_ip=config.node_ip,
                              port=lambda: self.bound_port, runtime_version=f"{version.runtime_name}://"
                              f"{version.runtime_version}", readiness=self.readiness, labels=config.labels,
                              max_pods=config.max_pods, lease_interval=config.lease_interval,
                              status_interval=config.status_interval)
        self.workers = PodWorkers(
            client=self.client, node_name=config.node_name, host_ip=lambda: self.node.internal_ip if self.node
            else "", root=self.root, runtime=self.runtime, images=self.images, capabilities=self.capabilities,
            network=None, volumes=self.volumes, recorder=self.recorder,
            node_allocatable=lambda: self.node.allocatable if self.node else {},
            runtime_scheme=version.runtime_name, on_status=self._write_status)
        if config.cert_file is not None and config.key_file is not None and config.client_ca_file is not None:
            self.server = KubeletServer(self, self.runtime, self.capabilities, cert_file=config.cert_file,
                                        key_file=config.key_file, client_ca_file=config.client_ca_file,
                                        authenticate_token=self.authenticate_token)
            self.bound_port = await self.server.start(config.listen_host, config.port)
        with contextlib.suppress(errors.NotFound):  # a restart: the network first, so the node stays Ready
            await self.node.refresh()
            await self._ensure_network()
        await self.node.register()
        await self._ensure_network()
        self.informer = Informer(self.client, PODS, field_selector=f"spec.nodeName={config.node_name}")
        self.informer.add_handler(self._on_pod)
        services = Informer(self.client, SERVICES)
        services.add_index(NAMESPACE_INDEX, lambda s: [s["metadata"].get("namespace", "")])
        self.workers.services = services
        tasks = [
            asyncio.create_task(self.informer.run(), name="kubelet-pods"),
            asyncio.create_task(services.run(), name="kubelet-services"),
            asyncio.create_task(self.node.run(), name="kubelet-node"),
        ]
        self.workers.start()
        try:
            await self.informer.synced.wait()
            await self._scan_static()
            await self._relist()
            tasks += [
                asyncio.create_task(self._every(RELIST_PERIOD, self._relist, "relist"), name="kubelet-relist"),
                asyncio.create_task(self._every(HOUSEKEEPING_PERIOD, self._housekeeping, "housekeeping"),
                                    name="kubelet-housekeeping"),
                asyncio.create_task(self._every(STATIC_SCAN_PERIOD, self._scan_static, "static pods"),
                                    name="kubelet-static"),
                asyncio.create_task(self._every(RUNTIME_CHECK_PERIOD, self._check_runtime_and_network,
                                                "runtime status"),
                                    name="kubelet-runtime-status"),
            ]
            self.ready.set()
            log.info("kubelet on node %s ready (runtime %s %s, network %s, API port %d)", config.node_name,
                     version.runtime_name, version.runtime_version, config.network, self.bound_port)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.close()

    async def _check_runtime_and_network(self) -> None:
        before = self.readiness()
        await self._check_runtime()
        if self.node is not None and self.network is None and not self.node.pod_cidr:
            await self.node.refresh()
        await self._ensure_network()
        if self.node is not None and self.readiness() != before:
            await self.node.write_status()

    async def close(self) -> None:
        if self.workers is not None:
            await self.workers.stop()
        if self.server is not None:
            await self.server.stop()
        await self.recorder.close()
        close = getattr(self.runtime, "close", None)
        if close is not None:
            await close()
