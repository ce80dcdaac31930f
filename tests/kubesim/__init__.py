"""kubesim: the suite's handle on a real Kubernetes control plane (not product code).

``KubeSim`` keeps the hooks of the simulator this package used to be, implemented on a real
kube-apiserver, controller-manager, scheduler and kwok started from ``KUBEBUILDER_ASSETS``.
"""

from .sim import KubeSim

__all__ = ["KubeSim"]
