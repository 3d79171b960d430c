"""A wrong plugin object is refused with a message naming the plugin, each wrong member and the fix:
compliance.check (what the core and the suites run), the Registrar's refusals, and the suites' expect_error."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from microkube_interfaces import cni, compliance, cri, errors
from microkube_interfaces.conformance._helpers import expect_error
from microkube_interfaces.registry import Registrar
from microkube_interfaces.store import Store


def implementation(protocol: type, *, drop: tuple[str, ...] = (), **override: Any) -> Any:
    """An instance whose methods are the Protocol's own (async, same signatures), less ``drop``, with ``override``."""
    members: dict[str, Any] = {}
    for cls in reversed(protocol.__mro__):
        members.update({k: v for k, v in vars(cls).items() if inspect.isfunction(v) and not k.startswith("_")})
    for name in drop:
        del members[name]
    members.update(override)
    return type(f"Vendor{protocol.__name__}", (), members)()


def runtime_pack(**parts: Any) -> Any:
    class Pack:
        runtime = parts.get("runtime", implementation(cri.RuntimeService))
        images = parts.get("images", implementation(cri.ImageService))
        capabilities = parts.get("capabilities", cri.RuntimeCapabilities())

    return Pack()


def refusal(obj: object, interface: str) -> str:
    with pytest.raises(errors.PluginError) as error:
        compliance.check(obj, interface, plugin="acme", what="thing 'x'")
    assert error.value.plugin == "acme"
    return str(error.value)


# ------------------------------------------------------------------------------------ what passes


@pytest.mark.parametrize(("interface", "make"), [
    ("store", lambda: implementation(Store)),
    ("cni", lambda: implementation(cni.CNIPlugin)),
    ("cri", runtime_pack),
])
def test_a_complete_implementation_passes(interface: str, make: Callable[[], object]) -> None:
    obj = make()
    assert compliance.gaps(obj, compliance.PROTOCOLS[interface][0]) == []
    compliance.check(obj, interface, plugin="acme")


def test_looser_signatures_pass() -> None:
    """What accepts every call the Protocol allows is fine: *args/**kwargs, extra optional parameters, other
    names for required positional ones, an async generator for Store.watch, a callable attribute."""

    async def anything(*args: Any, **kwargs: Any) -> None: ...

    async def watch(self: Any, prefix: str, *, start_revision: int) -> AsyncIterator[list[Any]]:
        yield []

    class AsyncCallable:
        async def __call__(self, key: str, *, revision: int = 0) -> None: ...

    async def create(self: Any, path: str, data: bytes, *, trace: bool = False) -> int:
        return 1

    store = implementation(Store, watch=watch, list=anything, create=create)
    store.get = AsyncCallable()
    assert compliance.gaps(store, Store) == []


# -------------------------------------------------------------------------------- what is refused


def test_a_missing_method_is_named_with_its_signature() -> None:
    message = refusal(implementation(Store, drop=("compact",)), "store")
    assert message.startswith("plugin 'acme': its thing 'x' (VendorStore) does not implement store/v1 store.Store: ")
    assert "missing compact" in message
    assert "add `async def compact(self, revision: int) -> None`" in message


def test_a_plain_def_where_the_protocol_is_async() -> None:
    def status(self: Any) -> None: ...

    message = refusal(implementation(cni.CNIPlugin, status=status), "cni")
    assert "status is a plain def but cni.CNIPlugin.status is async (microkube awaits it)" in message
    assert "make it `async def status(self) -> None`" in message


def test_async_where_the_protocol_is_a_plain_def() -> None:
    async def watch(self: Any, prefix: str, *, start_revision: int) -> None: ...

    message = refusal(implementation(Store, watch=watch), "store")
    assert "watch is async def but store.Store.watch is a plain def (microkube does not await it)" in message
    assert "or an async generator" in message


