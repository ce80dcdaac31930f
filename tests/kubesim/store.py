"""The object store: every object of the simulated cluster, one resourceVersion counter,
and a bounded history of changes that watches are served from.

Stored objects are never mutated in place: every write stores a fresh copy, so the
history can hold references to past states and readers never see a half-written object.
All access happens under ``lock`` (re-entrant; controllers hold it for a whole tick).
"""

from __future__ import annotations

import bisect
import copy
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from .fieldmanager import Owners
from .resources import RESOURCES

Key = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class Change:
    """One entry of the watch history: what happened to which object at which version."""

    rv: int
    plural: str
    type: str  # ADDED | MODIFIED | DELETED
    old: dict[str, Any] | None
    new: dict[str, Any]


class Store:
    """Objects by resource and (namespace, name); changes numbered by a global resourceVersion."""

    def __init__(self, now: Callable[[], str], history_limit: int = 20000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.now = now
        self.rv = 1000
        self.compacted_rv = 0
        self.history: list[Change] = []
        self.history_limit = history_limit
        self.owners: dict[str, Owners] = {}
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {r.plural: {} for r in RESOURCES}

    # ------------------------------------------------------------------ reads

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (read-only: copy before changing it)."""
        return self._objects[plural].get((namespace or "", name))

    def items(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Stored objects of one resource, in one namespace or all, sorted by namespace/name."""
        objects = self._objects[plural]
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return [objects[k] for k in keys]

    def all_items(self) -> list[tuple[str, dict[str, Any]]]:
        return [(plural, obj) for plural, objs in self._objects.items() for obj in objs.values()]

    # ------------------------------------------------------------------ writes

    def _record(self, plural: str, kind: str, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        self.history.append(Change(self.rv, plural, kind, old, new))
        if len(self.history) > self.history_limit + self.history_limit // 4:
            drop = len(self.history) - self.history_limit
            self.compacted_rv = self.history[drop - 1].rv
            del self.history[:drop]
        self.changed.notify_all()

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return obj

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object, filling uid and creationTimestamp if missing; returns the stored copy."""
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj["metadata"]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", self.now())
            key = (meta.get("namespace") or "", meta["name"])
            self._bump(obj)
            self._objects[plural][key] = obj
            self._record(plural, "ADDED", None, obj)
            return obj

    def update(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace a stored object (same namespace/name); returns the stored copy."""
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj["metadata"]
            key = (meta.get("namespace") or "", meta["name"])
            old = self._objects[plural][key]
            self._bump(obj)
            self._objects[plural][key] = obj
            self._record(plural, "MODIFIED", old, obj)
            return obj

    def remove(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Delete an object for good (watchers see DELETED); returns its final state."""
        with self.lock:
            old = self._objects[plural].pop((namespace or "", name), None)
            if old is None:
                return None
            final = self._bump(copy.deepcopy(old))
            self.owners.pop(old["metadata"].get("uid", ""), None)
            self._record(plural, "DELETED", old, final)
            return final

    # ------------------------------------------------------------------ history

    def changes_after(self, rv: int, plural: str) -> list[Change] | None:
        """Changes of one resource after ``rv``; None when some of them were compacted away."""
        if rv < self.compacted_rv:
            return None
        start = bisect.bisect_right(self.history, rv, key=lambda c: c.rv)
        return [c for c in self.history[start:] if c.plural == plural]

    def expire_history(self) -> None:
        """Forget every change so far: a watch from any older resourceVersion gets 410 Gone."""
        with self.lock:
            self.history.clear()
            self.compacted_rv = self.rv
