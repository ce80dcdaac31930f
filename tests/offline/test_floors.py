"""The dependency floors in setup.cfg are the ones `make test-floors` installs and tests."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _floors() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for line in cfg["options"]["install_requires"].strip().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)(,.*)?", line.strip())
        assert match, f"setup.cfg install_requires {line!r} has no >= floor"
        out[match.group(1).lower()] = match.group(2)
    return out


def _pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints" / "floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.strip().lower()] = version.strip()
    return out


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def test_every_floor_is_pinned_at_that_version_in_the_constraints_file() -> None:
    floors, pins = _floors(), _pins()
    assert set(pins) == set(floors)
    for name, floor in floors.items():
        assert _key(pins[name]) == _key(floor) + (0,) * (len(_key(pins[name])) - len(_key(floor))), name


def test_the_floors_cover_what_kube_py_calls() -> None:
    # kaitoctl/kube.py sends every request with urllib3 itself (ca_cert_data, one shared pool) and
    # loads unusual kubeconfigs (exec plugins, auth providers) with the official client's loader.
    text = (ROOT / "kaitoctl" / "kube.py").read_text()
    assert "urllib3.PoolManager" in text and "ca_cert_data" in text and "kube_config.KubeConfigLoader" in text
    floors = _floors()
    assert _key(floors["urllib3"]) >= (2, 8) and _key(floors["kubernetes"]) >= (37,)


def test_ci_runs_the_floors_job() -> None:
    assert "make test-floors" in (ROOT / ".ci" / "run").read_text()
    assert "-c constraints/floors.txt" in (ROOT / "Makefile").read_text()