@pytest.mark.parametrize(("method", "said"), [
    ("async def pod_sandbox_status(self, pod_sandbox_id): ...", "too many positional arguments"),
    ("async def pod_sandbox_status(self, pod_sandbox_id, verbose, trace): ...", "missing a required argument: 'trace'"),
    ("async def pod_sandbox_status(self, sandbox, detail=False): ...", "got an unexpected keyword argument 'verbose'"),
])
def test_a_signature_the_core_cannot_call(method: str, said: str) -> None:
    namespace: dict[str, Any] = {}
    exec(method, namespace)
    runtime = implementation(cri.RuntimeService, pod_sandbox_status=namespace["pod_sandbox_status"])
    message = refusal(runtime_pack(runtime=runtime), "cri")
    assert f"runtime.pod_sandbox_status cannot be called as cri.RuntimeService.pod_sandbox_status is ({said})" \
        in message
    assert ("make it `async def pod_sandbox_status(self, pod_sandbox_id: str, verbose: bool = False) -> "
            "PodSandboxStatus`") in message


def test_nested_parts_of_a_runtime_pack() -> None:
    message = refusal(runtime_pack(images=implementation(cri.ImageService, drop=("pull_image",)), capabilities={}),
                      "cri")
    assert "capabilities is of type dict, not RuntimeCapabilities" in message
    assert "make capabilities a microkube_interfaces.cri.RuntimeCapabilities" in message
    assert "missing images.pull_image" in message


def test_something_else_altogether_is_said_once() -> None:
    message = refusal(runtime_pack(runtime=object()), "cri")
    assert "runtime (object) has none of the members of cri.RuntimeService" in message
    assert "make runtime an object implementing microkube_interfaces.cri.RuntimeService" in message
    assert "runtime.exec" not in message
    message = refusal({"podCIDR": "10.0.0.0/24"}, "cni")
    assert message == ("plugin 'acme': its thing 'x' (dict) has none of the members of cni/1.1 cni.CNIPlugin; "
                       "return an object implementing microkube_interfaces.cni.CNIPlugin")


def test_many_missing_methods_point_at_the_protocol() -> None:
    runtime = implementation(cri.RuntimeService, drop=("exec", "attach", "exec_sync", "version", "status",
                                                       "container_stats"))
    message = refusal(runtime_pack(runtime=runtime), "cri")
    assert message.count("add `") == 4
    assert "and the other 2 as declared in microkube_interfaces.cri.RuntimeService" in message


def test_none_and_an_async_factory() -> None:
    assert "is None where cni/1.1 expects a cni.CNIPlugin; return the object from the factory" in refusal(None, "cni")

    async def factory() -> object:
        return implementation(Store)

    message = refusal(factory(), "store")  # closed by the check: no "never awaited" warning (warnings are errors)
    assert "the factory is async; make the factory a plain function that returns the object" in message


def test_a_property_that_raises() -> None:
    class Pack:
        runtime = implementation(cri.RuntimeService)
        images = implementation(cri.ImageService)

        @property
        def capabilities(self) -> cri.RuntimeCapabilities:
            raise RuntimeError("not started")

    assert "capabilities raised RuntimeError('not started') when read" in refusal(Pack(), "cri")


# ------------------------------------------------------------------------------- the registrar


def test_the_registrar_checks_what_a_factory_returns() -> None:
    registrar = Registrar()
    with registrar.registering("acme"):
        registrar.networks.add("good", lambda options: implementation(cni.CNIPlugin))
        registrar.networks.add("bad", lambda options: implementation(cni.CNIPlugin, drop=("gc",)))
    good = registrar.networks.get("good")
    assert (good.plugin, good.versions) == ("acme", ("1.1",))
    assert isinstance(good.factory({}), cni.CNIPlugin)
    with pytest.raises(errors.PluginError) as error:
        registrar.networks.get("bad").factory({})
    assert str(error.value).startswith("plugin 'acme': its pod network 'bad' (VendorCNIPlugin) does not implement "
                                       "cni/1.1 cni.CNIPlugin: missing gc; add `async def gc(self, valid: ")
    assert registrar.networks.get("bad").factory.__wrapped__({}) is not None


