"""What both APIs share: the server state, errors in each API's shape, body parsing, token checks.

Every bad input becomes an ``ApiError`` carrying a status and a message that
says what to change; the app renders it as ``{"detail": ...}`` for KAITO's
routes (FastAPI's shape, which KAITO clients parse) and as OpenAI's
``{"error": {"message", "type", "param", "code"}}`` under ``/v1/``.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Type, TypeVar

from flask import current_app, request
from pydantic import BaseModel, ValidationError

from .config import ServerConfig
from .engine import Finished, Generation, GenerationFailed, NeedsGenerate, Piece, QueueFull, TooManyGenerations
from .errors import StartupError
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from .loader import ServedModel

log = logging.getLogger("kaitoctl_server")
M = TypeVar("M", bound=BaseModel)

_OPENAI_TYPES = {401: "invalid_request_error", 429: "requests", 500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """A request that cannot be served as sent. ``detail`` overrides KAITO's ``detail`` (e.g. a 422 list)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: Optional[str] = None,
        code: Optional[str] = None,
        detail: Any = None,
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def body(self, openai: bool) -> dict[str, Any]:
        if openai:
            err_type = _OPENAI_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
            return {"error": {"message": self.message, "type": err_type, "param": self.param, "code": self.code}}
        return {"detail": self.detail if self.detail is not None else self.message}


