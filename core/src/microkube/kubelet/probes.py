"""Startup, liveness and readiness probes: one asyncio worker per probe of each running container instance.

The rules are kubelet 1.32's prober workers (``pkg/kubelet/prober/worker.go``):

- A worker waits ``initialDelaySeconds`` after the instance started (plus a little jitter on the first run),
  then probes every ``periodSeconds`` with ``timeoutSeconds``.
- A result changes only after ``successThreshold`` consecutive successes or ``failureThreshold`` consecutive
  failures. A probe that *errored* (the action could not run) is thrown away: the previous result stays.
- Initial results: readiness false, liveness success, startup unknown. Liveness and readiness do not run
  until the startup probe has succeeded; after that the startup worker idles.
- Liveness or startup reaching ``failureThreshold`` marks the instance for restart (``liveness_failed``) and
  puts the worker on hold until ``start()`` brings a new instance.
- ``ready`` is the readiness result once the container has started; without a readiness probe it is true
  once started. ``started`` is the startup result; without a startup probe it is true.

Every failed or errored probe is recorded for the Unhealthy events (``failures()`` drains them) and fires
``on_change(pod_uid)``; so does every change of a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from microkube.kubelet.handlers import run_action
from microkube_interfaces import cri

log = logging.getLogger(__name__)

STARTUP = "Startup"
LIVENESS = "Liveness"
READINESS = "Readiness"
KINDS = (STARTUP, LIVENESS, READINESS)
_SPEC_KEYS = {STARTUP: "startupProbe", LIVENESS: "livenessProbe", READINESS: "readinessProbe"}
#: The first run of a worker is delayed by up to this share of its period (at most MAX_JITTER seconds), so
#: the probes of many containers started together do not run in lockstep.
JITTER_SHARE = 0.1
MAX_JITTER = 1.0
#: kubelet retries a probe that errored up to this many times within one period.
MAX_PROBE_RETRIES = 3
#: Undrained failures kept per pod.
MAX_PENDING_FAILURES = 100


class ProbeFailure(NamedTuple):
    """One failed probe run: the container name, the kind (``Liveness``…) and the probe's message.

    The Unhealthy event reads ``f"{kind} probe failed: {message}"``."""

    container: str
    kind: str
    message: str


def event_message(kind: str, message: str) -> str:
    return f"{kind} probe failed: {message}"


@dataclass(frozen=True)
class ProbeSpec:
    action: dict[str, Any]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def parse(cls, probe: dict[str, Any], where: str) -> ProbeSpec:
        """Kubernetes' defaults for unset fields; a bad value is a ValueError naming the field."""

        def number(name: str, default: int, minimum: int) -> int:
            value = probe.get(name)
            if value is None or (value == 0 and minimum > 0):
                return default
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{where}.{name}: {value!r} must be an integer of at least {minimum}")
            return value

        return cls(action=probe, initial_delay=number("initialDelaySeconds", 0, 0),
                   period=number("periodSeconds", 10, 1), timeout=number("timeoutSeconds", 1, 1),
                   success_threshold=number("successThreshold", 1, 1),
                   failure_threshold=number("failureThreshold", 3, 1))


@dataclass
class _Instance:
    """The probe state of one container instance (one container id)."""

    pod_uid: str
    name: str
    container_id: str
    started_at: float
    #: None: no result yet (startup unknown). Kinds without a probe have no entry.
    results: dict[str, bool | None] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    wake: dict[str, asyncio.Event] = field(default_factory=dict)
    last_failure: dict[str, str] = field(default_factory=dict)
    liveness_failed: str | None = None


