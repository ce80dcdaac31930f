"""The broadcasting runner, the follower loop and the heartbeat, with a fake broadcast (no processes)."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from kaitoctl_server.distributed import FollowerState, GroupBroken, RankZeroRunner, World, follow


class Recorder:
    """A runner that records its calls; ``add`` and ``step`` return their arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.rows = 0

    def add(self, prompts):
        self.calls.append(("add", (prompts,)))
        if any(not p for p in prompts):
            raise ValueError("empty prompt")
        self.rows += len(prompts)
        return prompts

    def step(self, tokens):
        self.calls.append(("step", (tokens,)))
        return tokens

    def keep(self, rows):
        self.calls.append(("keep", (rows,)))
        self.rows = len(rows)

    def clear(self):
        self.calls.append(("clear", ()))
        self.rows = 0


class Wire:
    """rank 0's broadcasts, as the other ranks would receive them; ``fail`` makes the next send raise."""

    def __init__(self) -> None:
        self.sent: "queue.Queue[tuple]" = queue.Queue()
        self.fail = threading.Event()

    def send(self, message, _group):
        if self.fail.is_set():
            raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:1234. This is typically caused")
        self.sent.put(message)
        return message

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` messages were sent (and not yet read) or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while self.sent.qsize() < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def messages(self) -> list[tuple]:
        out = []
        while not self.sent.empty():
            out.append(self.sent.get())
        return out


_made: list[RankZeroRunner] = []


@pytest.fixture(autouse=True)
def _stop_runners():
    """Each runner made here is stopped (and its heartbeat thread ended) before the test ends."""
    yield
    while _made:
        _made.pop().stop()


def proxy(wire: Wire, runner: Recorder, heartbeat: float = 60.0) -> RankZeroRunner:
    made = RankZeroRunner(runner, None, World(0, 2, 0), heartbeat=heartbeat, stale_after=30.0, broadcast=wire.send)
    _made.append(made)
    return made


def test_each_call_is_broadcast_first_then_run_on_rank_zero():
    wire, local = Wire(), Recorder()
    runner = proxy(wire, local)
    assert runner.add([[1, 2], [3]]) == [[1, 2], [3]]
    assert runner.step([5, 6]) == [5, 6]
    runner.keep([1])
    assert runner.rows == 1
    runner.clear()
    expected = [("add", ([[1, 2], [3]],)), ("step", ([5, 6],)), ("keep", ([1],)), ("clear", ())]
    assert wire.messages() == expected
    assert local.calls == expected
    assert runner.health() == (True, "")


def test_a_refused_argument_does_not_break_the_group():
    wire, local = Wire(), Recorder()
    runner = proxy(wire, local)
    with pytest.raises(ValueError):
        runner.add([[]])
    assert runner.health() == (True, "")
    assert runner.add([[7]]) == [[7]]


def test_a_failed_broadcast_breaks_the_group_for_good():
    wire, local = Wire(), Recorder()
    runner = proxy(wire, local)
    wire.fail.set()
    with pytest.raises(GroupBroken, match="Connection closed by peer"):
        runner.step([1])
    assert local.calls == []  # never run on rank 0 alone
    ok, detail = runner.health()
    assert not ok and detail == ("tensor-parallel group of 2 ranks is broken: the other ranks stopped answering "
                                 "(RuntimeError: Connection closed by peer [127.0.0.1]:1234)")
    wire.fail.clear()
    with pytest.raises(GroupBroken):  # at once, without touching the group again
        runner.add([[1]])
    assert wire.messages() == []


def test_the_idle_heartbeat_pings_and_notices_a_dead_rank():
    wire, local = Wire(), Recorder()
    runner = proxy(wire, local, heartbeat=0.05)
    wire.wait_for(2)
    assert set(wire.messages()) == {("ping", ())}
    wire.fail.set()
    deadline = time.monotonic() + 10
    while runner.health()[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not runner.health()[0]
    assert local.calls == []


def test_the_follower_replays_calls_in_order_and_stops_when_told():
    script = iter([("ping", ()), ("add", ([[1, 2]],)), ("add", ([[]],)), ("step", ([3],)), ("keep", ([],)),
                   ("stop", ())])
    local, state = Recorder(), FollowerState(World(1, 2, 0))
    assert follow(local, None, state, receive=lambda _m, _g: next(script)) == 0
    assert local.calls == [("add", ([[1, 2]],)), ("add", ([[]],)), ("step", ([3],)), ("keep", ([],))]
    assert state.status == "stopped"


def test_the_follower_exits_non_zero_when_rank_zero_is_gone():
    def receive(_message, _group):
        raise RuntimeError("Connection closed by peer")

    state = FollowerState(World(1, 2, 0))
    assert follow(Recorder(), None, state, receive=receive) == 1
    assert state.health(30) == (False, "lost rank 0 (RuntimeError: Connection closed by peer)")


def test_world_from_torchrun_variables():
    assert World.from_env({}) == World(0, 1, 0)
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    from kaitoctl_server.errors import ConfigError

    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        World.from_env({"WORLD_SIZE": "two"})


def test_settings_only_generate_handles_are_a_400_on_a_split_model(served, served_config):
    """Beam search would run model.generate, and its collectives, on rank 0 alone: refused, not hung."""
    import dataclasses

    from kaitoctl_server.app import create_app
    from kaitoctl_server.engine import Engine

    split = Engine(served.model, served.tokenizer, "cpu", generate_allowed=False)
    client = create_app(served_config, served=dataclasses.replace(served, engine=split)).test_client()
    try:
        answer = client.post("/chat", json={"prompt": "hi", "generate_kwargs": {"num_beams": 2, "max_new_tokens": 4}})
        assert answer.status_code == 400
        assert "cannot run on a model split over several processes" in answer.get_json()["detail"]
        plain = client.post("/chat", json={"prompt": "hi", "generate_kwargs": {"do_sample": False,
                                                                                "max_new_tokens": 4}})
        assert plain.status_code == 200  # the batch path still serves
    finally:
        split.close()


def test_stop_tells_the_other_ranks_once_and_the_heartbeat_ends_with_it():
    wire, local = Wire(), Recorder()
    runner = proxy(wire, local, heartbeat=0.02)
    wire.wait_for(1)
    runner.stop()
    runner.stop()           # atexit after an explicit stop: nothing more is sent
    sent = wire.messages()
    assert sent[-1] == ("stop", ()) and sent.count(("stop", ())) == 1
    time.sleep(0.1)         # five heartbeat intervals
    assert wire.messages() == []
