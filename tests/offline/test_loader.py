"""The loader: positions, did-you-mean, several documents, stdin, and hostile input.

Every finding must carry the file, line, column and field path, all problems
of a file must come back together, and no input may raise.
"""

from __future__ import annotations

import io
import sys
import textwrap

import pytest

from kaitoctl.loader import MAX_DEPTH, MAX_NODES, Finding, format_path, load_bytes, load_file, load_text

VALID = textwrap.dedent("""\
    apiVersion: kaito.sh/v1alpha1
    kind: Workspace
    metadata:
      name: workspace-falcon-7b
    resource:
      instanceType: Standard_NC12s_v3
      labelSelector:
        matchLabels:
          apps: falcon-7b
    inference:
      preset:
        name: falcon-7b
    """)


def formatted(text: str, name: str = "ws.yaml") -> list[str]:
    return [f.format() for doc in load_text(text, name) for f in doc.findings]


def test_valid_document_loads_into_the_model() -> None:
    [doc] = load_text(VALID, "ws.yaml")
    assert doc.findings == [] and doc.ok
    ws = doc.workspace
    assert ws is not None and ws.name == "workspace-falcon-7b" and ws.preset_name == "falcon-7b"
    assert ws.resource.count == 1  # KAITO's CRD default


def test_unknown_field_has_position_path_and_did_you_mean() -> None:
    text = VALID + (
        "  adapters:\n"
        "    - source:\n"
        "        name: adapter-a\n"
        "        image: r.io/a/b:1\n"
        "      strenght: \"0.5\"\n")
    assert formatted(text) == [
        'ws.yaml:17:7: inference.adapters[0].strenght: unknown field "strenght" (did you mean strength?)']


def test_unknown_field_without_close_match_lists_valid_fields() -> None:
    assert formatted(VALID.replace("  preset:", "  zzz: 1\n  preset:")) == [
        'ws.yaml:11:3: inference.zzz: unknown field "zzz": valid fields of inference are preset, template, adapters, config']


def test_all_schema_errors_of_a_document_are_reported_together() -> None:
    text = VALID.replace("  instanceType: Standard_NC12s_v3", "  count: \"2\"\n  instanceType: 12\n  nodes: []")
    assert formatted(text) == [
        'ws.yaml:6:10: resource.count: expected an integer, found a string ("2")',
        "ws.yaml:7:17: resource.instanceType: expected a string, found an integer (12): quote it",
        'ws.yaml:8:3: resource.nodes: unknown field "nodes": valid fields of resource are count, instanceType, '
        "labelSelector, preferredNodes, partition",
    ]


def test_missing_required_field_points_at_its_parent() -> None:
    assert formatted(VALID.replace("    name: falcon-7b\n", "    accessMode: public\n")) == [
        "ws.yaml:12:5: inference.preset.name: required field name is missing"]


def test_wrong_type_of_a_section() -> None:
    assert formatted(VALID.replace("resource:\n", "resource: [1]\nx:\n")) == [
        "ws.yaml:5:11: resource: expected a mapping, found a list",
        'ws.yaml:6:1: x: unknown field "x": valid fields of the top level are apiVersion, kind, metadata, resource, '
        "inference, tuning, status",
    ]


def test_literal_choice_suggests_the_right_case() -> None:
    assert formatted(VALID.replace("    name: falcon-7b", "    name: falcon-7b\n    accessMode: Private")) == [
        'ws.yaml:13:17: inference.preset.accessMode: must be one of public, private; found a string ("Private") '
        "(did you mean private?)"]


def test_spec_key_is_explained() -> None:
    text = "apiVersion: kaito.sh/v1alpha1\nkind: Workspace\nmetadata: {name: x}\nspec:\n  resource: {}\n"
    assert formatted(text) == [
        "ws.yaml:4:1: spec: a Workspace has no spec: key: in KAITO's kaito.sh/v1alpha1 and v1beta1 APIs, resource and "
        "inference sit at the top level, next to metadata; move them out of spec: and remove it"]


@pytest.mark.parametrize("header,expected", [
    ("apiVersion: kaito.sh/v1alpha2\nkind: Workspace\n",
     'ws.yaml:1:13: apiVersion: apiVersion "kaito.sh/v1alpha2" is not supported: kaitoctl reads kaito.sh/v1alpha1 '
     "or kaito.sh/v1beta1 Workspaces; set apiVersion: kaito.sh/v1beta1"),
    ("apiVersion: apps/v1\nkind: Deployment\n",
     'ws.yaml:2:7: kind: expected kind: Workspace, found "Deployment": kaitoctl reads only KAITO Workspace objects '
     "(kaito.sh/v1alpha1 or kaito.sh/v1beta1) and the ConfigMaps and Secrets next to them; remove other objects "
     "from this file"),
    ("kind: Workspace\n", "ws.yaml:1:1: apiVersion: apiVersion is missing: add apiVersion: kaito.sh/v1beta1"),
    ("apiVersion: kaito.sh/v1alpha1\n", "ws.yaml:1:1: kind: kind is missing: add kind: Workspace"),
    ("apiVersion: example.com/v1\nkind: Workspace\n",
     'ws.yaml:1:13: apiVersion: expected apiVersion: kaito.sh/v1alpha1 or kaito.sh/v1beta1, found "example.com/v1"'),
])
def test_identity_errors(header: str, expected: str) -> None:
    body = VALID.split("\n", 2)[2]
    assert formatted(header + body) == [expected]


