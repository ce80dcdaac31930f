"""Tensor parallelism over every process of a torchrun job (distributed presets; docs/distributed.md).

Every process (rank) loads its slice of the model with transformers' tensor
parallel plan (``tp_plan="auto"``: attention and MLP projections split by
columns or rows, embeddings and ``lm_head`` by vocabulary, norms replicated),
merges the adapters into that slice (``merge.py``) and builds the same batch
runner (``runner.py``). The model's own collectives (all-reduce after a
row-parallel projection, all-gather of the logits) run over the default
process group: NCCL on GPUs, gloo on CPUs, chosen by the device.

Rank 0 serves HTTP. Its engine drives a ``RankZeroRunner``: every runner call
(``add``/``step``/``keep``/``clear``, plain ints and lists) is first broadcast
to the other ranks over a gloo control group, then run locally; the other
ranks run ``follow``, which replays each call on their own runner in the same
order, so the model's collectives line up. Rank 0 samples; the logits are
whole on every rank, the other ranks' copies are discarded.

A heartbeat (a no-op broadcast every ``KAITOCTL_TP_HEARTBEAT`` seconds, default
2, while the server is idle) keeps the followers' collectives from timing out
and lets rank 0 notice a dead rank: gloo fails a collective at once when a
peer's connection closes, a control message gives up after
``KAITOCTL_TP_TIMEOUT`` seconds (default 60), and rank 0's /health turns 503
when one call has waited longer than that. After the first failure the group
is broken for good: rank 0's ``/health`` answers 503, requests in flight and
new ones end with a 5xx, and Kubernetes restarts the pods; torchrun's
rendezvous brings them back together.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional

from .errors import ConfigError

log = logging.getLogger("kaitoctl_server")

RUNNER_CALLS = ("add", "step", "keep", "clear")
_PING = "ping"
_STOP = "stop"


@dataclass(frozen=True)
class World:
    """Where this process sits in the torchrun job (torchrun's environment variables)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, environ: Optional[dict[str, str]] = None) -> "World":
        env = os.environ if environ is None else environ
        values = {}
        for key, name in (("rank", "RANK"), ("world_size", "WORLD_SIZE"), ("local_rank", "LOCAL_RANK")):
            text = env.get(name)
            try:
                values[key] = int(text) if text else (1 if key == "world_size" else 0)
            except ValueError:
                raise ConfigError(f"{name}={text!r} is not an integer (torchrun sets it)") from None
        world = cls(**values)
        if world.world_size < 1 or not 0 <= world.rank < world.world_size:
            raise ConfigError(f"RANK={world.rank} is not below WORLD_SIZE={world.world_size}")
        return world


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} must be a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{name}={text!r} must be a positive number of seconds")
    return value


def timeout_seconds() -> float:
    """How long any collective may wait before the group counts as broken (``KAITOCTL_TP_TIMEOUT``)."""
    return _seconds("KAITOCTL_TP_TIMEOUT", 60.0)


def heartbeat_seconds() -> float:
    """Idle interval between rank 0's no-op broadcasts (``KAITOCTL_TP_HEARTBEAT``)."""
    return _seconds("KAITOCTL_TP_HEARTBEAT", 2.0)


class GroupBroken(RuntimeError):
    """A rank of the tensor-parallel group is gone (or stopped answering): nothing can run any more."""


_control_group: Any = None


# The model's own collectives (default group) may wait this long: loading a large checkpoint can keep
# the ranks minutes apart at transformers' loading collectives. A rank that hangs while serving is
# caught sooner, by the control group's timeout and by rank 0's health check (KAITOCTL_TP_TIMEOUT).
MODEL_GROUP_TIMEOUT_S = 1800


def init_group(device: str) -> Any:
    """Join the torchrun job's process group (once); return the gloo group for control messages.

    The default group carries the model's collectives: NCCL on "cuda", gloo on
    "cpu". A second gloo group, with the shorter ``KAITOCTL_TP_TIMEOUT``,
    carries rank 0's calls and heartbeats.
    """
    global _control_group
    import datetime

    import torch.distributed as dist

    if _control_group is not None:
        return _control_group
    world = World.from_env()
    if device == "cuda":
        import torch

        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        log.info("rank %d of %d: joining the process group (%s)", world.rank, world.world_size,
                 "nccl" if device == "cuda" else "gloo")
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=max(MODEL_GROUP_TIMEOUT_S, timeout_seconds())))
    _control_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_seconds()))
    return _control_group


