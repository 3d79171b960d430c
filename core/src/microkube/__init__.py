"""microkube: Kubernetes rebuilt in Python as a plugin-based microkernel (the core distribution)."""

from microkube.plugins import DEFAULT_PLUGINS, Plugins

__version__ = "0.1.0"

__all__ = ["DEFAULT_PLUGINS", "Plugins", "__version__"]
