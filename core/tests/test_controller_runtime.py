"""The reconcile runtime against a real in-process API server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from microkube.client import Client, Resource
from microkube.controllers.runtime import ControllerRunner, Informer, LeaderElector, Outcome, WorkQueue
from microkube_interfaces import errors

CONFIGMAPS = Resource("", "v1", "configmaps")




async def eventually(condition, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_client_errors_map_to_the_error_model(cluster: tuple[object, Client]) -> None:
    _, client = cluster
    await client.create(CONFIGMAPS, {"metadata": {"name": "a"}}, "default")
    with pytest.raises(errors.AlreadyExists):
        await client.create(CONFIGMAPS, {"metadata": {"name": "a"}}, "default")
    with pytest.raises(errors.NotFound):
        await client.get(CONFIGMAPS, "missing", "default")
    with pytest.raises(errors.Invalid) as invalid:
        await client.create(CONFIGMAPS, {"metadata": {}}, "default")
    assert invalid.value.causes[0].field == "metadata.name"
    for i in range(7):
        await client.create(CONFIGMAPS, {"metadata": {"name": f"p{i}"}}, "default")
    assert len((await client.list(CONFIGMAPS, "default", limit=2))["items"]) == 8


async def test_informer_follows_and_relists(cluster: tuple[object, Client]) -> None:
    server, client = cluster
    await client.create(CONFIGMAPS, {"metadata": {"name": "before"}}, "default")
    informer = Informer(client, CONFIGMAPS, namespace="default")
    informer.add_index("color", lambda o: [(o["metadata"].get("labels") or {}).get("color", "")])
    seen: list[tuple[str, str]] = []
    informer.add_handler(lambda event, obj, old: seen.append((event, obj["metadata"]["name"])))
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 10)
    assert informer.get("default/before") is not None
    await client.create(CONFIGMAPS, {"metadata": {"name": "during", "labels": {"color": "red"}}}, "default")
    await client.delete(CONFIGMAPS, "before", "default")
    await eventually(lambda: informer.get("default/before") is None and informer.get("default/during"))
    assert [o["metadata"]["name"] for o in informer.by_index("color", "red")] == ["during"]
    # The server forgets its history: the next watch gets 410 and the informer relists and catches up.
    relists = informer.relists
    server.cache.cache_for("/registry/configmaps/").history_start = 10**9  # type: ignore[attr-defined]
    for watcher in list(server.cache.cache_for("/registry/configmaps/").watchers):  # type: ignore[attr-defined]
        watcher.close()
    await client.create(CONFIGMAPS, {"metadata": {"name": "after"}}, "default")
    await eventually(lambda: informer.relists > relists and informer.get("default/after") is not None)
    task.cancel()
    assert ("DELETED", "before") in seen


async def test_work_queue_dedupes_and_backs_off() -> None:
    queue = WorkQueue(base_delay=0.01)
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1
    key = await queue.get()
    queue.add("a")  # while processing: queued again only once it is done
    assert len(queue) == 0
    queue.done(key)  # type: ignore[arg-type]
    assert len(queue) == 1
    assert [queue.add_rate_limited("b") for _ in range(4)] == [0.01, 0.02, 0.04, 0.08]
    queue.forget("b")
    assert queue.failures("b") == 0


class Stamper:
    """A toy level-triggered controller: every ConfigMap ends up with an annotation."""

    name = "stamper"

    def __init__(self, client: Client, informer: Informer) -> None:
        self.client = client
        self.informer = informer
        self.failures_left = 2

    async def reconcile(self, key: str) -> Outcome:
        obj = self.informer.get(key)
        if obj is None:
            return Outcome.done()
        if key == "default/flaky" and self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("transient")
        if (obj["metadata"].get("annotations") or {}).get("stamped") == "yes":
            return Outcome.done()
        namespace, name = key.split("/")
        await self.client.patch(CONFIGMAPS, name, {"metadata": {"annotations": {"stamped": "yes"}}}, namespace)
        return Outcome.done()


async def test_controller_converges_from_any_state(cluster: tuple[object, Client]) -> None:
    _, client = cluster
    for name in ("a", "b", "flaky"):
        await client.create(CONFIGMAPS, {"metadata": {"name": name}}, "default")
    informer = Informer(client, CONFIGMAPS, namespace="default")
    stamper = Stamper(client, informer)
    runner = ControllerRunner(stamper, workers=2, queue=WorkQueue(base_delay=0.01))
    informer.add_handler(runner.enqueue)
    informer_task = asyncio.create_task(informer.run())
    runner.start()

    def all_stamped() -> bool:
        return len(informer.objects) == 4 and all(
            (o["metadata"].get("annotations") or {}).get("stamped") == "yes" for o in informer.objects.values())

    await client.create(CONFIGMAPS, {"metadata": {"name": "late"}}, "default")
    await eventually(all_stamped)
    assert runner.metrics.errors == 2
    await runner.stop()
    informer_task.cancel()


async def test_leader_election_hands_over(cluster: tuple[object, Client]) -> None:
    _, client = cluster
    first = LeaderElector(client, "demo", identity="one", lease_duration=2, renew_deadline=1.5, retry_period=0.2)
    second = LeaderElector(client, "demo", identity="two", lease_duration=2, renew_deadline=1.5, retry_period=0.2)
    leading: list[str] = []

    def lead(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            leading.append(name)
            await asyncio.Event().wait()
        return run

    one = asyncio.create_task(first.run(lead("one")))
    await asyncio.wait_for(first.is_leader.wait(), 10)
    two = asyncio.create_task(second.run(lead("two")))
    await asyncio.sleep(1.0)
    assert leading == ["one"] and not second.is_leader.is_set()
    one.cancel()
    await first.release()
    await asyncio.wait_for(second.is_leader.wait(), 10)
    assert leading == ["one", "two"]
    lease = await client.get(Resource("coordination.k8s.io", "v1", "leases"), "demo", "kube-system")
    assert lease["spec"]["holderIdentity"] == "two" and lease["spec"]["leaseTransitions"] >= 1
    two.cancel()


REPLICASETS = Resource("apps", "v1", "replicasets")
PODS = Resource("", "v1", "pods")


def replicaset(replicas: int) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


async def test_replicaset_controller_keeps_the_count(cluster: tuple[object, Client], tmp_path: Path) -> None:
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    _, client = cluster
    registrations = Plugins(autoload=False).controllers(ServerSettings(data_dir=str(tmp_path)))
    assert {r.name for r in registrations} == {"bootstrapsigner", "cronjob", "csrapproving", "daemonset",
                                               "deployment", "disruption", "endpoints",
                                               "job", "nodeipam", "nodelifecycle", "podgc", "replicaset",
                                               "replicationcontroller", "resourcequota", "serviceaccount",
                                               "statefulset"}
    with pytest.raises(ValueError, match="unknown controllers"):
        ControllerManager(client, registrations, disabled=["no-such-controller"])
    manager = ControllerManager(client, registrations, disabled=["replicationcontroller", "deployment"])
    running = asyncio.create_task(manager.run())
    await client.create(REPLICASETS, replicaset(3), "default")

    async def pods() -> list[dict[str, object]]:
        return (await client.list(PODS, "default", label_selector="app=web"))["items"]

    async def settle(count: int) -> None:
        for _ in range(200):
            current = await pods()
            status = (await client.get(REPLICASETS, "web", "default")).get("status") or {}
            if len(current) == count and status.get("replicas") == count:
                await asyncio.sleep(0.3)  # and it stays there: no extra pods from a stale cache
                if len(await pods()) == count:
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {count} pods, have {len(await pods())}")

    await settle(3)
    first = (await pods())[0]
    assert first["metadata"]["ownerReferences"][0]["controller"] is True
    await client.delete(PODS, first["metadata"]["name"], "default")  # unscheduled pods go at once
    await settle(3)
    await client.patch(REPLICASETS, "web", {"spec": {"replicas": 1}}, "default")
    await settle(1)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


DEPLOYMENTS = Resource("apps", "v1", "deployments")


async def make_ready(client: Client) -> None:
    """Stand in for kubelets: mark every pending pod Running and Ready."""
    for pod in (await client.list(PODS, "default"))["items"]:
        if (pod.get("status") or {}).get("phase") == "Running" or pod["metadata"].get("deletionTimestamp"):
            continue
        await client.patch(PODS, pod["metadata"]["name"], {"status": {
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
            "default", subresource="status")


async def test_deployment_rolls_out_and_back(cluster: tuple[object, Client], tmp_path: Path) -> None:
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    _, client = cluster
    registrations = Plugins(autoload=False).controllers(ServerSettings(data_dir=str(tmp_path)))
    running = asyncio.create_task(ControllerManager(client, registrations).run())
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "c", "image": "web:1"}]}}}}
    await client.create(DEPLOYMENTS, deployment, "default")

    async def rolled_out(image: str) -> dict[str, object]:
        for _ in range(300):
            await make_ready(client)
            live = await client.get(DEPLOYMENTS, "web", "default")
            status = live.get("status") or {}
            pods = [p for p in (await client.list(PODS, "default"))["items"]
                    if not p["metadata"].get("deletionTimestamp")]
            if (live["metadata"]["generation"] <= status.get("observedGeneration", 0)
                    and status.get("updatedReplicas") == 4 and status.get("replicas") == 4
                    and status.get("availableReplicas") == 4 and len(pods) == 4
                    and all(p["spec"]["containers"][0]["image"] == image for p in pods)):
                return live
            await asyncio.sleep(0.05)
        raise AssertionError(f"rollout to {image} did not finish: {status}")

    first = await rolled_out("web:1")
    assert first["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    conditions = {c["type"]: c for c in first["status"]["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    await client.patch(DEPLOYMENTS, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "web:2"}]}}}}, "default", content_type="application/strategic-merge-patch+json")
    second = await rolled_out("web:2")
    assert second["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    sets = (await client.list(REPLICASETS, "default"))["items"]
    assert sorted(rs["spec"]["replicas"] for rs in sets) == [0, 4]
    assert all("pod-template-hash" in rs["spec"]["selector"]["matchLabels"] for rs in sets)
    # `kubectl rollout undo` restores the old template: the old ReplicaSet becomes revision 3.
    await client.patch(DEPLOYMENTS, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "web:1"}]}}}}, "default", content_type="application/strategic-merge-patch+json")
    third = await rolled_out("web:1")
    assert third["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert len((await client.list(REPLICASETS, "default"))["items"]) == 2
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


SERVICES = Resource("", "v1", "services")
ENDPOINTS = Resource("", "v1", "endpoints")
SLICES = Resource("discovery.k8s.io", "v1", "endpointslices")


async def test_endpoints_follow_ready_pods(cluster: tuple[object, Client], tmp_path: Path) -> None:
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    _, client = cluster
    registrations = Plugins(autoload=False).controllers(ServerSettings(data_dir=str(tmp_path)))
    running = asyncio.create_task(ControllerManager(client, registrations, disabled=["deployment"]).run())
    await client.create(SERVICES, {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}, "default")
    for index, ready in enumerate((True, False)):
        await client.create(PODS, {"metadata": {"name": f"web-{index}", "labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]}},
            "default")
        await client.patch(PODS, f"web-{index}", {"status": {"podIP": f"10.1.0.{index + 1}", "phase": "Running",
                                                             "conditions": [{"type": "Ready",
                                                                             "status": str(ready)}]}},
                           "default", subresource="status")

    async def endpoints() -> dict[str, object]:
        for _ in range(200):
            try:
                found = await client.get(ENDPOINTS, "web", "default")
            except errors.NotFound:
                found = {}
            subsets = found.get("subsets") or []
            if subsets and subsets[0].get("notReadyAddresses"):
                return found
            await asyncio.sleep(0.05)
        raise AssertionError("endpoints never appeared")

    found = await endpoints()
    subset = found["subsets"][0]  # type: ignore[index]
    assert [a["ip"] for a in subset["addresses"]] == ["10.1.0.1"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.1.0.2"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    slices = (await client.list(SLICES, "default", label_selector="kubernetes.io/service-name=web"))["items"]
    assert len(slices) == 1 and slices[0]["ports"][0]["port"] == 8080
    assert sorted(e["conditions"]["ready"] for e in slices[0]["endpoints"]) == [False, True]
    await client.delete(SERVICES, "web", "default")
    for _ in range(200):
        try:
            await client.get(ENDPOINTS, "web", "default")
        except errors.NotFound:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("endpoints outlived their service")
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def test_every_namespace_gets_a_default_service_account(cluster: tuple[object, Client],
                                                             tmp_path: Path) -> None:
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    _, client = cluster
    accounts = Resource("", "v1", "serviceaccounts")
    registrations = Plugins(autoload=False).controllers(ServerSettings(data_dir=str(tmp_path)))
    running = asyncio.create_task(ControllerManager(client, registrations).run())
    await client.create(Resource("", "v1", "namespaces", namespaced=False), {"metadata": {"name": "team"}})

    async def exists() -> bool:
        for _ in range(200):
            try:
                await client.get(accounts, "default", "team")
                return True
            except errors.NotFound:
                await asyncio.sleep(0.05)
        return False

    assert await exists()
    await client.delete(accounts, "default", "team")
    assert await exists()  # recreated
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


JOBS = Resource("batch", "v1", "jobs")


def job(name: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {**spec, "template": {"spec": {"restartPolicy": "Never",
                                                   "containers": [{"name": "c", "image": "busybox"}]}}}}


async def finish_pods(client: Client, job_name: str, phase: str) -> int:
    """Stand in for kubelets: the job's running pods end in ``phase``."""
    count = 0
    for pod in (await client.list(PODS, "default", label_selector=f"job-name={job_name}"))["items"]:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        await client.patch(PODS, pod["metadata"]["name"], {"status": {"phase": phase}}, "default",
                           subresource="status")
        count += 1
    return count


