"""What every suite uses to tell a vendor what to fix: the interface check and the expected-error rule."""

from __future__ import annotations

from types import TracebackType
from typing import Generic, TypeVar

import pytest

from microkube_interfaces import compliance
from microkube_interfaces.errors import MicrokubeError, PluginError

E = TypeVar("E", bound=BaseException)


def assert_implements(obj: object, interface: str, fixture: str) -> None:
    """Fail the test with the core's own message (``compliance.check``) unless ``obj``, what the vendor's
    ``fixture`` gave, implements ``interface``."""
    try:
        compliance.check(obj, interface, plugin=type(obj).__module__, what=f"{fixture} fixture")
    except PluginError as exc:
        message = str(exc)
    else:
        return
    pytest.fail(message, pytrace=False)


class ExpectedError(Generic[E]):
    """The context manager ``expect_error`` returns; ``value`` is the exception caught (set when the block ends)."""

    value: E

    def __init__(self, expected: type[E], call: str, rule: str, fix: str) -> None:
        self.expected = expected
        self.call = call
        interface, _, situation = rule.partition(": ")
        if expected is MicrokubeError:
            wanted = "an error of microkube_interfaces.errors"
            self.advice = fix or "raise the microkube_interfaces.errors class that fits (Invalid, Conflict, …)"
        else:
            wanted = f"{expected.__module__}.{expected.__qualname__}"
            self.advice = fix or f"raise {expected.__qualname__}(...)"
        self.requirement = (f"{interface} requires {wanted} for {situation}" if situation
                            else f"{rule} requires {wanted}")

    def __enter__(self) -> ExpectedError[E]:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        __tracebackhide__ = True  # the failure is about the vendor's call, not this helper
        if exc is None:
            raise AssertionError(f"{self.call} returned without an error; {self.requirement} — {self.advice}")
        if isinstance(exc, self.expected):
            self.value = exc
            return True
        if isinstance(exc, Exception):
            raise AssertionError(f"{self.call} raised {exc!r}; {self.requirement} — {self.advice}") from exc
        return False  # cancellation, KeyboardInterrupt: not the vendor's answer


def expect_error(expected: type[E], call: str, rule: str, *, fix: str = "") -> ExpectedError[E]:
    """``pytest.raises(expected)`` with a failure that tells the vendor what to fix.

    ``call`` shows the call (``"remove_container(<unknown id>)"``); ``rule`` is ``"<interface>: <situation>"``
    (``"cri/v1: an unknown container"``). A vendor raising something else reads: ``remove_container(<unknown
    id>) raised KeyError('x'); cri/v1 requires microkube_interfaces.errors.NotFound for an unknown container
    — raise NotFound(...)``. ``fix`` replaces that last advice.
    """
    return ExpectedError(expected, call, rule, fix)
