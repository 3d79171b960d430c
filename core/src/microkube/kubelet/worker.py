"""Pod workers: bring each pod bound to this node to what its spec says, through the container runtime
(cri/v1) and the pod network (cni/1.1), and report its status.

One sync of a pod (kube's ``SyncPod``/``computePodActions``): volumes → sandbox (new attempt when the old one
died) → network ADD in the sandbox's netns (unless the runtime networks pods itself) → init containers in
order (sidecars — init containers with restartPolicy Always — started and left running) → regular containers,
each started, restarted by the pod's restartPolicy with CrashLoopBackOff, or killed on a failed liveness probe
→ status. A pod being deleted is torn down (preStop, graceful stop, sandbox, network DEL, volumes) and then
removed from the API; a finished pod keeps its containers (for logs) but loses its sandbox and address.

Everything needed to resume is in the runtime (CRI labels and annotations on sandboxes and containers) or
in the kubelet's pod directory (the network result), so a restarted kubelet adopts running pods untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microkube.client import Client, Resource
from microkube.controllers.runtime import EventRecorder, Informer, WorkQueue
from microkube.kubelet import containerspec, handlers
from microkube.kubelet import status as podstatus
from microkube.kubelet.envvars import EnvError, container_env
from microkube.kubelet.probes import ProbeManager
from microkube.kubelet.probes import event_message as probe_event_message
from microkube.kubelet.server import ContainerLocation
from microkube.kubelet.volumes import VolumeError, VolumeManager
from microkube.timestamps import format_time, utcnow
from microkube_interfaces import cni, cri, errors

log = logging.getLogger(__name__)

Object = dict[str, Any]
PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
#: The services informer's index by namespace (for service links).
NAMESPACE_INDEX = "namespace"
SECRETS = Resource("", "v1", "secrets")

BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
#: A container that ran this long without exiting starts its next backoff from the beginning again.
BACKOFF_RESET = 600.0
RESYNC = 10.0
DEFAULT_GRACE = 30
#: Where a pod comes from: "api", or "file" for a static pod (kubelet's annotation).
CONFIG_SOURCE = "kubernetes.io/config.source"


@dataclass
class Backoff:
    delay: float = 0.0
    until: float = 0.0

    def next(self, now: float) -> None:
        self.delay = BACKOFF_INITIAL if not self.delay else min(BACKOFF_MAX, self.delay * 2)
        self.until = now + self.delay


@dataclass
class Locations:
    """A pod's ready sandbox ("" when none) and its container instances by name, oldest first."""

    sandbox_id: str
    containers: dict[str, list[ContainerLocation]]


@dataclass
class PodState:
    """What the kubelet remembers of one pod beyond the runtime's state (lost on restart, harmlessly)."""

    uid: str
    pod: Object
    start_time: str = ""
    #: container name -> (reason, message) of the last failure to (re)start it.
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    backoff: dict[str, Backoff] = field(default_factory=dict)
    image_backoff: dict[str, Backoff] = field(default_factory=dict)
    #: The pod's ready sandbox as last seen ("" when none or unknown).
    sandbox_id: str = ""
    #: container ids whose probes and postStart ran in this process.
    started: set[str] = field(default_factory=set)
    last_status: Object | None = None
    #: The pod was removed from the API (or its static manifest from disk): tear down, do not report.
    gone: bool = False
    torn_down: bool = False
    #: Counts container creates and kills: a sync lists the pod's containers again only when it changed them.
    changes: int = 0