async def job_condition(client: Client, name: str, phase: str) -> dict[str, object]:
    for _ in range(300):
        live = await client.get(JOBS, name, "default")
        conditions = {c["type"]: c for c in (live.get("status") or {}).get("conditions") or []}
        if conditions.get(phase, {}).get("status") == "True":
            return live
        await finish_pods(client, name, "Succeeded" if phase == "Complete" else "Failed")
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {name} never reached {phase}: {live.get('status')}")


async def test_jobs_complete_fail_and_index(cluster: tuple[object, Client], tmp_path: Path) -> None:
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    _, client = cluster
    registrations = Plugins(autoload=False).controllers(ServerSettings(data_dir=str(tmp_path)))
    running = asyncio.create_task(ControllerManager(client, registrations).run())
    await client.create(JOBS, job("batch", completions=3, parallelism=2), "default")
    done = await job_condition(client, "batch", "Complete")
    assert done["status"]["succeeded"] == 3 and done["status"]["active"] == 0  # type: ignore[index]
    assert done["status"]["completionTime"]  # type: ignore[index]
    await client.create(JOBS, job("flaky", backoffLimit=1), "default")
    failed = await job_condition(client, "flaky", "Failed")
    reasons = {c["reason"] for c in failed["status"]["conditions"]}  # type: ignore[index]
    assert "BackoffLimitExceeded" in reasons and failed["status"]["failed"] == 2  # type: ignore[index]
    await client.create(JOBS, job("indexed", completions=3, parallelism=3, completionMode="Indexed"), "default")
    for _ in range(100):
        pods = (await client.list(PODS, "default", label_selector="job-name=indexed"))["items"]
        if len(pods) == 3:
            break
        await asyncio.sleep(0.05)
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1", "2"]
    assert (await job_condition(client, "indexed", "Complete"))["status"]["completedIndexes"] == "0,1,2"  # type: ignore[index]
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


