"""kaitoctl: run KAITO Workspaces on Kubernetes from the client side.

The CLI path (everything under ``kaitoctl/``) stays light: it never imports torch,
transformers, peft or flask. The inference server lives in ``kaitoctl_server``
(``presets/inference/text-generation/``) and is imported only by ``kaitoctl serve``.
"""

__version__ = "0.1.0"
