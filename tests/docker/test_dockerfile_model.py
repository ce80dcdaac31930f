"""The Dockerfile reader the image tests rely on reads Dockerfiles the way Docker does."""

from __future__ import annotations

from pathlib import Path

import pytest

from .dockerfile_model import DockerfileError, DockerIgnore, expand, parse


def _parse(tmp_path: Path, text: str):
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return parse(path)


def test_continuations_join_and_comments_inside_them_are_dropped(tmp_path: Path) -> None:
    df = _parse(
        tmp_path,
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.11-slim\n"
        "RUN apt-get update \\\n"
        "# a comment inside the instruction\n"
        "\n"
        "    && apt-get install -y curl\n"
        "COPY --chown=1000:1000 --chmod=0644 a.txt \\\n"
        "     b.txt /dst/\n",
    )
    assert df.directives == {"syntax": "docker/dockerfile:1"}
    run, copy = df.final.instructions[1:]
    assert run.keyword == "RUN" and run.line == 3
    assert run.words == ["apt-get", "update", "&&", "apt-get", "install", "-y", "curl"]
    assert copy.flags == {"chown": ["1000:1000"], "chmod": ["0644"]}
    assert copy.words == ["a.txt", "b.txt", "/dst/"]


def test_exec_form_is_json_and_shell_form_is_not(tmp_path: Path) -> None:
    df = _parse(tmp_path, 'FROM scratch\nCMD ["gunicorn", "--config", "a b"]\nENTRYPOINT run it\n')
    cmd, entrypoint = df.final.last("CMD"), df.final.last("ENTRYPOINT")
    assert cmd.exec_form and cmd.words == ["gunicorn", "--config", "a b"]
    assert not entrypoint.exec_form and entrypoint.words == ["run", "it"]


def test_global_args_reach_from_and_stages_only_when_redeclared(tmp_path: Path) -> None:
    df = _parse(
        tmp_path,
        "ARG BASE=python:3.11-slim\nARG SRC=hub\nARG DEST=/opt\n"
        "FROM ${BASE} AS one\nCOPY x ${DEST}/x\n"
        "FROM stage-${SRC}\nARG DEST\nARG MORE=${DEST}/more\nCOPY y ${MORE}\n",
    )
    assert [s.base for s in df.stages] == ["python:3.11-slim", "stage-hub"]
    assert df.stage("one").last("COPY").words == ["x", "/x"]  # DEST not re-declared in stage one
    assert df.final.last("COPY").words == ["y", "/opt/more"]


def test_env_both_forms_and_references(tmp_path: Path) -> None:
    df = _parse(tmp_path, 'FROM scratch\nENV HOME=/tmp A="two words" B=$HOME/b\nENV LEGACY some value\nUSER ${UID:-1000}\n')
    assert df.final.env == {"HOME": "/tmp", "A": "two words", "B": "/tmp/b", "LEGACY": "some value"}
    assert df.final.last("USER").words == ["1000"]


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("${A}/x", {"A": "a"}, "a/x"),
        ("$A-$B", {"A": "a"}, "a-"),
        ("${A:-dflt}", {}, "dflt"),
        ("${A:-dflt}", {"A": "set"}, "set"),
        ("${A:+alt}", {"A": "set"}, "alt"),
        ("${A:+alt}", {}, ""),
    ],
)
def test_variable_substitution(text: str, variables: dict[str, str], expected: str) -> None:
    assert expand(text, variables) == expected


def test_heredocs_and_instructions_before_from_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DockerfileError, match="heredoc"):
        _parse(tmp_path, "FROM scratch\nRUN <<EOF\necho hi\nEOF\n")
    with pytest.raises(DockerfileError, match="before the first FROM"):
        _parse(tmp_path, "COPY a b\nFROM scratch\n")


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("setup.cfg", False),
        ("kaitoctl/catalog.py", False),
        ("kaitoctl/data/presets.yaml", False),
        ("kaitoctl/__pycache__/catalog.cpython-311.pyc", True),
        (".venv/bin/python", True),
        ("docker/server/weights.py", False),
        ("docker/server/Dockerfile", True),
        ("tests/conftest.py", True),
    ],
)
def test_dockerignore_allowlist_semantics(path: str, excluded: bool) -> None:
    rules = DockerIgnore("# comment\n*\n!setup.cfg\n!kaitoctl\n!docker/server/weights.py\n**/__pycache__\n")
    assert rules.excluded(path) is excluded
