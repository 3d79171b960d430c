"""Every active namespace has a ``default`` ServiceAccount (kube-controller-manager's serviceaccount
controller): created when missing, recreated when deleted."""

from __future__ import annotations

from microkube.client import Resource
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

NAMESPACES = ResourceRef("", "v1", "namespaces", "Namespace", namespaced=False)
SERVICEACCOUNTS = ResourceRef("", "v1", "serviceaccounts", "ServiceAccount")
DEFAULT = "default"


class ServiceAccountsController:
    name = "serviceaccount"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.namespaces = context.cache(NAMESPACES)
        self.accounts = context.cache(SERVICEACCOUNTS)
        self.resource = Resource("", "v1", "serviceaccounts")
        context_enqueue = context.enqueue
        # A deleted default account is recreated: its namespace's key is queued again.
        self.accounts.add_handler(lambda event, obj, old: context_enqueue(obj["metadata"].get("namespace", ""))
                                  if event == "DELETED" and obj["metadata"].get("name") == DEFAULT else None)

    async def reconcile(self, key: str) -> Outcome:
        namespace = self.namespaces.get(key)
        if namespace is None or namespace["metadata"].get("deletionTimestamp"):
            return Outcome.done()
        if self.accounts.get(f"{key}/{DEFAULT}") is not None:
            return Outcome.done()
        try:
            await self.client.create(self.resource, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                     "metadata": {"name": DEFAULT, "namespace": key}}, key,
                                     field_manager="serviceaccount-controller")
        except errors.AlreadyExists:
            pass
        except errors.Forbidden:  # the namespace started terminating meanwhile
            pass
        return Outcome.done()