def test_several_documents_each_with_its_index_and_positions() -> None:
    second = VALID.replace("workspace-falcon-7b", "second").replace("instanceType: Standard_NC12s_v3", "count: x")
    docs = load_text(VALID + "---\n" + second + "---\n", "multi.yaml")
    assert [d.index for d in docs] == [0, 1]
    assert docs[0].ok and docs[1].workspace is None
    assert [f.format() for f in docs[1].findings] == [
        'multi.yaml:19:10: resource.count: expected an integer, found a string ("x")']


def test_empty_documents_are_skipped_like_kubectl() -> None:
    docs = load_text("---\n" + VALID + "---\n---\n", "ws.yaml")
    assert len(docs) == 1 and docs[0].ok


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n---\n"])
def test_file_without_a_document(text: str) -> None:
    assert formatted(text) == [
        "ws.yaml: the file holds no Workspace (it is empty or has only comments): expected a document with "
        "apiVersion: kaito.sh/v1alpha1 and kind: Workspace"]


@pytest.mark.parametrize("text,found", [("just a string\n", 'the value "just a string"'), ("- a\n- b\n", "a list"),
                                        ("42\n", "the value 42")])
def test_non_mapping_documents(text: str, found: str) -> None:
    assert formatted(text) == [
        "ws.yaml:1:1: expected a Workspace (a mapping with apiVersion: kaito.sh/v1alpha1, kind: Workspace, metadata, "
        f"resource and inference), found {found}"]


def test_tabs_are_explained() -> None:
    assert formatted(VALID.replace("  instanceType", "\tinstanceType")) == [
        "ws.yaml:6:1: invalid YAML: found character '\\t' that cannot start any token (while scanning for the next "
        "token): YAML indentation must use spaces, not tabs"]


def test_bad_indentation_is_explained() -> None:
    assert formatted("a: b\n  c: d\n") == [
        "ws.yaml:2:4: invalid YAML: mapping values are not allowed here: check the indentation, or quote a value "
        "that contains ': '"]


def test_a_syntax_error_in_a_later_document_keeps_the_earlier_ones() -> None:
    docs = load_text(VALID + "---\nkey: [unclosed\n", "ws.yaml")
    assert docs[0].ok
    assert [f.format() for f in docs[1].findings] == [
        "ws.yaml:15:1: invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at "
        "line 14, column 6)"]


def test_duplicate_keys_are_errors() -> None:
    assert formatted(VALID + "metadata: {name: other}\n") == [
        'ws.yaml:13:1: metadata: duplicate key "metadata" (first written at line 3): YAML keeps only one of them; '
        "remove the other"]


def test_non_string_keys_are_errors() -> None:
    assert formatted(VALID.replace("apps: falcon-7b", "1: falcon-7b")) == [
        'ws.yaml:9:7: resource.labelSelector.matchLabels: the key "1" is read as an integer (1), not a string: '
        "quote it"]


def test_yaml_merge_keys_and_anchors_work() -> None:
    text = VALID.replace("resource:\n", "resource:\n  <<: &defaults {count: 2}\n")
    [doc] = load_text(text, "ws.yaml")
    assert doc.ok and doc.workspace is not None and doc.workspace.resource.count == 2


def test_custom_tags_are_rejected() -> None:
    assert formatted(VALID.replace("name: falcon-7b", "name: !!binary ZmFsY29u")) == [
        "ws.yaml:12:11: inference.preset.name: unsupported YAML tag 'tag:yaml.org,2002:binary': Workspace values are "
        "plain strings, numbers, booleans, lists and mappings"]


def test_dates_stay_strings() -> None:
    [doc] = load_text(VALID.replace("name: workspace-falcon-7b", "name: workspace\n  creationTimestamp: 2024-07-22"))
    assert doc.data["metadata"]["creationTimestamp"] == "2024-07-22"


def test_billion_laughs_is_stopped() -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    [doc] = load_text("\n".join(levels) + "\n", "bomb.yaml")
    assert doc.workspace is None
    assert [f.format() for f in doc.findings] == [
        f"bomb.yaml:5:1: e: the document expands to more than {MAX_NODES} YAML nodes (through aliases, a 'billion "
        "laughs' file does this): a Workspace needs a few dozen; remove the anchors and aliases"]


