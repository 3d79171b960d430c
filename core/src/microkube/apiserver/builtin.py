"""The built-in kinds of Kubernetes 1.32, registered through ``microkube_resource_types`` like any plugin's.

Names, short names, categories, verbs and subresources follow kube-apiserver 1.32's discovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from microkube.apiserver import csr, defaults, printers, validation
from microkube_interfaces.admission import AdmissionPlugin
from microkube_interfaces.hookspecs import PluginInfo, ResourceRegistration, ServerSettings
from microkube_interfaces.markers import hookimpl
from microkube_interfaces.resources import Object, ResourceType

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
NO_COLLECTION_DELETE = ("create", "delete", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)

# group, version, kind, plural, namespaced, short names, categories, subresources, verbs
_TABLE: tuple[tuple[str, str, str, str, bool, tuple[str, ...], tuple[str, ...], tuple[str, ...],
                    tuple[str, ...]], ...] = (
    ("", "v1", "Binding", "bindings", True, (), (), (), CREATE_ONLY),
    ("", "v1", "ComponentStatus", "componentstatuses", False, ("cs",), (), (), ("get", "list")),
    ("", "v1", "ConfigMap", "configmaps", True, ("cm",), (), (), ALL_VERBS),
    ("", "v1", "Endpoints", "endpoints", True, ("ep",), (), (), ALL_VERBS),
    ("", "v1", "Event", "events", True, ("ev",), (), (), ALL_VERBS),
    ("", "v1", "LimitRange", "limitranges", True, ("limits",), (), (), ALL_VERBS),
    ("", "v1", "Namespace", "namespaces", False, ("ns",), (), ("finalize", "status"), NO_COLLECTION_DELETE),
    ("", "v1", "Node", "nodes", False, ("no",), (), ("proxy", "status"), ALL_VERBS),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), (), ("status",), ALL_VERBS),
    ("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), (), ("status",), ALL_VERBS),
    ("", "v1", "Pod", "pods", True, ("po",), ("all",),
     ("attach", "binding", "ephemeralcontainers", "eviction", "exec", "log", "portforward", "proxy", "resize",
      "status"), ALL_VERBS),
    ("", "v1", "PodTemplate", "podtemplates", True, (), (), (), ALL_VERBS),
    ("", "v1", "ReplicationController", "replicationcontrollers", True, ("rc",), ("all",), ("scale", "status"),
     ALL_VERBS),
    ("", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), (), ("status",), ALL_VERBS),
    ("", "v1", "Secret", "secrets", True, (), (), (), ALL_VERBS),
    ("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), (), ("token",), ALL_VERBS),
    ("", "v1", "Service", "services", True, ("svc",), ("all",), ("proxy", "status"), ALL_VERBS),
    ("apps", "v1", "ControllerRevision", "controllerrevisions", True, (), (), (), ALL_VERBS),
    ("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("all",), ("status",), ALL_VERBS),
    ("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("all",), ("scale", "status"), ALL_VERBS),
    ("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("all",), ("scale", "status"), ALL_VERBS),
    ("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), ("all",), ("scale", "status"), ALL_VERBS),
    ("events.k8s.io", "v1", "Event", "events", True, ("ev",), (), (), ALL_VERBS),
    ("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False, (), (), (), CREATE_ONLY),
    ("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False, (), (), (), CREATE_ONLY),
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", True, (), (), (),
     CREATE_ONLY),
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False, (), (), (),
     CREATE_ONLY),
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False, (), (), (),
     CREATE_ONLY),
    ("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", False, (), (), (), CREATE_ONLY),
    ("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ("all",), ("status",), ALL_VERBS),
    ("batch", "v1", "Job", "jobs", True, (), ("all",), ("status",), ALL_VERBS),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False, (), (), (), ALL_VERBS),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), (), ("status",), ALL_VERBS),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",), (), (), ALL_VERBS),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), (), ("status",), ALL_VERBS),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False, (), (), (), ALL_VERBS),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, (), (), (), ALL_VERBS),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, (), (), (), ALL_VERBS),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", True, (), (), (), ALL_VERBS),
    ("storage.k8s.io", "v1", "CSIDriver", "csidrivers", False, (), (), (), ALL_VERBS),
    ("storage.k8s.io", "v1", "CSINode", "csinodes", False, (), (), (), ALL_VERBS),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",), (), (), ALL_VERBS),
    ("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", False, (), (), ("status",), ALL_VERBS),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False, ("crd", "crds"),
     ("api-extensions",), ("status",), ALL_VERBS),
    ("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ("pc",), (), (), ALL_VERBS),
    ("coordination.k8s.io", "v1", "Lease", "leases", True, (), (), (), ALL_VERBS),
    ("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", False, (), (), (), ALL_VERBS),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, (), (), (), ALL_VERBS),
    ("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", False, ("csr",), (),
     ("approval", "status"), ALL_VERBS),
)

#: OpenAPI definition package of each group's v1 kinds.
_DEFINITION_PACKAGES = {
    "": "io.k8s.api.core.v1", "apps": "io.k8s.api.apps.v1", "events.k8s.io": "io.k8s.api.events.v1",
    "authentication.k8s.io": "io.k8s.api.authentication.v1", "authorization.k8s.io": "io.k8s.api.authorization.v1",
    "batch": "io.k8s.api.batch.v1", "networking.k8s.io": "io.k8s.api.networking.v1", "policy": "io.k8s.api.policy.v1",
    "rbac.authorization.k8s.io": "io.k8s.api.rbac.v1", "storage.k8s.io": "io.k8s.api.storage.v1",
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1",
    "scheduling.k8s.io": "io.k8s.api.scheduling.v1", "coordination.k8s.io": "io.k8s.api.coordination.v1",
    "node.k8s.io": "io.k8s.api.node.v1", "discovery.k8s.io": "io.k8s.api.discovery.v1",
    "certificates.k8s.io": "io.k8s.api.certificates.v1",
}

class BuiltinStrategy:
    """Defaulting, validation and printing of one built-in kind."""

    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind

    def default(self, obj: Object) -> None:
        defaults.apply_defaults(self.group, self.kind, obj)

    def validate(self, obj: Object, old: Object | None) -> None:
        validation.validate(self.group, self.kind, obj, old)

    def table_cells(self, obj: Object) -> list[Any]:
        return printers.cells(self.group, self.kind, obj)


def resource_type(group: str, version: str, kind: str, plural: str, namespaced: bool, short: tuple[str, ...],
                  categories: tuple[str, ...], subresources: tuple[str, ...], verbs: tuple[str, ...]) -> ResourceType:
    return ResourceType(
        group=group, version=version, kind=kind, plural=plural, singular=kind.lower(), namespaced=namespaced,
        short_names=short, categories=categories, verbs=verbs, subresources=subresources,
        definition=f"{_DEFINITION_PACKAGES[group]}.{kind}", printer_columns=printers.columns(group, kind),
        has_status="status" in subresources,
    )


def builtin_registrations() -> list[ResourceRegistration]:
    found = []
    for row in _TABLE:
        if (row[0], row[2]) == (csr.GROUP, csr.KIND):
            found.append(ResourceRegistration(replace(resource_type(*row), printer_columns=csr.COLUMNS),
                                              csr.CSRStrategy()))
        else:
            found.append(ResourceRegistration(resource_type(*row), BuiltinStrategy(row[0], row[2])))
    return found


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name="builtin-resources", interfaces={"resources": ("v1",), "admission": ("v1",)},
                      description="the built-in kinds of Kubernetes 1.32")


@hookimpl
def microkube_resource_types(settings: ServerSettings) -> Sequence[ResourceRegistration]:
    return builtin_registrations()


@hookimpl
def microkube_admission_plugins(settings: ServerSettings) -> Sequence[AdmissionPlugin]:
    return [csr.CSRAdmission()]
