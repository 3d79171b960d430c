"""Image references, normalised as Docker does.

``busybox`` → ``docker.io/library/busybox:latest``; ``me/app`` → ``docker.io/me/app:latest``;
``localhost:5000/app`` and ``registry.example/app`` keep their registry (a first component with a
``.`` or ``:``, or ``localhost``, is a registry host); a digest (``name@sha256:…``) wins over a tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from microkube_interfaces.errors import Invalid

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                   r"(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    registry: str
    #: The repository path inside the registry (``library/busybox``).
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``registry/repository`` (``docker.io/library/busybox``)."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or DEFAULT_TAG}"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, "", digest)

    def familiar(self) -> str:
        """The short form Docker shows (``busybox:latest``)."""
        text = str(self)
        for prefix in (f"{DEFAULT_REGISTRY}/library/", f"{DEFAULT_REGISTRY}/"):
            if text.startswith(prefix):
                return text[len(prefix):]
        return text


def parse(text: str) -> Reference:
    """Parse and normalise a reference; raises Invalid (naming it) when malformed."""
    original = text
    if not text or text != text.strip():
        raise Invalid.field("image", f"invalid image reference {original!r}")
    digest = ""
    if "@" in text:
        text, digest = text.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise Invalid.field("image", f"invalid image reference {original!r}: bad digest {digest!r}")
    tag = ""
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise Invalid.field("image", f"invalid image reference {original!r}: bad tag {tag!r}")
    parts = text.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost" or parts[0].startswith("[")):
        registry, path = parts[0], parts[1:]
        if not _HOST.fullmatch(registry):
            raise Invalid.field("image", f"invalid image reference {original!r}: bad registry {registry!r}")
    else:
        registry, path = DEFAULT_REGISTRY, parts
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library", *path]
    for component in path:
        if not _COMPONENT.fullmatch(component):
            raise Invalid.field(
                "image", f"invalid image reference {original!r}: repository names are lowercase "
                f"[a-z0-9] separated by '.', '_', '__' or '-' (got {component!r})")
    if digest:
        tag = ""  # name:tag@digest pins the digest; the tag is informational only
    elif not tag:
        tag = DEFAULT_TAG
    return Reference(registry, "/".join(path), tag, digest)


def normalize(text: str) -> str:
    """The canonical string of a reference (``busybox`` → ``docker.io/library/busybox:latest``)."""
    return str(parse(text))