def test_recursive_alias_is_stopped() -> None:
    assert formatted("a: &a [*a]\n") == [
        "ws.yaml:1:4: a[0]: an alias refers to a node that contains it (a recursive YAML structure): a Workspace "
        "cannot be infinite"]


def test_deep_nesting_is_stopped() -> None:
    assert formatted("a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n") == [
        f"ws.yaml:1:1: a: nested more than {MAX_DEPTH} levels deep: a Workspace never needs that"]
    # Deeper than the YAML parser's own recursion: still a finding, not a RecursionError.
    assert formatted("[" * 20000) == [
        f"ws.yaml: the YAML is nested too deeply to read (more than {MAX_DEPTH} levels are never needed in a "
        "Workspace)"]


def test_binary_and_encodings() -> None:
    def messages(raw: bytes) -> list[str]:
        return [f.format() for doc in load_bytes(raw, "ws.yaml") for f in doc.findings]

    assert messages(b"\x89PNG\r\n\x1a\n\x00\x00") == [
        "ws.yaml:1:1: the file is not valid UTF-8 (byte 0x89 at line 1, column 1): is it a binary file? Workspace "
        "YAML must be saved as UTF-8"]
    assert messages(b"apiVersion: v1\nname: caf\xe9\n") == [
        "ws.yaml:2:10: the file is not valid UTF-8 (byte 0xe9 at line 2, column 10): is it a binary file? Workspace "
        "YAML must be saved as UTF-8"]
    assert messages(b"a: b\x00c\n") == [
        "ws.yaml:1:5: the file contains a NUL byte at line 1, column 5: is it a binary file? A Workspace is a YAML "
        "text file"]
    assert messages(b"a: \x07\n") == [
        "ws.yaml:1:4: the file contains a control character (U+0007) that YAML does not allow: is it a binary file? "
        "A Workspace is a YAML text file"]
    # A UTF-8 BOM and UTF-16 with a BOM are fine, as YAML allows them.
    assert load_bytes(b"\xef\xbb\xbf" + VALID.encode(), "ws.yaml")[0].ok
    assert load_bytes(VALID.encode("utf-16"), "ws.yaml")[0].ok


def test_huge_strings_are_shortened_in_messages() -> None:
    [finding] = [f for doc in load_text(VALID.replace("count", "x") + "status: " + "z" * 1_000_000 + "\n")
                 for f in doc.findings]
    assert finding.path == "status" and len(finding.message) < 200
    assert "(1000000 characters)" in finding.message


def test_load_file_reads_paths_and_stdin(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(VALID)
    [doc] = load_file(str(path))
    assert doc.ok and doc.file == str(path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(VALID.replace("falcon-7b\n", "x\n").encode())))
    [doc] = load_file("-")
    assert doc.file == "<stdin>" and doc.ok and doc.workspace is not None


@pytest.mark.parametrize("setup,message", [
    (lambda p: p, "no such file"),
    (lambda p: (p.mkdir(), p)[1], "is a directory: give a Workspace YAML file (or - for stdin)"),
])
def test_unreadable_paths_are_findings(tmp_path, setup, message: str) -> None:
    path = setup(tmp_path / "ws.yaml")
    [doc] = load_file(str(path))
    assert doc.workspace is None
    assert [f.format() for f in doc.findings] == [f"{path}: {message}"]


def test_too_large_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("kaitoctl.loader.MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "b" * 2000)
    [doc] = load_file(str(path))
    assert doc.findings[0].message.startswith("file is larger than")


@pytest.mark.parametrize("parts,text", [
    (("inference", "adapters", 1, "strength"), "inference.adapters[1].strength"),
    (("metadata", "labels", "kaito.sh/workspace"), 'metadata.labels["kaito.sh/workspace"]'),
    ((), ""),
])
def test_format_path(parts: tuple, text: str) -> None:
    assert format_path(parts) == text


def test_finding_format() -> None:
    assert Finding("error", "a.b", "bad", "ws.yaml", 3, 7).format() == "ws.yaml:3:7: a.b: bad"
    assert Finding("warning", "", "hm", "ws.yaml", None, None).format() == "ws.yaml: warning: hm"


@pytest.mark.parametrize("number", ["9223372036854775808", "9" * 5000, "0x" + "f" * 5000, "-9223372036854775809"])
def test_integers_beyond_64_bits_are_errors_not_crashes(number: str) -> None:
    shown = number if len(number) <= 58 else number[:56] + f"... ({len(number)} characters)"
    closing = '"' if len(number) <= 58 else ""
    assert formatted(VALID.replace("resource:\n", f"resource:\n  count: {number}\n")) == [
        f'ws.yaml:6:10: resource.count: the integer "{shown}{closing} is out of range: Kubernetes integers are 64-bit']