CRONJOBS = Resource("batch", "v1", "cronjobs")


def test_cron_schedules() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from microkube.controllers.cronjob import CronSchedule

    moment = datetime(2026, 11, 24, 1, 3, tzinfo=UTC)
    assert CronSchedule.parse("*/5 * * * *").next_after(moment) == datetime(2026, 11, 24, 1, 5, tzinfo=UTC)
    assert CronSchedule.parse("@monthly").next_after(moment) == datetime(2026, 12, 1, tzinfo=UTC)
    assert CronSchedule.parse("30 9 * * mon-fri").next_after(moment).hour == 9
    assert CronSchedule.parse("0 0 29 2 *").next_after(moment).year == 2028  # the next leap day
    assert CronSchedule.parse("0 0 1 * mon").next_after(moment).day == 30  # day-of-month OR day-of-week
    berlin = CronSchedule.parse("0 8 * * *").next_after(moment.astimezone(ZoneInfo("Europe/Berlin")))
    assert (berlin.hour, berlin.utcoffset().total_seconds()) == (8, 3600)  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        CronSchedule.parse("61 * * * *")


async def test_cronjob_fires_on_a_controlled_clock(cluster: tuple[object, Client]) -> None:
    from datetime import UTC, datetime, timedelta

    from microkube.controllers.cronjob import CRONJOBS as CRONJOB_REF
    from microkube.controllers.cronjob import CronJobController
    from microkube.controllers.job import JOBS as JOB_REF
    from microkube.controllers.manager import ControllerManager
    from microkube_interfaces.controllers import ControllerRegistration

    _, client = cluster
    now = [datetime.now(UTC)]
    registration = ControllerRegistration("cronjob", CRONJOB_REF, lambda ctx: CronJobController(ctx, lambda: now[0]),
                                          owns=(JOB_REF,))
    running = asyncio.create_task(ControllerManager(client, [registration]).run())
    await client.create(CRONJOBS, {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
                                   "spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid",
                                            "successfulJobsHistoryLimit": 1,
                                            "jobTemplate": {"spec": {"template": {"spec": {
                                                "restartPolicy": "Never",
                                                "containers": [{"name": "c", "image": "busybox"}]}}}}}},
                       "default")

    async def jobs() -> list[dict[str, object]]:
        return (await client.list(JOBS, "default"))["items"]

    async def advance(minutes: int, expected: int) -> list[dict[str, object]]:
        now[0] += timedelta(minutes=minutes)
        await client.patch(CRONJOBS, "tick", {"metadata": {"labels": {"tick": str(now[0].timestamp())}}},
                           "default")  # an event, so the controller looks again at the new time
        for _ in range(100):
            found = await jobs()
            if len(found) == expected:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {expected} jobs, found {len(await jobs())}")

    await asyncio.sleep(0.3)
    assert await jobs() == []  # nothing is due yet
    first = await advance(6, 1)
    await advance(5, 1)  # Forbid: the first job is still active, so no second one
    await client.patch(JOBS, first[0]["metadata"]["name"], {"status": {"conditions": [  # type: ignore[index]
        {"type": "Complete", "status": "True"}], "completionTime": "2026-01-01T00:00:00Z"}}, "default",
        subresource="status")
    second = await advance(5, 2)
    assert {j["metadata"]["ownerReferences"][0]["kind"] for j in second} == {"CronJob"}  # type: ignore[index]
    status = (await client.get(CRONJOBS, "tick", "default"))["status"]
    assert status["lastScheduleTime"] and len(status["active"]) == 1
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


