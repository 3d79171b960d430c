"""ResourceQuota: what an object costs (the quota evaluators) and the admission plugin that enforces it.

The evaluators follow Kubernetes 1.32 (``pkg/quota/v1/evaluator/core``): a pod costs ``pods`` and its
compute resources (the sum of its containers' requests and limits, or the largest init container's,
sidecars included, plus overhead) while it is not terminal; ``count/pods`` counts every stored pod.
Services cost ``services``, ``services.nodeports`` and ``services.loadbalancers``; claims cost
``persistentvolumeclaims``, ``requests.storage`` and their storage-class variants; every other kind
costs ``count/<resource>[.<group>]`` (and the legacy ``configmaps``, ``secrets``, …). Quota scopes
(``spec.scopes`` and ``spec.scopeSelector``) select pods only: a scoped quota never matches other kinds.

The resourcequota controller (``microkube.controllers.resourcequota``) writes ``status.used`` from
these evaluators. The admission plugin (validate phase) denies a create (or an update of a Service or
claim) that would take any quota of the namespace above ``spec.hard``, with kube-apiserver's messages.

How admission reads objects: through the request's ``ObjectReader`` (the API server's own watch cache,
caught up with the store before each read). Usage is computed from the objects stored now (not from
``status.used``, so enforcement does not wait for the controller); a create admitted but not yet in
the cache is held as a short-lived reservation, so concurrent creates cannot both take the last unit.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import orjson

from microkube.apiserver.quantity import parse_quantity
from microkube.timestamps import parse_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.admission import AdmissionPlugin, AdmissionRequest
from microkube_interfaces.hookspecs import PluginInfo, ServerSettings
from microkube_interfaces.markers import hookimpl

log = logging.getLogger(__name__)

Object = dict[str, Any]

DECIMAL_SI = "DecimalSI"
NANO = Decimal("1e-9")
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"
#: How long an admitted create is counted before it shows up in the watch cache (a create that failed
#: after admission stops counting then).
RESERVATION_SECONDS = 5.0
#: Resources whose usage a pod's containers must declare when a quota limits them (Kubernetes'
#: backward-compatibility rule for cpu and memory).
CONSTRAINED = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})
POD_KEYS = frozenset({"pods", "count/pods", "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
                      "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage"})
SERVICE_KEYS = frozenset({"services", "services.nodeports", "services.loadbalancers"})
#: Legacy object-count names (besides ``count/<resource>``).
LEGACY_COUNTS = frozenset({"configmaps", "secrets", "replicationcontrollers", "resourcequotas",
                           "persistentvolumeclaims", "services", "pods"})
STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
STORAGE_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
#: Operations that change usage, per group-resource (every other kind: CREATE only).
UPDATE_CHARGED = frozenset({"services", "persistentvolumeclaims"})
SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass",
          "CrossNamespacePodAffinity")


# -- quantities --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    """An exact amount and the format Kubernetes would print it in."""

    value: Decimal
    format: str = DECIMAL_SI

    @classmethod
    def parse(cls, text: Any) -> Quantity:
        value = parse_quantity(text if isinstance(text, int | float | str) else str(text))
        raw = str(text).strip()
        if raw.endswith("i"):
            fmt = BINARY_SI
        elif re.search(r"[eE][+-]?\d+$", raw):
            fmt = DECIMAL_EXPONENT
        else:
            fmt = DECIMAL_SI
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -9:  # kept at nano precision, rounded up, as Kubernetes does
            value = value.quantize(NANO, rounding=ROUND_CEILING)
        return cls(value, fmt)

    def __add__(self, other: Quantity) -> Quantity:
        # resource.Quantity.Add: a zero amount takes the format of what is added to it.
        return Quantity(self.value + other.value, other.format if self.value == 0 else self.format)

    def __str__(self) -> str:
        return format_quantity(self.value, self.format)


ZERO = Quantity(Decimal(0))
_DECIMAL_SUFFIXES = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def format_quantity(value: Decimal, fmt: str = DECIMAL_SI) -> str:
    """resource.Quantity's canonical string: ``500m``, ``1``, ``1536Mi``, ``1k``."""
    if value == 0:
        return "0"
    if fmt == BINARY_SI and (abs(value) < 1024 or value != value.to_integral_value()):
        fmt = DECIMAL_SI
    if fmt == BINARY_SI:
        number, power = int(value), 0
        while power < len(_BINARY_SUFFIXES) - 1 and number % 1024 == 0:
            number //= 1024
            power += 1
        return f"{number}{_BINARY_SUFFIXES[power]}"
    sign, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
    shift = exponent % 3  # bring the exponent down to a multiple of three
    mantissa *= 10 ** shift
    exponent -= shift
    if fmt == DECIMAL_SI and exponent in _DECIMAL_SUFFIXES:
        return f"{mantissa}{_DECIMAL_SUFFIXES[exponent]}"
    return f"{mantissa}e{exponent}" if exponent else str(mantissa)


