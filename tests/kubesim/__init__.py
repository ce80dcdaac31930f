"""kubesim: a Kubernetes API server and simulated cluster for kaitoctl's tests (not product code)."""

from .sim import KubeSim

__all__ = ["KubeSim"]