def _why(err: BaseException) -> str:
    """One short line for an error from a collective (gloo's messages carry a source path and advice)."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(err)).split(". ")[0]
    return f"{type(err).__name__}: {text}"[:240]


def _broadcast(message: Optional[tuple[str, tuple[Any, ...]]], group: Any) -> tuple[str, tuple[Any, ...]]:
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0, group=group)
    assert box[0] is not None
    return box[0]


class RankZeroRunner:
    """Rank 0's runner: each call is broadcast to the other ranks, then run on this rank's shard.

    Same methods and ``rows`` as ``runner.BatchRunner`` (RUNNER-CONTRACT.md), so
    the engine cannot tell it from a local runner. Also owns the heartbeat and
    the group's health.
    """

    def __init__(self, runner: Any, group: Any, world: World, *, heartbeat: float, stale_after: float,
                 broadcast: Callable[[Any, Any], Any] = _broadcast) -> None:
        self._runner = runner
        self._group = group
        self.world = world
        self._heartbeat = heartbeat
        self._stale_after = stale_after
        self._send = broadcast
        self._lock = threading.Lock()
        self._last_sent = time.monotonic()
        self._pending_since: Optional[float] = None
        self.broken: Optional[str] = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="kaitoctl-tp-heartbeat", daemon=True)
        self._thread.start()
        atexit.register(self.stop)  # rank 0 shutting down (SIGTERM): the other ranks end with exit code 0

    @property
    def rows(self) -> int:
        return int(self._runner.rows)

    def add(self, prompts: list[list[int]]) -> Any:
        return self._call("add", [list(map(int, p)) for p in prompts])

    def step(self, tokens: list[int]) -> Any:
        return self._call("step", [int(t) for t in tokens])

    def keep(self, rows: list[int]) -> None:
        return self._call("keep", [int(r) for r in rows])

    def clear(self) -> None:
        return self._call("clear")

    def health(self) -> tuple[bool, str]:
        """(healthy, why not): broken, or one collective pending for longer than the timeout."""
        if self.broken:
            return False, self.broken
        pending = self._pending_since
        if pending is not None and time.monotonic() - pending > self._stale_after:
            return False, f"a collective with the other ranks has not finished for {self._stale_after:g} s"
        return True, ""

    def stop(self) -> None:
        """Tell the other ranks to exit their loops (a clean shutdown of rank 0)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            if not self.broken:
                try:
                    self._send_locked((_STOP, ()))
                except GroupBroken:
                    pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._heartbeat + 1)   # no ping after the stop, nor while the process ends

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            self._send_locked((method, args))
            try:
                return getattr(self._runner, method)(*args)
            except ValueError:
                raise  # a bad argument, refused before any collective, the same way on every rank
            except Exception as err:
                self._fail(f"{method} failed on rank 0 ({_why(err)})")
                raise GroupBroken(self.broken) from err
            finally:
                self._pending_since = None

    def _send_locked(self, message: tuple[str, tuple[Any, ...]]) -> None:
        if self.broken:
            raise GroupBroken(self.broken)
        self._pending_since = time.monotonic()
        try:
            self._send(message, self._group)
        except Exception as err:
            self._fail(f"the other ranks stopped answering ({_why(err)})")
            raise GroupBroken(self.broken) from err
        finally:
            self._last_sent = time.monotonic()
        if message[0] in (_PING, _STOP):
            self._pending_since = None

    def _fail(self, why: str) -> None:
        if not self.broken:
            self.broken = f"tensor-parallel group of {self.world.world_size} ranks is broken: {why}"
            log.error(self.broken)

    def _beat(self) -> None:
        while not self._stopping.wait(self._heartbeat / 2):
            if self.broken:
                return
            if time.monotonic() - self._last_sent < self._heartbeat:
                continue
            if not self._lock.acquire(timeout=self._heartbeat):
                continue  # a generation step holds the group: that is a heartbeat too
            try:
                self._send_locked((_PING, ()))
            except GroupBroken:
                return
            finally:
                self._lock.release()


