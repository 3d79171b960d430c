"""The Job controller: run pods until ``completions`` succeed, at most ``parallelism`` at once.

Covers NonIndexed and Indexed completion modes, ``backoffLimit`` (counted in failed pods),
``podFailurePolicy`` (FailJob, Ignore and Count on exit codes and pod conditions; FailIndex counts, as
``backoffLimitPerIndex`` is not implemented),
``activeDeadlineSeconds``, ``suspend``, ``ttlSecondsAfterFinished``, and the status and conditions
``kubectl wait --for=condition=complete`` reads. Pods are found through their controller
ownerReference; expectations keep a lagging pod cache from doubling a decision.
"""

from __future__ import annotations

import copy
from typing import Any

from microkube.client import Resource
from microkube.controllers.manager import CONTROLLER_UID
from microkube.controllers.replicaset import PODS, Expectation, is_ready
from microkube.timestamps import format_time, parse_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

JOBS = ResourceRef("batch", "v1", "jobs", "Job")
INDEX = "batch.kubernetes.io/job-completion-index"
MANAGER = "job-controller"


def finished_condition(job: dict[str, Any]) -> str | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def _exit_code_matches(rule: dict[str, Any], pod: dict[str, Any]) -> tuple[str, int] | None:
    """The first terminated container (by name, if the rule names one) whose exit code the rule selects."""
    operator, values = rule.get("operator"), {int(v) for v in rule.get("values") or []}
    status = pod.get("status") or {}
    for entry in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if rule.get("containerName") and entry.get("name") != rule["containerName"]:
            continue
        terminated = (entry.get("state") or {}).get("terminated")
        if not terminated:
            continue
        code = int(terminated.get("exitCode", 0))
        if (operator == "In" and code in values) or (operator == "NotIn" and code != 0 and code not in values):
            return str(entry.get("name", "")), code
    return None


def pod_failure_action(policy: dict[str, Any] | None, pod: dict[str, Any]) -> tuple[str, str]:
    """What Kubernetes' podFailurePolicy says about a failed pod: the action of the first matching rule
    (FailJob, Ignore, Count, FailIndex) and a message; Count when no rule matches."""
    meta = pod.get("metadata") or {}
    where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    for index, rule in enumerate((policy or {}).get("rules") or []):
        action = str(rule.get("action", "Count"))
        if rule.get("onExitCodes"):
            matched = _exit_code_matches(rule["onExitCodes"], pod)
            if matched is not None:
                return action, (f"Container {matched[0]} for pod {where} failed with exit code {matched[1]} "
                                f"matching {action} rule at index {index}")
        for wanted in rule.get("onPodConditions") or []:
            for condition in (pod.get("status") or {}).get("conditions") or []:
                if condition.get("type") == wanted.get("type") and \
                        condition.get("status") == wanted.get("status", "True"):
                    return action, (f"Pod {where} has condition {wanted.get('type')} matching {action} rule at "
                                    f"index {index}")
    return "Count", ""