class ServerState:
    """The app's model slot: loading, ready or failed; loading runs once, on a background thread."""

    def __init__(
        self,
        config: ServerConfig,
        metrics: ServerMetrics,
        loader: Callable[[ServerConfig], "ServedModel"],
        on_load_failure: Optional[Callable[[BaseException], None]] = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.served: Optional["ServedModel"] = None
        self.error: Optional[str] = None
        self._loader = loader
        self._on_load_failure = on_load_failure
        self._started = False
        self._start_lock = threading.Lock()

    @property
    def status(self) -> str:
        if self.served is not None:
            return "ready"
        return "failed" if self.error is not None else "loading"

    def set_ready(self, served: "ServedModel") -> None:
        from .loader import optional_gpu_memory

        self.served = served
        self.metrics.model_loaded(served, optional_gpu_memory)

    def start_loading(self) -> None:
        """Start the start-up path on a background thread (idempotent; no-op once started or ready)."""
        with self._start_lock:
            if self._started or self.served is not None:
                return
            self._started = True
        threading.Thread(target=self._load, name="kaitoctl-load", daemon=True).start()

    def _load(self) -> None:
        try:
            self.set_ready(self._loader(self.config))
        except BaseException as err:  # noqa: BLE001 - reported on /health and to the failure hook
            if isinstance(err, StartupError):
                log.error("cannot start: %s", err)
            else:
                log.exception("cannot start: unexpected error while loading the model")
            self.error = str(err) or type(err).__name__
            if self._on_load_failure is not None:
                self._on_load_failure(err)

    def require_ready(self) -> "ServedModel":
        if self.served is not None:
            return self.served
        if self.error is not None:
            raise ApiError(503, f"the model failed to load: {self.error}", detail="Model not initialized")
        raise ApiError(
            503, "the model is still loading; retry when GET /health returns 200",
            detail="Model not initialized", headers={"Retry-After": "5"},
        )


def state() -> ServerState:
    return current_app.extensions["kaitoctl"]


def is_openai_path() -> bool:
    return request.path.startswith("/v1/") or request.path == "/v1"


def read_json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    data = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not data.strip():
        raise ApiError(400, "the request body is empty; send a JSON object")
    try:
        body = json.loads(data)
    except ValueError as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not a JSON {type(body).__name__}")
    return body


def parse(model: Type[M], body: dict[str, Any], *, openai: bool) -> M:
    """Validate ``body``; a 400 (OpenAI) or FastAPI-style 422 (KAITO) naming each bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        problems = err.errors(include_url=False, include_context=False)
        lines = []
        for problem in problems:
            where = ".".join(str(p) for p in problem["loc"]) or "body"
            if problem["type"] == "extra_forbidden":
                lines.append(f"{where}: unrecognized request argument; remove it")
            else:
                msg = problem["msg"].removeprefix("Value error, ")
                lines.append(f"{where}: {msg} (you sent {json.dumps(problem.get('input'), default=str)[:80]})")
        first = problems[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        if openai:
            raise ApiError(400, "; ".join(lines), param=param) from None
        detail = [
            {"type": p["type"], "loc": ["body", *p["loc"]], "msg": line, "input": p.get("input")}
            for p, line in zip(problems, lines)
        ]
        raise ApiError(422, "; ".join(lines), detail=json.loads(json.dumps(detail, default=str))) from None


def check_length(
    served: "ServedModel", prompt_tokens: int, max_new_tokens: int, *, new_tokens_field: str
) -> None:
    """Refuse requests the model cannot serve: over the server's cap or past the context window."""
    cap = state().config.max_tokens
    if max_new_tokens > cap:
        raise ApiError(
            400,
            f"{new_tokens_field}: {max_new_tokens} is above this server's limit of {cap} new tokens "
            "(KAITOCTL_MAX_TOKENS); ask for fewer",
            param=new_tokens_field,
        )
    context = served.context_length
    if prompt_tokens + max_new_tokens > context:
        raise ApiError(
            400,
            f"this model's maximum context length is {context} tokens, but {prompt_tokens + max_new_tokens} were "
            f"requested ({prompt_tokens} in the prompt, {max_new_tokens} to generate); shorten the prompt or lower "
            f"{new_tokens_field}",
            param=new_tokens_field,
            code="context_length_exceeded",
        )


def generation_config(served: "ServedModel", **settings: Any) -> Any:
    """The model's own generation config overlaid with ``settings`` (and refused if inconsistent)."""
    config = copy.deepcopy(served.model.generation_config)
    try:
        config.update(**settings)
        config.validate()
    except (ValueError, TypeError) as err:
        raise ApiError(400, f"invalid generation settings: {err}") from None
    return config


def record_generation(metrics: ServerMetrics, route: str, started: float, finished: Finished) -> None:
    """Token counters and latencies of one generation (callable outside the request context)."""
    metrics.generation_finished(route, started, finished)


def start_generations(served: "ServedModel", jobs: list[dict[str, Any]]) -> list[Generation]:
    """Queue ``jobs`` on the engine (all or none): a 429 with Retry-After when the server is full."""
    try:
        return served.engine.submit(jobs)
    except QueueFull as err:
        raise ApiError(429, str(err), code="rate_limit_exceeded",
                       headers={"Retry-After": str(err.retry_after)}) from None
    except TooManyGenerations as err:
        raise ApiError(400, str(err), param="n") from None
    except NeedsGenerate as err:
        raise ApiError(400, str(err)) from None


def collect(run: Iterator[Piece | Finished], metrics: ServerMetrics, route: str,
            started: float) -> tuple[str, Finished]:
    """A whole generation's text and its ``Finished`` (recorded in the metrics), for the non-streaming routes.

    A failing model becomes a 500 that says so; the log keeps the cause.
    """
    pieces: list[str] = []
    finished: Optional[Finished] = None
    try:
        with closing(run) as events:
            for event in events:
                if isinstance(event, Piece):
                    pieces.append(event.text)
                else:
                    finished = event
    except GenerationFailed as err:
        log.error("%s: generation failed: %s", route, err, exc_info=err.__cause__)
        raise ApiError(500, f"generation failed: {err}") from None
    assert finished is not None, "the engine ends every generation with Finished"
    record_generation(metrics, route, started, finished)
    return "".join(pieces), finished


def collect_all(runs: list[Generation], metrics: ServerMetrics, route: str,
                started: float) -> list[tuple[str, Finished]]:
    """``collect`` for each of several generations running together; all are cancelled if one fails."""
    try:
        return [collect(run, metrics, route, started) for run in runs]
    finally:
        for run in runs:
            run.close()


def now() -> float:
    return time.perf_counter()


def chat_prompt_ids(served: "ServedModel", messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template, ready for the assistant's turn."""
    if not served.has_chat_template:
        raise ApiError(
            400,
            "this model's tokenizer has no chat template, so it cannot take messages; send a plain prompt "
            "instead (/chat \"prompt\", or /v1/completions)",
            param="messages",
        )
    tokenizer = served.tokenizer
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as err:  # noqa: BLE001 - a template raising (e.g. roles must alternate) is a client error
        raise ApiError(400, f"the model's chat template rejected the messages: {err}", param="messages") from None
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def ensure_prompt(served: "ServedModel", ids: list[int], field: str) -> list[int]:
    """An empty prompt becomes the BOS token when there is one (generate needs at least one token)."""
    if ids:
        return ids
    bos = served.tokenizer.bos_token_id
    if bos is None:
        raise ApiError(400, f"{field}: the prompt is empty; send some text", param=field)
    return [bos]
