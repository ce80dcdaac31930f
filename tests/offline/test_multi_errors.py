"""Documents with several problems at once: schema errors do not hide the rules' findings.

A misspelt field or a wrong type is reported by the schema, and the rules
still run on the rest of the document (the loader's best-effort ``draft``), so
one run of ``kaitoctl validate`` lists every problem of every document. What
the schema rejected is reported once: the rules keep quiet about it and about
what depends on it (a rejected count or instance type reads as its default,
and the GPU arithmetic would be about another node pool).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from kaitoctl.cli import main
from kaitoctl.loader import load_text
from kaitoctl.validate import check_documents

from ._support import DELETE, adapter, findings_of, mutate, to_yaml, triples
from .test_rules import VALID_NAMES

LLAMA_70B = {"name": "llama-2-70b-chat", "accessMode": "private", "presetOptions": {"image": "r.io/me/llama:1"}}
TEMPLATE = {"spec": {"containers": [{"name": "server", "image": "r.io/team/server:1.0"}]}}
STRENGTH_2 = ("Strength value for Adapter '{}' must be between 0 and 1 (found 2): it scales the adapter's weights, "
              "1.0 applies them fully")

LEAD_TEXT = textwrap.dedent("""\
    apiVersion: kaito.sh/v1alpha1
    kind: Workspace
    metadata:
      name: Falcon_7b
    resource:
      count: 0
      instanceType: Standard_NC6s_v3
      labelSelector:
        matchLabels:
          apps: falcon
    inference:
      preset:
        name: falcon-7bb
      adapters:
        - source:
            name: a1
            image: myreg.io/a1:v1
          strenght: "0.5"
        - source:
            name: a2
            image: "bad image"
          strength: "NaN"
    """)
LEAD_FINDINGS = [
    "ws.yaml:4:9: metadata.name: workspace name \"Falcon_7b\" contains upper-case letters, contains characters other "
    "than a-z, 0-9 and '-': it must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter "
    "and ending with a letter or digit, at most 63 characters), because it names the workspace's Service and pods; "
    "for example \"falcon-7b\"",
    "ws.yaml:6:10: resource.count: count must be at least 1, found 0: it is the number of GPU nodes (and of replicas "
    "for presets that are not distributed)",
    "ws.yaml:13:11: inference.preset.name: Unsupported inference preset name falcon-7bb (did you mean falcon-7b?); "
    f"valid names: {VALID_NAMES}",
    'ws.yaml:18:7: inference.adapters[0].strenght: unknown field "strenght" (did you mean strength?)',
    'ws.yaml:21:16: inference.adapters[1].source.image: invalid image reference "bad image"; expected '
    "registry/repository:tag or registry/repository@sha256:<digest>",
    "ws.yaml:22:17: inference.adapters[1].strength: Strength value for Adapter 'a2' must be between 0 and 1: \"NaN\" "
    "is not a finite number",
]


def test_a_misspelt_field_does_not_hide_the_other_problems() -> None:
    report = check_documents(load_text(LEAD_TEXT, "ws.yaml"), "ws.yaml")
    assert [f.format() for f in report.all_findings] == LEAD_FINDINGS
    assert report.workspaces == []  # a document with errors is never handed on as a Workspace


MIXED = [
    ("unknown-field-and-bad-name",
     {"metadata.name": "Bad_Name", "inference.adapters": [{**adapter(), "strenght": "0.5"}]}, [
         ("error", "metadata.name",
          "workspace name \"Bad_Name\" contains upper-case letters, contains characters other than a-z, 0-9 and '-': "
          "it must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter and ending with a "
          "letter or digit, at most 63 characters), because it names the workspace's Service and pods; for example "
          "\"bad-name\""),
         ("error", "inference.adapters[0].strenght", 'unknown field "strenght" (did you mean strength?)')]),
    # A rejected value is reported once: no "metadata.name is required" on top.
    ("name-of-wrong-type-and-count-zero", {"metadata.name": 5, "resource.count": 0}, [
        ("error", "metadata.name", "expected a string, found an integer (5): quote it"),
        ("error", "resource.count", "count must be at least 1, found 0: it is the number of GPU nodes (and of "
                                    "replicas for presets that are not distributed)")]),
    # A distributed preset's GPU fit depends on count: not checked against the default count 1. The
    # preset's name rule still runs.
    ("count-of-wrong-type-distributed", {"resource.count": "two", "inference.preset": LLAMA_70B,
                                         "metadata.name": "w" * 53}, [
        ("error", "metadata.name",
         f'workspace name "{"w" * 53}" is 53 characters long; preset llama-2-70b-chat is distributed and runs as a '
         f"StatefulSet (with a headless Service '{'w' * 53}-headless'), whose pods carry the label "
         "controller-revision-hash=<name>-<hash>: the name can have at most 52 characters"),
        ("error", "resource.count", 'expected an integer, found a string ("two")')]),
    # Not distributed: one node holds the model whatever count is, so the fit is still checked.
    ("count-out-of-range-not-distributed", {"resource.count": 2**70, "resource.instanceType": "Standard_NC6s_v3",
                                            "inference.preset.name": "falcon-40b"}, [
        ("error", "resource.instanceType",
         "Insufficient number of GPUs: Instance type Standard_NC6s_v3 provides 1, but preset falcon-40b requires at "
         "least 2: choose an instance type with more GPUs"),
        ("error", "resource.instanceType",
         "Insufficient total GPU memory: Instance type Standard_NC6s_v3 has a total of 16Gi, but preset falcon-40b "
         "requires at least 90Gi: choose an instance type with more GPU memory"),
        ("error", "resource.count", 'the integer "1180591620717411303424" is out of range: Kubernetes integers are '
                                    "64-bit")]),
    # falcon-40b does not fit the default Standard_NC12s_v3: no GPU fit against a type the user did not choose.
    ("instance-type-of-wrong-type", {"resource.instanceType": 12, "inference.preset.name": "falcon-40b",
                                     "inference.adapters": [adapter(image="adapter")]}, [
        ("error", "resource.instanceType", "expected a string, found an integer (12): quote it"),
        ("error", "inference.adapters[0].source.image",
         'Invalid image format, require full input image URL: "adapter" has no registry or repository path (it '
         "would be pulled from Docker Hub's library/); give the full reference, e.g. "
         "myregistry.azurecr.io/adapters/my-adapter:0.0.1")]),
    # A rejected accessMode reads as public: neither "must be private" nor "image is ignored".
    ("access-mode-misspelt", {"inference.preset": {"name": "llama-2-13b-chat", "accessMode": "Private",
                                                   "presetOptions": {"image": "r.io/me/l:1"}},
                              "inference.adapters": [adapter(image="bad image")]}, [
        ("error", "inference.preset.accessMode",
         'must be one of public, private; found a string ("Private") (did you mean private?)'),
        ("error", "inference.adapters[0].source.image",
         'invalid image reference "bad image"; expected registry/repository:tag or '
         "registry/repository@sha256:<digest>")]),
    # A preset of the wrong shape was still given: no "Preset or Template must be specified".
    ("preset-not-a-mapping", {"inference.preset": "falcon-7b", "inference.adapters": [adapter(strength="2")]}, [
        ("error", "inference.preset", 'expected a mapping, found a string ("falcon-7b")'),
        ("error", "inference.adapters[0].strength", STRENGTH_2.format("adapter-a"))]),
    ("preset-without-name", {"inference.preset": {"accessMode": "public"}}, [
        ("error", "inference.preset.name", "required field name is missing")]),
    ("rejected-preset-and-template", {"inference.preset": {"name": 3}, "inference.template": TEMPLATE,
                                      "inference.adapters": [adapter()]}, [
        ("error", "inference.preset.name", "expected a string, found an integer (3): quote it"),
        ("error", "inference.template", "Preset and Template cannot be set at the same time: keep one of "
                                        "inference.preset and inference.template")]),
    # A rejected list entry keeps its place: the next adapter is still adapters[1], checked and positioned.
    ("adapter-not-a-mapping", {"inference.adapters": [5, adapter("a", strength="2")]}, [
        ("error", "inference.adapters[0]", "expected a mapping, found an integer (5)"),
        ("error", "inference.adapters[1].strength", STRENGTH_2.format("a"))]),
    ("adapter-source-not-a-mapping", {"inference.adapters": [{"source": "x", "strength": "2"}]}, [
        ("error", "inference.adapters[0].source", 'expected a mapping, found a string ("x")'),
        ("error", "inference.adapters[0].strength", STRENGTH_2.format("0"))]),
    ("strength-boolean-and-duplicate-names", {"inference.adapters": [adapter("a", strength=True), adapter("a")]}, [
        ("error", "inference.adapters[0].strength", "expected a string, found a boolean (true): quote it"),
        ("error", "inference.adapters[1].source.name",
         "Duplicate adapter source name found: a (also adapter 0): adapter names must be unique")]),
    # The rejected expression still selects something: no "labelSelector is empty"; the next one is checked.
    ("expression-operator-misspelt", {"resource.labelSelector": {"matchExpressions": [
        {"key": "gpu", "operator": "Inn", "values": ["v100"]}, {"key": "Bad Key", "operator": "Exists"}]}}, [
        ("error", "resource.labelSelector.matchExpressions[0].operator",
         'must be one of In, NotIn, Exists, DoesNotExist; found a string ("Inn") (did you mean In?)'),
        ("note", "resource.labelSelector.matchExpressions[1]",
         "matchExpressions with operator Exists is honoured by kaitoctl (node affinity and preflight), but KAITO's "
         "webhook rejects it (\"Only allow matchLabels or 'IN' matchExpression\" with one value): not portable to "
         "KAITO"),
        ("error", "resource.labelSelector.matchExpressions[1].key",
         "invalid label key \"Bad Key\": the name part must be 1-63 characters of letters, digits, '-', '_' and '.', "
         "starting and ending with a letter or digit")]),
    ("preferred-node-of-wrong-type", {"resource.preferredNodes": ["ok", 5, "Bad_Node"]}, [
        ("error", "resource.preferredNodes[1]", "expected a string, found an integer (5): quote it"),
        ("error", "resource.preferredNodes[2]",
         "\"Bad_Node\" is not a valid node name (a DNS subdomain: lower-case letters, digits, '-' and '.')")]),
    ("labels-of-wrong-type", {"metadata.labels": {"team": 5, "bad key!": "x"},
                              "resource.labelSelector.matchLabels": {"apps": ["x"]}}, [
        ("error", "metadata.labels.team", "expected a string, found an integer (5): quote it"),
        ("error", 'metadata.labels["bad key!"]',
         "invalid label key \"bad key!\": the name part must be 1-63 characters of letters, digits, '-', '_' and '.', "
         "starting and ending with a letter or digit"),
        ("error", "resource.labelSelector.matchLabels.apps", "expected a string, found a list")]),
    # A whole section rejected: nothing about its fields (labelSelector, instanceType), the rest checked.
    ("resource-not-a-mapping", {"resource": [1], "inference.preset.name": "falcon-7bb"}, [
        ("error", "resource", "expected a mapping, found a list"),
        ("error", "inference.preset.name", "Unsupported inference preset name falcon-7bb (did you mean falcon-7b?); "
                                           f"valid names: {VALID_NAMES}")]),
    ("inference-not-a-mapping", {"inference": "x", "metadata.namespace": "Bad"}, [
        ("error", "metadata.namespace",
         "namespace \"Bad\" contains upper-case letters: it must be a DNS-1123 label (lower-case letters, digits and "
         "'-', starting and ending with a letter or digit, at most 63 characters); for example \"bad\""),
        ("error", "inference", 'expected a mapping, found a string ("x")')]),
    ("tuning-not-a-mapping", {"inference": DELETE, "tuning": 5}, [
        ("error", "tuning", "expected a mapping, found an integer (5)")]),
]


@pytest.mark.parametrize("changes,expected", [(c, e) for _, c, e in MIXED], ids=[i for i, _, _ in MIXED])
def test_schema_and_rule_findings_together(changes: dict, expected: list) -> None:
    assert triples(findings_of(mutate(changes))) == expected


def test_yaml_problems_do_not_hide_the_rules_either() -> None:
    text = to_yaml(mutate({"resource.count": 0})) + "metadata: {name: other}\n"
    assert triples(check_documents(load_text(text, "ws.yaml"), "ws.yaml").all_findings) == [
        ("error", "resource.count", "count must be at least 1, found 0: it is the number of GPU nodes (and of "
                                    "replicas for presets that are not distributed)"),
        ("error", "metadata", 'duplicate key "metadata" (first written at line 3): YAML keeps only one of them; '
                              "remove the other"),
    ]


DRAFTS = [
    ("valid", {}, set()),
    ("unknown-field", {"inference.adapters": [{**adapter(), "strenght": "0.5"}]},
     {("inference", "adapters", 0, "strenght")}),
    ("list-entry-becomes-blank", {"inference.adapters": [5, adapter("b")]}, {("inference", "adapters", 0)}),
    ("required-field-takes-its-parent", {"inference.preset.name": 3},
     {("inference", "preset", "name"), ("inference", "preset")}),
    ("literal-in-list-entry", {"resource.labelSelector.matchExpressions": [{"key": "k", "operator": "Inn"}]},
     {("resource", "labelSelector", "matchExpressions", 0, "operator"),
      ("resource", "labelSelector", "matchExpressions", 0)}),
]


@pytest.mark.parametrize("changes,dropped", [(c, d) for _, c, d in DRAFTS], ids=[i for i, _, _ in DRAFTS])
def test_draft_drops_only_what_the_schema_rejected(changes: dict, dropped: set) -> None:
    [doc] = load_text(to_yaml(mutate(changes)), "ws.yaml")
    assert doc.draft is not None and set(doc.dropped) == dropped
    assert (doc.workspace is doc.draft) == (not dropped)
    if ("inference", "adapters", 0) in dropped:
        assert [a.name for a in doc.draft.adapters] == ["", "b"]  # later entries keep their index


def test_no_draft_for_other_kinds_of_object() -> None:
    [doc] = load_text(to_yaml(mutate({"kind": "Deployment", "metadata.name": "Bad_Name"})), "ws.yaml")
    assert doc.draft is None and len(doc.findings) == 1


SEVERAL = textwrap.dedent("""\
    apiVersion: kaito.sh/v1alpha1
    kind: Workspace
    metadata: {name: ws-a}
    resource: {instanceType: Standard_NC12s_v3, labelSelector: {matchLabels: {apps: a}}}
    inference: {preset: {name: falcon-7b}}
    ---
    apiVersion: kaito.sh/v1alpha1
    kind: Workspace
    metadata: {name: ws-b}
    resource: {count: 0, instanceType: Standard_NC12s_v3, labelSelector: {matchLabels: {apps: b}}, gpus: 2}
    inference: {preset: {name: falcon-7b}}
    ---
    apiVersion: kaito.sh/v1alpha1
    kind: Workspace
    metadata: {name: ws-a}
    resource: {instanceType: Standard_NC12s_v3, labelSelector: {matchLabels: {apps: a}}}
    inference:
      preset: {name: falcon-7b}
      adapters:
      - {source: {name: x, image: r.io/a/x:1}, strength: true}
    ---
    apiVersion: kaito.sh/v1alpha1
    kind: Workspace
    metadata: {name: ws-a, namespace: [llm]}
    resource: {instanceType: Standard_NC12s_v3, labelSelector: {matchLabels: {apps: a}}}
    inference: {preset: {name: falcon-7b}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: Not_Checked}
    """)
SEVERAL_FINDINGS = [
    "multi.yaml:10:19: resource.count: count must be at least 1, found 0: it is the number of GPU nodes (and of "
    "replicas for presets that are not distributed)",
    'multi.yaml:10:96: resource.gpus: unknown field "gpus": valid fields of resource are count, instanceType, '
    "labelSelector, preferredNodes, partition",
    # Checked across documents even though document 3 has a schema error of its own.
    "multi.yaml:15:18: metadata.name: workspace ws-a is defined twice in this file (documents 1 and 3): give each a "
    "different name",
    "multi.yaml:20:54: inference.adapters[0].strength: expected a string, found a boolean (true): quote it",
    # A rejected namespace: which namespace this ws-a lands in is unknown, so no "defined twice".
    "multi.yaml:24:35: metadata.namespace: expected a string, found a list",
    # Other kinds of object are not checked further (their metadata.name is not a workspace name).
    'multi.yaml:29:7: kind: expected kind: Workspace, found "Deployment": kaitoctl reads only KAITO Workspace '
    "objects (kaito.sh/v1alpha1 or kaito.sh/v1beta1) and the ConfigMaps and Secrets next to them; remove other "
    "objects from this file",
]


def test_every_document_reports_all_its_problems() -> None:
    report = check_documents(load_text(SEVERAL, "multi.yaml"), "multi.yaml")
    assert [f.format() for f in report.all_findings] == SEVERAL_FINDINGS
    assert [ws.name for ws in report.workspaces] == ["ws-a"]


def test_validate_command_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(LEAD_TEXT)
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "-f", str(path)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 3 and out == ""
    assert err.splitlines()[0] == f"kaitoctl: error: {path} is not a valid Workspace file: 6 errors"
    assert [line.strip() for line in err.splitlines()[1:-1]] == [
        line.replace("ws.yaml", str(path), 1) for line in LEAD_FINDINGS]

    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "-f", str(path), "-o", "json"])
    out, _ = capsys.readouterr()
    [document] = json.loads(out)["documents"]
    assert exit_info.value.code == 3
    assert document["name"] == "Falcon_7b" and document["valid"] is False and document["summary"] is None
    assert [(f["line"], f["column"], f["path"]) for f in document["findings"]] == [
        (4, 9, "metadata.name"), (6, 10, "resource.count"), (13, 11, "inference.preset.name"),
        (18, 7, "inference.adapters[0].strenght"), (21, 16, "inference.adapters[1].source.image"),
        (22, 17, "inference.adapters[1].strength")]