class JobController:
    name = "job"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.context = context
        self.jobs = context.cache(JOBS)
        self.pods = context.cache(PODS)
        self.resource = Resource("batch", "v1", "jobs")
        self.pods_resource = Resource("", "v1", "pods")
        self.expectations: dict[str, Expectation] = {}
        self.pods.add_handler(self._observe)

    def _observe(self, event: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "Job":
                expectation = self.expectations.get(f"{pod['metadata'].get('namespace')}/{ref['name']}")
                if expectation is not None and event == "ADDED":
                    expectation.adds -= 1
                elif expectation is not None and event == "DELETED":
                    expectation.deletes.discard(pod["metadata"]["name"])

    async def reconcile(self, key: str) -> Outcome:
        job = self.jobs.get(key)
        if job is None or job["metadata"].get("deletionTimestamp"):
            self.expectations.pop(key, None)
            return Outcome.done()
        finished = finished_condition(job)
        if finished:
            return await self._expire(job)
        expectation = self.expectations.get(key)
        if expectation is not None and not expectation.satisfied():
            return Outcome.done()
        spec = job.get("spec") or {}
        status = copy.deepcopy(job.get("status") or {})
        now = utcnow()
        status.setdefault("startTime", format_time(now))
        pods = self.pods.by_index(CONTROLLER_UID, job["metadata"]["uid"])
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                  and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        succeeded = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        done_indexes = ({int(p["metadata"].get("annotations", {}).get(INDEX, -1)) for p in succeeded}
                        if indexed else set())
        if indexed:
            complete = completions is not None and len(done_indexes) >= int(completions)
        elif completions is None:
            complete = bool(succeeded) and not active
        else:
            complete = len(succeeded) >= int(completions)
        failure: tuple[str, str] | None = None
        verdicts = [(pod, pod_failure_action(spec.get("podFailurePolicy"), pod)) for pod in failed]
        fail_job = next((message for _, (action, message) in verdicts if action == "FailJob"), None)
        failed = [pod for pod, (action, _) in verdicts if action != "Ignore"]
        if fail_job is not None:
            failure = ("PodFailurePolicy", fail_job)
        elif len(failed) > int(spec.get("backoffLimit", 6)):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        deadline = spec.get("activeDeadlineSeconds")
        started = parse_time(status.get("startTime"))
        remaining_time = None
        if deadline is not None and started is not None:
            remaining_time = started.timestamp() + int(deadline) - now.timestamp()
            if remaining_time <= 0:
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if failure or complete or spec.get("suspend"):
            await self._delete(key, active)
            active = []
        elif (wanted := self._wanted(spec, active, succeeded, done_indexes)) > 0 or indexed:
            await self._create(job, key, active, wanted, done_indexes)
        status.update(active=len(active), succeeded=len(succeeded), failed=len(failed),
                      ready=sum(1 for p in active if is_ready(p)))
        if indexed:
            status["completedIndexes"] = ",".join(str(i) for i in sorted(done_indexes))
        conditions = [c for c in status.get("conditions") or [] if c.get("type") not in ("Suspended",)]
        stamp = format_time(now)
        if failure:
            conditions += [{"type": "FailureTarget", "status": "True", "reason": failure[0], "message": failure[1],
                            "lastProbeTime": stamp, "lastTransitionTime": stamp},
                           {"type": "Failed", "status": "True", "reason": failure[0], "message": failure[1],
                            "lastProbeTime": stamp, "lastTransitionTime": stamp}]
        elif complete:
            status["completionTime"] = stamp
            conditions += [{"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                            "message": "Reached expected number of succeeded pods", "lastProbeTime": stamp,
                            "lastTransitionTime": stamp},
                           {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                            "message": "Reached expected number of succeeded pods", "lastProbeTime": stamp,
                            "lastTransitionTime": stamp}]
        elif spec.get("suspend"):
            conditions.append({"type": "Suspended", "status": "True", "reason": "JobSuspended",
                               "message": "Job suspended", "lastProbeTime": stamp, "lastTransitionTime": stamp})
        if conditions:
            status["conditions"] = conditions
        if failure:
            await self.context.record_event(job, "Warning", failure[0], failure[1])
        elif complete:
            await self.context.record_event(job, "Normal", "Completed", "Job completed")
        if status != (job.get("status") or {}):
            try:
                await self.client.patch(self.resource, job["metadata"]["name"], {"status": status},
                                        job["metadata"]["namespace"], subresource="status", field_manager=MANAGER)
            except errors.NotFound:
                return Outcome.done()
        if remaining_time is not None and not failure and not complete:
            return Outcome.after(max(0.5, remaining_time))
        return Outcome.done()

    @staticmethod
    def _wanted(spec: dict[str, Any], active: list[dict[str, Any]], succeeded: list[dict[str, Any]],
                done_indexes: set[int]) -> int:
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if completions is None:
            return 0 if succeeded else parallelism - len(active)
        remaining = int(completions) - (len(done_indexes) if spec.get("completionMode") == "Indexed"
                                        else len(succeeded))
        return min(parallelism, remaining) - len(active)

    async def _create(self, job: dict[str, Any], key: str, active: list[dict[str, Any]], wanted: int,
                      done_indexes: set[int]) -> None:
        spec = job.get("spec") or {}
        meta = job["metadata"]
        template = copy.deepcopy(spec.get("template") or {})
        indexes: list[int | None]
        if spec.get("completionMode") == "Indexed":
            running = {int(p["metadata"].get("annotations", {}).get(INDEX, -1)) for p in active}
            free = [i for i in range(int(spec.get("completions") or 0)) if i not in done_indexes | running]
            slots = int(spec.get("parallelism", 1)) - len(active)
            indexes = list(free[:max(0, slots)])
        else:
            indexes = [None] * max(0, wanted)
        if not indexes:
            return
        self.expectations[key] = Expectation(adds=len(indexes))
        for index in indexes:
            pod_meta = template.get("metadata") or {}
            labels = {**(pod_meta.get("labels") or {}), "batch.kubernetes.io/job-name": meta["name"],
                      "job-name": meta["name"], "batch.kubernetes.io/controller-uid": meta["uid"]}
            annotations = dict(pod_meta.get("annotations") or {})
            pod_spec = copy.deepcopy(template.get("spec") or {})
            name_prefix = f"{meta['name']}-"
            if index is not None:
                annotations[INDEX] = str(index)
                labels[INDEX] = str(index)
                name_prefix = f"{meta['name']}-{index}-"
                for container in pod_spec.get("containers") or []:
                    container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
            pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": pod_spec, "metadata": {
                "generateName": name_prefix, "namespace": meta["namespace"], "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]}}
            if annotations:
                pod["metadata"]["annotations"] = annotations
            try:
                created = await self.client.create(self.pods_resource, pod, meta["namespace"], field_manager=MANAGER)
            except errors.MicrokubeError:
                self.expectations[key].adds -= 1
                raise
            await self.context.record_event(job, "Normal", "SuccessfulCreate",
                                            f"Created pod: {created['metadata']['name']}")

    async def _delete(self, key: str, pods: list[dict[str, Any]]) -> None:
        if not pods:
            return
        self.expectations[key] = Expectation(deletes={p["metadata"]["name"] for p in pods})
        for pod in pods:
            try:
                await self.client.delete(self.pods_resource, pod["metadata"]["name"], pod["metadata"]["namespace"])
            except errors.NotFound:
                self.expectations[key].deletes.discard(pod["metadata"]["name"])

    async def _expire(self, job: dict[str, Any]) -> Outcome:
        """ttlSecondsAfterFinished: delete a finished Job (and, in the background, its pods) when due."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return Outcome.done()
        status = job.get("status") or {}
        finished_at = parse_time(status.get("completionTime")) or parse_time(next(
            (c.get("lastTransitionTime") for c in status.get("conditions") or [] if c.get("type") == "Failed"), None))
        if finished_at is None:
            return Outcome.done()
        due = finished_at.timestamp() + int(ttl) - utcnow().timestamp()
        if due > 0:
            return Outcome.after(due)
        try:
            await self.client.delete(self.resource, job["metadata"]["name"], job["metadata"]["namespace"],
                                     propagation_policy="Background")
        except errors.NotFound:
            pass
        return Outcome.done()
