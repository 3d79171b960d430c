"""The pluggy markers of the ``microkube`` project name."""

import pluggy

PROJECT_NAME = "microkube"
ENTRY_POINT_GROUP = "microkube"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
