"""Property tests: whatever is thrown at ``kaitoctl validate``, the answer is a clear error, never a traceback.

Malformed and mutated Workspaces (wrong types, deleted and unknown fields,
deep nesting, alias bombs, huge strings, binary junk, YAML-ish noise) go
through the real command in-process. The command must exit 0 (valid) or 3
(invalid, with ``kaitoctl: error:`` and one ``file:line:col: path: message``
line per problem), never 1 (a bug), and never flood the terminal. Examples
are bounded and derandomized so the suite runs in seconds and reproducibly.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import tempfile
from collections import Counter
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kaitoctl.cli import main
from kaitoctl.loader import MAX_DEPTH, MAX_NODES, format_path, load_text
from kaitoctl.validate import validate
from kaitoctl.workspace import Workspace

from ._support import adapter, findings_of_text, mutate, triples

# No shrinking: inputs here are big by design and shrinking them can take minutes of the shared CI
# budget; derandomize makes any failing example reproducible as printed.
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FULL = mutate({
    "metadata.namespace": "llm",
    "metadata.labels": {"team": "ml"},
    "resource.count": 2,
    "resource.preferredNodes": ["node-a"],
    "resource.labelSelector.matchExpressions": [{"key": "gpu", "operator": "In", "values": ["v100"]}],
    "inference.adapters": [adapter("adapter-a", strength="0.5"), adapter("adapter-b")],
})
DETAIL = re.compile(r"^  \S.*?(:\d+(:\d+)?)?: ")
MAX_STDERR = 64 * 1024


def run_validate(content: bytes, *extra: str) -> tuple[int, str, str]:
    """Run ``kaitoctl validate -f <file with content>`` in-process; (exit code, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ws.yaml")
        with open(path, "wb") as handle:
            handle.write(content)
        out, err = io.StringIO(), io.StringIO()
        code: Any = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["validate", "-f", path, *extra])
            except SystemExit as exc:
                code = exc.code
    return int(code or 0), out.getvalue(), err.getvalue()


def assert_clear_outcome(content: bytes) -> tuple[int, str, str]:
    code, out, err = run_validate(content)
    assert "Traceback" not in err and "internal error" not in err, err
    assert code in (0, 3), (code, err)
    assert len(err) < MAX_STDERR, "stderr floods the terminal"
    if code == 3:
        lines = err.splitlines()
        assert lines[0].startswith("kaitoctl: error: ") and out == ""
        details = [line for line in lines[1:] if not line.startswith("hint: ")]
        assert details, err
        assert all(DETAIL.match(line) for line in details), err
    else:
        assert out and all(" valid" in line for line in out.splitlines()), out
    return code, out, err


# --------------------------------------------------------------------------------------------------
# Strategies

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=12), inner, max_size=4), max_leaves=12)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            out.extend(_paths(child, prefix + (key,)))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out.extend(_paths(child, prefix + (i,)))
    return out


PATHS = _paths(FULL)


def _apply(doc: Any, path: tuple, action: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    if action == "replace":
        parent[key] = value
    elif action == "delete":
        del parent[key]
    elif action == "unknown-field" and isinstance(parent, dict):
        parent[f"{key}x"] = value
    elif action == "wrap":
        wrapped = parent[key]
        for _ in range(min(abs(value), 150) if isinstance(value, int) else 3):
            wrapped = [wrapped]
        parent[key] = wrapped
    elif action == "huge-string":
        parent[key] = "x" * 300_000
    return doc


mutations = st.tuples(
    st.sampled_from(PATHS),
    st.sampled_from(["replace", "replace", "replace", "delete", "unknown-field", "wrap", "huge-string"]),
    values,
)


def _dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Properties


def test_the_unmutated_workspace_is_valid() -> None:
    code, out, _ = assert_clear_outcome(_dump(FULL))
    assert code == 0 and out.startswith("workspace/ws-falcon valid")


@SETTINGS
@given(st.lists(mutations, min_size=1, max_size=4))
def test_mutated_workspaces_give_clear_outcomes(changes: list) -> None:
    doc: Any = FULL
    for path, action, value in changes:
        try:
            doc = _apply(doc, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or retyped this path
    assert_clear_outcome(_dump(doc))


@SETTINGS
@given(st.binary(max_size=3000))
def test_binary_junk(content: bytes) -> None:
    code, _, _ = assert_clear_outcome(content)
    assert code == 3


YAMLISH = ["apiVersion: kaito.sh/v1alpha1\n", "kind: Workspace\n", "metadata:\n", "  name: ws\n", "resource:\n",
           "inference:\n", "  preset: {name: falcon-7b}\n", "  ", "\t", "- ", ": ", "&a ", "*a ", "[", "]", "{", "}",
           ",", "---\n", "\n", "'", '"', "!!binary ", "!custom ", "<<: *a\n", "? ", "|\n", ">\n", "#", "%YAML 1.1\n",
           "strength: .nan\n", "count: 1e999\n", "count: 0x" + "f" * 5000 + "\n", "9" * 5000, "\x00", "\x85",
           "\ufeff", "é"]


@SETTINGS
@given(st.lists(st.sampled_from(YAMLISH), max_size=40))
def test_yaml_noise(fragments: list[str]) -> None:
    assert_clear_outcome("".join(fragments).encode("utf-8"))


@settings(SETTINGS, max_examples=15)  # each bomb costs up to MAX_NODES steps before it is stopped
@given(st.integers(min_value=2, max_value=12), st.integers(min_value=2, max_value=9))
def test_alias_bombs(fanout: int, depth: int) -> None:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fanout) + "]"]
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * fanout) + "]")
    code, _, err = assert_clear_outcome(("\n".join(lines) + "\n").encode())
    assert code == 3
    expanded = sum(fanout ** (level + 1) for level in range(depth))
    if expanded > 2 * MAX_NODES:
        assert "billion laughs" in err