STATEFULSETS = Resource("apps", "v1", "statefulsets")
CLAIMS = Resource("", "v1", "persistentvolumeclaims")


async def test_statefulset_order_names_claims_and_updates(cluster: tuple[object, Client], tmp_path: Path) -> None:
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    _, client = cluster
    registrations = Plugins(autoload=False).controllers(ServerSettings(data_dir=str(tmp_path)))
    running = asyncio.create_task(ControllerManager(client, registrations).run())
    await client.create(STATEFULSETS, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                                       "spec": {"replicas": 3, "serviceName": "db",
                                                "selector": {"matchLabels": {"app": "db"}},
                                                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                                                    "containers": [{"name": "c", "image": "db:1"}]}},
                                                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                                                    "accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": "1Gi"}}}}]}}, "default")

    async def names() -> list[str]:
        pods = (await client.list(PODS, "default", label_selector="app=db"))["items"]
        return sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp"))

    creation_order: list[str] = []
    for _ in range(300):
        current = await names()
        for name in current:
            if name not in creation_order:
                creation_order.append(name)
        if len(current) == 3:
            break
        await make_ready(client)  # the newest pod becomes ready, which lets the next one be created
        await asyncio.sleep(0.05)
    assert creation_order == ["db-0", "db-1", "db-2"]
    claims = sorted(c["metadata"]["name"] for c in (await client.list(CLAIMS, "default"))["items"])
    assert claims == ["data-db-0", "data-db-1", "data-db-2"]
    pod = await client.get(PODS, "db-1", "default")
    assert pod["spec"]["hostname"] == "db-1" and pod["spec"]["subdomain"] == "db"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-1"}} in pod["spec"]["volumes"]
    await make_ready(client)
    await client.patch(STATEFULSETS, "db", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "db:2"}]}}}}, "default", content_type="application/strategic-merge-patch+json")
    for _ in range(400):
        pods = (await client.list(PODS, "default", label_selector="app=db"))["items"]
        images = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in pods
                  if not p["metadata"].get("deletionTimestamp")}
        if images == {"db-0": "db:2", "db-1": "db:2", "db-2": "db:2"}:
            break
        for p in pods:  # stand in for kubelets: terminating pods finish, new ones become ready
            if p["metadata"].get("deletionTimestamp"):
                await client.delete(PODS, p["metadata"]["name"], "default", grace_period_seconds=0)
        await make_ready(client)
        await asyncio.sleep(0.05)
    assert images == {"db-0": "db:2", "db-1": "db:2", "db-2": "db:2"}
    await client.patch(STATEFULSETS, "db", {"spec": {"replicas": 1}}, "default")
    for _ in range(200):
        if await names() == ["db-0"]:
            break
        await make_ready(client)  # OrderedReady scales down only while the remaining pods are healthy
        await asyncio.sleep(0.05)
    assert await names() == ["db-0"]
    assert len((await client.list(CLAIMS, "default"))["items"]) == 3  # claims are retained
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


