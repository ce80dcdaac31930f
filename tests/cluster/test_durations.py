"""--timeout parsing (apply, status --watch, delete, adapters update, rollback): kubectl's duration spelling."""

from __future__ import annotations

import pytest

from kaitoctl.commands.cluster import parse_duration
from kaitoctl.errors import UsageError


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90.0), ("15m", 900.0), ("1h30m", 5400.0), ("300", 300.0),
                                               ("2.5", 2.5), ("500ms", 0.5)])
def test_durations_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0.0", "0s", "0m0s"])
def test_a_zero_timeout_is_refused_however_it_is_spelled(text: str) -> None:
    with pytest.raises(UsageError, match="more than zero"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", "soon", "15x", "-5s", "1h 30m"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text)
