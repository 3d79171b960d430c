"""The node agent (kubelet): registers its Node, runs the pods bound to it through a container runtime
pack (cri/v1) and a pod network pack (cni/1.1), reports their status, and serves the kubelet API (logs,
exec, attach, port-forward) that the API server proxies to."""
