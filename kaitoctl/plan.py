"""The placement plan: what the preflight decided, and what rendering needs from it.

Offline (``render``, ``validate``) a plan is derived from the SKU catalog alone;
against a cluster the preflight computes it from live nodes and pods. Rendering
is a pure function of (workspace, preset, SKU, plan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Strategy = Literal["RollingUpdate", "Recreate"]


@dataclass(frozen=True)
class Plan:
    """Decisions that depend on where the workspace will run.

    gpus_per_pod: ``nvidia.com/gpu`` requested (and limited) per pod.
    strategy: Deployment strategy. ``RollingUpdate`` always means maxSurge 1,
        maxUnavailable 0 (a new pod must be Ready before an old one stops);
        ``Recreate`` is chosen when a second pod's GPUs cannot fit.
    reason: one sentence saying why that strategy was chosen (shown to the user).
    nodes: names of the nodes the preflight found fitting, best first (informational).
    """

    gpus_per_pod: int
    strategy: Strategy = "Recreate"
    reason: str = ""
    nodes: tuple[str, ...] = field(default_factory=tuple)