NODES = Resource("", "v1", "nodes", namespaced=False)
DAEMONSETS = Resource("apps", "v1", "daemonsets")


def test_node_matching() -> None:
    from microkube.nodematch import matches_node_selector, untolerated_taints

    node = {"metadata": {"name": "n1", "labels": {"disk": "ssd", "zone": "a"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}
    assert matches_node_selector({"nodeSelector": {"disk": "ssd"}}, node)
    assert not matches_node_selector({"nodeSelector": {"disk": "hdd"}}, node)
    affinity = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                              {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}
    assert matches_node_selector(affinity, node)  # terms are ORed
    assert untolerated_taints({}, node) == node["spec"]["taints"]
    assert untolerated_taints({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]}, node) == []
    assert untolerated_taints({"tolerations": [{"operator": "Exists"}]}, node) == []


async def test_daemonset_runs_one_pod_per_eligible_node(cluster: tuple[object, Client], tmp_path: Path) -> None:
    from microkube.controllers.daemonset import pinned_node
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    _, client = cluster
    for name, labels, taints in (("n1", {"role": "edge"}, []), ("n2", {"role": "edge"},
                                                                 [{"key": "gpu", "effect": "NoSchedule"}]),
                                 ("n3", {"role": "core"}, [])):
        await client.create(NODES, {"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})
    registrations = Plugins(autoload=False).controllers(ServerSettings(data_dir=str(tmp_path)))
    running = asyncio.create_task(ControllerManager(client, registrations).run())
    await client.create(DAEMONSETS, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                                     "spec": {"selector": {"matchLabels": {"app": "agent"}},
                                              "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                                                  "nodeSelector": {"role": "edge"},
                                                  "containers": [{"name": "c", "image": "agent:1"}]}}}}, "default")

    async def placed(expected: set[str]) -> None:
        for _ in range(200):
            pods = [p for p in (await client.list(PODS, "default", label_selector="app=agent"))["items"]
                    if not p["metadata"].get("deletionTimestamp")]
            if sorted(pinned_node(p) for p in pods) == sorted(expected):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"pods on {sorted(pinned_node(p) for p in pods)}, expected {sorted(expected)}")

    await placed({"n1"})  # n2's taint is not tolerated, n3 is not selected
    await client.patch(NODES, "n3", {"metadata": {"labels": {"role": "edge"}}})
    await placed({"n1", "n3"})
    await client.patch(NODES, "n1", {"metadata": {"labels": {"role": "core"}}})
    await placed({"n3"})
    status = (await client.get(DAEMONSETS, "agent", "default"))["status"]
    assert status["desiredNumberScheduled"] == 1
    for _ in range(100):  # node IPAM gave every node its own pod CIDR
        cidrs = [n["spec"].get("podCIDR") for n in (await client.list(NODES))["items"]]
        if all(cidrs):
            break
        await asyncio.sleep(0.05)
    assert len(set(cidrs)) == 3 and all(c.startswith("10.244.") and c.endswith("/24") for c in cidrs)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


