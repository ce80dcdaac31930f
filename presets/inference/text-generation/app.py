"""The Flask app factory: ``create_app(config)`` for the pods, tests and ``kaitoctl serve``.

The app serves from its first second. Until the start-up path has put the
merged model on its device, ``/health`` answers 503 and the generation routes
503 with ``Retry-After``; then everything answers normally. Loading starts on a
background thread, either when gunicorn's ``post_worker_init`` hook says so
(after the fork: torch and CUDA are never touched in the gunicorn master) or at
the first request, whichever comes first. ``kaitoctl serve`` and the tests pass
an already loaded ``ServedModel`` instead.
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Any, Callable, Optional

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from . import kaito_api, openai_api
from .api_common import ApiError, ServerState, is_openai_path, now
from .config import ServerConfig
from .loader import ServedModel, load_served_model
from .metrics import ServerMetrics

log = logging.getLogger("kaitoctl_server")

EXTENSION = "kaitoctl"
# Explicit: an editable install may expose the package as a namespace package,
# where Flask cannot find a root path on its own.
_ROOT = os.path.dirname(os.path.abspath(__file__))


def create_app(
    config: ServerConfig,
    served: Optional[ServedModel] = None,
    *,
    loader: Callable[[ServerConfig], ServedModel] = load_served_model,
    on_load_failure: Optional[Callable[[BaseException], None]] = None,
) -> Flask:
    """Build the app. With ``served`` it is ready at once; otherwise ``loader(config)`` runs in the background."""
    app = Flask("kaitoctl_server", root_path=_ROOT, instance_path=_ROOT)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    metrics = ServerMetrics()
    state = ServerState(config, metrics, loader, on_load_failure)
    if served is not None:
        state.set_ready(served)
    app.extensions[EXTENSION] = state

    app.before_request(_start_metrics)
    app.before_request(state.start_loading)
    app.before_request(_check_api_key)
    app.after_request(_finish_metrics)
    app.register_blueprint(kaito_api.bp)
    app.register_blueprint(openai_api.bp)
    app.add_url_rule("/metrics", "metrics", _metrics)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def start_loading(app: Flask) -> None:
    """Begin loading the model now (gunicorn's post_worker_init calls this in the worker)."""
    state = app.extensions.get(EXTENSION)
    if state is not None:
        state.start_loading()


def stop_engine(app: Flask) -> Optional[ServedModel]:
    """Stop the model's scheduler thread (gunicorn's worker_exit calls this), so it is not inside torch at exit.

    Returns the served model, or None when none had loaded.
    """
    state = app.extensions.get(EXTENSION)
    if state is not None and state.served is not None:
        state.served.engine.close()
        return state.served
    return None


def _state() -> ServerState:
    from flask import current_app

    return current_app.extensions[EXTENSION]


def _metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(_state().metrics.render(), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def _is_generation_route() -> bool:
    return request.path == "/chat" or is_openai_path()


def _check_api_key() -> None:
    """Bearer auth on the generation routes when KAITOCTL_API_KEY is set (health and metrics stay open)."""
    key = _state().config.api_key
    if not key or not _is_generation_route():
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        reason = "missing" if not header else "invalid"
        raise ApiError(
            401,
            f"API key {reason}: send the header 'Authorization: Bearer <key>' with this server's key",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _start_metrics() -> None:
    g.kaitoctl_started = now()
    _state().metrics.in_flight.inc()


def _finish_metrics(response: Response) -> Response:
    started = g.get("kaitoctl_started")
    if started is None:
        return response
    metrics = _state().metrics
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    method = request.method
    status = str(response.status_code)

    metrics.requests.labels(route, method, status).inc()

    def done() -> None:  # runs when the last byte is sent (after the stream, for SSE)
        metrics.in_flight.dec()
        metrics.latency.labels(route).observe(now() - started)

    response.call_on_close(done)
    return response


def _render(err: ApiError) -> Response:
    from flask import jsonify

    response = jsonify(err.body(openai=is_openai_path()))
    response.status_code = err.status
    for name, value in err.headers.items():
        response.headers[name] = value
    return response


def _api_error(err: ApiError) -> Response:
    return _render(err)


def _http_error(err: HTTPException) -> Response:
    status = err.code or 500
    if status == 413:
        limit = _state().config.max_body_bytes
        message = f"the request body is larger than this server's limit of {limit} bytes (KAITOCTL_MAX_BODY_BYTES)"
    elif status == 404:
        message = f"no route {request.method} {request.path}" if is_openai_path() else "Not Found"
    elif status == 405:
        allowed = ", ".join(sorted(err.valid_methods or [])) if hasattr(err, "valid_methods") else ""
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
    else:
        message = err.description or err.name
    return _render(ApiError(status, message, code="not_found" if status == 404 else None))


def _unexpected_error(err: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return _render(ApiError(500, f"internal server error ({type(err).__name__}); see the server log"))


def create_standby_app(
    rank: int, world_size: int = 1, health: Optional[Callable[[], tuple[bool, str]]] = None
) -> Flask:
    """What a non-zero torchrun rank serves on its port: health and metrics, no generation.

    ``health`` says whether this rank is loaded and following rank 0 (and why
    not); without it the rank always reports healthy.
    """
    app = Flask("kaitoctl_server_standby", root_path=_ROOT, instance_path=_ROOT)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    metrics = ServerMetrics()

    @app.get("/health")
    @app.get("/healthz")
    def health_route() -> tuple[dict[str, Any], int]:
        ok, detail = health() if health is not None else (True, "")
        metrics.model_ready.set(1 if ok else 0)
        body: dict[str, Any] = {"status": "Healthy" if ok else "Unhealthy", "rank": rank, "world_size": world_size}
        if not ok:
            body["detail"] = detail
        return body, 200 if ok else 503

    @app.get("/metrics")
    def render_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(404)
    def elsewhere(_err: Exception) -> tuple[dict[str, str], int]:
        return {"detail": f"this pod runs rank {rank}; generation is served by rank 0 (use the Service)"}, 404

    return app
