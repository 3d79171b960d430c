"""Validation of the built-in kinds: every invalid field is named, as kube-apiserver names it.

All errors of an object are collected, then raised once as ``Invalid`` with one FieldError each.
"""

from __future__ import annotations

import base64
import binascii
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from microkube.apiserver.quantity import parse_quantity
from microkube_interfaces.errors import FieldError, Invalid

Obj = dict[str, Any]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
MAX_ANNOTATIONS = 256 * 1024


class Errors:
    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def required(self, path: str, detail: str = "") -> None:
        self.items.append(FieldError(path, "Required value" + (f": {detail}" if detail else ""),
                                     "FieldValueRequired"))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        shown = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else \
            repr(value) if isinstance(value, dict | list) else str(value)
        self.items.append(FieldError(path, f"Invalid value: {shown}: {detail}", "FieldValueInvalid"))

    def unsupported(self, path: str, value: Any, allowed: tuple[str, ...]) -> None:
        choices = ", ".join(f'"{a}"' for a in allowed)
        self.items.append(FieldError(path, f'Unsupported value: "{value}": supported values: {choices}',
                                     "FieldValueNotSupported"))

    def duplicate(self, path: str, value: Any) -> None:
        self.items.append(FieldError(path, f'Duplicate value: "{value}"', "FieldValueDuplicate"))

    def forbidden(self, path: str, detail: str) -> None:
        self.items.append(FieldError(path, f"Forbidden: {detail}", "FieldValueForbidden"))

    def too_long(self, path: str, limit: int) -> None:
        self.items.append(FieldError(path, f"Too long: must have at most {limit} bytes", "FieldValueTooLong"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_name(errs: Errors, name: Any, path: str, label: bool) -> None:
    if not isinstance(name, str) or not name:
        errs.required(path, "name or generateName is required")
        return
    limit = 63 if label else 253
    pattern, message = (DNS1123_LABEL, LABEL_MSG) if label else (DNS1123_SUBDOMAIN, SUBDOMAIN_MSG)
    if len(name) > limit:
        errs.invalid(path, name, f"must be no more than {limit} characters")
    elif not pattern.match(name):
        errs.invalid(path, name, message)


def _check_qualified_key(errs: Errors, key: str, path: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        errs.invalid(path, key, "prefix part " + SUBDOMAIN_MSG)
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        errs.invalid(path, key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                                "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                                "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?"
                                "[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. "
                                "'example.com/MyName')")


def _labels(errs: Errors, labels: Any, path: str) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        errs.invalid(path, labels, "must be a map of string keys to string values")
        return
    for key, value in labels.items():
        _check_qualified_key(errs, key, f"{path}")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errs.invalid(f"{path}", value, "a valid label must be an empty string or consist of alphanumeric "
                                           "characters, '-', '_' or '.', and must start and end with an "
                                           "alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
                                           "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?"
                                           "[A-Za-z0-9])?')")


def _metadata(errs: Errors, obj: Obj, label_name: bool) -> None:
    meta = obj.get("metadata") or {}
    _check_name(errs, meta.get("name"), "metadata.name", label_name)
    _labels(errs, meta.get("labels"), "metadata.labels")
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            errs.invalid("metadata.annotations", annotations, "must be a map of string keys to string values")
        else:
            size = 0
            for key, value in annotations.items():
                _check_qualified_key(errs, key, "metadata.annotations")
                if not isinstance(value, str):
                    errs.invalid(f"metadata.annotations[{key}]", value, "must be a string")
                    continue
                size += len(key) + len(value)
            if size > MAX_ANNOTATIONS:
                errs.too_long("metadata.annotations", MAX_ANNOTATIONS)
    for index, ref in enumerate(meta.get("ownerReferences") or []):
        for field in ("apiVersion", "kind", "name", "uid"):
            if not (ref or {}).get(field):
                errs.required(f"metadata.ownerReferences[{index}].{field}")
    finalizers = meta.get("finalizers") or []
    for index, finalizer in enumerate(finalizers):
        if not isinstance(finalizer, str) or not finalizer:
            errs.required(f"metadata.finalizers[{index}]")


def _quantities(errs: Errors, values: Any, path: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    if not isinstance(values, dict):
        return parsed
    for name, value in values.items():
        try:
            parsed[name] = parse_quantity(value)
        except (ValueError, TypeError):
            errs.invalid(f"{path}[{name}]", value, "quantities must match the regular expression "
                                                   "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
            continue
        if parsed[name] < 0:
            errs.invalid(f"{path}[{name}]", value, "must be greater than or equal to 0")
    return parsed


def _port_number(errs: Errors, value: Any, path: str, required: bool = True) -> None:
    if value is None:
        if required:
            errs.required(path)
        return
    if not _is_int(value) or not 1 <= value <= 65535:
        errs.invalid(path, value, "must be between 1 and 65535, inclusive")


def _probe(errs: Errors, probe: Any, path: str) -> None:
    if not isinstance(probe, dict):
        return
    handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(h) is not None]
    if not handlers:
        errs.required(path, "must specify a handler type")
    elif len(handlers) > 1:
        errs.forbidden(f"{path}.{handlers[1]}", "may not specify more than 1 handler type")
    for field in ("timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        value = probe.get(field)
        if value is not None and (not _is_int(value) or value < 1):
            errs.invalid(f"{path}.{field}", value, "must be greater than or equal to 1")
    if probe.get("initialDelaySeconds") is not None and (not _is_int(probe["initialDelaySeconds"]) or
                                                         probe["initialDelaySeconds"] < 0):
        errs.invalid(f"{path}.initialDelaySeconds", probe["initialDelaySeconds"], "must be greater than or equal to 0")


def _container(errs: Errors, container: Any, path: str, volumes: set[str], names: set[str]) -> None:
    if not isinstance(container, dict):
        errs.invalid(path, container, "must be an object")
        return
    name = container.get("name")
    if not name:
        errs.required(f"{path}.name")
    elif not isinstance(name, str) or not DNS1123_LABEL.match(name) or len(name) > 63:
        errs.invalid(f"{path}.name", name, LABEL_MSG)
    elif name in names:
        errs.duplicate(f"{path}.name", name)
    else:
        names.add(name)
    if not container.get("image"):
        errs.required(f"{path}.image")
    policy = container.get("imagePullPolicy")
    if policy is not None and policy not in ("Always", "IfNotPresent", "Never"):
        errs.unsupported(f"{path}.imagePullPolicy", policy, ("Always", "IfNotPresent", "Never"))
    port_names: set[str] = set()
    for index, port in enumerate(container.get("ports") or []):
        port_path = f"{path}.ports[{index}]"
        _port_number(errs, (port or {}).get("containerPort"), f"{port_path}.containerPort")
        _port_number(errs, (port or {}).get("hostPort"), f"{port_path}.hostPort", required=False)
        protocol = (port or {}).get("protocol")
        if protocol is not None and protocol not in ("TCP", "UDP", "SCTP"):
            errs.unsupported(f"{port_path}.protocol", protocol, ("SCTP", "TCP", "UDP"))
        port_name = (port or {}).get("name")
        if port_name:
            if not IANA_SVC_NAME.match(str(port_name)) or len(str(port_name)) > 15:
                errs.invalid(f"{port_path}.name", port_name, "must be no more than 15 characters and an IANA "
                                                            "service name")
            elif port_name in port_names:
                errs.duplicate(f"{port_path}.name", port_name)
            port_names.add(port_name)
    for index, env in enumerate(container.get("env") or []):
        env_name = (env or {}).get("name")
        if not env_name:
            errs.required(f"{path}.env[{index}].name")
        elif not ENV_NAME.match(str(env_name)):
            errs.invalid(f"{path}.env[{index}].name", env_name, "a valid environment variable name must consist "
                                                                "of alphabetic characters, digits, '_', '-', or '.', "
                                                                "and must not start with a digit")
        if (env or {}).get("value") is not None and (env or {}).get("valueFrom") is not None:
            errs.invalid(f"{path}.env[{index}].valueFrom", "", "may not be specified when `value` is not empty")
    resources = container.get("resources") or {}
    requests = _quantities(errs, resources.get("requests"), f"{path}.resources.requests")
    limits = _quantities(errs, resources.get("limits"), f"{path}.resources.limits")
    for resource, request in requests.items():
        if resource in limits and request > limits[resource]:
            errs.invalid(f"{path}.resources.requests", str((resources.get("requests") or {})[resource]),
                         f"must be less than or equal to {resource} limit of "
                         f"{(resources.get('limits') or {})[resource]}")
    for index, mount in enumerate(container.get("volumeMounts") or []):
        mount_name = (mount or {}).get("name")
        if not mount_name:
            errs.required(f"{path}.volumeMounts[{index}].name")
        elif mount_name not in volumes:
            errs.items.append(FieldError(f"{path}.volumeMounts[{index}].name", f'Not found: "{mount_name}"',
                                         "FieldValueNotFound"))
        if not (mount or {}).get("mountPath"):
            errs.required(f"{path}.volumeMounts[{index}].mountPath")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(errs, container.get(probe), f"{path}.{probe}")


VOLUME_SOURCES = ("emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected",
                  "persistentVolumeClaim", "nfs", "csi", "ephemeral", "image", "iscsi", "local", "fc", "rbd",
                  "cephfs", "cinder", "flexVolume", "gitRepo", "glusterfs", "awsElasticBlockStore",
                  "gcePersistentDisk", "azureDisk", "azureFile", "vsphereVolume", "quobyte", "portworxVolume",
                  "scaleIO", "storageos", "photonPersistentDisk", "flocker")


def _pod_spec(errs: Errors, spec: Any, path: str, restart_policies: tuple[str, ...]) -> None:
    if not isinstance(spec, dict):
        errs.required(path)
        return
    volumes: set[str] = set()
    for index, volume in enumerate(spec.get("volumes") or []):
        vpath = f"{path}.volumes[{index}]"
        name = (volume or {}).get("name")
        if not name:
            errs.required(f"{vpath}.name")
        elif not DNS1123_LABEL.match(str(name)):
            errs.invalid(f"{vpath}.name", name, LABEL_MSG)
        elif name in volumes:
            errs.duplicate(f"{vpath}.name", name)
        else:
            volumes.add(name)
        sources = [s for s in VOLUME_SOURCES if (volume or {}).get(s) is not None]
        if not sources:
            errs.required(vpath, "must specify a volume type")
        elif len(sources) > 1:
            errs.forbidden(f"{vpath}.{sources[1]}", "may not specify more than 1 volume type")
        host_path = (volume or {}).get("hostPath")
        if isinstance(host_path, dict) and not host_path.get("path"):
            errs.required(f"{vpath}.hostPath.path")
    containers = spec.get("containers")
    names: set[str] = set()
    if not containers:
        errs.required(f"{path}.containers")
    else:
        for index, container in enumerate(containers):
            _container(errs, container, f"{path}.containers[{index}]", volumes, names)
    for index, container in enumerate(spec.get("initContainers") or []):
        _container(errs, container, f"{path}.initContainers[{index}]", volumes, names)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in restart_policies:
        errs.unsupported(f"{path}.restartPolicy", policy, restart_policies)
    dns = spec.get("dnsPolicy")
    if dns is not None and dns not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        errs.unsupported(f"{path}.dnsPolicy", dns, ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not _is_int(grace) or grace < 0):
        errs.invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than or equal to 0")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not _is_int(deadline) or deadline < 1):
        errs.invalid(f"{path}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive")
    for index, toleration in enumerate(spec.get("tolerations") or []):
        operator = (toleration or {}).get("operator")
        if operator not in (None, "Exists", "Equal"):
            errs.unsupported(f"{path}.tolerations[{index}].operator", operator, ("Equal", "Exists"))
        effect = (toleration or {}).get("effect")
        if effect not in (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            errs.unsupported(f"{path}.tolerations[{index}].effect", effect,
                             ("NoExecute", "NoSchedule", "PreferNoSchedule"))
    if spec.get("nodeSelector") is not None:
        _labels(errs, spec.get("nodeSelector"), f"{path}.nodeSelector")


def _pod(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)
    _pod_spec(errs, obj.get("spec"), "spec", ("Always", "OnFailure", "Never"))
    if old is not None:
        mutable = {"containers", "initContainers", "activeDeadlineSeconds", "tolerations",
                   "terminationGracePeriodSeconds", "schedulingGates"}
        new_spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
        for key in set(new_spec) | set(old_spec):
            if key not in mutable and new_spec.get(key) != old_spec.get(key):
                errs.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, "
                                       "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, "
                                       "`spec.tolerations` (only additions to existing tolerations), "
                                       "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                                       "previously negative)")
                break
        else:
            for key in ("containers", "initContainers"):
                new_list, old_list = new_spec.get(key) or [], old_spec.get(key) or []
                strip = [{k: v for k, v in (c or {}).items() if k != "image"} for c in new_list]
                if strip != [{k: v for k, v in (c or {}).items() if k != "image"} for c in old_list]:
                    errs.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`")
                    break


def _selector_matches(selector: Any, labels: dict[str, str]) -> bool:
    if not isinstance(selector, dict):
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _label_selector(errs: Errors, selector: Any, path: str) -> None:
    if not isinstance(selector, dict):
        errs.required(path)
        return
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        errs.invalid(path, selector, "empty selector is invalid for deployment")
    _labels(errs, selector.get("matchLabels"), f"{path}.matchLabels")
    for index, expr in enumerate(selector.get("matchExpressions") or []):
        operator = (expr or {}).get("operator")
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            errs.unsupported(f"{path}.matchExpressions[{index}].operator", operator,
                             ("DoesNotExist", "Exists", "In", "NotIn"))
        elif operator in ("In", "NotIn") and not (expr or {}).get("values"):
            errs.required(f"{path}.matchExpressions[{index}].values",
                          "must be specified when `operator` is 'In' or 'NotIn'")


def _workload(restart_policies: tuple[str, ...], selector_required: bool = True) -> Callable[[Errors, Obj,
                                                                                              Obj | None], None]:
    def check(errs: Errors, obj: Obj, old: Obj | None) -> None:
        _metadata(errs, obj, label_name=False)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            errs.required("spec")
            return
        replicas = spec.get("replicas")
        if replicas is not None and (not _is_int(replicas) or replicas < 0):
            errs.invalid("spec.replicas", replicas, "must be greater than or equal to 0")
        selector = spec.get("selector")
        template = spec.get("template")
        if selector_required:
            _label_selector(errs, selector, "spec.selector")
        if not isinstance(template, dict):
            errs.required("spec.template")
        else:
            labels = (template.get("metadata") or {}).get("labels") or {}
            _labels(errs, labels, "spec.template.metadata.labels")
            if isinstance(selector, dict) and (selector.get("matchLabels") or selector.get("matchExpressions")) \
                    and not _selector_matches(selector, labels):
                errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
            _pod_spec(errs, template.get("spec"), "spec.template.spec", restart_policies)
        strategy = spec.get("strategy") or spec.get("updateStrategy")
        strategy_path = "spec.strategy" if "strategy" in spec else "spec.updateStrategy"
        if isinstance(strategy, dict) and strategy.get("type") is not None:
            allowed = ("Recreate", "RollingUpdate") if obj.get("kind") == "Deployment" else (
                "OnDelete", "RollingUpdate")
            if strategy["type"] not in allowed:
                errs.unsupported(f"{strategy_path}.type", strategy["type"], allowed)
            if strategy["type"] == "Recreate" and strategy.get("rollingUpdate"):
                errs.forbidden(f"{strategy_path}.rollingUpdate", "may not be specified when strategy `type` is "
                                                                 "'Recreate'")
        for field in ("minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds"):
            value = spec.get(field)
            if value is not None and (not _is_int(value) or value < 0):
                errs.invalid(f"spec.{field}", value, "must be greater than or equal to 0")
        if old is not None and selector_required and (old.get("spec") or {}).get("selector") != selector:
            errs.invalid("spec.selector", selector, "field is immutable")
    return check


def _job(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    _job_spec(errs, spec, "spec")
    if old is not None and (old.get("spec") or {}).get("template") != spec.get("template"):
        errs.invalid("spec.template", "", "field is immutable")


def _job_spec(errs: Errors, spec: Obj, path: str) -> None:
    for field in ("completions", "parallelism", "backoffLimit"):
        value = spec.get(field)
        if value is not None and (not _is_int(value) or value < 0):
            errs.invalid(f"{path}.{field}", value, "must be greater than or equal to 0")
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        errs.unsupported(f"{path}.completionMode", mode, ("Indexed", "NonIndexed"))
    if mode == "Indexed" and spec.get("completions") is None:
        errs.required(f"{path}.completions", "when completion mode is Indexed")
    template = spec.get("template")
    if not isinstance(template, dict):
        errs.required(f"{path}.template")
        return
    _pod_spec(errs, template.get("spec"), f"{path}.template.spec", ("OnFailure", "Never"))
    if (template.get("spec") or {}).get("restartPolicy") is None:
        errs.required(f"{path}.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"')


_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES: tuple[dict[str, int], ...] = ({}, {}, {}, {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))},
    {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))})


def cron_error(schedule: str) -> str | None:
    """Why a cron schedule is not valid, or None."""
    text = schedule.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        return "CronJob timeZone must be specified in the spec.timeZone field, not in the schedule"
    if text in _CRON_MACROS or text.startswith("@every "):
        return None
    fields = text.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields, found {len(fields)}: {schedule}"
    for field, (low, high), names in zip(fields, _CRON_RANGES, _CRON_NAMES, strict=True):
        for part in field.split(","):
            value, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                return f"invalid step {step!r} in {schedule!r}"
            if value in ("*", "?"):
                continue
            bounds = value.split("-")
            if len(bounds) > 2:
                return f"invalid range {value!r} in {schedule!r}"
            for bound in bounds:
                number = names.get(bound.lower()) if not bound.isdigit() else int(bound)
                if number is None or not low <= number <= high:
                    return f"value {bound!r} out of range [{low}, {high}] in {schedule!r}"
    return None


def _cronjob(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)
    name = (obj.get("metadata") or {}).get("name") or ""
    if len(name) > 52:
        errs.invalid("metadata.name", name, "must be no more than 52 characters")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    schedule = spec.get("schedule")
    if not schedule:
        errs.required("spec.schedule")
    elif (problem := cron_error(str(schedule))) is not None:
        errs.invalid("spec.schedule", schedule, problem)
    zone = spec.get("timeZone")
    if zone is not None:
        try:
            zoneinfo.ZoneInfo(str(zone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            errs.invalid("spec.timeZone", zone, "unknown time zone")
    policy = spec.get("concurrencyPolicy")
    if policy is not None and policy not in ("Allow", "Forbid", "Replace"):
        errs.unsupported("spec.concurrencyPolicy", policy, ("Allow", "Forbid", "Replace"))
    job_spec = (spec.get("jobTemplate") or {}).get("spec")
    if not isinstance(job_spec, dict):
        errs.required("spec.jobTemplate.spec")
    else:
        _job_spec(errs, job_spec, "spec.jobTemplate.spec")


SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _service(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=True)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    kind = spec.get("type", "ClusterIP")
    if kind not in SERVICE_TYPES:
        errs.unsupported("spec.type", kind, SERVICE_TYPES)
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if kind == "ExternalName":
        if not spec.get("externalName"):
            errs.required("spec.externalName")
    elif not ports and not headless:
        errs.required("spec.ports")
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    for index, port in enumerate(ports):
        path = f"spec.ports[{index}]"
        port = port or {}
        name = port.get("name")
        if len(ports) > 1 and not name:
            errs.required(f"{path}.name")
        elif name:
            if not DNS1123_LABEL.match(str(name)):
                errs.invalid(f"{path}.name", name, LABEL_MSG)
            elif name in names:
                errs.duplicate(f"{path}.name", name)
            names.add(name)
        _port_number(errs, port.get("port"), f"{path}.port")
        protocol = port.get("protocol", "TCP")
        if protocol not in ("TCP", "UDP", "SCTP"):
            errs.unsupported(f"{path}.protocol", protocol, ("SCTP", "TCP", "UDP"))
        key = (port.get("port"), protocol)
        if key in seen:
            errs.duplicate(f"{path}", f"{key[0]}/{key[1]}")
        seen.add(key)
        target = port.get("targetPort")
        if isinstance(target, str):
            if not IANA_SVC_NAME.match(target) or len(target) > 15:
                errs.invalid(f"{path}.targetPort", target, "must contain only alpha-numeric characters (a-z, 0-9), "
                                                          "and hyphens (-)")
        elif target is not None:
            _port_number(errs, target, f"{path}.targetPort")
        node_port = port.get("nodePort")
        if node_port is not None and kind not in ("NodePort", "LoadBalancer"):
            errs.forbidden(f"{path}.nodePort", "may not be used when `type` is 'ClusterIP'")
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP") and spec.get("clusterIP") != old_ip and kind != "ExternalName":
            errs.invalid("spec.clusterIPs[0]", spec.get("clusterIP"), "may not change once set")
    if spec.get("selector") is not None:
        _labels(errs, spec.get("selector"), "spec.selector")


def _namespace(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=True)


def _config_data(errs: Errors, obj: Obj, old: Obj | None, *, secret: bool) -> None:
    _metadata(errs, obj, label_name=False)
    total = 0
    for field in ("data", "stringData") if secret else ("data", "binaryData"):
        values = obj.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            errs.invalid(field, values, "must be a map")
            continue
        for key, value in values.items():
            if not CONFIG_KEY.match(key) or len(key) > 253:
                errs.invalid(f"{field}[{key}]", key, "a valid config key must consist of alphanumeric "
                                                    "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  "
                                                    "or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
            if not isinstance(value, str):
                errs.invalid(f"{field}[{key}]", value, "must be a string")
                continue
            if (secret and field == "data") or field == "binaryData":
                try:
                    total += len(base64.b64decode(value, validate=True))
                except (binascii.Error, ValueError):
                    errs.invalid(f"{field}[{key}]", "<value>", "illegal base64 data")
            else:
                total += len(value)
    if total > 1024 * 1024:
        errs.too_long("data", 1024 * 1024)
    if old is not None and old.get("immutable"):
        for field in ("data", "binaryData", "stringData", "immutable"):
            if field in ("stringData",):
                continue
            if obj.get(field) != old.get(field):
                errs.forbidden(field, "field is immutable when `immutable` is set")


def _configmap(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _config_data(errs, obj, old, secret=False)


def _secret(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _config_data(errs, obj, old, secret=True)
    if old is not None and obj.get("type") != old.get("type"):
        errs.invalid("type", obj.get("type"), "field is immutable")


def _rbac_role(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)
    for index, rule in enumerate(obj.get("rules") or []):
        if not (rule or {}).get("verbs"):
            errs.required(f"rules[{index}].verbs", "verbs must contain at least one value")


def _rbac_binding(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)
    ref = obj.get("roleRef") or {}
    if not ref.get("name"):
        errs.required("roleRef.name")
    if ref.get("kind") not in ("Role", "ClusterRole"):
        errs.unsupported("roleRef.kind", ref.get("kind"), ("ClusterRole", "Role"))
    if old is not None and old.get("roleRef") != obj.get("roleRef"):
        errs.invalid("roleRef", ref, "cannot change roleRef")


def _priority_class(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)
    value = obj.get("value")
    if not isinstance(value, int) or isinstance(value, bool):
        errs.required("value")
    elif value > 1_000_000_000:
        errs.forbidden("value", "maximum allowed value of a user defined priority is 1000000000")
    if old is not None and old.get("value") != value:
        errs.forbidden("value", "may not be changed in an update.")


def _crd(errs: Errors, obj: Obj, old: Obj | None) -> None:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group")
    if not group:
        errs.required("spec.group")
    elif "." not in group:
        errs.invalid("spec.group", group, "should be a domain with at least one dot")
    if not names.get("plural"):
        errs.required("spec.names.plural")
    if not names.get("kind"):
        errs.required("spec.names.kind")
    if names.get("plural") and group and meta.get("name") != f"{names['plural']}.{group}":
        errs.invalid("metadata.name", meta.get("name"), "must be spec.names.plural+\".\"+spec.group")
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errs.unsupported("spec.scope", spec.get("scope"), ("Cluster", "Namespaced"))
    versions = spec.get("versions") or []
    if not versions:
        errs.required("spec.versions", "must have exactly one version marked as storage version")
    elif sum(1 for v in versions if (v or {}).get("storage")) != 1:
        errs.invalid("spec.versions", [v.get("name") for v in versions],
                     "must have exactly one version marked as storage version")
    seen: set[str] = set()
    for index, version in enumerate(versions):
        name = (version or {}).get("name")
        if not name:
            errs.required(f"spec.versions[{index}].name")
        elif name in seen:
            errs.duplicate(f"spec.versions[{index}].name", name)
        seen.add(name or "")
    if old is not None:
        if (old.get("spec") or {}).get("scope") != spec.get("scope"):
            errs.invalid("spec.scope", spec.get("scope"), "field is immutable")
        if (old.get("spec") or {}).get("group") != group:
            errs.invalid("spec.group", group, "field is immutable")


def _lease(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)
    duration = (obj.get("spec") or {}).get("leaseDurationSeconds")
    if duration is not None and (not _is_int(duration) or duration <= 0):
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")


def _generic(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)


def _event(errs: Errors, obj: Obj, old: Obj | None) -> None:
    _metadata(errs, obj, label_name=False)
    if obj.get("kind") == "Event" and obj.get("apiVersion") == "v1" and not obj.get("involvedObject"):
        errs.required("involvedObject")


_VALIDATORS: dict[tuple[str, str], Callable[[Errors, Obj, Obj | None], None]] = {
    ("", "Pod"): _pod,
    ("", "Service"): _service,
    ("", "Namespace"): _namespace,
    ("", "ConfigMap"): _configmap,
    ("", "Secret"): _secret,
    ("", "ReplicationController"): _workload(("Always",), selector_required=False),
    ("", "Event"): _event,
    ("apps", "Deployment"): _workload(("Always",)),
    ("apps", "ReplicaSet"): _workload(("Always",)),
    ("apps", "StatefulSet"): _workload(("Always",)),
    ("apps", "DaemonSet"): _workload(("Always",)),
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
    ("rbac.authorization.k8s.io", "Role"): _rbac_role,
    ("rbac.authorization.k8s.io", "ClusterRole"): _rbac_role,
    ("rbac.authorization.k8s.io", "RoleBinding"): _rbac_binding,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _rbac_binding,
    ("scheduling.k8s.io", "PriorityClass"): _priority_class,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
    ("coordination.k8s.io", "Lease"): _lease,
}
_LABEL_NAMED = {("", "Service"), ("", "Namespace")}
_UNVALIDATED = {"SelfSubjectAccessReview", "SelfSubjectRulesReview", "SelfSubjectReview", "TokenReview",
                "SubjectAccessReview", "LocalSubjectAccessReview", "Binding"}


def validate(group: str, kind: str, obj: Obj, old: Obj | None) -> None:
    """Raise Invalid naming every invalid field of a built-in object (``old`` is set on update)."""
    if kind in _UNVALIDATED:
        return
    errs = Errors()
    _VALIDATORS.get((group, kind), _generic)(errs, obj, old)
    if errs.items:
        name = (obj.get("metadata") or {}).get("name", "")
        raise Invalid(f'{kind} "{name}" is invalid', errs.items)
