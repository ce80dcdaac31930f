"""apply_all: any list of objects is applied all or nothing (no server needed)."""

from __future__ import annotations

import copy
from typing import Any, Optional

import pytest

from kaitoctl.apply import apply_all
from kaitoctl.errors import ClusterError


class Store:
    """A dict of objects answering apply/delete like an API server, refusing what ``refuse`` names."""

    def __init__(self, objects: list[dict[str, Any]], refuse: Optional[tuple[str, str]] = None,
                 transient: int = 0) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in objects}
        self.refuse = refuse
        self.transient = transient
        self.calls: list[tuple[str, str, str]] = []

    def apply(self, obj: dict[str, Any], force: bool = False, dry_run: bool = False) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["name"])
        self.calls.append(("apply",) + key)
        if self.transient and key == self.refuse:
            self.transient -= 1
            err = ClusterError("the API server failed (HTTP 503)")
            err.http_status = 503  # type: ignore[attr-defined]
            if not self.transient:
                self.refuse = None
            raise err
        if key == self.refuse:
            err = ClusterError('an admission webhook refused it: cannot patch configmaps "x"')
            err.http_status = 403  # type: ignore[attr-defined]
            raise err
        self.objects[key] = copy.deepcopy(obj)
        return obj

    def delete(self, kind: str, name: str, namespace: Optional[str] = None) -> bool:
        self.calls.append(("delete", kind, name))
        return self.objects.pop((kind, name), None) is not None


class UI:
    def step(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...


def obj(kind: str, name: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "ml", **extra},
            "data": {"v": value}}


OLD_SECRET = obj("Secret", "falcon-token", "old", resourceVersion="7", uid="u1")
OLD_SVC = obj("Service", "falcon", "old", resourceVersion="8", uid="u2")
STALE = obj("Service", "falcon-headless", "old", resourceVersion="9", uid="u3")


def test_a_refusal_part_way_undoes_every_kind_newest_first():
    store = Store([OLD_SECRET, OLD_SVC, STALE], refuse=("Deployment", "falcon"))
    new = [obj("Secret", "falcon-token", "new"), obj("ConfigMap", "falcon-cfg", "new"),
           obj("Service", "falcon", "new"), obj("Deployment", "falcon", "new")]
    lives = [OLD_SECRET, None, OLD_SVC, None]
    with pytest.raises(ClusterError) as raised:
        apply_all(store, list(zip(new, lives)), [STALE], force=False, ui=UI())
    assert raised.value.message.endswith("the apply stopped there and was undone (service/falcon restored, "
                                         "configmap/falcon-cfg removed, secret/falcon-token restored)")
    assert store.objects[("Secret", "falcon-token")]["data"] == {"v": "old"}
    assert store.objects[("Service", "falcon")]["data"] == {"v": "old"}
    assert ("ConfigMap", "falcon-cfg") not in store.objects
    assert ("Service", "falcon-headless") in store.objects           # the stale one was never deleted
    # What was put back carries no server bookkeeping (an apply configuration, not a stale object).
    assert "resourceVersion" not in store.objects[("Secret", "falcon-token")]["metadata"]


def test_a_transient_error_is_retried_and_nothing_is_undone():
    store = Store([OLD_SVC, STALE], refuse=("Service", "falcon"), transient=1)
    applied = apply_all(store, [(obj("Service", "falcon", "new"), OLD_SVC)], [STALE], force=False, ui=UI())
    assert applied[0]["data"] == {"v": "new"}
    assert store.objects[("Service", "falcon")]["data"] == {"v": "new"}
    assert ("Service", "falcon-headless") not in store.objects
    assert [c[0] for c in store.calls] == ["apply", "apply", "delete"]
