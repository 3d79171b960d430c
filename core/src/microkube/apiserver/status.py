"""metav1.Status errors: every failure the API server answers with, and the mapping from the error model."""

from __future__ import annotations

from typing import Any

from microkube_interfaces import errors


class ApiError(Exception):
    """An HTTP error answered as a Kubernetes Status object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str = "",
        group: str = "",
        kind: str = "",
        causes: list[dict[str, str]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = {}
        if name:
            self.details["name"] = name
        if group:
            self.details["group"] = group
        if kind:
            self.details["kind"] = kind
        if causes:
            self.details["causes"] = causes
        if retry_after is not None:
            self.details["retryAfterSeconds"] = max(1, int(retry_after))
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    resource = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', name=name, group=group, kind=plural)


def already_exists(plural: str, name: str, group: str = "") -> ApiError:
    resource = f"{plural}.{group}" if group else plural
    return ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists', name=name, group=group,
                    kind=plural)


def conflict(plural: str, name: str, group: str = "", detail: str = "") -> ApiError:
    resource = f"{plural}.{group}" if group else plural
    message = detail or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": {message}',
                    name=name, group=group, kind=plural)


def invalid(kind: str, name: str, error: errors.Invalid, group: str = "") -> ApiError:
    causes = [{"reason": c.reason, "message": f"{c.message}", "field": c.field} for c in error.causes]
    if error.causes:
        parts = [f"{c.field}: {c.message}" for c in error.causes]
        summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    else:
        summary = str(error)
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', name=name, group=group, kind=kind,
                    causes=causes)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def from_error(exc: Exception, *, plural: str = "", name: str = "", group: str = "", kind: str = "") -> ApiError:
    """Map the interfaces' error model to a Status."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.NotFound):
        return not_found(plural, name, group) if plural else ApiError(404, "NotFound", str(exc))
    if isinstance(exc, errors.AlreadyExists):
        return already_exists(plural, name, group) if plural else ApiError(409, "AlreadyExists", str(exc))
    if isinstance(exc, errors.Conflict):
        detail = str(exc) or ""
        return conflict(plural, name, group, detail) if plural else ApiError(409, "Conflict", detail)
    if isinstance(exc, errors.Invalid):
        return invalid(kind or plural, name, exc, group)
    if isinstance(exc, errors.Expired):
        return expired(str(exc))
    if isinstance(exc, errors.Unauthenticated):
        return ApiError(401, "Unauthorized", str(exc) or "Unauthorized")
    if isinstance(exc, errors.Forbidden):
        return ApiError(403, "Forbidden", str(exc))
    if isinstance(exc, errors.Unsupported):
        return ApiError(415, "UnsupportedMediaType", str(exc))
    if isinstance(exc, errors.Retryable):
        return ApiError(503, "ServiceUnavailable", str(exc), retry_after=exc.after)
    if isinstance(exc, errors.MicrokubeError):
        return ApiError(500, "InternalError", str(exc))
    return ApiError(500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}")
