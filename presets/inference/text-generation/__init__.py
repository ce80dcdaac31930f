"""kaitoctl's bundled inference server (installed as ``kaitoctl_server``).

One straight start-up line: configuration (environment or flags) -> base model
loaded on the CPU -> LoRA adapters checked and merged exactly, in float32, each
scaled by its strength -> cast to the serving dtype -> moved to the device ->
ready. Then Flask serves KAITO's API (``/chat``, ``/healthz``), the OpenAI one
(``/v1/...``) and Prometheus metrics, under gunicorn in the pods
(``gunicorn --config python:kaitoctl_server.gunicorn_conf kaitoctl_server.wsgi:app``)
or in-process for ``kaitoctl serve``.

Importing this package is cheap: torch, transformers and flask are imported
by the submodules that need them.
"""
