"""Does an object implement a plugin interface? One check for the core and the conformance suites.

The core runs it on every object a registered factory returns, before using it (``Registrar``); each
conformance suite runs it as its first test. ``isinstance`` against a runtime-checkable Protocol only
asks whether the names exist. This check also asks what a caller relies on: a method the Protocol
declares ``async`` is a coroutine function (the core awaits it), a plain one is not, the parameters
the Protocol declares can be passed as the Protocol allows, and a property holds what its annotation
says (``cri.Runtime.runtime`` is itself checked against ``cri.RuntimeService``). A failure is one
``PluginError`` naming the plugin, every member that is wrong and how to fix each.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from microkube_interfaces import cni, cri, store
from microkube_interfaces.errors import PluginError

#: The select-by-name interfaces: name (as in ``PluginInfo.interfaces``) → what a factory returns and its label.
PROTOCOLS: dict[str, tuple[type, str]] = {
    "store": (store.Store, f"{store.INTERFACE}/{store.VERSION}"),
    "cri": (cri.Runtime, f"{cri.INTERFACE}/{cri.VERSION}"),
    "cni": (cni.CNIPlugin, f"{cni.INTERFACE}/{cni.VERSION}"),
}

#: How many method signatures a failure message spells out before pointing at the Protocol instead.
_SIGNATURES_SHOWN = 4


@dataclass(frozen=True)
class Gap:
    """One way an object falls short of a Protocol: the member (dotted for nested ones), what is wrong, the
    fix, and the Protocol that declares the member (``microkube_interfaces.cri.RuntimeService``)."""

    member: str
    problem: str
    fix: str
    declared_in: str = ""

    @property
    def missing(self) -> bool:
        return self.problem == _ABSENT


def gaps(obj: object, protocol: type, *, prefix: str = "") -> list[Gap]:
    """Every way ``obj`` falls short of ``protocol`` (empty when it implements it)."""
    found: list[Gap] = []
    where = f"{protocol.__module__}.{protocol.__qualname__}"
    for name, declared in _members(protocol).items():
        path = f"{prefix}{name}"
        owner = f"{_short(protocol)}.{name}"
        try:
            value = getattr(obj, name)
        except AttributeError:
            value = _MISSING
        except Exception as exc:  # a property of the plugin that raises is the plugin's bug, reported as such
            found.append(Gap(path, f"raised {exc!r} when read", f"make {name} return its value without raising",
                             where))
            continue
        if isinstance(declared, property):
            found.extend(_property_gaps(value, declared, path, owner, where))
        elif value is _MISSING:
            found.append(Gap(path, _ABSENT, f"add `{_definition(name, declared)}`", where))
        else:
            found.extend(_method_gaps(value, declared, path, owner, name, where))
    return found


def check(obj: object, interface: str, *, plugin: str, what: str = "") -> None:
    """Raise ``PluginError`` unless ``obj`` implements ``interface`` (a key of ``PROTOCOLS``).

    ``what`` says where the object came from (``"container runtime 'runc'"``) for the message.
    """
    protocol, label = PROTOCOLS[interface]
    subject = f"its {what}" if what else "the object"
    if obj is None:
        raise PluginError(plugin, f"{subject} is None where {label} expects a {_short(protocol)}",
                          "return the object from the factory (a `return` is missing?)")
    if inspect.isawaitable(obj):
        if inspect.iscoroutine(obj):
            obj.close()  # never awaited on purpose: say why instead of a RuntimeWarning
        raise PluginError(plugin, f"{subject} is an awaitable ({type(obj).__name__}), not a {_short(protocol)}: "
                          "the factory is async",
                          "make the factory a plain function that returns the object; do async setup in its methods")
    found = gaps(obj, protocol)
    if not found:
        return
    if _nothing_of(found, protocol):
        raise PluginError(plugin, f"{subject} ({type(obj).__qualname__}) has none of the members of "
                          f"{label} {_short(protocol)}",
                          f"return an object implementing {protocol.__module__}.{protocol.__qualname__}")
    wrong = [gap for gap in found if not gap.missing]
    missing = [gap for gap in found if gap.missing]
    problems = [f"{gap.member} {gap.problem}" for gap in wrong]
    if missing:
        problems.append("missing " + ", ".join(gap.member for gap in missing))
    fixes = [gap.fix for gap in wrong] + [gap.fix for gap in missing[:_SIGNATURES_SHOWN]]
    if len(missing) > _SIGNATURES_SHOWN:
        rest = missing[_SIGNATURES_SHOWN:]
        where = ", ".join(dict.fromkeys(gap.declared_in for gap in rest))
        fixes.append(f"and the other {len(rest)} as declared in {where}")
    raise PluginError(plugin, f"{subject} ({type(obj).__qualname__}) does not implement {label} "
                      f"{_short(protocol)}: {'; '.join(problems)}", "; ".join(fixes))


# ------------------------------------------------------------------------------------------- members


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
_ABSENT = "is missing"


def _members(protocol: type) -> dict[str, Callable[..., Any] | property]:
    """The Protocol's public methods and properties, from the class itself and the Protocols it extends."""
    members: dict[str, Callable[..., Any] | property] = {}
    for cls in protocol.__mro__:  # most derived first, so an override wins; then bases in declaration order
        if not getattr(cls, "_is_protocol", False) or cls is typing.Protocol:
            continue
        for name, value in vars(cls).items():
            if not name.startswith("_") and (isinstance(value, property) or inspect.isfunction(value)):
                members.setdefault(name, value)
    return members