class PodWorkers:
    def __init__(self, *, client: Client, node_name: str, host_ip: Callable[[], str], root: Path,
                 runtime: cri.RuntimeService, images: cri.ImageService, capabilities: cri.RuntimeCapabilities,
                 network: cni.CNIPlugin | None, volumes: VolumeManager, recorder: EventRecorder,
                 node_allocatable: Callable[[], dict[str, str]], runtime_scheme: str,
                 on_status: Callable[[PodState, Object], Any] | None = None, workers: int = 8) -> None:
        self.client = client
        self.node_name = node_name
        self.host_ip = host_ip
        self.root = root
        self.runtime = runtime
        self.images = images
        self.capabilities = capabilities
        self.network = network
        self.volumes = volumes
        self.recorder = recorder
        self.node_allocatable = node_allocatable
        self.runtime_scheme = runtime_scheme
        self.on_status = on_status
        self.pods: dict[str, PodState] = {}
        self.locations: dict[str, Locations] = {}
        self.queue = WorkQueue(base_delay=0.2, max_delay=30.0)
        self.probes = ProbeManager(runtime, self.queue.add)
        self.workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._pulls: dict[str, asyncio.Lock] = {}
        self.network_lock = asyncio.Lock()
        #: Set by the agent: a cache of every service, indexed by NAMESPACE_INDEX.
        self.services: Informer | None = None

    # -- intake ----------------------------------------------------------------------------------

    def update(self, pod: Object) -> None:
        uid = pod["metadata"]["uid"]
        state = self.pods.get(uid)
        if state is None:
            state = self.pods[uid] = PodState(uid, pod)
        else:
            state.pod = pod
        self.queue.add(uid)

    def remove(self, uid: str) -> None:
        state = self.pods.get(uid)
        if state is not None:
            state.gone = True
            self.queue.add(uid)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"pod-worker-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        self.queue.shutdown(len(self._tasks))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.probes.close()

    async def _work(self) -> None:
        while True:
            uid = await self.queue.get()
            if uid is None:
                return
            try:
                state = self.pods.get(uid)
                if state is not None:
                    again = await self.sync(state)
                    self.queue.forget(uid)
                    if again is not None:
                        self.queue.add_after(uid, again)
            except Exception as exc:
                delay = self.queue.add_rate_limited(uid)
                log.warning("sync of pod %s failed (retry in %.1fs): %s", uid, delay, exc,
                            exc_info=not isinstance(exc, errors.MicrokubeError))
            finally:
                self.queue.done(uid)

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def is_static(pod: Object) -> bool:
        return ((pod["metadata"].get("annotations") or {}).get(CONFIG_SOURCE) or "api") != "api"

    def _pod_dir(self, uid: str) -> Path:
        return self.root / "pods" / uid

    def log_directory(self, pod: Object) -> str:
        meta = pod["metadata"]
        return str(self.root / "logs" / f"{meta.get('namespace', 'default')}_{meta['name']}_{meta['uid']}")

    def _event(self, state: PodState, kind: str, reason: str, message: str,
               container: str | None = None) -> None:
        pod = state.pod
        involved = {"kind": "Pod", "apiVersion": "v1", "metadata": pod["metadata"]}
        if container is not None:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        task = asyncio.ensure_future(self.recorder.record(involved, kind, reason, message))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def sandboxes(self, uid: str) -> list[cri.PodSandbox]:
        found = await self.runtime.list_pod_sandbox(cri.PodSandboxFilter(label_selector={containerspec.POD_UID: uid}))
        return sorted(found, key=lambda s: (s.metadata.attempt, s.created_at))

    async def instances(self, uid: str) -> dict[str, list[podstatus.Instance]]:
        """The pod's container instances by name, newest last."""
        found: dict[str, list[podstatus.Instance]] = {}
        listed = await self.runtime.list_containers(cri.ContainerFilter(label_selector={containerspec.POD_UID: uid}))
        for container in listed:
            try:
                status = await self.runtime.container_status(container.id)
            except errors.NotFound:
                continue
            annotations = container.annotations
            instance = podstatus.Instance(
                status=status, restart_count=int(annotations.get(containerspec.RESTART_COUNT, "0") or 0),
                kind=annotations.get(containerspec.CONTAINER_KIND, ""),
                spec_hash=annotations.get(containerspec.CONTAINER_HASH, ""))
            if instance.exited:
                instance.termination_message = self._termination_message(uid, container.metadata.name,
                                                                         instance.restart_count)
            found.setdefault(container.metadata.name, []).append(instance)
        for items in found.values():
            items.sort(key=lambda i: (i.restart_count, i.status.created_at))
        return found

    def _termination_file(self, uid: str, name: str, restart_count: int) -> Path:
        return self._pod_dir(uid) / "containers" / name / str(restart_count)

    def _termination_message(self, uid: str, name: str, restart_count: int) -> str:
        try:
            with open(self._termination_file(uid, name, restart_count), "rb") as handle:
                return handle.read(4096).decode(errors="replace")
        except OSError:
            return ""

    def remember(self, state: PodState, sandbox_id: str,
                 instances: dict[str, list[podstatus.Instance]]) -> None:
        """What the kubelet API looks up (sandbox, container instances with their log files), as of now."""
        log_directory = Path(self.log_directory(state.pod))
        self.locations[state.uid] = Locations(sandbox_id, {
            name: [ContainerLocation(container_id=i.status.id, log_path=str(log_directory / name /
                                                                           f"{i.restart_count}.log"),
                                     running=i.running) for i in items]
            for name, items in instances.items()})

    # -- sync ------------------------------------------------------------------------------------

    async def sync(self, state: PodState) -> float | None:
        """One pass over a pod; returns seconds until it wants another pass (None: only on events)."""
        pod = state.pod
        meta = pod["metadata"]
        if state.gone or meta.get("deletionTimestamp"):
            await self.terminate(state)
            return None
        if not state.start_time:
            state.start_time = (pod.get("status") or {}).get("startTime") or format_time(utcnow())
        current_phase = (pod.get("status") or {}).get("phase")
        if current_phase in ("Succeeded", "Failed") and state.torn_down:
            return None
        if current_phase in ("Succeeded", "Failed") and not state.last_status:
            # a finished pod seen for the first time (a kubelet restart): make sure nothing of it runs
            await self._stop_pod(state, grace=0, remove=False)
            state.torn_down = True
            return None
        for failure in self.probes.failures(state.uid):
            self._event(state, "Warning", "Unhealthy", probe_event_message(failure.kind, failure.message),
                        failure.container)
        try:
            paths = await self.volumes.setup(pod)
        except VolumeError as exc:
            self._event(state, "Warning", "FailedMount", str(exc))
            await self._report(state, sandbox_ready=False, pod_ips=[], instances=await self.instances(state.uid))
            return 5.0
        sandbox, pod_ips, fresh = await self._ensure_sandbox(state)
        instances = await self.instances(state.uid)
        if fresh:
            instances = {}
        wake: list[float] = [RESYNC]
        if sandbox is not None:
            changes = state.changes
            await self._sync_containers(state, sandbox, pod_ips, paths, instances, wake)
            if state.changes != changes:
                instances = await self.instances(state.uid)
        self.remember(state, sandbox or "", instances)
        status = await self._report(state, sandbox_ready=sandbox is not None, pod_ips=pod_ips, instances=instances)
        if status.get("phase") in ("Succeeded", "Failed"):
            await self._stop_pod(state, grace=0, remove=False)
            state.torn_down = True
            return None
        return max(0.05, min(wake))

    async def _ensure_sandbox(self, state: PodState) -> tuple[str | None, list[str], bool]:
        """The pod's ready sandbox (created, and networked, when missing), its IPs, and whether it is new."""
        pod = state.pod
        if state.sandbox_id:  # the common case: one status call, not a listing of every sandbox
            try:
                known = await self.runtime.pod_sandbox_status(state.sandbox_id)
            except errors.NotFound:
                known = None
            if known is not None and known.state == cri.PodSandboxState.SANDBOX_READY:
                return state.sandbox_id, await self._pod_ips(state, state.sandbox_id), False
        existing = await self.sandboxes(state.uid)
        ready = [s for s in existing if s.state == cri.PodSandboxState.SANDBOX_READY]
        if ready:
            sandbox = ready[-1]
            state.sandbox_id = sandbox.id
            return sandbox.id, await self._pod_ips(state, sandbox.id), False
        state.sandbox_id = ""
        attempt = existing[-1].metadata.attempt + 1 if existing else 0
        for old in existing:  # a dead sandbox: everything of it goes, the pod starts over
            self._event(state, "Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
            await self._remove_sandbox(state, old.id)
        config = containerspec.sandbox_config(pod, log_directory=self.log_directory(pod), attempt=attempt)
        await asyncio.to_thread(os.makedirs, config.log_directory, 0o755, True)
        try:
            sandbox_id = await self.runtime.run_pod_sandbox(config)
        except errors.MicrokubeError as exc:
            self._event(state, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
            state.waiting = {c["name"]: ("ContainerCreating", "") for c in containerspec.containers(pod)}
            return None, [], False
        state.sandbox_id = sandbox_id
        ips: list[str] = []
        if self._networked(pod):
            try:
                ips = await self._network_add(state, sandbox_id)
            except (errors.MicrokubeError, OSError) as exc:
                self._event(state, "Warning", "FailedCreatePodSandBox",
                            f"Failed to create pod sandbox: plugin type=\"network\" failed (add): {exc}")
                await self._remove_sandbox(state, sandbox_id)
                state.sandbox_id = ""
                return None, [], False
        else:
            ips = await self._pod_ips(state, sandbox_id)
        return sandbox_id, ips, True

    def _networked(self, pod: Object) -> bool:
        return (self.network is not None and not self.capabilities.networks_pods_itself
                and not (pod.get("spec") or {}).get("hostNetwork"))

    async def _pod_ips(self, state: PodState, sandbox_id: str) -> list[str]:
        """The pod's addresses: from the network result the kubelet kept, or from the runtime when it
        networks pods itself (containerd with its CNI config); none for host-network pods."""
        if self._networked(state.pod):
            return self._saved_ips(state.uid, sandbox_id)
        if (state.pod.get("spec") or {}).get("hostNetwork"):
            return []
        network = (await self.runtime.pod_sandbox_status(sandbox_id)).network
        return [ip for ip in (network.ip, *network.additional_ips) if ip]

    def _network_file(self, uid: str) -> Path:
        return self._pod_dir(uid) / "network.json"

    def _saved_ips(self, uid: str, sandbox_id: str) -> list[str]:
        try:
            saved = json.loads(self._network_file(uid).read_text())
        except (OSError, ValueError):
            return []
        if saved.get("sandbox") != sandbox_id:
            return []
        return [str(ip) for ip in saved.get("ips") or []]

    def _attachment(self, pod: Object, sandbox_id: str, netns: str) -> cni.AttachmentRequest:
        meta = pod["metadata"]
        return cni.AttachmentRequest(
            container_id=sandbox_id, netns=netns, ifname="eth0",
            args={"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": meta.get("namespace", "default"),
                  "K8S_POD_NAME": meta["name"], "K8S_POD_INFRA_CONTAINER_ID": sandbox_id, "K8S_POD_UID": meta["uid"]})

    async def _network_add(self, state: PodState, sandbox_id: str) -> list[str]:
        status = await self.runtime.pod_sandbox_status(sandbox_id, verbose=True)
        netns = status.info.get("netns", "")
        if not netns:
            raise errors.Permanent(f"the runtime reports no network namespace for sandbox {sandbox_id}")
        assert self.network is not None
        result = await self.network.add(self._attachment(state.pod, sandbox_id, netns))
        ips: list[str] = result.addresses()
        path = self._network_file(state.uid)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        await asyncio.to_thread(tmp.write_text, json.dumps({"sandbox": sandbox_id, "ips": ips,
                                                            "result": result.to_dict()}))
        await asyncio.to_thread(os.replace, tmp, path)
        return ips

    async def _network_del(self, state: PodState, sandbox_id: str) -> None:
        if not self._networked(state.pod) or self.network is None:
            return
        netns = ""
        with contextlib.suppress(errors.NotFound):
            netns = (await self.runtime.pod_sandbox_status(sandbox_id, verbose=True)).info.get("netns", "")
        await self.network.delete(self._attachment(state.pod, sandbox_id, netns))

    async def _remove_sandbox(self, state: PodState, sandbox_id: str) -> None:
        self.probes.stop(state.uid)
        await self.runtime.stop_pod_sandbox(sandbox_id)
        await self._network_del(state, sandbox_id)
        await self.runtime.remove_pod_sandbox(sandbox_id)
        state.started.clear()

    # -- containers ------------------------------------------------------------------------------

    async def _sync_containers(self, state: PodState, sandbox_id: str, pod_ips: list[str], paths: dict[str, str],
                               instances: dict[str, list[podstatus.Instance]], wake: list[float]) -> None:
        pod = state.pod
        policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        pod_ip = pod_ips[0] if pod_ips else self.host_ip()
        for container in containerspec.init_containers(pod):
            name = container["name"]
            latest = _latest(instances, name)
            if containerspec.is_sidecar(container):
                if latest is not None and latest.running:
                    await self._keep_running(state, container, latest, sandbox_id, pod_ip, paths, "sidecar", wake)
                    if not self.probes.started(state.uid, name):
                        return
                    continue
                await self._restart_or_wait(state, container, latest, "Always", sandbox_id, pod_ip, paths,
                                            "sidecar", wake)
                return
            if latest is not None and latest.succeeded:
                continue
            if latest is not None and latest.running:
                return
            if latest is not None and latest.exited and policy == "Never":
                return  # the pod failed
            await self._restart_or_wait(state, container, latest, "OnFailure", sandbox_id, pod_ip, paths, "init",
                                        wake)
            return
        for container in containerspec.containers(pod):
            latest = _latest(instances, container["name"])
            if latest is not None and latest.running:
                await self._keep_running(state, container, latest, sandbox_id, pod_ip, paths, "", wake)
                continue
            await self._restart_or_wait(state, container, latest, policy, sandbox_id, pod_ip, paths, "", wake)

    async def _keep_running(self, state: PodState, container: Object, latest: podstatus.Instance, sandbox_id: str,
                            pod_ip: str, paths: dict[str, str], kind: str, wake: list[float]) -> None:
        name = container["name"]
        cid = latest.status.id
        state.waiting.pop(name, None)
        if cid not in state.started:  # adopted after a kubelet restart: probes resume, nothing restarts
            state.started.add(cid)
            self.probes.start(state.pod, container, cid, pod_ip)
        if latest.spec_hash and latest.spec_hash != containerspec.container_hash(container):
            self._event(state, "Normal", "Killing", f"Container {name} definition changed, will be restarted", name)
            await self._kill(state, container, cid, self._grace(state.pod))
            await self._start(state, container, sandbox_id, pod_ip, paths, kind, latest.restart_count + 1)
            return
        failure = self.probes.liveness_failed(state.uid, name)
        if failure:
            self._event(state, "Normal", "Killing", failure, name)
            await self._kill(state, container, cid, self._grace(state.pod))
            await self._start(state, container, sandbox_id, pod_ip, paths, kind, latest.restart_count + 1)
            return
        started = latest.status.started_at / 1e9
        backoff = state.backoff.get(name)
        if backoff is not None and time.time() - started > BACKOFF_RESET:
            state.backoff.pop(name, None)

    async def _restart_or_wait(self, state: PodState, container: Object, latest: podstatus.Instance | None,
                               policy: str, sandbox_id: str, pod_ip: str, paths: dict[str, str], kind: str,
                               wake: list[float]) -> None:
        name = container["name"]
        if latest is None:
            image_backoff = state.image_backoff.get(name)
            now = time.monotonic()
            if image_backoff is not None and now < image_backoff.until:
                image = container.get("image", "")
                state.waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
                wake.append(image_backoff.until - now)
                return
            start_backoff = state.backoff.get(name)
            if start_backoff is not None and now < start_backoff.until and name in state.waiting:
                wake.append(start_backoff.until - now)  # the last create failed: its reason stays until then
                return
            await self._start(state, container, sandbox_id, pod_ip, paths, kind, 0)
            if name in state.waiting:
                wake.append(1.0)
            return
        if latest.status.state == cri.ContainerState.CONTAINER_CREATED:
            wake.append(1.0)  # a start in flight (or a failed one): the next pass sees it exited or running
            return
        if policy == "Never" or (policy == "OnFailure" and latest.succeeded):
            state.waiting.pop(name, None)
            return
        self.probes.stop(state.uid, name)
        backoff = state.backoff.setdefault(name, Backoff())
        now = time.monotonic()
        if now < backoff.until:
            meta = state.pod["metadata"]
            state.waiting[name] = ("CrashLoopBackOff", f"back-off {backoff.delay:.0f}s restarting failed "
                                   f"container={name} pod={meta['name']}_{meta.get('namespace', 'default')}"
                                   f"({state.uid})")
            wake.append(backoff.until - now)
            return
        if backoff.delay:
            self._event(state, "Warning", "BackOff", f"Back-off restarting failed container {name} in pod "
                        f"{state.pod['metadata']['name']}_{state.pod['metadata'].get('namespace', 'default')}"
                        f"({state.uid})", name)
        backoff.next(now)
        await self._start(state, container, sandbox_id, pod_ip, paths, kind, latest.restart_count + 1)
        await self._prune(state.uid, name)

    async def _prune(self, uid: str, name: str) -> None:
        """Keep the two newest instances of a container (the current and the previous, for logs --previous)."""
        instances = (await self.instances(uid)).get(name) or []
        for old in instances[:-2]:
            with contextlib.suppress(errors.NotFound):
                await self.runtime.remove_container(old.status.id)

    def _grace(self, pod: Object) -> int:
        meta_grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if meta_grace is not None:
            return int(meta_grace)
        spec_grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return DEFAULT_GRACE if spec_grace is None else int(spec_grace)

    async def _ensure_image(self, state: PodState, container: Object) -> str | None:
        """The image present (pulled per imagePullPolicy); None after recording why it is not."""
        name = container["name"]
        image = str(container.get("image") or "")
        if not image:
            state.waiting[name] = ("InvalidImageName", 'Failed to apply default image tag "": '
                                   "couldn't parse image name \"\": invalid reference format")
            return None
        spec = cri.ImageSpec(image, user_specified_image=image)
        policy = containerspec.pull_policy(container)
        lock = self._pulls.setdefault(image, asyncio.Lock())
        async with lock:
            try:
                present = await self.images.image_status(spec)
            except errors.Invalid as exc:
                state.waiting[name] = ("InvalidImageName", str(exc))
                self._event(state, "Warning", "InspectFailed", str(exc), name)
                return None
            if present is not None and (policy != "Always" or containerspec.is_local_image(image)):
                self._event(state, "Normal", "Pulled", f'Container image "{image}" already present on machine', name)
                return image
            if policy == "Never" or containerspec.is_local_image(image):
                message = f'Container image "{image}" is not present with pull policy of Never'
                if containerspec.is_local_image(image):
                    message = (f'Container image "{image}" is not present: {containerspec.LOCAL_REGISTRY} images '
                               "are never pulled; import it with `microkube image import`")
                state.waiting[name] = ("ErrImageNeverPull", message)
                self._event(state, "Warning", "ErrImageNeverPull", message, name)
                return None
            self._event(state, "Normal", "Pulling", f'Pulling image "{image}"', name)
            started = time.monotonic()
            try:
                await self.images.pull_image(spec, await self._auth_for(state.pod, image))
            except errors.MicrokubeError as exc:
                message = f'Failed to pull image "{image}": {exc}'
                state.waiting[name] = ("ErrImagePull", message)
                state.image_backoff.setdefault(name, Backoff()).next(time.monotonic())
                self._event(state, "Warning", "Failed", message, name)
                return None
            state.image_backoff.pop(name, None)
            self._event(state, "Normal", "Pulled", f'Successfully pulled image "{image}" in '
                        f"{time.monotonic() - started:.3f}s", name)
            return image

    async def _auth_for(self, pod: Object, image: str) -> cri.AuthConfig | None:
        """Credentials from the pod's imagePullSecrets (kubernetes.io/dockerconfigjson) for the image's registry."""
        import base64

        first = image.split("/", 1)[0]
        registry = first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"
        for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            try:
                secret = await self.client.get(SECRETS, ref.get("name", ""),
                                               pod["metadata"].get("namespace", "default"))
            except errors.NotFound:
                continue
            raw = (secret.get("data") or {}).get(".dockerconfigjson") or (secret.get("data") or {}).get(".dockercfg")
            if not raw:
                continue
            try:
                config = json.loads(base64.b64decode(raw))
            except ValueError:
                continue
            auths = config.get("auths", config)
            for server, entry in auths.items():
                host = server.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
                if host == registry or (registry == "docker.io"
                                        and host in ("index.docker.io", "registry-1.docker.io")):
                    return cri.AuthConfig(username=entry.get("username", ""), password=entry.get("password", ""),
                                          auth=entry.get("auth", ""), server_address=host)
        return None

    async def _services(self, pod: Object) -> list[Object]:
        """The services whose environment variables the pod's containers get (its namespace's, with service
        links, and the master service), from the services informer once it synced, else from the API."""
        namespace = pod["metadata"].get("namespace", "default")
        if (pod.get("spec") or {}).get("enableServiceLinks") is False:
            namespaces = ["default"] if namespace != "default" else []
        else:
            namespaces = [namespace] + (["default"] if namespace != "default" else [])
        found: list[Object] = []
        for each in namespaces:
            if self.services is not None and self.services.synced.is_set():
                items = self.services.by_index(NAMESPACE_INDEX, each)
            else:
                try:
                    items = (await self.client.list(SERVICES, each)).get("items") or []
                except errors.MicrokubeError:
                    continue
            found += [s for s in items if each == namespace or s["metadata"].get("name") == "kubernetes"]
        return found

    async def _start(self, state: PodState, container: Object, sandbox_id: str, pod_ip: str, paths: dict[str, str],
                     kind: str, restart_count: int) -> None:
        pod = state.pod
        name = container["name"]
        image = await self._ensure_image(state, container)
        if image is None:
            return
        try:
            envs = await container_env(self.client, pod, container, host_ip=self.host_ip(), pod_ip=pod_ip,
                                       pod_ips=[pod_ip] if pod_ip else [], node_allocatable=self.node_allocatable(),
                                       services=await self._services(pod))
            mounts = self.volumes.mounts(pod, container, paths, env=envs)
        except (EnvError, VolumeError) as exc:
            state.waiting[name] = ("CreateContainerConfigError", str(exc))
            state.backoff.setdefault(name, Backoff()).next(time.monotonic())
            self._event(state, "Warning", "Failed", f"Error: {exc}", name)
            return
        message_file = self._termination_file(state.uid, name, restart_count)
        await asyncio.to_thread(message_file.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(message_file.touch)
        message_path = str(container.get("terminationMessagePath") or containerspec.DEFAULT_TERMINATION_MESSAGE_PATH)
        if not any(m.container_path == message_path for m in mounts):
            mounts.append(cri.Mount(container_path=message_path, host_path=str(message_file)))
        config = containerspec.container_config(pod, container, kind=kind, restart_count=restart_count, image=image,
                                                envs=envs, mounts=mounts)
        sandbox_config = containerspec.sandbox_config(pod, log_directory=self.log_directory(pod), attempt=0)
        state.changes += 1
        try:
            cid = await self.runtime.create_container(sandbox_id, config, sandbox_config)
        except errors.MicrokubeError as exc:
            state.waiting[name] = ("CreateContainerError", str(exc))
            state.backoff.setdefault(name, Backoff()).next(time.monotonic())
            self._event(state, "Warning", "Failed", f"Error: {exc}", name)
            return
        self._event(state, "Normal", "Created", f"Created container {name}", name)
        try:
            await self.runtime.start_container(cid)
        except errors.MicrokubeError as exc:
            state.waiting[name] = ("RunContainerError", str(exc))
            state.backoff.setdefault(name, Backoff()).next(time.monotonic())
            self._event(state, "Warning", "Failed", f"Error: {exc}", name)
            with contextlib.suppress(errors.MicrokubeError):
                await self.runtime.remove_container(cid)
            return
        state.waiting.pop(name, None)
        state.started.add(cid)
        self._event(state, "Normal", "Started", f"Started container {name}", name)
        post_start = ((container.get("lifecycle") or {}).get("postStart"))
        if post_start:
            result = await handlers.run_action(post_start, runtime=self.runtime, container_id=cid, pod_ip=pod_ip,
                                               container=container, timeout=float(self._grace(pod)), purpose="hook")
            if not result.ok:
                self._event(state, "Warning", "FailedPostStartHook", result.message, name)
                await self._kill(state, container, cid, self._grace(pod), run_pre_stop=False)
                return
        self.probes.start(pod, container, cid, pod_ip)

    async def _kill(self, state: PodState, container: Object | None, cid: str, grace: int, *,
                    run_pre_stop: bool = True) -> None:
        """preStop (within the grace period), then SIGTERM and SIGKILL after what is left of it."""
        state.changes += 1
        deadline = time.monotonic() + grace
        name = container["name"] if container else ""
        if container is not None:
            self.probes.stop(state.uid, name)
            pre_stop = (container.get("lifecycle") or {}).get("preStop")
            if pre_stop and run_pre_stop and grace > 0:
                try:
                    result = await asyncio.wait_for(handlers.run_action(
                        pre_stop, runtime=self.runtime, container_id=cid, pod_ip=self._pod_ip(state),
                        container=container, timeout=float(grace), purpose="hook"), grace)
                    if not result.ok:
                        self._event(state, "Warning", "FailedPreStopHook", result.message, name)
                except TimeoutError:
                    self._event(state, "Warning", "FailedPreStopHook",
                                f"PreStopHook for container {name} did not finish in {grace}s", name)
        remaining = max(0, round(deadline - time.monotonic()))
        with contextlib.suppress(errors.NotFound):
            await self.runtime.stop_container(cid, remaining)

    def _pod_ip(self, state: PodState) -> str:
        ips = (state.last_status or {}).get("podIPs") or []
        return str(ips[0]["ip"]) if ips else self.host_ip()

    # -- teardown --------------------------------------------------------------------------------

    async def _stop_pod(self, state: PodState, *, grace: int, remove: bool) -> None:
        """Stop every container (preStop first, in parallel), the sandbox and its network; ``remove`` also
        removes them and the pod's volumes and directory."""
        pod = state.pod
        specs = {c["name"]: c for c in containerspec.containers(pod) + containerspec.init_containers(pod)}
        instances = await self.instances(state.uid)
        running = [(specs.get(name), items[-1].status.id) for name, items in instances.items()
                   if items and items[-1].running]
        regular = [r for r in running if r[0] is None or not containerspec.is_sidecar(r[0])]
        sidecars = [r for r in running if r[0] is not None and containerspec.is_sidecar(r[0])]
        for group in (regular, sidecars):  # sidecars stop after the containers they serve
            if group:
                if grace > 0:
                    for spec, _ in group:
                        if spec is not None:
                            self._event(state, "Normal", "Killing", f"Stopping container {spec['name']}",
                                        spec["name"])
                await asyncio.gather(*(self._kill(state, spec, cid, grace) for spec, cid in group))
        self.probes.stop(state.uid)
        for sandbox in await self.sandboxes(state.uid):
            await self.runtime.stop_pod_sandbox(sandbox.id)
            await self._network_del(state, sandbox.id)
            if remove:
                await self.runtime.remove_pod_sandbox(sandbox.id)
        if remove:
            await self.volumes.teardown(state.uid)
            log_dir = self.log_directory(pod)
            await asyncio.to_thread(_rmtree, Path(log_dir))

    async def terminate(self, state: PodState) -> None:
        pod = state.pod
        meta = pod["metadata"]
        if not state.torn_down or state.gone or meta.get("deletionTimestamp"):
            grace = 0 if state.gone else self._grace(pod)
            await self._stop_pod(state, grace=grace, remove=True)
            state.torn_down = True
        if not state.gone and not self.is_static(state.pod):
            await self._delete_from_api(state)
        self.pods.pop(state.uid, None)
        self.locations.pop(state.uid, None)

    async def _delete_from_api(self, state: PodState) -> None:
        meta = state.pod["metadata"]
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": state.uid}}
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.client.request("DELETE", PODS.path(meta.get("namespace", "default"), meta["name"]), body=body)

    # -- status ----------------------------------------------------------------------------------

    async def _report(self, state: PodState, *, sandbox_ready: bool, pod_ips: list[str],
                      instances: dict[str, list[podstatus.Instance]]) -> Object:
        views: dict[str, podstatus.ContainerView] = {}
        specs = containerspec.containers(state.pod) + containerspec.init_containers(state.pod)
        for spec in specs:
            name = spec["name"]
            items = instances.get(name) or []
            latest = items[-1] if items else None
            views[name] = podstatus.ContainerView(
                latest=latest, previous=items[-2] if len(items) > 1 else None, waiting=state.waiting.get(name),
                ready=latest is not None and latest.running and self.probes.ready(state.uid, name),
                started=latest is not None and latest.running and self.probes.started(state.uid, name))
        view = podstatus.PodView(pod=state.pod, sandbox_ready=sandbox_ready, pod_ips=pod_ips, host_ip=self.host_ip(),
                                 start_time=state.start_time, runtime_scheme=self.runtime_scheme, containers=views)
        new = podstatus.pod_status(view, format_time(utcnow()))
        if state.last_status is None or podstatus.without_times(new) != podstatus.without_times(state.last_status):
            state.last_status = new
            if self.on_status is not None:
                await self.on_status(state, new)
        return new


def _latest(instances: dict[str, list[podstatus.Instance]], name: str) -> podstatus.Instance | None:
    found = instances.get(name)
    return found[-1] if found else None


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