class ProbeManager:
    def __init__(self, runtime: cri.RuntimeService, on_change: Callable[[str], None]) -> None:
        self._runtime = runtime
        self._on_change = on_change
        self._instances: dict[tuple[str, str], _Instance] = {}
        self._failures: dict[str, list[ProbeFailure]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- lifecycle of workers ---------------------------------------------------------------------

    def start(self, pod: dict[str, Any], container: dict[str, Any], container_id: str, pod_ip: str) -> None:
        """Start the workers of a new container instance (replacing the earlier instance's). Must be called
        on the event loop. A malformed probe is a ValueError naming the field; nothing is started then."""
        if self._closed:
            raise RuntimeError("ProbeManager is closed")
        loop = asyncio.get_running_loop()
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        name = str(container.get("name") or "")
        if not uid or not name:
            raise ValueError("pod metadata.uid and container name are required to probe a container")
        specs: dict[str, ProbeSpec] = {}
        for kind in KINDS:
            probe = container.get(_SPEC_KEYS[kind])
            if probe:
                specs[kind] = ProbeSpec.parse(probe, f"spec.containers[{name}].{_SPEC_KEYS[kind]}")
        self.stop(uid, name)
        instance = _Instance(uid, name, container_id, loop.time())
        self._instances[(uid, name)] = instance
        initial = {STARTUP: None, LIVENESS: True, READINESS: False}
        for kind, spec in specs.items():
            instance.results[kind] = initial[kind]
            instance.wake[kind] = asyncio.Event()
            instance.tasks[kind] = loop.create_task(
                self._worker(instance, kind, spec, container, pod_ip),
                name=f"probe {kind.lower()} {uid}/{name}")

    def stop(self, pod_uid: str, container_name: str | None = None) -> None:
        """Stop the workers of one container (or of every container of the pod) and forget their results."""
        keys = [key for key in self._instances
                if key[0] == pod_uid and (container_name is None or key[1] == container_name)]
        for key in keys:
            instance = self._instances.pop(key)
            for task in instance.tasks.values():
                task.cancel()
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
        if container_name is None:
            self._failures.pop(pod_uid, None)

    async def close(self) -> None:
        self._closed = True
        for uid in {key[0] for key in self._instances}:
            self.stop(uid)
        pending = list(self._stopping)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- results ----------------------------------------------------------------------------------

    def started(self, pod_uid: str, container_name: str) -> bool:
        instance = self._instances.get((pod_uid, container_name))
        if instance is None:
            return False
        return instance.results.get(STARTUP, True) is True

    def ready(self, pod_uid: str, container_name: str) -> bool:
        instance = self._instances.get((pod_uid, container_name))
        if instance is None or not self.started(pod_uid, container_name):
            return False
        return instance.results.get(READINESS, True) is True

    def liveness_failed(self, pod_uid: str, container_name: str) -> str | None:
        """Why the instance must be restarted (liveness or startup reached failureThreshold), else None."""
        instance = self._instances.get((pod_uid, container_name))
        return None if instance is None else instance.liveness_failed

    def last_failure(self, pod_uid: str, container_name: str, kind: str) -> str | None:
        instance = self._instances.get((pod_uid, container_name))
        return None if instance is None else instance.last_failure.get(kind)

    def failures(self, pod_uid: str) -> list[ProbeFailure]:
        """Probe failures of the pod since the last call (for Unhealthy events), oldest first."""
        return self._failures.pop(pod_uid, [])

    # --- the worker -------------------------------------------------------------------------------

    def _notify(self, pod_uid: str) -> None:
        try:
            self._on_change(pod_uid)
        except Exception:
            log.exception("probe on_change callback failed for pod %s", pod_uid)

    def _set(self, instance: _Instance, kind: str, value: bool) -> None:
        if self._instances.get((instance.pod_uid, instance.name)) is not instance:
            return  # replaced or stopped while the probe ran
        if instance.results.get(kind) == value:
            return
        instance.results[kind] = value
        if kind == STARTUP and value:
            # Liveness and readiness were waiting for the container to start: run them now.
            for other in (LIVENESS, READINESS):
                if other in instance.wake:
                    instance.wake[other].set()
        self._notify(instance.pod_uid)

    def _record_failure(self, instance: _Instance, kind: str, message: str) -> None:
        if self._instances.get((instance.pod_uid, instance.name)) is not instance:
            return
        instance.last_failure[kind] = message
        pending = self._failures.setdefault(instance.pod_uid, [])
        pending.append(ProbeFailure(instance.name, kind, message))
        del pending[:-MAX_PENDING_FAILURES]  # nobody draining: keep the newest
        self._notify(instance.pod_uid)

    async def _worker(self, instance: _Instance, kind: str, spec: ProbeSpec, container: dict[str, Any],
                      pod_ip: str) -> None:
        loop = asyncio.get_running_loop()
        jitter = random.uniform(0, min(spec.period * JITTER_SHARE, MAX_JITTER))
        await asyncio.sleep(max(0.0, instance.started_at + spec.initial_delay - loop.time()) + jitter)
        wake = instance.wake[kind]
        last: bool | None = None
        run = 0
        while True:
            tick = loop.time()
            wake.clear()
            if kind == STARTUP and instance.results.get(STARTUP) is True:
                return  # started: this instance needs no more startup probes
            if kind == STARTUP or instance.results.get(STARTUP, True) is True:
                ok, message = await self._probe(instance, kind, spec, container, pod_ip)
                if ok is not None:
                    if ok != last:
                        last, run = ok, 0
                    run += 1
                    if not ok:
                        self._record_failure(instance, kind, message)
                    threshold = spec.success_threshold if ok else spec.failure_threshold
                    if run >= threshold:
                        self._set(instance, kind, ok)
                        if not ok and kind in (LIVENESS, STARTUP):
                            self._restart_needed(instance, kind)
                            return  # on hold until a new instance replaces this one
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.0, tick + spec.period - loop.time()))

    async def _probe(self, instance: _Instance, kind: str, spec: ProbeSpec, container: dict[str, Any],
                     pod_ip: str) -> tuple[bool | None, str]:
        """(True/False, message), or (None, message) when the probe errored every retry."""
        message = ""
        for _ in range(MAX_PROBE_RETRIES):
            try:
                result = await run_action(spec.action, runtime=self._runtime, container_id=instance.container_id,
                                          pod_ip=pod_ip, container=container, timeout=spec.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a handler must not end the worker
                log.exception("%s probe of %s/%s crashed", kind, instance.pod_uid, instance.name)
                message = f"probe crashed: {exc}"
                continue
            if not result.errored:
                return result.ok, result.message
            message = result.message
        if message:
            self._record_failure(instance, kind, message)
        return None, message

    def _restart_needed(self, instance: _Instance, kind: str) -> None:
        if self._instances.get((instance.pod_uid, instance.name)) is not instance:
            return
        instance.liveness_failed = f"Container {instance.name} failed {kind.lower()} probe, will be restarted"
        self._notify(instance.pod_uid)