def _short(protocol: type) -> str:
    return f"{protocol.__module__.rsplit('.', 1)[-1]}.{protocol.__qualname__}"


def _property_gaps(value: object, declared: property, path: str, owner: str, where: str) -> list[Gap]:
    expected = _return_type(declared.fget) if declared.fget is not None else None
    if value is _MISSING:
        kind = f" holding a {expected.__qualname__}" if isinstance(expected, type) else ""
        return [Gap(path, _ABSENT, f"add a `{path.rsplit('.', 1)[-1]}` attribute or property{kind} ({owner})",
                    where)]
    if not isinstance(expected, type):
        return []
    if getattr(expected, "_is_protocol", False):
        nested = gaps(value, expected, prefix=f"{path}.")
        if _nothing_of(nested, expected):
            return [Gap(path, f"({type(value).__qualname__}) has none of the members of {_short(expected)}",
                        f"make {path} an object implementing {expected.__module__}.{expected.__qualname__}", where)]
        return nested
    if not isinstance(value, expected):
        return [Gap(path, f"is of type {type(value).__qualname__}, not {expected.__qualname__}",
                    f"make {path} a {expected.__module__}.{expected.__qualname__}", where)]
    return []


def _method_gaps(value: object, declared: Callable[..., Any], path: str, owner: str, name: str,
                 where: str) -> list[Gap]:
    definition = _definition(name, declared)
    if not callable(value):
        return [Gap(path, f"is not callable (an attribute of type {type(value).__qualname__})",
                    f"define `{definition}`", where)]
    wants_async = inspect.iscoroutinefunction(declared)
    is_async = _is_coroutine_function(value)
    if wants_async and not is_async:
        return [Gap(path, f"is a plain def but {owner} is async (microkube awaits it)",
                    f"make it `{definition}`", where)]
    if not wants_async and is_async:
        return [Gap(path, f"is async def but {owner} is a plain def (microkube does not await it)",
                    f"make it `{definition}`" + (" or an async generator" if _returns_async_iterator(declared)
                                                 else ""), where)]
    problem = _call_problem(value, declared)
    if problem:
        return [Gap(path, f"cannot be called as {owner} is ({problem})", f"make it `{definition}`", where)]
    return []


def _nothing_of(found: list[Gap], protocol: type) -> bool:
    """Every member is missing: the object is something else altogether (say so once, not per member)."""
    members = len(_members(protocol))
    return members > 1 and len(found) == members and all(gap.missing for gap in found)


def _is_coroutine_function(value: object) -> bool:
    return inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(type(value).__call__)


def _returns_async_iterator(declared: Callable[..., Any]) -> bool:
    return "AsyncIterator" in str(inspect.signature(declared).return_annotation)


def _call_problem(value: object, declared: Callable[..., Any]) -> str:
    """Why ``value`` cannot take the calls the Protocol allows: all arguments positionally, and the
    required ones positionally with the optional and keyword-only ones by name. Empty if it can."""
    try:
        actual = inspect.signature(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""  # a builtin or C callable without a signature: nothing to compare
    params = list(inspect.signature(declared).parameters.values())[1:]  # drop self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keyword_only = {p.name: None for p in params if p.kind == p.KEYWORD_ONLY}
    required = [p for p in positional if p.default is p.empty]
    optional = {p.name: None for p in positional if p.default is not p.empty}
    for args, kwargs in (([None] * len(positional), keyword_only),
                         ([None] * len(required), {**optional, **keyword_only})):
        try:
            actual.bind(*args, **kwargs)
        except TypeError as exc:
            return str(exc)
    return ""


def _definition(name: str, declared: Callable[..., Any]) -> str:
    """``async def exec_sync(self, container_id: str, ...) -> ExecSyncResponse`` as the Protocol spells it."""
    signature = inspect.signature(declared)
    prefix = "async def" if inspect.iscoroutinefunction(declared) else "def"
    parts = []
    star = False
    for param in signature.parameters.values():
        if param.kind == param.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = param.name
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            text += f" = {param.default!r}" if param.annotation is not param.empty else f"={param.default!r}"
        parts.append(text)
    returns = ""
    if signature.return_annotation is not signature.empty:
        returns = f" -> {_annotation(signature.return_annotation)}"
    return f"{prefix} {name}({', '.join(parts)}){returns}"


def _annotation(annotation: object) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _return_type(fget: Callable[..., Any]) -> object:
    try:
        return typing.get_type_hints(fget).get("return")
    except Exception:  # an annotation that does not resolve: check presence only
        return None


__all__ = ["PROTOCOLS", "Gap", "check", "gaps"]