def canonical(text: Any) -> str:
    """A quantity as Kubernetes serializes it (``1000m`` → ``1``); unparseable text is returned as is."""
    try:
        return str(Quantity.parse(text))
    except ValueError:
        return str(text)


def parse_list(values: Any) -> dict[str, Quantity]:
    out: dict[str, Quantity] = {}
    for name, text in (values or {}).items() if isinstance(values, dict) else ():
        try:
            out[str(name)] = Quantity.parse(text)
        except ValueError:
            continue  # validation reports malformed quantities; quota ignores them
    return out


def _add_into(total: dict[str, Quantity], more: dict[str, Quantity]) -> None:
    for name, amount in more.items():
        total[name] = total[name] + amount if name in total else amount


def _max_into(total: dict[str, Quantity], more: dict[str, Quantity]) -> None:
    for name, amount in more.items():
        if name not in total or amount.value > total[name].value:
            total[name] = amount


def pretty(values: dict[str, Quantity]) -> str:
    return ",".join(f"{name}={values[name]}" for name in sorted(values))


# -- which resource a quota key measures ----------------------------------------------------------


def is_extended(name: str) -> bool:
    """An extended resource (``example.com/gpu``): quota tracks it only as ``requests.<name>``."""
    return "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")


def resource_of(key: str) -> str | None:
    """The group-resource (``pods``, ``deployments.apps``) whose objects a quota key measures."""
    if key.startswith("count/"):
        return key[len("count/"):] or None
    if key in POD_KEYS or key.startswith(("hugepages-", "requests.hugepages-")):
        return "pods"
    if key.startswith("requests.") and is_extended(key[len("requests."):]):
        return "pods"
    if key in SERVICE_KEYS:
        return "services"
    if key in LEGACY_COUNTS:
        return key
    if key == "requests.storage" or (STORAGE_CLASS_SUFFIX in key and key.endswith(
            ("/requests.storage", "/persistentvolumeclaims"))):
        return "persistentvolumeclaims"
    return None


# -- usage of one object ---------------------------------------------------------------------------


def _aggregate(spec: Object, field: str) -> dict[str, Quantity]:
    """resourcehelper.PodRequests/PodLimits without overhead: containers summed, init containers as the
    maximum (restartable init containers — sidecars — run beside the others and add up)."""
    total: dict[str, Quantity] = {}
    for container in spec.get("containers") or []:
        _add_into(total, parse_list(((container or {}).get("resources") or {}).get(field)))
    restartable: dict[str, Quantity] = {}
    init: dict[str, Quantity] = {}
    for container in spec.get("initContainers") or []:
        own = parse_list(((container or {}).get("resources") or {}).get(field))
        if (container or {}).get("restartPolicy") == "Always":
            _add_into(total, own)
            _add_into(restartable, own)
            own = dict(restartable)
        else:
            _add_into(own, restartable)
        _max_into(init, own)
    _max_into(total, init)
    return total


def pod_requests(spec: Object) -> dict[str, Quantity]:
    requests = _aggregate(spec, "requests")
    _add_into(requests, parse_list(spec.get("overhead")))
    return requests


def pod_limits(spec: Object) -> dict[str, Quantity]:
    limits = _aggregate(spec, "limits")
    for name, amount in parse_list(spec.get("overhead")).items():
        if name in limits:  # overhead counts only towards limits that are set
            limits[name] = limits[name] + amount
    return limits


