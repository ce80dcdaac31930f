"""Watch streams: the events after a resourceVersion, filtered by selectors.

A watch replays the store's change history after the requested version, then waits
for new changes. Selector transitions are reported as the real server does (an object
that stops matching is DELETED for that watch, one that starts matching is ADDED). A
version older than the kept history gets a single ERROR event with a 410 Status.
"""

from __future__ import annotations

from typing import Any

from . import errors
from .resources import Resource
from .selectors import make_filter
from .store import Change, Store


class WatchStream:
    """One open watch; ``next_batch`` is called repeatedly by the HTTP handler."""

    def __init__(self, store: Store, res: Resource, namespace: str | None, query: dict[str, str], epoch: int) -> None:
        self.store = store
        self.res = res
        self.namespace = namespace
        self.matches = make_filter(res, query.get("labelSelector"), query.get("fieldSelector"))
        self.epoch = epoch
        self.bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        requested = query.get("resourceVersion") or ""
        if requested not in ("", "0"):
            try:
                self.last_rv = int(requested)
            except ValueError as exc:
                raise errors.bad_request(f'invalid resource version "{requested}"') from exc
            self.initial = False
        else:
            self.last_rv = -1
            self.initial = True

    def _in_scope(self, obj: dict[str, Any]) -> bool:
        return self.namespace is None or obj["metadata"].get("namespace") == self.namespace

    def _translate(self, change: Change) -> dict[str, Any] | None:
        old_match = change.old is not None and self._in_scope(change.old) and self.matches(change.old)
        new_match = self._in_scope(change.new) and self.matches(change.new)
        if change.type == "DELETED":
            return {"type": "DELETED", "object": change.new} if old_match else None
        if new_match and old_match:
            return {"type": "MODIFIED", "object": change.new}
        if new_match:
            return {"type": "ADDED", "object": change.new}
        if old_match:
            return {"type": "DELETED", "object": change.new}
        return None

    def start(self) -> list[dict[str, Any]]:
        """The first events: current objects when no version was given, else the replay."""
        with self.store.lock:
            if self.initial:
                self.last_rv = self.store.rv
                return [
                    {"type": "ADDED", "object": obj}
                    for obj in self.store.items(self.res.plural, self.namespace)
                    if self.matches(obj)
                ]
        return self.next_batch(0) or []

    def expired_event(self) -> dict[str, Any]:
        status = errors.gone(f"too old resource version: {self.last_rv} ({self.store.compacted_rv})").status()
        return {"type": "ERROR", "object": status}

    def next_batch(self, wait_seconds: float) -> list[dict[str, Any]] | None:
        """Events since the last batch, waiting up to ``wait_seconds`` for some.

        Returns [] when nothing happened, and a final ERROR event when history was lost.
        """
        with self.store.changed:
            changes = self.store.changes_after(self.last_rv, self.res.plural)
            if changes is None:
                return [self.expired_event()]
            if not changes and wait_seconds > 0:
                self.store.changed.wait(wait_seconds)
                changes = self.store.changes_after(self.last_rv, self.res.plural)
                if changes is None:
                    return [self.expired_event()]
            self.last_rv = max(self.last_rv, self.store.rv)
        events = []
        for change in changes:
            event = self._translate(change)
            if event is not None:
                events.append(event)
        return events

    def bookmark(self) -> dict[str, Any]:
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": self.res.kind,
                "apiVersion": self.res.api_version,
                "metadata": {"resourceVersion": str(self.last_rv)},
            },
        }
