"""Kubernetes timestamps: metav1.Time (RFC 3339, seconds, UTC) and MicroTime (microseconds)."""

from __future__ import annotations

from datetime import UTC, datetime

TIME_LAYOUT = "%Y-%m-%dT%H:%M:%SZ"
MICRO_TIME_LAYOUT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_LAYOUT)


def format_micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(MICRO_TIME_LAYOUT)


def parse_time(text: str | None) -> datetime | None:
    """A Time or MicroTime string as an aware UTC datetime; None when absent or malformed."""
    if not text:
        return None
    for layout in (TIME_LAYOUT, MICRO_TIME_LAYOUT):
        try:
            return datetime.strptime(text, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None
