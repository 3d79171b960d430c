"""The built-in scheduler plugins (kube-scheduler's default profile), registered like any pack's.

The plugin modules (and numpy, which their fast path needs) are imported when a scheduler builds
them, not when the plugin manager loads: the API server and the other commands never pay for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from microkube_interfaces.hookspecs import PluginInfo, ServerSettings
from microkube_interfaces.markers import hookimpl
from microkube_interfaces.scheduling import SchedulerHandle, SchedulerPlugin, SchedulerPluginRegistration

PLUGINS = "microkube.scheduler.plugins"


def _lazy(module: str, name: str, *args: str) -> Callable[[SchedulerHandle], SchedulerPlugin]:
    def build(handle: SchedulerHandle) -> SchedulerPlugin:
        plugin: SchedulerPlugin = getattr(importlib.import_module(f"{PLUGINS}.{module}"), name)(handle, *args)
        return plugin
    return build


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name="builtin-scheduler-plugins", interfaces={"scheduler": ("v1",)})


@hookimpl
def microkube_scheduler_plugins(settings: ServerSettings) -> Sequence[SchedulerPluginRegistration]:
    strategy = str(settings.options.get("scoring_strategy", "LeastAllocated"))
    # order and weights follow kube-scheduler's default profile
    return [
        SchedulerPluginRegistration("NodeUnschedulable", _lazy("nodes", "NodeUnschedulable")),
        SchedulerPluginRegistration("NodeName", _lazy("nodes", "NodeName")),
        SchedulerPluginRegistration("TaintToleration", _lazy("nodes", "TaintToleration"), weight=3),
        SchedulerPluginRegistration("NodeAffinity", _lazy("nodes", "NodeAffinity"), weight=2),
        SchedulerPluginRegistration("NodePorts", _lazy("nodes", "NodePorts")),
        SchedulerPluginRegistration("NodeResourcesFit", _lazy("noderesources", "NodeResourcesFit", strategy)),
        SchedulerPluginRegistration("VolumeBinding", _lazy("volumes", "VolumeBinding")),
        SchedulerPluginRegistration("PodTopologySpread", _lazy("affinity", "PodTopologySpread"), weight=2),
        SchedulerPluginRegistration("InterPodAffinity", _lazy("affinity", "InterPodAffinity"), weight=2),
        SchedulerPluginRegistration("NodeResourcesBalancedAllocation",
                                    _lazy("noderesources", "NodeResourcesBalancedAllocation")),
        SchedulerPluginRegistration("DefaultPreemption", _lazy("preemption", "DefaultPreemption")),
        SchedulerPluginRegistration("DefaultBinder", _lazy("binding", "DefaultBinder")),
    ]
