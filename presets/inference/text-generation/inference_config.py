"""The workspace's ``inference.config`` in the pod: KAITO's ``inference_config.yaml``, mounted read-only.

``KAITOCTL_INFERENCE_CONFIG`` names the mounted file (the renderer sets it when the workspace has
``inference.config``). What applies to this server becomes ``KAITOCTL_*`` settings
(max-model-len, max tokens, dtype, batching, tensor-parallel size; the table is
``kaitoctl.inference_config.HONOURED``, shared with ``kaitoctl validate``), and every key it
ignores (vLLM-only engine arguments, KAITO's own keys) is said once in the pod log. The file's
settings win over the renderer's defaults (the preset's dtype). A broken file stops the server
with the reason: a typo must not be served silently.
"""

from __future__ import annotations

import logging
from typing import Mapping

from .errors import ConfigError

ENV = "KAITOCTL_INFERENCE_CONFIG"
log = logging.getLogger("kaitoctl_server.inference_config")


def apply(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the settings of the file named by ``KAITOCTL_INFERENCE_CONFIG`` (unchanged without one)."""
    path = env.get(ENV)
    if not path:
        return dict(env)
    from kaitoctl.inference_config import interpret

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise ConfigError(f"{ENV}: cannot read {path}: {err.strerror or err}") from err
    config = interpret(text)
    if config.errors:
        raise ConfigError(f"{path}: " + "; ".join(config.errors))
    for line in config.lines():
        log.info("%s", line)
    return {**env, **config.settings}