PDB = Resource("policy", "v1", "poddisruptionbudgets")


async def test_disruption_budget_status_guards_evictions(cluster: tuple[object, Client], tmp_path: Path) -> None:
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    _, client = cluster
    registrations = Plugins(autoload=False).controllers(ServerSettings(data_dir=str(tmp_path)))
    running = asyncio.create_task(ControllerManager(client, registrations, disabled=["deployment"]).run())
    await client.create(PDB, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
                              "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}}},
                        "default")
    for index in range(2):
        await client.create(PODS, {"metadata": {"name": f"g-{index}", "labels": {"app": "guarded"}},
                                   "spec": {"containers": [{"name": "c", "image": "i"}]}}, "default")
    await make_ready(client)

    async def allowed(expected: int) -> dict[str, object]:
        for _ in range(200):
            status = (await client.get(PDB, "b", "default")).get("status") or {}
            count = len((await client.list(PODS, "default"))["items"])
            if status.get("expectedPods") == status.get("currentHealthy") == count and \
                    status.get("disruptionsAllowed") == expected:
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"disruptionsAllowed never became {expected}: {status}")

    status = await allowed(0)
    assert status["currentHealthy"] == 2 and status["desiredHealthy"] == 2
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "g-0"}}
    with pytest.raises(errors.Retryable):  # 429: it would violate the budget
        await client.request("POST", "/api/v1/namespaces/default/pods/g-0/eviction", body=eviction)
    await client.create(PODS, {"metadata": {"name": "g-2", "labels": {"app": "guarded"}},
                               "spec": {"containers": [{"name": "c", "image": "i"}]}}, "default")
    await make_ready(client)
    await allowed(1)
    await client.request("POST", "/api/v1/namespaces/default/pods/g-0/eviction", body=eviction)
    with pytest.raises(errors.NotFound):
        await client.get(PODS, "g-0", "default")
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def test_pod_gc_removes_pods_of_deleted_nodes_and_excess_terminated(cluster: tuple[object, Client]) -> None:
    from microkube.controllers.daemonset import NODES as NODE_REF
    from microkube.controllers.manager import ControllerManager
    from microkube.controllers.podgc import PodGCController
    from microkube_interfaces.controllers import ControllerRegistration

    _, client = cluster
    await client.create(NODES, {"metadata": {"name": "gone"}})
    await client.create(NODES, {"metadata": {"name": "stays"}})
    for name, node, phase in (("on-gone", "gone", "Running"), ("on-stays", "stays", "Running"),
                              ("done-1", "stays", "Succeeded"), ("done-2", "stays", "Succeeded"),
                              ("done-3", "stays", "Failed")):
        await client.create(PODS, {"metadata": {"name": name}, "spec": {
            "nodeName": node, "containers": [{"name": "c", "image": "i"}]}}, "default")
        await client.patch(PODS, name, {"status": {"phase": phase}}, "default", subresource="status")
    registration = ControllerRegistration("podgc", NODE_REF, lambda ctx: PodGCController(ctx, threshold=1),
                                          workers=1)
    running = asyncio.create_task(ControllerManager(client, [registration]).run())
    await client.delete(NODES, "gone")

    async def names() -> list[str]:
        return sorted(p["metadata"]["name"] for p in (await client.list(PODS, "default"))["items"])

    for _ in range(200):
        if await names() == ["done-3", "on-stays"]:
            break
        await asyncio.sleep(0.05)
    assert await names() == ["done-3", "on-stays"]  # the newest terminated pod is kept (threshold 1)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def test_informers_drop_managed_fields_and_updates_keep_them(cluster: tuple[object, Client]) -> None:
    _, client = cluster
    await client.create(CONFIGMAPS, {"metadata": {"name": "owned"}, "data": {"a": "1"}}, "default",
                        field_manager="creator")
    informer = Informer(client, CONFIGMAPS, namespace="default")
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 10)
    cached = informer.get("default/owned")
    assert cached is not None and "managedFields" not in cached["metadata"]
    cached["data"]["b"] = "2"
    updated = await client.update(CONFIGMAPS, cached, field_manager="updater")
    assert {m["manager"] for m in updated["metadata"]["managedFields"]} == {"creator", "updater"}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_pod_failure_policy_rules() -> None:
    from microkube.controllers.job import pod_failure_action

    def failed_pod(code: int, conditions: list[dict[str, str]] | None = None) -> dict[str, object]:
        return {"metadata": {"name": "p", "namespace": "ns"}, "status": {
            "phase": "Failed", "conditions": conditions or [],
            "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": code}}}]}}

    policy = {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
    ]}
    action, message = pod_failure_action(policy, failed_pod(42))
    assert action == "FailJob"
    assert message == "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"
    assert pod_failure_action(policy, failed_pod(137, [{"type": "DisruptionTarget", "status": "True"}]))[0] == "Ignore"
    assert pod_failure_action(policy, failed_pod(1))[0] == "Count"  # no rule matches: counted
    assert pod_failure_action(None, failed_pod(42))[0] == "Count"
