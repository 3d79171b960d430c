"""Conformance suites for plugin interfaces: opt-in pytest base classes (install the ``[conformance]`` extra).

A vendor subclasses a suite and supplies the fixture that builds its plugin::

    from microkube_interfaces.conformance.store import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            s = MyStore(f"mystore://{tmp_path}")
            yield s
            await s.close()

Suites: ``store.StoreConformance`` (store/v1), ``cni.CNIConformance`` (cni/1.1: every rule of CNI
spec 1.1 that can be checked from outside the plugin, against real network namespaces, as root) and
``cri.CRIConformance`` (cri/v1: sandbox and container lifecycles, namespaces, security context, resources,
exec, port-forward, logs, stats, images; as root).

Suites are named ``*Conformance`` so pytest never collects them on their own. Optional behaviour is
gated by the capabilities the plugin declares, and a vendor may override the ``capabilities``
fixture. Each test's docstring names the rule it enforces.
"""