def compute_usage(requests: dict[str, Quantity], limits: dict[str, Quantity]) -> dict[str, Quantity]:
    """podComputeUsageHelper: the quota keys that requests and limits stand for."""
    usage = {"pods": Quantity(Decimal(1))}
    for name in ("cpu", "memory", "ephemeral-storage"):
        if name in requests:
            usage[name] = usage[f"requests.{name}"] = requests[name]
        if name in limits:
            usage[f"limits.{name}"] = limits[name]
    for name, amount in requests.items():
        if name.startswith("hugepages-"):
            usage[name] = usage[f"requests.{name}"] = amount
        elif is_extended(name):
            usage[f"requests.{name}"] = amount
    return usage


def pod_counts(pod: Object, now: datetime) -> bool:
    """QuotaV1Pod: terminal pods, and pods stuck deleting past their grace period, cost nothing."""
    if ((pod.get("status") or {}).get("phase")) in ("Succeeded", "Failed"):
        return False
    return not ((expiry := deletion_expiry(pod)) is not None and now > expiry)


def deletion_expiry(pod: Object) -> datetime | None:
    """When a pod being deleted stops counting (its deletionTimestamp plus its grace period)."""
    meta = pod.get("metadata") or {}
    deleted = parse_time(meta.get("deletionTimestamp"))
    grace = meta.get("deletionGracePeriodSeconds")
    if deleted is None or not isinstance(grace, int):
        return None
    return deleted + timedelta(seconds=grace)


def _service_usage(service: Object) -> dict[str, Quantity]:
    spec = service.get("spec") or {}
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    usage = {"count/services": Quantity(Decimal(1)), "services": Quantity(Decimal(1)),
             "services.loadbalancers": ZERO, "services.nodeports": ZERO}
    kind = spec.get("type")
    if kind == "NodePort":
        usage["services.nodeports"] = Quantity(Decimal(len(ports)))
    elif kind == "LoadBalancer":
        if spec.get("allocateLoadBalancerNodePorts") is False:
            usage["services.nodeports"] = Quantity(Decimal(sum(1 for p in ports if p.get("nodePort"))))
        else:
            usage["services.nodeports"] = Quantity(Decimal(len(ports)))
        usage["services.loadbalancers"] = Quantity(Decimal(1))
    return usage


def _claim_usage(claim: Object) -> dict[str, Quantity]:
    one = Quantity(Decimal(1))
    usage = {"persistentvolumeclaims": one, "count/persistentvolumeclaims": one}
    storage_class = ((claim.get("metadata") or {}).get("annotations") or {}).get(STORAGE_CLASS_ANNOTATION)
    if storage_class is None:
        storage_class = (claim.get("spec") or {}).get("storageClassName") or ""
    if storage_class:
        usage[f"{storage_class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"] = one
    requested = parse_list(((claim.get("spec") or {}).get("resources") or {}).get("requests")).get("storage")
    allocated = parse_list((claim.get("status") or {}).get("allocatedResources")).get("storage")
    if allocated is not None and (requested is None or allocated.value > requested.value):
        requested = allocated
    if requested is not None:
        if requested.value != requested.value.to_integral_value():  # storage is counted in whole bytes
            requested = Quantity(Decimal(math.ceil(requested.value)), requested.format)
        usage["requests.storage"] = requested
        if storage_class:
            usage[f"{storage_class}{STORAGE_CLASS_SUFFIX}requests.storage"] = requested
    return usage


def usage(resource: str, obj: Object, now: datetime | None = None) -> dict[str, Quantity]:
    """What ``obj``, an object of group-resource ``resource``, costs, by quota key."""
    if resource == "pods":
        result = {"count/pods": Quantity(Decimal(1))}
        if pod_counts(obj, now or utcnow()):
            spec = obj.get("spec") or {}
            result.update(compute_usage(pod_requests(spec), pod_limits(spec)))
        return result
    if resource == "services":
        return _service_usage(obj)
    if resource == "persistentvolumeclaims":
        return _claim_usage(obj)
    result = {f"count/{resource}": Quantity(Decimal(1))}
    if resource in LEGACY_COUNTS:
        result[resource] = Quantity(Decimal(1))
    return result


# -- scopes ------------------------------------------------------------------------------------------


