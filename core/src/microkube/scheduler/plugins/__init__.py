"""The built-in scheduler plugins, registered through ``microkube_scheduler_plugins`` like any pack's."""
