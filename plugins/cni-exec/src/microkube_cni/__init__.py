"""microkube-cni: the ``cni-exec`` pod network, a cni/1.1 plugin that executes standard CNI binaries.

It is a small CNI runtime (the libcni part of a container runtime): it reads a network configuration list,
negotiates a spec version with the plugins (VERSION), runs them with the spec's environment and stdin,
chains ``prevResult``, keeps the result cache DEL and CHECK need, and maps STATUS and GC onto plugins that
speak 1.1 (falling back for older ones).
"""

from microkube_cni.runtime import DEFAULT_BIN_DIR, DEFAULT_CACHE_DIR, CNIExec, NetworkConfigList

__version__ = "0.1.0"

__all__ = ["DEFAULT_BIN_DIR", "DEFAULT_CACHE_DIR", "CNIExec", "NetworkConfigList", "__version__"]
