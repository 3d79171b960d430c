"""The built-in controllers, registered through ``microkube_controllers`` like any pack's."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from microkube.controllers import certificates
from microkube.controllers.cronjob import CRONJOBS, CronJobController
from microkube.controllers.daemonset import DAEMONSETS, NODES, DaemonSetController
from microkube.controllers.deployment import DEPLOYMENTS, DeploymentController
from microkube.controllers.disruption import PDBS, DisruptionController
from microkube.controllers.endpoints import SERVICES, EndpointsController
from microkube.controllers.job import JOBS, JobController
from microkube.controllers.nodeipam import CLUSTER_CIDR, NodeIpamController
from microkube.controllers.nodelifecycle import node_lifecycle_controller
from microkube.controllers.podgc import PodGCController
from microkube.controllers.replicaset import PODS, REPLICASETS, REPLICATIONCONTROLLERS, ReplicaSetController
from microkube.controllers.resourcequota import RESOURCEQUOTAS, ResourceQuotaController
from microkube.controllers.serviceaccounts import NAMESPACES, ServiceAccountsController
from microkube.controllers.statefulset import REVISIONS, STATEFULSETS, StatefulSetController
from microkube_interfaces.controllers import ControllerContext, ControllerRegistration, Reconciler
from microkube_interfaces.hookspecs import PluginInfo, ServerSettings
from microkube_interfaces.markers import hookimpl


def _replicasets(context: ControllerContext) -> Reconciler:
    return ReplicaSetController(context, REPLICASETS)


def _replicationcontrollers(context: ControllerContext) -> Reconciler:
    return ReplicaSetController(context, REPLICATIONCONTROLLERS)


def _node_ipam(cluster_cidr: str) -> Callable[[ControllerContext], Reconciler]:
    def build(context: ControllerContext) -> Reconciler:
        return NodeIpamController(context, cluster_cidr)
    return build


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name="builtin-controllers", interfaces={"controllers": ("v1",)})


@hookimpl
def microkube_controllers(settings: ServerSettings) -> Sequence[ControllerRegistration]:
    return [
        ControllerRegistration("deployment", DEPLOYMENTS, DeploymentController, owns=(REPLICASETS,)),
        ControllerRegistration("endpoints", SERVICES, EndpointsController),
        ControllerRegistration("serviceaccount", NAMESPACES, ServiceAccountsController),
        ControllerRegistration("job", JOBS, JobController, owns=(PODS,)),
        ControllerRegistration("cronjob", CRONJOBS, CronJobController, owns=(JOBS,)),
        ControllerRegistration("statefulset", STATEFULSETS, StatefulSetController, owns=(PODS, REVISIONS)),
        ControllerRegistration("daemonset", DAEMONSETS, DaemonSetController, owns=(PODS,)),
        ControllerRegistration("nodeipam", NODES, _node_ipam(str(settings.options.get("cluster_cidr", CLUSTER_CIDR))),
                               workers=1),
        ControllerRegistration("nodelifecycle", NODES, node_lifecycle_controller(settings.options)),
        ControllerRegistration("disruption", PDBS, DisruptionController),
        ControllerRegistration("podgc", NODES, PodGCController, workers=1),
        ControllerRegistration("replicaset", REPLICASETS, _replicasets, owns=(PODS,)),
        ControllerRegistration("replicationcontroller", REPLICATIONCONTROLLERS, _replicationcontrollers,
                               owns=(PODS,)),
        ControllerRegistration("resourcequota", RESOURCEQUOTAS, ResourceQuotaController),
        *certificates.registrations(settings.options),
    ]
