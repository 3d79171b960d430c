"""A pod's status as the kubelet reports it, computed from what the runtime says about its containers
(kube's ``generateAPIPodStatus`` and ``getPhase``): phase, conditions, container statuses with state,
lastState, restartCount, readiness, ids and reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from microkube.kubelet import containerspec
from microkube.timestamps import format_time
from microkube_interfaces import cri

Object = dict[str, Any]

#: Conditions the kubelet owns; any other condition of the pod (PodScheduled, DisruptionTarget, …) is kept.
KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


@dataclass
class Instance:
    """One container instance as the runtime reports it."""

    status: cri.ContainerStatus
    restart_count: int
    kind: str
    spec_hash: str
    termination_message: str = ""

    @property
    def running(self) -> bool:
        return self.status.state == cri.ContainerState.CONTAINER_RUNNING

    @property
    def exited(self) -> bool:
        return self.status.state in (cri.ContainerState.CONTAINER_EXITED, cri.ContainerState.CONTAINER_UNKNOWN)

    @property
    def succeeded(self) -> bool:
        return self.exited and self.status.exit_code == 0


@dataclass
class ContainerView:
    """What the status needs about one named container of the pod."""

    latest: Instance | None = None
    previous: Instance | None = None
    #: (reason, message) of a container the kubelet could not (re)start: ErrImagePull, CrashLoopBackOff, …
    waiting: tuple[str, str] | None = None
    ready: bool = False
    started: bool = False


@dataclass
class PodView:
    pod: Object
    sandbox_ready: bool
    pod_ips: list[str]
    host_ip: str
    start_time: str
    runtime_scheme: str
    containers: dict[str, ContainerView] = field(default_factory=dict)
    #: The pod is being torn down (deleted, or finished): nothing restarts any more.
    terminating: bool = False


def _ns_time(nanoseconds: int) -> str | None:
    if not nanoseconds:
        return None
    from datetime import UTC, datetime

    return format_time(datetime.fromtimestamp(nanoseconds / 1e9, UTC))


def _terminated(instance: Instance, scheme: str) -> Object:
    status = instance.status
    reason = status.reason or (cri.REASON_COMPLETED if status.exit_code == 0 else cri.REASON_ERROR)
    out: Object = {"exitCode": status.exit_code, "reason": reason,
                   "startedAt": _ns_time(status.started_at), "finishedAt": _ns_time(status.finished_at),
                   "containerID": f"{scheme}://{status.id}"}
    message = instance.termination_message or status.message
    if message:
        out["message"] = message
    return out


def container_status(name: str, spec: Object, view: ContainerView, scheme: str) -> Object:
    latest, previous = view.latest, view.previous
    out: Object = {"name": name, "image": spec.get("image", ""), "imageID": "", "ready": False,
                   "restartCount": latest.restart_count if latest else 0, "started": False,
                   "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}
    if latest is not None:
        out["containerID"] = f"{scheme}://{latest.status.id}"
        out["imageID"] = latest.status.image_ref
    if latest is not None and latest.running:
        out["state"] = {"running": {"startedAt": _ns_time(latest.status.started_at)}}
        out["ready"] = view.ready
        out["started"] = view.started
        if previous is not None:
            out["lastState"] = {"terminated": _terminated(previous, scheme)}
    elif latest is not None and latest.exited:
        terminated = _terminated(latest, scheme)
        if view.waiting is not None:  # exited and waiting to restart (CrashLoopBackOff, …)
            out["state"] = {"waiting": {"reason": view.waiting[0], "message": view.waiting[1]}}
            out["lastState"] = {"terminated": terminated}
        else:
            out["state"] = {"terminated": terminated}
            if previous is not None:
                out["lastState"] = {"terminated": _terminated(previous, scheme)}
    elif view.waiting is not None:
        out["state"] = {"waiting": {"reason": view.waiting[0], "message": view.waiting[1]}}
        if previous is not None:
            out["lastState"] = {"terminated": _terminated(previous, scheme)}
    for key in ("state", "lastState"):
        waiting = out[key].get("waiting")
        if waiting is not None and not waiting.get("message"):
            waiting.pop("message", None)
    return out


def phase(view: PodView) -> str:
    """kube's getPhase: Pending while initialising or waiting, Running while a container runs or will
    restart, Succeeded when all finished with 0 and none restarts, Failed when one failed and none restarts."""
    pod = view.pod
    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy") or "Always"
    for container in containerspec.init_containers(pod):
        found = view.containers.get(container["name"]) or ContainerView()
        latest = found.latest
        if containerspec.is_sidecar(container):
            continue
        if latest is not None and latest.succeeded:
            continue
        if latest is not None and latest.exited and policy == "Never":
            return "Failed"
        return "Pending"
    running = stopped = succeeded = waiting = 0
    for container in containerspec.containers(pod):
        found = view.containers.get(container["name"]) or ContainerView()
        latest = found.latest
        if latest is not None and latest.running:
            running += 1
        elif latest is not None and latest.exited:
            stopped += 1
            succeeded += latest.succeeded
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
    if policy == "Always" and not view.terminating:
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if policy == "Never" or view.terminating:
        return "Failed"
    return "Running"  # OnFailure: the failed ones restart


def _condition(kind: str, ok: bool, now: str, previous: dict[str, Object], reason: str = "",
               message: str = "") -> Object:
    status = "True" if ok else "False"
    old = previous.get(kind)
    transition = old.get("lastTransitionTime") if old and old.get("status") == status else now
    out: Object = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": transition}
    if reason and not ok:
        out["reason"] = reason
    if message and not ok:
        out["message"] = message
    return out


def pod_status(view: PodView, now: str) -> Object:
    pod = view.pod
    spec = pod.get("spec") or {}
    current = pod.get("status") or {}
    previous = {c.get("type", ""): c for c in current.get("conditions") or [] if isinstance(c, dict)}
    scheme = view.runtime_scheme
    init_specs = containerspec.init_containers(pod)
    specs = containerspec.containers(pod)
    init_statuses = [container_status(c["name"], c, view.containers.get(c["name"]) or ContainerView(), scheme)
                     for c in init_specs]
    statuses = [container_status(c["name"], c, view.containers.get(c["name"]) or ContainerView(), scheme)
                for c in specs]
    pod_phase = phase(view)
    initialized = all(
        (s.get("started") if containerspec.is_sidecar(c) else "terminated" in s["state"]
         and s["state"]["terminated"].get("exitCode") == 0)
        or ("terminated" in s.get("lastState", {}) and s["lastState"]["terminated"].get("exitCode") == 0
            and not containerspec.is_sidecar(c))
        for c, s in zip(init_specs, init_statuses, strict=True)) or pod_phase in ("Running", "Succeeded")
    not_ready = [s["name"] for s in statuses if not s["ready"]]
    not_ready += [s["name"] for c, s in zip(init_specs, init_statuses, strict=True)
                  if containerspec.is_sidecar(c) and not s["ready"]]
    containers_ready = not not_ready and pod_phase == "Running"
    uninitialized = [s["name"] for c, s in zip(init_specs, init_statuses, strict=True)
                     if not containerspec.is_sidecar(c) and "terminated" not in s["state"]]
    conditions = [
        _condition("PodReadyToStartContainers", view.sandbox_ready, now, previous),
        _condition("Initialized", initialized, now, previous, "ContainersNotInitialized",
                   f"containers with incomplete status: [{' '.join(uninitialized)}]"),
        _condition("ContainersReady", containers_ready, now, previous,
                   "PodCompleted" if pod_phase in ("Succeeded", "Failed") else "ContainersNotReady",
                   "" if pod_phase in ("Succeeded", "Failed")
                   else f"containers with unready status: [{' '.join(not_ready)}]"),
        _condition("Ready", containers_ready, now, previous,
                   "PodCompleted" if pod_phase in ("Succeeded", "Failed") else "ContainersNotReady",
                   "" if pod_phase in ("Succeeded", "Failed")
                   else f"containers with unready status: [{' '.join(not_ready)}]"),
    ]
    kept = [c for kind, c in previous.items() if kind not in KUBELET_CONDITIONS]
    status: Object = {
        "phase": pod_phase,
        "conditions": kept + conditions,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}] if view.host_ip else [],
        "startTime": view.start_time,
        "containerStatuses": statuses,
        "qosClass": containerspec.qos_class(pod),
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    ips = view.pod_ips if not spec.get("hostNetwork") else [view.host_ip]
    if ips and ips[0]:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    return status


def without_times(status: Object) -> Object:
    """The status minus the condition timestamps that change on every write (to decide whether to write)."""
    out = dict(status)
    out["conditions"] = [{k: v for k, v in c.items() if k not in ("lastTransitionTime", "lastProbeTime")}
                         for c in status.get("conditions") or []]
    return out
