"""Start-up: answer pydantic's plugin lookup without importlib.metadata when no plugin is installed.

The first pydantic model or TypeAdapter a command builds (the Workspace model; Typer >= 0.29
coerces options with TypeAdapters) asks ``pydantic.plugin._loader.get_plugins()`` for plugins,
and importing that module imports ``importlib.metadata`` (zipfile, email, csv, tempfile, ...):
about 20 ms, a fifth of the import floor that bench/bench_render.py measures ``kaitoctl render``
against, spent to learn that there are no plugins.

pydantic finds plugins as ``pydantic`` entry points of the distributions that
``importlib.metadata`` sees: the ``*.dist-info`` and ``*.egg-info`` directories on ``sys.path``.
When a scan of exactly those (~1 ms) finds no ``entry_points.txt`` that mentions pydantic, the
answer is known to be "none", and a stand-in module gives pydantic that answer. Whatever the scan
cannot read the way importlib.metadata would (a zip or an egg on ``sys.path``, another
distribution finder on ``sys.meta_path``), and any mention of pydantic, leaves pydantic's own
lookup in place. Any other name asked of the stand-in loads the real module.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from importlib.machinery import PathFinder
from typing import Any

_LOADER = "pydantic.plugin._loader"


def _no_plugin_declared() -> bool:
    """True only when no distribution visible to importlib.metadata can declare a pydantic entry point."""
    for finder in sys.meta_path:
        if finder is not PathFinder and getattr(finder, "find_distributions", None) is not None:
            return False
    for entry in sys.path:
        root = entry or "."  # importlib.metadata lists "" as the current directory too
        if root.lower().endswith(".egg") or os.path.isfile(root):
            return False
        try:
            names = os.listdir(root)
        except OSError:
            continue  # not a directory: importlib.metadata finds nothing there either
        for name in names:
            if not name.lower().endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(root, name, "entry_points.txt"), encoding="utf-8", errors="replace") as f:
                    if "pydantic" in f.read().lower():
                        return False
            except OSError:
                continue  # no entry points (or a PKG-INFO-only .egg-info file)
    return True


class _StandIn(types.ModuleType):
    """``pydantic.plugin._loader`` when no plugin is installed."""

    @staticmethod
    def get_plugins() -> tuple[()]:
        return ()  # what pydantic computes when no distribution declares a pydantic entry point

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # the import system probes __path__ and such: not a reason to load
        # A name the stand-in lacks (a newer pydantic): hand over to the real module from now on.
        if sys.modules.get(_LOADER) is self:
            del sys.modules[_LOADER]
        return getattr(importlib.import_module(_LOADER), name)


def skip_discovery_when_no_plugin_is_installed() -> bool:
    """Install the stand-in if pydantic has not looked for plugins yet and none can exist; True if installed."""
    if _LOADER in sys.modules or not _no_plugin_declared():
        return False
    sys.modules[_LOADER] = _StandIn(_LOADER, "kaitoctl's stand-in: no pydantic plugin is installed.")
    return True
