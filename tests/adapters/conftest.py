"""The same test cluster and `kaitoctl` runner as tests/cluster."""

from __future__ import annotations

from cluster.conftest import kaitoctl, sim, write_ws  # noqa: F401 - fixtures, re-exported for this package
