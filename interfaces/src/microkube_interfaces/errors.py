"""The error model shared by every plugin interface.

Each interface method documents which of these it raises and what the caller does about it. The API
server maps them to Kubernetes Status responses (NotFound → 404, AlreadyExists and Conflict → 409,
Invalid → 422, Expired → 410, Unsupported → 415/405, Retryable → 503/429), so a plugin's answer reaches
a kubectl user with the right code.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class MicrokubeError(Exception):
    """Base class of every error a plugin or the core raises on purpose."""


class NotFound(MicrokubeError):
    """The named thing does not exist. Deleting something absent is idempotent where a method says so."""


class AlreadyExists(MicrokubeError):
    """A create-only operation found the name taken."""


class Conflict(MicrokubeError):
    """A precondition (revision, uid, owner) did not hold; re-read and try again."""


@dataclass
class FieldError:
    """One invalid field: its JSON path (``spec.containers[0].image``), a reason and a message.

    ``reason`` uses Kubernetes' cause types: FieldValueRequired, FieldValueInvalid,
    FieldValueNotSupported, FieldValueDuplicate, FieldValueForbidden, FieldValueTooLong.
    """

    field: str
    message: str
    reason: str = "FieldValueInvalid"


class Invalid(MicrokubeError):
    """Input failed validation. Carries one FieldError per invalid field."""

    def __init__(self, message: str, causes: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.causes: list[FieldError] = list(causes or [])

    @classmethod
    def field(cls, path: str, message: str, reason: str = "FieldValueInvalid") -> Invalid:
        return cls(f"{path}: {message}", [FieldError(path, message, reason)])


class Unauthenticated(MicrokubeError):
    """The caller presented no valid credentials."""


class Forbidden(MicrokubeError):
    """The caller is known but not allowed to do this."""


class Expired(MicrokubeError):
    """A revision or continue token is older than the history kept (compacted): relist."""


class Retryable(MicrokubeError):
    """A transient failure; the caller may retry after ``after`` seconds."""

    def __init__(self, message: str, after: float = 1.0) -> None:
        super().__init__(message)
        self.after = after


class Permanent(MicrokubeError):
    """A failure that retrying will not fix."""


class Unsupported(MicrokubeError):
    """The plugin does not implement this operation or option (see its capabilities)."""


@dataclass
class PluginError(MicrokubeError):
    """A plugin is wrong: missing hook, wrong interface version, bad answer. Names the plugin and the fix."""

    plugin: str
    problem: str
    fix: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"plugin {self.plugin!r}: {self.problem}"
        return f"{text}; {self.fix}" if self.fix else text


__all__ = [
    "AlreadyExists",
    "Conflict",
    "Expired",
    "FieldError",
    "Forbidden",
    "Invalid",
    "MicrokubeError",
    "NotFound",
    "Permanent",
    "PluginError",
    "Retryable",
    "Unauthenticated",
    "Unsupported",
]