@settings(SETTINGS, max_examples=20)
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", "{a: ", "- "]))
def test_deep_nesting(depth: int, opener: str) -> None:
    if opener == "- ":
        text = "\n  " + "- " * depth + "a"  # compact nested block sequences
    else:
        text = opener * depth + {"[": "]", "{a: ": "}"}[opener] * depth
    code, _, err = assert_clear_outcome(("apiVersion: kaito.sh/v1alpha1\nkind: Workspace\nx: " + text + "\n").encode())
    assert code == 3
    if depth > MAX_DEPTH + 1:
        assert "nested" in err


@settings(SETTINGS, max_examples=20)
@given(st.sampled_from([p for p in PATHS if isinstance(p[-1], str)]), st.integers(min_value=1000, max_value=300_000))
def test_huge_strings_are_shortened(path: tuple, size: int) -> None:
    _, _, err = assert_clear_outcome(_dump(_apply(FULL, path, "replace", "é" * size)))
    assert "é" * 200 not in err


@SETTINGS
@given(st.lists(mutations, min_size=1, max_size=3))
def test_canonical_form_round_trips(changes: list) -> None:
    """What gets recorded in the cluster (canonical JSON) reads back as the same Workspace, with no new errors."""
    doc: Any = FULL
    for path, action, value in changes:
        try:
            doc = _apply(doc, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue
    for loaded in load_text(_dump(doc).decode("utf-8"), "ws.yaml"):
        ws = loaded.workspace
        if ws is None or any(f.severity == "error" for f in validate(ws, loaded)):
            continue
        again = Workspace.model_validate(ws.canonical(), strict=True)
        assert again.canonical() == ws.canonical()
        assert not [f for f in validate(again) if f.severity == "error"]


# Mappings whose model forbids unknown fields (metadata tolerates them; labels and templates are free-form).
STRICT_MAPPINGS = [(), ("resource",), ("resource", "labelSelector"),
                   ("resource", "labelSelector", "matchExpressions", 0), ("inference",), ("inference", "preset"),
                   ("inference", "adapters", 0), ("inference", "adapters", 1, "source")]


@settings(SETTINGS, max_examples=40)
@given(st.lists(mutations, max_size=3), st.sampled_from(STRICT_MAPPINGS))
def test_a_misspelt_field_hides_no_other_problem(changes: list, where: tuple) -> None:
    """However broken the rest is, adding an unknown field adds its own error and changes nothing else."""
    doc: Any = FULL
    for path, action, value in changes:
        try:
            doc = _apply(doc, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue
    with_typo = copy.deepcopy(doc)
    target: Any = with_typo
    for part in where:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return  # the mutations removed or retyped this mapping
    if not isinstance(target, dict):
        return
    target["zzz-typo"] = "x"
    before = triples(findings_of_text(_dump(doc).decode("utf-8")))
    after = triples(findings_of_text(_dump(with_typo).decode("utf-8")))
    typo_path = format_path(where + ("zzz-typo",))
    assert Counter(before) == Counter(t for t in after if t[1] != typo_path)
    assert len(set(after)) == len(after), "a problem is reported twice"
