"""Image references checked before they reach the runtime.

containerd 1.6 answers ImageStatus for a reference it cannot parse with an empty image (as if absent) and
PullImage with UNKNOWN; cri/v1 wants Invalid for both, so the pack checks the reference grammar itself:
``[host[:port]/]path[:tag][@sha256:<64 hex>]`` (path components lowercase ``[a-z0-9]`` joined by ``.``, ``_``,
``__`` or dashes), or an image id (``sha256:<64 hex>`` or the 64 hex digits alone).
"""

from __future__ import annotations

import re

from microkube_interfaces.errors import Invalid

_ID = re.compile(r"(?:sha256:)?[a-f0-9]{64}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_TAG = re.compile(r"\w[\w.-]{0,127}")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")


def check_reference(image: str) -> None:
    """Raise Invalid naming ``image`` when it is neither a well-formed reference nor an image id."""
    if _ID.fullmatch(image):
        return

    def bad(why: str) -> Invalid:
        return Invalid(f"image {image!r}: invalid reference: {why}")

    if not image or image != image.strip():
        raise bad("empty or surrounded by spaces")
    name, _, digest = image.partition("@")
    if "@" in image and not _DIGEST.fullmatch(digest):
        raise bad(f"digest {digest!r} is not sha256:<64 lowercase hex digits>")
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise bad(f"tag {tag!r} (letters, digits, '_', '.', '-'; at most 128)")
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost" or parts[0][:1] == "["):
        if not _HOST.fullmatch(parts[0]):
            raise bad(f"registry host {parts[0]!r}")
        parts = parts[1:]
    for part in parts:
        if not _PATH_COMPONENT.fullmatch(part):
            raise bad(f"repository path component {part!r} (lowercase letters and digits separated by "
                      "'.', '_', '__' or '-')")
