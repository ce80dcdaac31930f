"""The informer reopens closed or failed watches with backoff and honours Retry-After (no server needed)."""

from __future__ import annotations

from typing import Any

from kaitoctl import kube
from kaitoctl.errors import ClusterError


def _throttled(seconds: float) -> ClusterError:
    err = kube.api_error(429, '{"message": "too many requests"}', "watch", kube.KINDS["Pod"], None, "default",
                         "https://k")
    err.retry_after = seconds  # type: ignore[attr-defined]
    return err


class ScriptedKube:
    """Answers each watch request with the next step: "close" (ends at once), "event", or an exception."""

    namespace = "default"

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps
        self.opened = 0

    def list(self, kind: str, namespace: Any = None, **_: Any) -> tuple[list[dict[str, Any]], str]:
        return [], "1"

    def _watch_stream(self, spec: Any, namespace: Any, label_selector: Any, field_selector: Any, rv: str,
                      holder: kube.Informer):
        self.opened += 1
        if self.opened > len(self.steps):
            holder.stopped = True
            return
        step = self.steps[self.opened - 1]
        if isinstance(step, BaseException):
            raise step
        if step == "event":
            yield "ADDED", {"metadata": {"name": "p", "resourceVersion": str(self.opened + 1)}}


def run(steps: list[Any]) -> tuple[list[float], ScriptedKube]:
    fake = ScriptedKube(steps)
    informer = kube.Informer(fake, "Pod", "default")  # type: ignore[arg-type]
    slept: list[float] = []
    informer._sleep = slept.append  # type: ignore[method-assign]
    list(informer.events())
    return slept, fake


def test_a_stream_closed_again_and_again_is_reopened_with_growing_backoff():
    # Before: reopened at once, in a tight loop against a server or proxy that keeps cutting streams.
    slept, fake = run(["close", "close", "close", "event", "close"])
    assert fake.opened == 6
    assert slept == [0.2, 0.4, 0.8, 0.2]          # an event in between resets the backoff


def test_a_429_waits_the_retry_after_the_server_sent():
    slept, _ = run([_throttled(7.0), "event"])
    assert slept == [7.0]
    slept, _ = run([_throttled(3600.0)])
    assert slept == [kube.MAX_RETRY_AFTER]        # a server asking for an hour is not waited for an hour


def test_server_errors_back_off_and_give_up_after_the_retries():
    failing = kube.api_error(503, "{}", "watch", kube.KINDS["Pod"], None, "default", "https://k")
    fake = ScriptedKube([failing] * (kube.WATCH_RETRIES + 1))
    informer = kube.Informer(fake, "Pod", "default")  # type: ignore[arg-type]
    slept: list[float] = []
    informer._sleep = slept.append  # type: ignore[method-assign]
    try:
        list(informer.events())
    except ClusterError as err:
        assert "HTTP 503" in err.message
    else:
        raise AssertionError("the informer should give up")
    assert slept == [0.2, 0.4, 0.8, 1.6, 3.2]
