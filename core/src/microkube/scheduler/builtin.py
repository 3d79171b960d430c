"""The built-in scheduler plugins (kube-scheduler's default profile), registered like any pack's."""

from __future__ import annotations

from collections.abc import Sequence

from microkube.scheduler.plugins.affinity import InterPodAffinity, PodTopologySpread
from microkube.scheduler.plugins.binding import DefaultBinder
from microkube.scheduler.plugins.noderesources import NodeResourcesBalancedAllocation, NodeResourcesFit
from microkube.scheduler.plugins.nodes import NodeAffinity, NodeName, NodePorts, NodeUnschedulable, TaintToleration
from microkube.scheduler.plugins.preemption import DefaultPreemption
from microkube.scheduler.plugins.volumes import VolumeBinding
from microkube_interfaces.hookspecs import PluginInfo, ServerSettings
from microkube_interfaces.markers import hookimpl
from microkube_interfaces.scheduling import SchedulerHandle, SchedulerPlugin, SchedulerPluginRegistration


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name="builtin-scheduler-plugins", interfaces={"scheduler": ("v1",)})


@hookimpl
def microkube_scheduler_plugins(settings: ServerSettings) -> Sequence[SchedulerPluginRegistration]:
    strategy = str(settings.options.get("scoring_strategy", "LeastAllocated"))

    def fit(handle: SchedulerHandle) -> SchedulerPlugin:
        return NodeResourcesFit(handle, strategy)

    # order and weights follow kube-scheduler's default profile
    return [
        SchedulerPluginRegistration("NodeUnschedulable", NodeUnschedulable),
        SchedulerPluginRegistration("NodeName", NodeName),
        SchedulerPluginRegistration("TaintToleration", TaintToleration, weight=3),
        SchedulerPluginRegistration("NodeAffinity", NodeAffinity, weight=2),
        SchedulerPluginRegistration("NodePorts", NodePorts),
        SchedulerPluginRegistration("NodeResourcesFit", fit, weight=1),
        SchedulerPluginRegistration("VolumeBinding", VolumeBinding),
        SchedulerPluginRegistration("PodTopologySpread", PodTopologySpread, weight=2),
        SchedulerPluginRegistration("InterPodAffinity", InterPodAffinity, weight=2),
        SchedulerPluginRegistration("NodeResourcesBalancedAllocation", NodeResourcesBalancedAllocation, weight=1),
        SchedulerPluginRegistration("DefaultPreemption", DefaultPreemption),
        SchedulerPluginRegistration("DefaultBinder", DefaultBinder),
    ]
