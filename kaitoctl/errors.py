"""kaitoctl's own error hierarchy.

Every error a user can cause is one of these. The CLI's single error boundary
(``kaitoctl.cli.main``) prints ``kaitoctl: error: <message>`` (and the hint and
details under it) on stderr and exits with the class's documented exit code.
Anything else that escapes is a bug: exit code 1, and a traceback only with
``--debug``.

Exit codes (documented in the README):

==== ==========================================================
0    success
1    internal error (a bug in kaitoctl)
2    usage error (bad flags or arguments)
3    invalid Workspace (validation findings, unreadable file)
4    Kubernetes API error (unreachable, forbidden, not found, conflict)
5    preflight failed (no node fits, missing pull secret, ...)
6    rollout failed (image pull, crash loop, OOM, unschedulable, ...)
7    timed out waiting
8    local server or model error (``kaitoctl serve``)
130  interrupted (Ctrl-C)
==== ==========================================================
"""

from __future__ import annotations

from typing import Sequence


class KaitoctlError(Exception):
    """Base of every user-facing error: a message, an optional hint and details."""

    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        details: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details)


class UsageError(KaitoctlError):
    """Flags or arguments that do not make sense together."""

    exit_code = 2


class InvalidWorkspace(KaitoctlError):
    """The Workspace file cannot be read or does not validate.

    ``details`` holds one formatted line per finding (file:line:col: path: message).
    """

    exit_code = 3


class ClusterError(KaitoctlError):
    """The Kubernetes API refused a request or could not be reached."""

    exit_code = 4


class NotFound(ClusterError):
    """An object kaitoctl needs does not exist in the cluster."""


class Conflict(ClusterError):
    """Server-side apply conflict with another field manager, or a 409."""


class PreflightFailed(KaitoctlError):
    """The cluster cannot run the workspace as asked (nodes, GPUs, secrets)."""

    exit_code = 5


class RolloutFailed(KaitoctlError):
    """The rollout was detected to fail (image pull, crash loop, OOM, ...)."""

    exit_code = 6


class RolloutTimeout(KaitoctlError):
    """The rollout did not finish within ``--timeout``."""

    exit_code = 7


class Interrupted(KaitoctlError):
    """Ctrl-C, with what it interrupted; printed as ``kaitoctl: <message>``, not as an error."""

    exit_code = 130


class ServeError(KaitoctlError):
    """``kaitoctl serve``: a model or adapter could not be loaded or served."""

    exit_code = 8
