"""Fixtures of the containerd pack's tests: a private containerd, and ``microkube cri-serve`` over runc
(both in containerd_testenv)."""

from __future__ import annotations

from containerd_testenv import containerd_daemon, cri_serve_runc, runtime

__all__ = ["containerd_daemon", "cri_serve_runc", "runtime"]
