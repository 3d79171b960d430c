"""The CronJob controller: create a Job at each scheduled time.

Standard 5-field cron (lists, ranges, steps, month and day names, the @yearly … @hourly macros;
day-of-month and day-of-week match either when both are restricted, as in Vixie cron) evaluated in
``spec.timeZone`` (default UTC). Honours ``suspend``, ``concurrencyPolicy`` (Allow, Forbid, Replace),
``startingDeadlineSeconds`` and the successful/failed history limits. The clock is injectable, so
tests can move time instead of waiting for it.
"""

from __future__ import annotations

import copy
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from microkube.client import Resource
from microkube.controllers.job import JOBS, finished_condition
from microkube.controllers.manager import CONTROLLER_UID
from microkube.timestamps import format_time, parse_time
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

CRONJOBS = ResourceRef("batch", "v1", "cronjobs", "CronJob")
SCHEDULED = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MANAGER = "cronjob-controller"
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
NAMES: tuple[dict[str, int], ...] = ({}, {}, {}, {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))},
    {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))})
RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
#: Kubernetes gives up on schedules it missed this many times (and says so).
MAX_MISSED = 100


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        fields = MACROS.get(text.strip(), text).split()
        if len(fields) != 5:
            raise ValueError(f"expected 5 fields in {text!r}")
        sets = [cls._field(f, low, high, names) for f, (low, high), names in zip(fields, RANGES, NAMES, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(sets[0], sets[1], sets[2], sets[3], weekdays, fields[2] not in ("*", "?"),
                   fields[4] not in ("*", "?"))

    @staticmethod
    def _field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
        values: set[int] = set()
        for part in text.split(","):
            base, _, step_text = part.partition("/")
            step = int(step_text) if step_text else 1
            if base in ("*", "?"):
                start, end = low, high
            elif "-" in base:
                first, last = base.split("-", 1)
                start, end = _value(first, names), _value(last, names)
            else:
                start = _value(base, names)
                end = high if step_text else start
            if not low <= start <= high or not low <= end <= high or step < 1:
                raise ValueError(f"{part!r} is out of range {low}-{high}")
            values.update(range(start, end + 1, step))
        return frozenset(values)

    def _day_matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # cron: Sunday is 0
        in_days = moment.day in self.days
        in_weekdays = weekday in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled minute strictly after ``moment`` (in ``moment``'s time zone)."""
        candidate = (moment + timedelta(minutes=1)).replace(second=0, microsecond=0)
        for _ in range(100_000):
            if candidate.month not in self.months:
                year, month = (candidate.year + 1, 1) if candidate.month == 12 else (candidate.year,
                                                                                      candidate.month + 1)
                candidate = candidate.replace(year=year, month=month, day=1, hour=0, minute=0)
            elif not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise ValueError("the schedule never fires")


def _value(text: str, names: dict[str, int]) -> int:
    return int(text) if text.isdigit() else names[text.lower()]


class CronJobController:
    name = "cronjob"

    def __init__(self, context: ControllerContext, clock: Callable[[], datetime] | None = None) -> None:
        self.client = context.client
        self.context = context
        self.cronjobs = context.cache(CRONJOBS)
        self.jobs = context.cache(JOBS)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.resource = Resource("batch", "v1", "cronjobs")
        self.jobs_resource = Resource("batch", "v1", "jobs")

    async def reconcile(self, key: str) -> Outcome:
        cronjob = self.cronjobs.get(key)
        if cronjob is None or cronjob["metadata"].get("deletionTimestamp"):
            return Outcome.done()
        spec = cronjob.get("spec") or {}
        meta = cronjob["metadata"]
        try:
            schedule = CronSchedule.parse(str(spec.get("schedule", "")))
            zone = zoneinfo.ZoneInfo(spec.get("timeZone") or "UTC")
        except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError):
            return Outcome.done()  # validation refuses these; an old object is left alone
        now = self.clock().astimezone(zone)
        jobs = self.jobs.by_index(CONTROLLER_UID, meta["uid"])
        active = [j for j in jobs if not finished_condition(j) and not j["metadata"].get("deletionTimestamp")]
        status = copy.deepcopy(cronjob.get("status") or {})
        last = parse_time(status.get("lastScheduleTime")) or parse_time(meta.get("creationTimestamp")) or now
        due: datetime | None = None
        cursor = last.astimezone(zone)
        for _ in range(MAX_MISSED + 1):
            following = schedule.next_after(cursor)
            if following > now:
                break
            due, cursor = following, following
        if due is not None and not spec.get("suspend"):
            deadline = spec.get("startingDeadlineSeconds")
            late = (now - due).total_seconds()
            if deadline is None or late <= int(deadline):
                policy = spec.get("concurrencyPolicy", "Allow")
                if policy == "Forbid" and active:
                    due = None  # skipped; looked at again at the next schedule
                else:
                    if policy == "Replace":
                        for job in active:
                            await self._delete_job(job)
                        active = []
                    created = await self._create_job(cronjob, due)
                    if created is not None:
                        active.append(created)
                    status["lastScheduleTime"] = format_time(due)
            else:
                status["lastScheduleTime"] = format_time(due)  # too late: counted as missed
        successful = [j for j in jobs if finished_condition(j) == "Complete"]
        if successful:
            times = [(j.get("status") or {}).get("completionTime") for j in successful]
            status["lastSuccessfulTime"] = max(t for t in times if t) if any(times) else status.get(
                "lastSuccessfulTime")
        status["active"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"],
                             "namespace": j["metadata"]["namespace"], "uid": j["metadata"]["uid"]} for j in active]
        if not status["active"]:
            del status["active"]
        await self._trim_history(jobs, spec)
        if status != (cronjob.get("status") or {}):
            try:
                await self.client.patch(self.resource, meta["name"], {"status": status}, meta["namespace"],
                                        subresource="status", field_manager=MANAGER)
            except errors.NotFound:
                return Outcome.done()
        return Outcome.after(max(0.5, (schedule.next_after(now) - now).total_seconds()))

    async def _create_job(self, cronjob: dict[str, Any], due: datetime) -> dict[str, Any] | None:
        meta = cronjob["metadata"]
        template = copy.deepcopy((cronjob.get("spec") or {}).get("jobTemplate") or {})
        job_meta = template.get("metadata") or {}
        annotations = {**(job_meta.get("annotations") or {}), SCHEDULED: due.isoformat()}
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": f"{meta['name']}-{int(due.timestamp() // 60)}", "namespace": meta["namespace"],
                            "labels": job_meta.get("labels") or {}, "annotations": annotations,
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": template.get("spec") or {}}
        try:
            created: dict[str, Any] = await self.client.create(self.jobs_resource, job, meta["namespace"],
                                                               field_manager=MANAGER)
            await self.context.record_event(cronjob, "Normal", "SuccessfulCreate",
                                            f"Created job {created['metadata']['name']}")
            return created
        except errors.AlreadyExists:
            return None  # this run was already started (a restart between creating and recording it)

    async def _delete_job(self, job: dict[str, Any]) -> None:
        try:
            await self.client.delete(self.jobs_resource, job["metadata"]["name"], job["metadata"]["namespace"],
                                     propagation_policy="Background")
        except errors.NotFound:
            pass

    async def _trim_history(self, jobs: list[dict[str, Any]], spec: dict[str, Any]) -> None:
        for outcome, limit in (("Complete", int(spec.get("successfulJobsHistoryLimit", 3))),
                               ("Failed", int(spec.get("failedJobsHistoryLimit", 1)))):
            finished = sorted((j for j in jobs if finished_condition(j) == outcome and not j["metadata"].get(
                "deletionTimestamp")), key=lambda j: j["metadata"].get("creationTimestamp", ""))
            for job in finished[:max(0, len(finished) - limit)]:
                await self._delete_job(job)
