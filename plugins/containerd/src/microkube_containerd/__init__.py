"""microkube's containerd pack: a cri/v1 runtime speaking CRI v1 gRPC to containerd (or any CRI endpoint)."""
