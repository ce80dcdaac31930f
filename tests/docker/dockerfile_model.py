"""A small Dockerfile and .dockerignore reader, enough to check our images without a Docker engine.

It follows the Dockerfile reference for what our Dockerfiles use: parser directives,
comments (also inside continued instructions), backslash continuation lines, flags
(``--from=``, ``--chmod=``, ``--mount=``), exec (JSON) and shell forms, global and stage
``ARG``s, ``ENV`` in both forms, and ``$VAR`` / ``${VAR}`` / ``${VAR:-default}`` /
``${VAR:+word}`` substitution in the instructions where Docker performs it. Heredocs are
refused rather than misread.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# Instructions whose arguments Docker expands with ARG/ENV values (the Dockerfile reference).
EXPANDED = {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR", "ARG"}
FLAGGED = {"ADD", "COPY", "FROM", "RUN"}

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(\S+)\s*$")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class DockerfileError(ValueError):
    """The Dockerfile uses syntax this reader does not understand (or Docker would reject)."""


@dataclass(frozen=True)
class Instruction:
    keyword: str                       # upper case: FROM, COPY, ...
    flags: dict[str, list[str]]        # "--from=x" -> {"from": ["x"]}; a bare "--link" -> {"link": [""]}
    text: str                          # arguments after the flags, as written (continuations joined)
    words: list[str]                   # arguments after the flags: the JSON list, or split (and expanded)
    exec_form: bool                    # arguments were a JSON array
    line: int                          # 1-based line of the keyword


@dataclass
class Stage:
    base: str                          # FROM image, global ARGs substituted
    name: Optional[str]
    instructions: list[Instruction] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)     # ENV after the stage's last instruction
    args: dict[str, str] = field(default_factory=dict)    # ARG values in this stage

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Optional[Instruction]:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    path: Path
    directives: dict[str, str]
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages if s.name]


def expand(text: str, variables: dict[str, str]) -> str:
    """Docker's variable substitution: unknown variables become empty."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = variables.get(name)
        if match.group(2) == "-":
            return value if value else expand(match.group(3), variables)
        if match.group(2) == "+":
            return expand(match.group(3), variables) if value else ""
        return value or ""

    return _VARIABLE.sub(replace, text)


def _logical_lines(source: str) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """Directives, then (line number, instruction text) with comments dropped and continuations joined."""
    directives: dict[str, str] = {}
    lines = source.splitlines()
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if not match:
            break
        directives[match.group(1).lower()] = match.group(2)
        index += 1
    escape = directives.get("escape", "\\")
    result: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(lines[index:], start=index + 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and current):
            continue  # comments anywhere, and blank lines inside a continued instruction, are dropped
        if not stripped:
            continue
        if not current:
            start = number
        body = raw.rstrip()
        if body.endswith(escape):
            current.append(body[: -len(escape)])
            continue
        current.append(body)
        result.append((start, "".join(current).strip()))
        current = []
    if current:
        raise DockerfileError(f"line {start}: the last instruction ends with a continuation")
    return directives, result


def _split_flags(keyword: str, rest: str) -> tuple[dict[str, list[str]], str]:
    flags: dict[str, list[str]] = {}
    if keyword not in FLAGGED:
        return flags, rest
    while rest.startswith("--"):
        token, _, remainder = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags.setdefault(name, []).append(value)
        rest = remainder.lstrip()
    return flags, rest


def _env_pairs(text: str, variables: dict[str, str]) -> dict[str, str]:
    words = shlex.split(text, posix=True)
    if words and "=" not in words[0]:
        # legacy form: ENV KEY value with spaces
        key, _, value = text.strip().partition(" ")
        return {key: expand(value.strip(), variables)}
    pairs: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise DockerfileError(f"ENV {text!r}: {word!r} is not KEY=VALUE")
        pairs[key] = expand(value, {**variables, **pairs})
    return pairs


def parse(path: Path) -> Dockerfile:
    """Read the Dockerfile at ``path``."""
    directives, lines = _logical_lines(path.read_text(encoding="utf-8"))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in lines:
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        flags, rest = _split_flags(keyword, rest)
        if re.match(r"^<<-?['\"]?[A-Za-z_]", rest):
            raise DockerfileError(f"{path}:{number}: heredocs are not supported by this reader")
        stage = stages[-1] if stages else None
        if keyword == "FROM" or stage is None:
            variables = dict(global_args)  # FROM sees only the ARGs declared before the first FROM
        else:
            variables = {**stage.args, **stage.env}  # a stage sees global ARGs only if it re-declares them
        exec_form = False
        words: list[str]
        if rest.startswith("["):
            try:
                parsed = json.loads(rest)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(w, str) for w in parsed):
                exec_form = True
                words = list(parsed)
            else:
                words = rest.split()
        else:
            words = rest.split()
        if keyword in EXPANDED and keyword not in ("ARG", "ENV"):
            words = [expand(w, variables) for w in words]
        instruction = Instruction(keyword, flags, rest, words, exec_form, number)
        if keyword == "FROM":
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name, instructions=[instruction]))
            continue
        if keyword == "ARG":
            for word in shlex.split(rest):
                name, sep, default = word.partition("=")
                if stage is None:
                    global_args[name] = default
                elif sep:
                    stage.args[name] = expand(default, variables)
                else:
                    stage.args[name] = global_args.get(name, "")
            if stage is not None:
                stage.instructions.append(instruction)
            continue
        if stage is None:
            raise DockerfileError(f"{path}:{number}: {keyword} before the first FROM")
        if keyword == "ENV":
            stage.env.update(_env_pairs(rest, variables))
        stage.instructions.append(instruction)
    if not stages:
        raise DockerfileError(f"{path}: no FROM instruction")
    return Dockerfile(path=path, directives=directives, global_args=global_args, stages=stages)


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of a COPY or ADD."""
    if len(instruction.words) < 2:
        raise DockerfileError(f"line {instruction.line}: {instruction.keyword} needs a source and a destination")
    return instruction.words[:-1], instruction.words[-1]


# ---- .dockerignore ---------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i)
            out.append("[" + pattern[i + 1:end].replace("!", "^", 1) + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("^" + "".join(out) + "$")


class DockerIgnore:
    """Docker's .dockerignore rules: the last matching pattern wins; a pattern that matches a
    directory excludes everything below it; ``!`` re-includes."""

    def __init__(self, text: str):
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:].strip()
            line = line.strip("/")
            parts = [p for p in line.split("/") if p not in ("", ".")]
            self.rules.append((negated, _pattern_regex("/".join(parts))))

    def excluded(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negated, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negated
        return result