@pytest.mark.parametrize(("add", "said", "fix"), [
    (lambda r: r.runtimes.add("", object), "registers a container runtime with the name ''",
     "pass a non-empty string: registrar.runtimes.add('my-name', factory)"),
    (lambda r: r.runtimes.add("acme", runtime_pack()), "registers container runtime 'acme' with a factory that is "
     "not callable (runtime_pack.<locals>.Pack)",
     "not an instance: registrar.runtimes.add('acme', MyThing.from_options)"),
    (lambda r: r.networks.add("acme", dict, versions=("2.0",)), "registers pod network 'acme' for cni versions "
     "['2.0'] but this microkube speaks ['1.1']", "build the factory for a version this microkube speaks"),
    (lambda r: r.networks.add("acme", dict, versions="1.1"), "registers pod network 'acme' with versions='1.1'",
     "pass a tuple of version strings, e.g. versions=('1.1',)"),
])
def test_wrong_registrations_are_refused(add: Callable[[Registrar], None], said: str, fix: str) -> None:
    registrar = Registrar()
    with registrar.registering("acme"), pytest.raises(errors.PluginError) as error:
        add(registrar)
    assert error.value.plugin == "acme"
    assert said in error.value.problem
    assert fix in error.value.fix


# ---------------------------------------------------------------------------- the suites' errors


async def test_expect_error_names_the_call_the_rule_and_the_fix() -> None:
    async def raises(exc: BaseException) -> None:
        raise exc

    with expect_error(errors.NotFound, "remove_container(<unknown id>)", "cri/v1: an unknown container") as caught:
        await raises(errors.NotFound("gone"))
    assert str(caught.value) == "gone"
    unknown = expect_error(errors.NotFound, "remove_container(<unknown id>)", "cri/v1: an unknown container")
    with pytest.raises(AssertionError) as failure, unknown:
        await raises(KeyError("x"))
    assert str(failure.value) == ("remove_container(<unknown id>) raised KeyError('x'); cri/v1 requires "
                                  "microkube_interfaces.errors.NotFound for an unknown container — raise NotFound(...)")
    assert isinstance(failure.value.__cause__, KeyError)
    not_running = expect_error(errors.MicrokubeError, "exec(<created container>)", "cri/v1: a container not running")
    with pytest.raises(AssertionError) as failure, not_running:
        pass
    assert str(failure.value) == ("exec(<created container>) returned without an error; cri/v1 requires an error of "
                                  "microkube_interfaces.errors for a container not running — raise the "
                                  "microkube_interfaces.errors class that fits (Invalid, Conflict, …)")


VENDOR_SUITE = '''
from microkube_interfaces.conformance.store import StoreConformance
from microkube_interfaces.store import Store
import pytest


class KeyErrorStore(Store):
    """Has every method (the Protocol's own), but update and delete of an absent key raise KeyError."""

    async def update(self, key, value, *, expected_revision=0):
        raise KeyError(key)

    async def delete(self, key, *, expected_revision=0):
        raise KeyError(key)


class HalfStore:
    async def get(self, key, *, revision=0):
        return None


class TestKeyErrorStore(StoreConformance):
    @pytest.fixture
    def store(self):
        return KeyErrorStore()


class TestHalfStore(StoreConformance):
    @pytest.fixture
    def store(self):
        return HalfStore()
'''


def test_a_suite_tells_the_vendor_what_to_fix(tmp_path: Path) -> None:
    """A vendor's run of the store suite over a broken backend fails with the messages above (a child pytest, as
    a vendor runs it)."""
    (tmp_path / "test_vendor.py").write_text(textwrap.dedent(VENDOR_SUITE))
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n"
                                         "asyncio_default_fixture_loop_scope = function\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "test_vendor.py", "-q", "-p", "no:cacheprovider",
         "-k", "implements_the_interface or KeyErrorStore and missing_key"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    out = run.stdout
    assert "1 passed" in out and "2 failed" in out, out + run.stderr
    assert ("update('/a/none') raised KeyError('/a/none'); store/v1 requires microkube_interfaces.errors.NotFound "
            "for an absent key — raise NotFound(...)") in out
    assert ("plugin 'test_vendor': its store fixture (HalfStore) does not implement store/v1 store.Store: missing "
            "list, create, update, delete, watch") in out