def scope_selectors(quota: Object) -> list[tuple[str, str, list[str]]]:
    """``spec.scopes`` (as Exists) and ``spec.scopeSelector.matchExpressions``: (scope, operator, values)."""
    spec = quota.get("spec") or {}
    selectors: list[tuple[str, str, list[str]]] = [(str(scope), "Exists", []) for scope in spec.get("scopes") or []]
    for expression in (spec.get("scopeSelector") or {}).get("matchExpressions") or []:
        if isinstance(expression, dict):
            selectors.append((str(expression.get("scopeName", "")), str(expression.get("operator", "")),
                              [str(v) for v in expression.get("values") or []]))
    return selectors


def best_effort(spec: Object) -> bool:
    """QoS class BestEffort: no container requests or limits cpu or memory (non-zero)."""
    for container in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        resources = (container or {}).get("resources") or {}
        for field in ("requests", "limits"):
            amounts = parse_list(resources.get(field))
            if any(amounts[name].value != 0 for name in ("cpu", "memory") if name in amounts):
                return False
    return True


def _cross_namespace_affinity(spec: Object) -> bool:
    affinity = spec.get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        rules = affinity.get(kind) or {}
        terms = list(rules.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
        terms += [(t or {}).get("podAffinityTerm") or {}
                  for t in rules.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
        if any((t or {}).get("namespaces") or (t or {}).get("namespaceSelector") is not None for t in terms):
            return True
    return False


def _pod_matches(scope: str, operator: str, values: list[str], pod: Object) -> bool:
    spec = pod.get("spec") or {}
    terminating = isinstance(spec.get("activeDeadlineSeconds"), int) and spec["activeDeadlineSeconds"] >= 0
    if scope == "Terminating":
        return terminating
    if scope == "NotTerminating":
        return not terminating
    if scope == "BestEffort":
        return best_effort(spec)
    if scope == "NotBestEffort":
        return not best_effort(spec)
    if scope == "PriorityClass":
        priority_class = str(spec.get("priorityClassName") or "")
        if operator == "Exists":
            return bool(priority_class)
        # A label selector over {"PriorityClass": priorityClassName}: the key is always present.
        if operator == "In":
            return priority_class in values
        if operator == "NotIn":
            return priority_class not in values
        return False
    if scope == "CrossNamespacePodAffinity":
        return _cross_namespace_affinity(spec)
    return False


def matches_scopes(quota: Object, resource: str, obj: Object) -> bool:
    """Whether ``obj`` falls in every scope of ``quota`` (no scopes: everything does). Scopes select pods:
    a scoped quota matches no other kind (Kubernetes' generic evaluators match no scope)."""
    selectors = scope_selectors(quota)
    if not selectors:
        return True
    if resource != "pods":
        return False
    return all(_pod_matches(scope, operator, values, obj) for scope, operator, values in selectors)


def quota_keys(quota: Object) -> list[str]:
    return [str(k) for k in ((quota.get("spec") or {}).get("hard") or {})]


def hard_limits(quota: Object) -> dict[str, Quantity]:
    return parse_list((quota.get("spec") or {}).get("hard"))


def missing_requests(required: Iterable[str], pod: Object) -> str | None:
    """podEvaluator.Constraints: every container must state the cpu/memory a quota limits."""
    wanted = set(required) & CONSTRAINED
    if not wanted:
        return None
    spec = pod.get("spec") or {}
    missing: dict[str, set[str]] = {}
    for container in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        resources = (container or {}).get("resources") or {}
        declared = compute_usage(parse_list(resources.get("requests")), parse_list(resources.get("limits")))
        for name in wanted - set(declared):
            missing.setdefault(name, set()).add(str((container or {}).get("name", "")))
    if not missing:
        return None
    return "must specify " + "; ".join(f"{name} for: {','.join(sorted(missing[name]))}" for name in sorted(missing))


# -- admission ---------------------------------------------------------------------------------------


@dataclass
class _Reservation:
    resource: str
    key: str
    obj: Object
    expires: float


class ResourceQuotaAdmission:
    """Denies writes that would exceed a ResourceQuota of their namespace (kube-apiserver's ResourceQuota)."""

    name = "ResourceQuota"

    def __init__(self) -> None:
        #: namespace → "resource/name" → an admitted create not yet seen in the watch cache.
        self._reserved: dict[str, dict[str, _Reservation]] = {}

    async def mutate(self, request: AdmissionRequest) -> None:
        return None

    async def validate(self, request: AdmissionRequest) -> None:
        obj = request.object
        r = request.resource
        if obj is None or request.subresource or not r.namespaced or not request.namespace:
            return
        resource = r.group_resource
        if request.operation != "CREATE" and not (request.operation == "UPDATE" and resource in UPDATE_CHARGED):
            return
        reader = request.reader
        if reader is None:
            raise errors.Forbidden("ResourceQuota admission needs an API server that offers its objects to "
                                   "admission plugins (AdmissionRequest.reader)")
        namespace = request.namespace
        # quotas as the cache holds them (as kube-apiserver's informer-fed quota lister): no wait on the
        # common path of a namespace without quotas; usage below is read consistently
        quotas = sorted(await reader.list("resourcequotas", namespace, consistent=False),
                        key=lambda q: str(q["metadata"].get("name", "")))
        interesting = [q for q in quotas if any(resource_of(k) == resource for k in quota_keys(q))
                       and matches_scopes(q, resource, obj)]
        if not interesting:
            return
        name = str((obj.get("metadata") or {}).get("name", ""))
        if resource == "pods":
            for quota in interesting:
                problem = missing_requests(quota_keys(quota), obj)
                if problem is not None:
                    raise self._forbidden(resource, name, f"failed quota: {quota['metadata']['name']}: {problem}")
        now = utcnow()
        delta = usage(resource, obj, now)
        negative = sorted(k for k, v in delta.items() if v.value < 0)
        if negative:
            raise self._forbidden(resource, name, f"quota usage is negative for resource(s): {','.join(negative)}")
        if request.operation == "UPDATE" and request.old_object is not None:
            before = usage(resource, request.old_object, now)
            delta = {k: Quantity(max(Decimal(0), v.value - before[k].value) if k in before else v.value, v.format)
                     for k, v in delta.items()}
        delta = {k: v for k, v in delta.items() if v.value != 0}
        if not delta:
            return
        stored: list[Object] | None = None
        for quota in interesting:
            hard = hard_limits(quota)
            requested = {k: v for k, v in delta.items() if k in hard}
            if not requested:
                continue
            if stored is None:
                stored = await reader.list(resource, namespace)
            used = self._used(stored, namespace, resource, quota, requested, now)
            exceeded = sorted(k for k, v in requested.items() if (used.get(k, ZERO) + v).value > hard[k].value)
            if exceeded:
                raise self._forbidden(resource, name, (
                    f"exceeded quota: {quota['metadata']['name']}, "
                    f"requested: {pretty({k: requested[k] for k in exceeded})}, "
                    f"used: {pretty({k: used.get(k, ZERO) for k in exceeded})}, "
                    f"limited: {pretty({k: hard[k] for k in exceeded})}"))
        if request.operation == "CREATE" and not request.dry_run:
            key = f"{resource}/{name}"
            self._reserved.setdefault(namespace, {})[key] = _Reservation(
                resource, key, orjson.loads(orjson.dumps(obj)), time.monotonic() + RESERVATION_SECONDS)

    def _used(self, stored: list[Object], namespace: str, resource: str, quota: Object,
              keys: Iterable[str], now: datetime) -> dict[str, Quantity]:
        """Current usage of ``keys`` in the namespace: stored objects plus admitted creates not yet stored."""
        wanted = set(keys)
        names = {f"{resource}/{o['metadata']['name']}" for o in stored}
        objects = list(stored)
        reserved = self._reserved.get(namespace, {})
        moment = time.monotonic()
        for key, reservation in list(reserved.items()):
            if key in names or reservation.expires < moment:
                del reserved[key]
            elif reservation.resource == resource:
                objects.append(reservation.obj)
        if not reserved:
            self._reserved.pop(namespace, None)
        total: dict[str, Quantity] = {}
        for obj in objects:
            if matches_scopes(quota, resource, obj):
                _add_into(total, {k: v for k, v in usage(resource, obj, now).items() if k in wanted})
        return total

    @staticmethod
    def _forbidden(resource: str, name: str, message: str) -> errors.Forbidden:
        return errors.Forbidden(f'{resource} "{name}" is forbidden: {message}' if name
                                else f"{resource} is forbidden: {message}")


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name="resource-quota", interfaces={"admission": ("v1",)},
                      description="ResourceQuota admission: denies writes beyond a namespace's quota")


@hookimpl
def microkube_admission_plugins(settings: ServerSettings) -> Sequence[AdmissionPlugin]:
    return [ResourceQuotaAdmission()]
