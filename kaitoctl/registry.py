"""Where the pods pull a public preset's image from, said out loud; never a silent default.

Nothing is published at ``ghcr.io/kaitoctl`` (``catalog.DEFAULT_REGISTRY``): the preset images are
built and pushed by the user (``docker/build-presets.sh --push --registry R``, docs/docker.md). So
the registry comes from ``--registry``, else ``$KAITOCTL_PRESET_REGISTRY``, else, for a workspace
that already runs, the registry of its running image (so ``adapters update`` and ``rollback``
keep pulling from where ``apply`` did). With none of these, ``apply`` and ``preflight`` refuse,
and ``validate`` and ``render`` say so. Workspaces with their own image (private presets,
``inference.template``) need no registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from kaitoctl.catalog import DEFAULT_REGISTRY, REGISTRY_ENV

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.workspace import Workspace

FIX = (f"build and push the preset images (docker/build-presets.sh --push --registry R; docs/docker.md), then "
       f"pass --registry R or export {REGISTRY_ENV}=R")


@dataclass(frozen=True)
class PresetImage:
    """A public preset's image: its repository and tag, and the registry it is pulled from (None: not set)."""

    repository: str            # "kaitoctl-falcon-7b:0.1.0": repository and tag, under the registry
    registry: Optional[str]
    source: str                # "--registry", REGISTRY_ENV, "the running workload", or "" when not set

    @property
    def image(self) -> str:
        """The reference the pods use (with the unpublished default registry when none is set: render only)."""
        return f"{(self.registry or DEFAULT_REGISTRY).rstrip('/')}/{self.repository}"

    def describe(self) -> str:
        return f"preset image {self.image} (registry from {self.source})"

    def problem(self) -> str:
        return (f"no registry is set for the preset image {self.repository}: nothing is published at the default "
                f"{DEFAULT_REGISTRY}, so the pods could not pull it; {FIX}")


def preset_image(ws: "Workspace", registry: Optional[str] = None,
                 live: Optional[dict[str, Any]] = None) -> Optional[PresetImage]:
    """The public preset image ``ws`` runs and where it comes from; None when ``ws`` brings its own image."""
    from kaitoctl.catalog import get_preset

    spec = ws.inference.preset if ws.inference else None
    if ws.inference is None or ws.inference.template is not None or spec is None or spec.accessMode == "private":
        return None
    preset = get_preset(spec.name)
    if preset is None or preset.access != "public":
        return None
    repository = f"{preset.image_name}:{preset.image_tag}"
    if registry:
        return PresetImage(repository, registry, "--registry")
    if os.environ.get(REGISTRY_ENV):
        return PresetImage(repository, os.environ[REGISTRY_ENV], REGISTRY_ENV)
    running = _running_registry(live, repository)
    if running:
        return PresetImage(repository, running, "the running workload")
    return PresetImage(repository, None, "")


def _running_registry(live: Optional[dict[str, Any]], repository: str) -> Optional[str]:
    """The registry of ``repository`` in the live workload's containers, if it runs it."""
    containers = (((live or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    for container in containers:
        image = str(container.get("image") or "")
        registry, slash, rest = image.rpartition("/")
        if slash and rest == repository and registry:
            return registry
    return None