class FollowerState:
    """What a rank > 0 reports on /health: loading, following, or failed."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.status = "loading"
        self.detail = ""
        self.last_message = time.monotonic()

    def health(self, stale_after: float) -> tuple[bool, str]:
        if self.status != "following":
            return False, self.detail or self.status
        quiet = time.monotonic() - self.last_message
        if quiet > stale_after:
            return False, f"no message from rank 0 for {quiet:.0f} s"
        return True, ""


def follow(runner: Any, group: Any, state: FollowerState,
           receive: Callable[[Any, Any], Any] = _broadcast) -> int:
    """Replay rank 0's runner calls on this rank's runner until told to stop; return the exit code."""
    state.status = "following"
    while True:
        try:
            method, args = receive(None, group)
        except Exception as err:  # rank 0 is gone or the group timed out
            state.status, state.detail = "failed", f"lost rank 0 ({_why(err)})"
            log.error("rank %d: %s", state.world.rank, state.detail)
            return 1
        state.last_message = time.monotonic()
        if method == _STOP:
            state.status, state.detail = "stopped", "rank 0 shut down"
            return 0
        if method == _PING:
            continue
        if method not in RUNNER_CALLS:
            state.status, state.detail = "failed", f"unknown call {method!r} from rank 0"
            log.error("rank %d: %s", state.world.rank, state.detail)
            return 1
        try:
            getattr(runner, method)(*args)
        except ValueError:
            continue  # refused on rank 0 too, before any collective
        except Exception as err:
            state.status, state.detail = "failed", f"{method} failed ({_why(err)})"
            log.exception("rank %d: %s", state.world.rank, state.detail)
            return 1


def _serve_health(bind: str, app: Any) -> None:
    """Serve ``app`` (health and metrics only) on ``bind`` from a daemon thread."""
    from werkzeug.serving import make_server

    host, _, port = bind.rpartition(":")
    server = make_server(host or "0.0.0.0", int(port), app, threaded=True)
    threading.Thread(target=server.serve_forever, name="kaitoctl-health", daemon=True).start()
    log.info("rank %s: /health on %s", getattr(app, "name", "?"), bind)


def run_follower(config: Any, world: World) -> int:
    """A rank > 0: load this rank's slice, then replay rank 0's calls until the group ends.

    The first process of each node (LOCAL_RANK 0) also serves /health on
    ``KAITOCTL_BIND`` so the pod's probes see whether this rank is loaded and
    hears from rank 0. Once following has ended, the process exits with its
    code here (``exit_now``); it returns only when loading failed.
    """
    import signal

    from .app import create_standby_app
    from .errors import StartupError
    from .loader import load_served_model
    from .logs import configure_logging
    from .runner import BatchRunner

    configure_logging()
    signal.signal(signal.SIGTERM, lambda *_: exit_now(0))  # the pod or torchrun stopping this rank
    state = FollowerState(world)
    stale_after = timeout_seconds()
    if world.local_rank == 0:
        _serve_health(config.bind, create_standby_app(world.rank, world.world_size,
                                                      lambda: state.health(stale_after)))
    try:
        served = load_served_model(config)
    except StartupError as err:
        state.status, state.detail = "failed", str(err)
        log.error("rank %d: cannot start: %s", world.rank, err)
        return 3
    group = init_group(_device_type(served.model))
    runner = BatchRunner(served.model, served.model.get_input_embeddings().weight.device)
    log.info("rank %d of %d: following rank 0", world.rank, world.world_size)
    exit_now(follow(runner, group, state))


def end_rank_zero(group: "RankZeroRunner", code: Any = 0) -> NoReturn:
    """Rank 0's clean end: tell the other ranks to stop, then exit with ``code`` as ``exit_now`` does.

    ``code`` is what ``sys.exit`` was given (None is 0, a message is 1).
    """
    group.stop()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        code = 1
    log.info("rank 0 of %d: the other ranks were told to stop; exiting (%d)", group.world.world_size, code)
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """End this rank with ``code`` without the interpreter's teardown.

    Once a rank is done, the interpreter's finalization would tear down gloo's
    C++ objects, and that aborts now and then ("terminate called without an
    active exception", SIGABRT, and a torchrun traceback instead of exit code 0;
    about 1 run in 6 of tests/server/tp_shard_dump.py ending normally, even after
    ``destroy_process_group()``). The kernel closes the sockets.
    """
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _device_type(model: Any) -> str:
    return "cuda" if model.get_input_embeddings().weight.device.type == "cuda" else "cpu"
