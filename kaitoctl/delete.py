"""Delete a workspace: exactly the objects kaitoctl created for it, found by their labels.

An object is deleted only when it carries both ``kaito.sh/workspace=<name>``
and ``app.kubernetes.io/managed-by=kaitoctl``: a Service someone else labelled
for the workspace, or a KAITO-operator workload of the same name, stays. The
workload goes first (its pods stop), then the Services, then the history.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

from kaitoctl.errors import NotFound, RolloutTimeout
from kaitoctl.history import MANAGED_BY, MANAGED_BY_LABEL, WORKSPACE_LABEL

# In deletion order. Everything the renderer and the history create.
DELETE_KINDS = ("Deployment", "StatefulSet", "Service", "ConfigMap")


def selector(name: str) -> str:
    return f"{WORKSPACE_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"


def find_objects(kube: Any, name: str, namespace: str) -> list[dict[str, Any]]:
    """kaitoctl's objects for workspace ``name``, in deletion order (one LIST per kind)."""
    found: list[dict[str, Any]] = []
    for kind in DELETE_KINDS:
        items, _ = kube.list(kind, namespace, label_selector=selector(name))
        found.extend(items)
    return found


def delete_workspace(kube: Any, name: str, namespace: str, *, wait: bool = False, timeout_s: float = 300.0,
                     report: Callable[[str], None] = lambda line: None,
                     ignore_not_found: bool = False) -> list[str]:
    """Delete the workspace's objects; with ``wait``, until its pods are gone. Returns the deleted refs.

    A workspace with no objects is NotFound (exit 4), or, with ``ignore_not_found`` (kubectl's
    ``--ignore-not-found``), nothing to do.
    """
    from kaitoctl.kube import object_ref

    objects = find_objects(kube, name, namespace)
    if not objects:
        if ignore_not_found:
            return []
        from kaitoctl.kube import namespace_missing

        raise namespace_missing(kube, namespace) or NotFound(
            f"workspace {name!r} not found in namespace {namespace!r}: no objects labelled {selector(name)}",
            hint=f"`kaitoctl status -n {namespace}` lists the workspaces there; --ignore-not-found makes a "
                 "missing workspace a success (exit 0)",
        )
    deleted = []
    for obj in objects:
        if kube.delete(obj["kind"], obj["metadata"]["name"], namespace, propagation="Background"):
            deleted.append(object_ref(obj))
            report(f"{object_ref(obj)} deleted")
    if wait:
        wait_pods_gone(kube, name, namespace, timeout_s)
    return deleted


def wait_pods_gone(kube: Any, name: str, namespace: str, timeout_s: float) -> None:
    """Block until no pod of the workspace is left (watching, not polling)."""
    from kaitoctl.kube import Informer

    informer = Informer(kube, "Pod", namespace, label_selector=f"{WORKSPACE_LABEL}={name}")
    changes: "queue.Queue[Any]" = queue.Queue()

    def pump() -> None:
        try:
            for ev in informer.events():
                changes.put(ev)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            if not informer.stopped:
                changes.put(exc)

    threading.Thread(target=pump, daemon=True, name="watch-pods-gone").start()
    pods: dict[str, Any] = {}
    synced = False
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RolloutTimeout(
                    f"timed out after {int(timeout_s)}s waiting for the pods of {namespace}/{name} to go away",
                    details=sorted(pods),
                    hint="the objects are deleted; pods with a long grace period are still stopping",
                )
            try:
                ev = changes.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if isinstance(ev, BaseException):
                raise ev
            if ev.type == "SYNC":
                pods = {p["metadata"]["name"]: p for p in ev.items or []}
                synced = True
            elif ev.type == "DELETED":
                pods.pop(ev.obj["metadata"]["name"], None)
            else:
                pods[ev.obj["metadata"]["name"]] = ev.obj
            if synced and not pods:
                return
    finally:
        informer.stop()
