"""Table output: the columns ``kubectl get`` shows for each built-in kind, computed like kube-apiserver."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from microkube.timestamps import parse_time
from microkube_interfaces.resources import Object, PrinterColumn

NAME = PrinterColumn("Name", "string", ".metadata.name",
                     "Name must be unique within a namespace. More info: "
                     "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names", "name")
AGE = PrinterColumn("Age", "string", ".metadata.creationTimestamp",
                    "CreationTimestamp is a timestamp representing the server time when this object was created.")


def _col(name: str, kind: str = "string", priority: int = 0, description: str = "") -> PrinterColumn:
    return PrinterColumn(name, kind, "", description, "", priority)


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration: 5s, 3m12s, 2d4h, 3y45d."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rem = (s % 3600) // 60
        return f"{hours}h{rem}m" if rem else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d{rem}h" if rem else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def since(value: str | None, now: datetime | None = None) -> str:
    then = parse_time(value)
    if then is None:
        return "<unknown>"
    return human_duration(((now or datetime.now(UTC)) - then).total_seconds())


def age(obj: Object, now: datetime | None = None) -> str:
    return since((obj.get("metadata") or {}).get("creationTimestamp"), now)


def column_definitions(columns: tuple[PrinterColumn, ...]) -> list[dict[str, Any]]:
    return [{"name": c.name, "type": c.type, "format": c.format, "description": c.description,
             "priority": c.priority} for c in (columns or (NAME, AGE))]


def _selector(selector: dict[str, Any] | None) -> str:
    if not selector:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        values = ",".join(expr.get("values") or [])
        op = expr.get("operator")
        parts.append({"In": f"{expr.get('key')} in ({values})", "NotIn": f"{expr.get('key')} notin ({values})",
                      "Exists": f"{expr.get('key')}", "DoesNotExist": f"!{expr.get('key')}"}.get(op or "", ""))
    return ",".join(parts) or "<none>"


def _map_selector(selector: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items())) or "<none>"


def _pod_template(obj: Object) -> tuple[str, str]:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return (",".join(c.get("name", "") for c in containers) or "<none>",
            ",".join(c.get("image", "") for c in containers) or "<none>")


def _pod_cells(obj: Object) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    reason = status.get("reason") or status.get("phase") or "Pending"
    for index, init in enumerate(status.get("initContainerStatuses") or []):
        state = init.get("state") or {}
        if "terminated" in state and state["terminated"].get("exitCode", 0) == 0:
            continue
        if "terminated" in state:
            reason = f"Init:{state['terminated'].get('reason') or 'Error'}"
        elif (state.get("waiting") or {}).get("reason") not in (None, "PodInitializing"):
            reason = f"Init:{state['waiting']['reason']}"
        else:
            reason = f"Init:{index}/{len(spec.get('initContainers') or [])}"
        break
    else:
        for s in reversed(statuses):
            state = s.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
    if meta.get("deletionTimestamp"):
        reason = "Terminating"
    restarts_text = str(restarts)
    last = [((s.get("lastState") or {}).get("terminated") or {}).get("finishedAt") for s in statuses]
    last_times = [t for t in last if t]
    if restarts and last_times:
        restarts_text = f"{restarts} ({since(max(last_times))} ago)"
    gates = spec.get("readinessGates") or []
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    gates_text = (f"{sum(1 for g in gates if conditions.get(g.get('conditionType')) == 'True')}/{len(gates)}"
                  if gates else "<none>")
    return [meta.get("name", ""), f"{ready}/{len(containers)}", reason, restarts_text, age(obj),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", gates_text]


def _service_cells(obj: Object) -> list[Any]:
    spec = obj.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or ",".join(
        spec.get("externalIPs") or [])
    if kind == "ExternalName":
        external = spec.get("externalName", "")
    elif kind == "LoadBalancer" and not external:
        external = "<pending>"
    ports = []
    for port in spec.get("ports") or []:
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        ports.append(f"{text}/{port.get('protocol', 'TCP')}")
    return [obj["metadata"].get("name", ""), kind, spec.get("clusterIP") or "<none>", external or "<none>",
            ",".join(ports) or "<none>", age(obj), _map_selector(spec.get("selector"))]


def _node_cells(obj: Object) -> list[Any]:
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    labels = (obj.get("metadata") or {}).get("labels") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    if spec.get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [obj["metadata"].get("name", ""), state, ",".join(roles) or "<none>", age(obj),
            info.get("kubeletVersion", ""), addresses.get("InternalIP", "<none>"),
            addresses.get("ExternalIP", "<none>"), info.get("osImage", "<unknown>"),
            info.get("kernelVersion", "<unknown>"), info.get("containerRuntimeVersion", "<unknown>")]


def _deployment_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers, images = _pod_template(obj)
    return [obj["metadata"].get("name", ""), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age(obj), containers, images,
            _selector(spec.get("selector"))]


def _replicaset_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers, images = _pod_template(obj)
    selector = spec.get("selector")
    text = _map_selector(selector) if obj.get("kind") == "ReplicationController" else _selector(selector)
    return [obj["metadata"].get("name", ""), spec.get("replicas", 0), status.get("replicas", 0),
            status.get("readyReplicas", 0), age(obj), containers, images, text]


def _statefulset_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers, images = _pod_template(obj)
    return [obj["metadata"].get("name", ""), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            age(obj), containers, images]


def _daemonset_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers, images = _pod_template(obj)
    node_selector = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector")
    return [obj["metadata"].get("name", ""), status.get("desiredNumberScheduled", 0),
            status.get("currentNumberScheduled", 0), status.get("numberReady", 0),
            status.get("updatedNumberScheduled", 0),
            status.get("numberAvailable", 0), _map_selector(node_selector), age(obj), containers, images,
            _selector(spec.get("selector"))]


def _job_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("Complete") == "True":
        state = "Complete"
    elif conditions.get("Failed") == "True":
        state = "Failed"
    elif conditions.get("Suspended") == "True":
        state = "Suspended"
    else:
        state = "Running"
    completions = spec.get("completions")
    done = status.get("succeeded", 0)
    completions_text = (f"{done}/{completions}" if completions is not None
                        else f"{done}/1 of {spec.get('parallelism', 1)}")
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = human_duration(((end or datetime.now(UTC)) - start).total_seconds()) if start else ""
    containers, images = _pod_template(obj)
    return [obj["metadata"].get("name", ""), state, completions_text, duration, age(obj), containers, images,
            _selector(spec.get("selector"))]


def _cronjob_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    template = ((spec.get("jobTemplate") or {}).get("spec") or {})
    containers, images = _pod_template({"spec": template})
    last = status.get("lastScheduleTime")
    return [obj["metadata"].get("name", ""), spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            str(bool(spec.get("suspend"))), len(status.get("active") or []), since(last) if last else "<none>",
            age(obj), containers, images, _selector(template.get("selector"))]


def _event_cells(obj: Object) -> list[Any]:
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or (obj.get("metadata") or {}).get("creationTimestamp")
    kind = (involved.get("kind") or "").lower()
    return [since(last), obj.get("type", ""), obj.get("reason", ""), f"{kind}/{involved.get('name', '')}",
            obj.get("message") or obj.get("note", ""), obj["metadata"].get("name", "")]


def _pvc_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    capacity = (status.get("capacity") or {}).get("storage", "")
    modes = ",".join({"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                      "ReadWriteOncePod": "RWOP"}.get(m, m) for m in status.get("accessModes") or [])
    return [obj["metadata"].get("name", ""), status.get("phase", ""), spec.get("volumeName", ""), capacity, modes,
            spec.get("storageClassName") or "<unset>", spec.get("volumeAttributesClassName") or "<unset>", age(obj),
            spec.get("volumeMode", "")]


def _pv_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    claim = spec.get("claimRef") or {}
    modes = ",".join({"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                      "ReadWriteOncePod": "RWOP"}.get(m, m) for m in spec.get("accessModes") or [])
    return [obj["metadata"].get("name", ""), (spec.get("capacity") or {}).get("storage", ""), modes,
            spec.get("persistentVolumeReclaimPolicy", ""), status.get("phase", ""),
            f"{claim.get('namespace')}/{claim.get('name')}" if claim else "", spec.get("storageClassName", ""),
            spec.get("volumeAttributesClassName") or "<unset>", status.get("reason", ""), age(obj),
            spec.get("volumeMode", "")]


def _endpoints_cells(obj: Object) -> list[Any]:
    addresses = []
    for subset in obj.get("subsets") or []:
        for address in subset.get("addresses") or []:
            for port in subset.get("ports") or [{}]:
                addresses.append(f"{address.get('ip')}:{port.get('port')}" if port else address.get("ip"))
    text = ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")
    return [obj["metadata"].get("name", ""), text or "<none>", age(obj)]


def _slice_cells(obj: Object) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in obj.get("ports") or []) or "<unset>"
    endpoints = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    text = ",".join(endpoints[:3]) + (f" + {len(endpoints) - 3} more..." if len(endpoints) > 3 else "")
    return [obj["metadata"].get("name", ""), obj.get("addressType", ""), ports, text or "<unset>", age(obj)]


def _ingress_cells(obj: Object) -> list[Any]:
    spec = obj.get("spec") or {}
    hosts = ",".join(r.get("host", "") for r in spec.get("rules") or [] if r.get("host")) or "*"
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    address = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress)
    ports = "80, 443" if spec.get("tls") else "80"
    return [obj["metadata"].get("name", ""), spec.get("ingressClassName") or "<none>", hosts, address, ports,
            age(obj)]


def _pdb_cells(obj: Object) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [obj["metadata"].get("name", ""), str(spec.get("minAvailable", "N/A")),
            str(spec.get("maxUnavailable", "N/A")), status.get("disruptionsAllowed", 0), age(obj)]


def _secret_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), obj.get("type", ""), len(obj.get("data") or {}), age(obj)]


def _configmap_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age(obj)]


def _namespace_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), (obj.get("status") or {}).get("phase", ""), age(obj)]


def _serviceaccount_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), len(obj.get("secrets") or []), age(obj)]


def _lease_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), (obj.get("spec") or {}).get("holderIdentity", ""), age(obj)]


def _storageclass_cells(obj: Object) -> list[Any]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    name = obj["metadata"].get("name", "")
    if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
        name += " (default)"
    return [name, obj.get("provisioner", ""), obj.get("reclaimPolicy", "Delete"),
            obj.get("volumeBindingMode", "Immediate"), bool(obj.get("allowVolumeExpansion")), age(obj)]


def _priorityclass_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), obj.get("value", 0), bool(obj.get("globalDefault")), age(obj),
            obj.get("preemptionPolicy", "")]


def _crd_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), obj["metadata"].get("creationTimestamp", "")]


def _role_binding_cells(obj: Object) -> list[Any]:
    ref = obj.get("roleRef") or {}
    return [obj["metadata"].get("name", ""), f"{ref.get('kind')}/{ref.get('name')}", age(obj)]


def _quota_cells(obj: Object) -> list[Any]:
    status = obj.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}

    def usage(limits: bool) -> str:
        return ", ".join(f"{key}: {used.get(key, '0')}/{hard[key]}" for key in sorted(hard)
                         if key.startswith("limits.") == limits)

    return [obj["metadata"].get("name", ""), age(obj), usage(False), usage(True)]


def _netpol_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), _selector((obj.get("spec") or {}).get("podSelector")), age(obj)]


def _runtimeclass_cells(obj: Object) -> list[Any]:
    return [obj["metadata"].get("name", ""), obj.get("handler", ""), age(obj)]


def _revision_cells(obj: Object) -> list[Any]:
    owner: dict[str, Any] = next(iter((obj.get("metadata") or {}).get("ownerReferences") or []), {})
    controller = f"{owner.get('kind', '').lower()}.{owner.get('apiVersion', '').split('/')[0]}/{owner.get('name')}" \
        if owner else "<none>"
    return [obj["metadata"].get("name", ""), controller, obj.get("revision", 0), age(obj)]


def _default_cells(obj: Object) -> list[Any]:
    return [(obj.get("metadata") or {}).get("name", ""), age(obj)]


_S, _I, _D = "string", "integer", "date"
_COLUMNS: dict[tuple[str, str], tuple[tuple[PrinterColumn, ...], Callable[[Object], list[Any]]]] = {
    ("", "Pod"): ((NAME, _col("Ready"), _col("Status"), _col("Restarts"), AGE, _col("IP", priority=1),
                   _col("Node", priority=1), _col("Nominated Node", priority=1),
                   _col("Readiness Gates", priority=1)), _pod_cells),
    ("", "Service"): ((NAME, _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), AGE,
                       _col("Selector", priority=1)), _service_cells),
    ("", "Node"): ((NAME, _col("Status"), _col("Roles"), AGE, _col("Version"), _col("Internal-IP", priority=1),
                    _col("External-IP", priority=1), _col("OS-Image", priority=1),
                    _col("Kernel-Version", priority=1), _col("Container-Runtime", priority=1)), _node_cells),
    ("", "Namespace"): ((NAME, _col("Status"), AGE), _namespace_cells),
    ("", "ConfigMap"): ((NAME, _col("Data", _I), AGE), _configmap_cells),
    ("", "Secret"): ((NAME, _col("Type"), _col("Data", _I), AGE), _secret_cells),
    ("", "ServiceAccount"): ((NAME, _col("Secrets", _I), AGE), _serviceaccount_cells),
    ("", "Event"): ((_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message"),
                     PrinterColumn("Name", "string", "", "", "name", 1)), _event_cells),
    ("events.k8s.io", "Event"): ((_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"),
                                  _col("Message"), PrinterColumn("Name", "string", "", "", "name", 1)),
                                 _event_cells),
    ("", "Endpoints"): ((NAME, _col("Endpoints"), AGE), _endpoints_cells),
    ("", "PersistentVolumeClaim"): ((NAME, _col("Status"), _col("Volume"), _col("Capacity"),
                                     _col("Access Modes"), _col("StorageClass"), _col("VolumeAttributesClass"),
                                     AGE, _col("VolumeMode", priority=1)), _pvc_cells),
    ("", "PersistentVolume"): ((NAME, _col("Capacity"), _col("Access Modes"), _col("Reclaim Policy"),
                                _col("Status"), _col("Claim"), _col("StorageClass"), _col("VolumeAttributesClass"),
                                _col("Reason"), AGE, _col("VolumeMode", priority=1)), _pv_cells),
    ("", "ReplicationController"): ((NAME, _col("Desired", _I), _col("Current", _I), _col("Ready", _I), AGE,
                                     _col("Containers", priority=1), _col("Images", priority=1),
                                     _col("Selector", priority=1)), _replicaset_cells),
    ("", "ResourceQuota"): ((NAME, AGE, _col("Request"), _col("Limit")), _quota_cells),
    ("apps", "Deployment"): ((NAME, _col("Ready"), _col("Up-to-date", _I), _col("Available", _I), AGE,
                              _col("Containers", priority=1), _col("Images", priority=1),
                              _col("Selector", priority=1)), _deployment_cells),
    ("apps", "ReplicaSet"): ((NAME, _col("Desired", _I), _col("Current", _I), _col("Ready", _I), AGE,
                              _col("Containers", priority=1), _col("Images", priority=1),
                              _col("Selector", priority=1)), _replicaset_cells),
    ("apps", "StatefulSet"): ((NAME, _col("Ready"), AGE, _col("Containers", priority=1),
                               _col("Images", priority=1)), _statefulset_cells),
    ("apps", "DaemonSet"): ((NAME, _col("Desired", _I), _col("Current", _I), _col("Ready", _I),
                             _col("Up-to-date", _I), _col("Available", _I), _col("Node Selector"), AGE,
                             _col("Containers", priority=1), _col("Images", priority=1),
                             _col("Selector", priority=1)), _daemonset_cells),
    ("apps", "ControllerRevision"): ((NAME, _col("Controller"), _col("Revision", _I), AGE), _revision_cells),
    ("batch", "Job"): ((NAME, _col("Status"), _col("Completions"), _col("Duration"), AGE,
                        _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)),
                       _job_cells),
    ("batch", "CronJob"): ((NAME, _col("Schedule"), _col("Timezone"), _col("Suspend"), _col("Active", _I),
                            _col("Last Schedule"), AGE, _col("Containers", priority=1), _col("Images", priority=1),
                            _col("Selector", priority=1)), _cronjob_cells),
    ("discovery.k8s.io", "EndpointSlice"): ((NAME, _col("AddressType"), _col("Ports"), _col("Endpoints"), AGE),
                                            _slice_cells),
    ("coordination.k8s.io", "Lease"): ((NAME, _col("Holder"), AGE), _lease_cells),
    ("networking.k8s.io", "Ingress"): ((NAME, _col("Class"), _col("Hosts"), _col("Address"), _col("Ports"), AGE),
                                       _ingress_cells),
    ("networking.k8s.io", "NetworkPolicy"): ((NAME, _col("Pod-Selector"), AGE), _netpol_cells),
    ("policy", "PodDisruptionBudget"): ((NAME, _col("Min Available"), _col("Max Unavailable"),
                                         _col("Allowed Disruptions", _I), AGE), _pdb_cells),
    ("rbac.authorization.k8s.io", "RoleBinding"): ((NAME, _col("Role"), AGE), _role_binding_cells),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ((NAME, _col("Role"), AGE), _role_binding_cells),
    ("storage.k8s.io", "StorageClass"): ((NAME, _col("Provisioner"), _col("ReclaimPolicy"),
                                          _col("VolumeBindingMode"), _col("AllowVolumeExpansion"), AGE),
                                         _storageclass_cells),
    ("scheduling.k8s.io", "PriorityClass"): ((NAME, _col("Value", _I), _col("Global-Default"), AGE,
                                              _col("PreemptionPolicy")), _priorityclass_cells),
    ("node.k8s.io", "RuntimeClass"): ((NAME, _col("Handler"), AGE), _runtimeclass_cells),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ((NAME, _col("Created At", _D)), _crd_cells),
}


def columns(group: str, kind: str) -> tuple[PrinterColumn, ...]:
    entry = _COLUMNS.get((group, kind))
    return entry[0] if entry else (NAME, AGE)


def cells(group: str, kind: str, obj: Object) -> list[Any]:
    entry = _COLUMNS.get((group, kind))
    return entry[1](obj) if entry else _default_cells(obj)


_JSONPATH_FILTER = re.compile(r"^\[\?\(@\.([\w.-]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]")


def evaluate_jsonpath(obj: Any, path: str) -> Any:
    """The JSONPath subset CRD printer columns use: ``.a.b``, ``.a[0]``, ``.a[*].b``, ``.a[?(@.k=="v")].b``."""
    nodes: list[Any] = [obj]
    rest = path.strip()
    if rest.startswith("{") and rest.endswith("}"):
        rest = rest[1:-1]
    while rest:
        if rest.startswith("."):
            token = re.match(r"^\.((?:[\w-]|\\\.)+)", rest)
            if token is None:
                return None
            key = token.group(1).replace("\\.", ".")
            nodes = [n.get(key) for n in nodes if isinstance(n, dict) and key in n]
            rest = rest[token.end():]
        elif rest.startswith("[*]"):
            nodes = [item for n in nodes if isinstance(n, list) for item in n]
            rest = rest[3:]
        elif (filt := _JSONPATH_FILTER.match(rest)) is not None:
            field, wanted = filt.group(1), filt.group(2)
            nodes = [item for n in nodes if isinstance(n, list) for item in n
                     if str(evaluate_jsonpath(item, "." + field)) == wanted]
            rest = rest[filt.end():]
        elif (index := re.match(r"^\[(-?\d+)\]", rest)) is not None:
            i = int(index.group(1))
            nodes = [n[i] for n in nodes if isinstance(n, list) and -len(n) <= i < len(n)]
            rest = rest[index.end():]
        else:
            return None
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else nodes


def custom_columns(printer_columns: list[dict[str, Any]], obj: Object) -> list[Any]:
    """Cells of a CRD's additionalPrinterColumns (after the Name column)."""
    out: list[Any] = []
    for column in printer_columns:
        value = evaluate_jsonpath(obj, column.get("jsonPath", ""))
        kind = column.get("type", "string")
        if value is None:
            out.append(None)
        elif kind == "date":
            out.append(since(str(value)))
        elif isinstance(value, list):
            out.append(",".join(str(v) for v in value))
        elif isinstance(value, dict):
            out.append(str(value))
        else:
            out.append(value)
    return out
