"""Suite-wide settings: never reach a model hub, never use a real kubeconfig."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Where the preset images are (kaitoctl has no default: issue 14); tests of the unset case delenv it.
os.environ.setdefault("KAITOCTL_PRESET_REGISTRY", "ghcr.io/kaitoctl")
# A stray ~/.kube/config must never be used by a test: tests pass --kubeconfig explicitly.
os.environ["KUBECONFIG"] = os.devnull
