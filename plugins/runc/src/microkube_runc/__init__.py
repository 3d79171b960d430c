"""microkube-runc: the default container runtime pack (cri/v1). So far: the image service."""

__version__ = "0.1.0"
