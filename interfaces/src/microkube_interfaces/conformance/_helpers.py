"""What every suite uses to tell a vendor what to fix: the interface check and the expected-error rule."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Generic, TypeVar

import pytest

from microkube_interfaces import compliance
from microkube_interfaces.errors import MicrokubeError, PluginError

E = TypeVar("E", bound=BaseException)


def assert_implements(obj: object, interface: str) -> None:
    """Fail the test with the core's own message (``compliance.check``) unless ``obj`` implements ``interface``."""
    try:
        compliance.check(obj, interface, plugin=type(obj).__module__, what="fixture's object")
    except PluginError as exc:
        pytest.fail(str(exc), pytrace=False)


class Raised(Generic[E]):
    """What ``expect_error`` caught: ``value`` is the exception (set when the block ends)."""

    value: E


@contextlib.contextmanager
def expect_error(expected: type[E], call: str, rule: str, *, fix: str = "") -> Iterator[Raised[E]]:
    """``pytest.raises(expected)`` with a failure that tells the vendor what to fix.

    ``call`` shows the call (``"remove_container(<unknown id>)"``); ``rule`` is ``"<interface>: <situation>"``
    (``"cri/v1: an unknown container"``). A vendor raising something else reads: ``remove_container(<unknown
    id>) raised KeyError('x'); cri/v1 requires microkube_interfaces.errors.NotFound for an unknown container
    — raise NotFound(...)``. ``fix`` replaces that last advice.
    """
    raised: Raised[E] = Raised()
    interface, _, situation = rule.partition(": ")
    wanted = f"{expected.__module__}.{expected.__qualname__}"
    if expected is MicrokubeError:
        wanted = "an error of microkube_interfaces.errors"
    advice = fix or (f"raise {expected.__qualname__}(...)" if expected is not MicrokubeError
                     else "raise the microkube_interfaces.errors class that fits (Invalid, Conflict, …)")
    requirement = f"{interface} requires {wanted} for {situation}" if situation else f"{rule} requires {wanted}"
    try:
        yield raised
    except expected as exc:
        raised.value = exc
        return
    except Exception as exc:
        raise AssertionError(f"{call} raised {exc!r}; {requirement} — {advice}") from exc
    raise AssertionError(f"{call} returned without an error; {requirement} — {advice}")
