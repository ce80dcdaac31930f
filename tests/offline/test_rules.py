"""Table-driven tests of every validation rule: the exact findings (severity, field path, message).

Each case mutates a valid base Workspace (falcon-7b on Standard_NC12s_v3, no
findings at all) and lists every finding the mutation must produce, no more.
KAITO's own message texts are kept where KAITO has the rule (kaito-facts §2).
"""

from __future__ import annotations

import pytest

from ._support import BASE, DELETE, adapter, findings_of, mutate, triples

URL_ADAPTERS = ("URL adapters are not supported (by KAITO either): package the adapter in an image under /data and "
                "set source.image, or put it on a volume and set source.volumeSource")
HEX64 = "0123456789abcdef" * 4
VALID_NAMES = ("falcon-7b, falcon-7b-instruct, falcon-40b, falcon-40b-instruct, mistral-7b, mistral-7b-instruct, "
               "phi-2, phi-3-mini-4k-instruct, phi-3-mini-128k-instruct, phi-3-medium-4k-instruct, "
               "phi-3-medium-128k-instruct, llama-2-7b, llama-2-7b-chat, llama-2-13b, llama-2-13b-chat, "
               "llama-2-70b, llama-2-70b-chat, "
               # today's presets (kaito-2026-facts)
               "llama-3.1-8b-instruct, llama-3.3-70b-instruct, deepseek-r1-0528, deepseek-v3-0324, ministral-3-3b-instruct, ministral-3-8b-instruct, ministral-3-14b-instruct, mistral-large-3-675b-instruct, phi-3.5-mini-instruct, phi-4-mini-instruct, phi-4, qwen2.5-coder-7b-instruct, qwen2.5-coder-32b-instruct, deepseek-r1-distill-qwen-14b, deepseek-r1-distill-llama-8b, gemma-3-4b-instruct, gemma-3-27b-instruct, gpt-oss-20b, gpt-oss-120b")
NOT_PORTABLE = ("strength is not portable to KAITO's vLLM runtime (it rejects adapter strength; KAITO's "
                "transformers runtime and kaitoctl honour it)")
TEMPLATE = {"spec": {"containers": [{"name": "server", "image": "r.io/team/server:1.0"}]}}
LLAMA_13B = {"name": "llama-2-13b-chat", "accessMode": "private", "presetOptions": {"image": "r.io/me/llama:1"}}


def _expr_warning(op: str, extra: str = "") -> str:
    return (f"matchExpressions with operator {op}{extra} is honoured by kaitoctl (node affinity and preflight), but "
            "KAITO's webhook rejects it (\"Only allow matchLabels or 'IN' matchExpression\" with one value): not "
            "portable to KAITO")


def test_base_workspace_has_no_findings() -> None:
    assert findings_of(BASE) == []


ACCEPTED = [
    ("two-adapters-full-strength", {"inference.adapters": [adapter("a"), adapter("b")]}),
    ("strength-zero-and-one", {"inference.adapters": [adapter("a", strength="1"), adapter("b", strength="1.0")]}),
    ("strength-omitted-defaults-to-1", {"inference.adapters": [adapter(strength=None)]}),
    ("image-digest", {"inference.adapters": [adapter(image=f"r.io/a/b@sha256:{HEX64}")]}),
    ("image-tag-and-digest", {"inference.adapters": [adapter(image=f"r.io/a/b:1@sha256:{HEX64}")]}),
    ("image-registry-port", {"inference.adapters": [adapter(image="localhost:5000/a/b:1")]}),
    ("image-docker-hub-user", {"inference.adapters": [adapter(image="someuser/adapter:v1")]}),
    ("adapter-pull-secrets", {"inference.adapters": [adapter(imagePullSecrets=["acr-secret"])]}),
    ("count-2", {"resource.count": 2}),
    ("in-expression-one-value", {"resource.labelSelector.matchExpressions": [
        {"key": "gpu", "operator": "In", "values": ["v100"]}]}),
    ("only-expressions", {"resource.labelSelector": {"matchExpressions": [
        {"key": "gpu", "operator": "In", "values": ["v100"]}]}}),
    ("preferred-nodes", {"resource.preferredNodes": ["aks-gpu-1", "node.example.com"]}),
    ("name-63-characters", {"metadata.name": "w" * 63}),
    ("distributed-name-52-characters", {"metadata.name": "w" * 52, "inference.preset": LLAMA_13B}),
    ("namespace-labels-annotations", {"metadata.namespace": "llm", "metadata.labels": {"team": "ml"},
                                      "metadata.annotations": {"kaito.sh/enablelb": "True"}}),
    ("server-side-metadata-tolerated", {"metadata.uid": "1234", "metadata.resourceVersion": "42",
                                        "metadata.creationTimestamp": "2024-07-22T00:00:00Z"}),
    ("status-ignored", {"status": {"conditions": []}}),
    ("private-llama-with-image", {"inference.preset": {"name": "llama-2-7b", "accessMode": "private",
                                                       "presetOptions": {"image": "r.io/me/llama-2-7b:0.0.3",
                                                                         "imagePullSecrets": ["regcred"]}}}),
    ("private-mode-on-public-preset", {"inference.preset": {"name": "falcon-7b", "accessMode": "private",
                                                            "presetOptions": {"image": "r.io/me/falcon:1"}}}),
    ("template-workspace", {"inference.preset": DELETE, "inference.template": TEMPLATE}),
    ("phi-3-mini-on-one-t4", {"inference.preset.name": "phi-3-mini-4k-instruct",
                                                     "resource.instanceType": "Standard_NC4as_T4_v3"}),
]


@pytest.mark.parametrize("changes", [c for _, c in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_accepted_without_findings(changes: dict) -> None:
    assert triples(findings_of(mutate(changes))) == []


REJECTED = [
    # §2.1 top level
    ("neither-inference-nor-tuning", {"inference": DELETE}, [
        ("error", "", "Either Inference or Tuning must be specified, not neither: add an inference: section with a "
                      "preset (kaitoctl presets list) or a pod template")]),
    ("tuning-not-supported", {"inference": DELETE, "tuning": {"method": "lora"}}, [
        ("error", "tuning", "tuning is not supported by kaitoctl: it runs inference workspaces only; run tuning jobs "
                            "with KAITO itself")]),
    ("tuning-and-inference", {"tuning": {"method": "lora"}}, [
        ("error", "tuning", "Either Inference or Tuning must be specified, but not both: remove tuning: (kaitoctl "
                            "runs inference workspaces only)")]),
    # §2.3 inference
    ("neither-preset-nor-template", {"inference.preset": DELETE}, [
        ("error", "inference", "Preset or Template must be specified: add inference.preset.name (see kaitoctl "
                               "presets list) or an inference.template pod template")]),
    ("preset-and-template", {"inference.template": TEMPLATE}, [
        ("error", "inference.template", "Preset and Template cannot be set at the same time: keep one of "
                                        "inference.preset and inference.template")]),
    ("unknown-preset-lists-valid-names", {"inference.preset.name": "falcon-8b"}, [
        ("error", "inference.preset.name", "Unsupported inference preset name falcon-8b (did you mean falcon-7b?); "
                                           f"valid names: {VALID_NAMES}")]),
    ("preset-names-are-case-sensitive", {"inference.preset.name": "Falcon-7B"}, [
        ("error", "inference.preset.name", "Unsupported inference preset name Falcon-7B (did you mean falcon-7b?); "
                                           f"valid names: {VALID_NAMES}")]),
    ("preset-name-empty", {"inference.preset.name": ""}, [
        ("error", "inference.preset.name", f"preset name must not be empty; valid names: {VALID_NAMES}")]),
    ("private-preset-needs-private-mode", {"inference.preset.name": "llama-2-7b"}, [
        ("error", "inference.preset.accessMode",
         "This preset only supports private AccessMode, AccessMode must be private to continue: llama-2-7b's weights "
         "are not redistributable; build its image, then set accessMode: private and presetOptions.image")]),
    ("private-mode-needs-image", {"inference.preset": {"name": "llama-2-7b", "accessMode": "private"}}, [
        ("error", "inference.preset.presetOptions.image",
         "When AccessMode is private, an image must be provided in PresetOptions: set presetOptions.image to the "
         "image you built (e.g. myregistry.azurecr.io/llama-2-7b:0.0.3)")]),
    ("public-mode-ignores-image", {"inference.preset.presetOptions": {"image": "r.io/x/y:1"}}, [
        ("warning", "inference.preset.presetOptions.image",
         "presetOptions.image is ignored when accessMode is public (as in KAITO): set accessMode: private to run "
         "this image")]),
    ("private-image-and-secret-checked", {"inference.preset": {
        "name": "llama-2-7b", "accessMode": "private",
        "presetOptions": {"image": "R.io/X/Y:1", "imagePullSecrets": ["ok", "Bad_Secret"]}}}, [
        ("error", "inference.preset.presetOptions.image",
         'invalid image reference "R.io/X/Y:1": repository names must be lower-case; expected '
         "registry/repository:tag or registry/repository@sha256:<digest>"),
        ("error", "inference.preset.presetOptions.imagePullSecrets[1]",
         "image pull secret name \"Bad_Secret\" is not a valid Secret name (a DNS subdomain: lower-case letters, "
         "digits, '-' and '.')")]),
    ("template-needs-containers", {"inference.preset": DELETE, "inference.template": {"spec": {}}}, [
        ("error", "inference.template.spec",
         "template.spec.containers must list at least one container (with a name and an image)")]),
    ("template-needs-spec", {"inference.preset": DELETE, "inference.template": {"metadata": {}}}, [
        ("error", "inference.template",
         "template must be a pod template with spec.containers (at least one container with a name and an image)")]),
    ("template-container-needs-image", {"inference.preset": DELETE,
                                        "inference.template": {"spec": {"containers": [{"name": "server"}]}}}, [
        ("error", "inference.template.spec.containers[0]", "container image is required")]),
    ("template-with-adapters", {"inference.preset": DELETE, "inference.template": TEMPLATE,
                                "inference.adapters": [adapter()]}, [
        ("error", "inference.adapters", "adapters need a preset: with a custom pod template kaitoctl runs your pod "
                                        "as written and cannot load adapters into it")]),
    # §2.2 resource
    ("count-zero", {"resource.count": 0}, [
        ("error", "resource.count", "count must be at least 1, found 0: it is the number of GPU nodes (and of "
                                    "replicas for presets that are not distributed)")]),
    ("count-negative", {"resource.count": -2}, [
        ("error", "resource.count", "count must be at least 1, found -2: it is the number of GPU nodes (and of "
                                    "replicas for presets that are not distributed)")]),
    ("count-beyond-int32", {"resource.count": 2**31}, [
        ("error", "resource.count", "count 2147483648 is larger than Kubernetes' replica limit (2147483647)")]),
    ("instance-type-defaulted", {"resource.instanceType": DELETE}, [
        ("warning", "resource", "resource.instanceType is not set: KAITO's default Standard_NC12s_v3 (2 × NVIDIA "
                                "V100) is assumed; set it to the instance type of your GPU nodes")]),
    ("instance-type-empty-is-your-own-nodes", {"resource.instanceType": ""}, [
        ("note", "resource.instanceType", "instanceType is empty: your own GPU nodes (no auto-provisioning); the GPU "
                                          "fit is checked by the preflight from the nodes' GPU Feature Discovery "
                                          "labels (nvidia.com/gpu.product, gpu.count, gpu.memory)")]),
    ("unknown-instance-type-is-a-warning", {"resource.instanceType": "Standard_XYZ"}, [
        ("warning", "resource.instanceType", "instance type \"Standard_XYZ\" is not in kaitoctl's catalog, so the GPU "
                                             "fit is unchecked here (the preflight checks the nodes' GPUs against the "
                                             "cluster); see kaitoctl skus list")]),
    ("instance-type-wrong-case", {"resource.instanceType": "standard_nc12s_v3"}, [
        ("warning", "resource.instanceType", "instance type \"standard_nc12s_v3\" is not in kaitoctl's catalog, so "
                                             "the GPU fit is unchecked here (the preflight checks the nodes' GPUs "
                                             "against the cluster); did you mean Standard_NC12s_v3?")]),
    ("instance-type-not-a-label-value", {"resource.instanceType": "Standard NC12s v3"}, [
        ("error", "resource.instanceType",
         "instance type \"Standard NC12s v3\" cannot match any node: nodes carry it in the label "
         "node.kubernetes.io/instance-type, and a label value must be at most 63 characters of letters, digits, "
         "'-', '_' and '.', starting and ending with a letter or digit (or empty)")]),
    ("label-selector-missing", {"resource.labelSelector": DELETE}, [
        ("error", "resource.labelSelector", "labelSelector is required (KAITO's CRD requires it): it selects the GPU "
                                            "nodes to run on, e.g. labelSelector: {matchLabels: {apps: falcon-7b}}")]),
    ("label-selector-empty", {"resource.labelSelector": {}}, [
        ("error", "resource.labelSelector", "labelSelector is empty: an empty selector matches every node in the "
                                            "cluster; add matchLabels (or matchExpressions) that select your GPU "
                                            "nodes")]),
    ("label-selector-empty-lists", {"resource.labelSelector": {"matchLabels": {}, "matchExpressions": []}}, [
        ("error", "resource.labelSelector", "labelSelector is empty: an empty selector matches every node in the "
                                            "cluster; add matchLabels (or matchExpressions) that select your GPU "
                                            "nodes")]),
    ("match-labels-syntax", {"resource.labelSelector.matchLabels": {"-bad": "x y"}}, [
        ("error", 'resource.labelSelector.matchLabels["-bad"]',
         "invalid label key \"-bad\": the name part must be 1-63 characters of letters, digits, '-', '_' and '.', "
         "starting and ending with a letter or digit"),
        ("error", 'resource.labelSelector.matchLabels["-bad"]',
         "invalid value \"x y\" for label -bad: a label value must be at most 63 characters of letters, digits, '-', "
         "'_' and '.', starting and ending with a letter or digit (or empty)")]),
    ("in-needs-values", {"resource.labelSelector.matchExpressions": [{"key": "gpu", "operator": "In"}]}, [
        ("error", "resource.labelSelector.matchExpressions[0].values",
         "values must be given (at least one) when operator is In")]),
    ("notin-needs-values", {"resource.labelSelector.matchExpressions": [
        {"key": "gpu", "operator": "NotIn", "values": []}]}, [
        ("error", "resource.labelSelector.matchExpressions[0].values",
         "values must be given (at least one) when operator is NotIn")]),
    ("exists-takes-no-values", {"resource.labelSelector.matchExpressions": [
        {"key": "gpu", "operator": "Exists", "values": ["a"]}]}, [
        ("error", "resource.labelSelector.matchExpressions[0].values",
         "values must be empty when operator is Exists: remove them")]),
    ("unknown-operator", {"resource.labelSelector.matchExpressions": [
        {"key": "gpu", "operator": "in", "values": ["a"]}]}, [
        ("error", "resource.labelSelector.matchExpressions[0].operator",
         'must be one of In, NotIn, Exists, DoesNotExist; found a string ("in") (did you mean In?)')]),
    ("exists-is-honoured-but-not-portable", {"resource.labelSelector.matchExpressions": [
        {"key": "gpu", "operator": "Exists"}]}, [
        ("note", "resource.labelSelector.matchExpressions[0]", _expr_warning("Exists"))]),
    ("doesnotexist-is-honoured-but-not-portable", {"resource.labelSelector.matchExpressions": [
        {"key": "spot", "operator": "DoesNotExist"}]}, [
        ("note", "resource.labelSelector.matchExpressions[0]", _expr_warning("DoesNotExist"))]),
    ("notin-is-honoured-but-not-portable", {"resource.labelSelector.matchExpressions": [
        {"key": "gpu", "operator": "NotIn", "values": ["k80"]}]}, [
        ("note", "resource.labelSelector.matchExpressions[0]", _expr_warning("NotIn"))]),
    ("in-with-two-values-not-portable", {"resource.labelSelector.matchExpressions": [
        {"key": "gpu", "operator": "In", "values": ["a", "b"]}]}, [
        ("note", "resource.labelSelector.matchExpressions[0]", _expr_warning("In", " and 2 values"))]),
    ("preferred-nodes-checked", {"resource.preferredNodes": ["node-1", "Node_2", "node-1"]}, [
        ("error", "resource.preferredNodes[1]",
         "\"Node_2\" is not a valid node name (a DNS subdomain: lower-case letters, digits, '-' and '.')"),
        ("warning", "resource.preferredNodes[2]", 'node "node-1" is listed twice')]),
    # names (§2.6: KAITO does not check them)
    ("workspace-name-required", {"metadata.name": DELETE}, [
        ("error", "metadata.name", "metadata.name is required: name the workspace (it names its Service and pods), "
                                   "e.g. workspace-falcon-7b")]),
    ("workspace-name-upper-case", {"metadata.name": "Falcon"}, [
        ("error", "metadata.name",
         "workspace name \"Falcon\" contains upper-case letters: it must be a DNS-1035 label (lower-case letters, "
         "digits and '-', starting with a letter and ending with a letter or digit, at most 63 characters), because "
         "it names the workspace's Service and pods; for example \"falcon\"")]),
    ("workspace-name-starts-with-digit", {"metadata.name": "7b-falcon"}, [
        ("error", "metadata.name",
         "workspace name \"7b-falcon\" does not start with a letter: it must be a DNS-1035 label (lower-case letters, "
         "digits and '-', starting with a letter and ending with a letter or digit, at most 63 characters), because "
         "it names the workspace's Service and pods; for example \"b-falcon\"")]),
    ("workspace-name-64-characters", {"metadata.name": "w" * 64}, [
        ("error", "metadata.name",
         f"workspace name \"{'w' * 56}... (64 characters) is 64 characters long (at most 63): it must be a DNS-1035 "
         "label (lower-case letters, digits and '-', starting with a letter and ending with a letter or digit, at "
         "most 63 characters), because it names the workspace's Service and pods; for example "
         f"\"{'w' * 56}... (63 characters)")]),
    ("distributed-name-53-characters", {"metadata.name": "w" * 53, "inference.preset": LLAMA_13B}, [
        ("error", "metadata.name",
         f"workspace name \"{'w' * 53}\" is 53 characters long; preset llama-2-13b-chat is distributed and runs as a "
         f"StatefulSet (with a headless Service '{'w' * 53}-headless'), whose pods carry the label "
         "controller-revision-hash=<name>-<hash>: the name can have at most 52 characters")]),
    ("namespace-syntax", {"metadata.namespace": "My_NS"}, [
        ("error", "metadata.namespace",
         "namespace \"My_NS\" contains upper-case letters, contains characters other than a-z, 0-9 and '-': "
         "it must be a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or "
         "digit, at most 63 characters); for example \"my-ns\"")]),
    ("metadata-typo", {"metadata.nmae": "x"}, [
        ("error", "metadata.nmae", 'unknown field "nmae" (did you mean name?)')]),
    ("label-value-too-long", {"metadata.labels": {"app": "x" * 64}}, [
        ("error", "metadata.labels.app",
         f"invalid value \"{'x' * 56}... (64 characters) for label app: a label value must be at most 63 characters "
         "of letters, digits, '-', '_' and '.', starting and ending with a letter or digit (or empty)")]),
    ("enablelb-exact-value", {"metadata.annotations": {"kaito.sh/enablelb": "true"}}, [
        ("warning", 'metadata.annotations["kaito.sh/enablelb"]',
         'kaito.sh/enablelb is "true": KAITO makes the Service a LoadBalancer only for the exact value "True"')]),
    ("api-key-secret-name", {"metadata.annotations": {"kaitoctl.io/api-key-secret": "Not A Secret"}}, [
        ("error", 'metadata.annotations["kaitoctl.io/api-key-secret"]',
         'kaitoctl.io/api-key-secret must name a Secret in the workspace\'s namespace (a DNS subdomain), found '
         '"Not A Secret"')]),
    # §2.3/§2.4 adapters (checked on create too)
    ("more-than-10-adapters", {"inference.adapters": [adapter(f"a{i}") for i in range(11)]}, [
        ("error", "inference.adapters",
         "Number of Adapters exceeds the maximum limit, maximum of 10 allowed (found 11)")]),
    ("duplicate-adapter-names", {"inference.adapters": [adapter("a"), adapter("a")]}, [
        ("error", "inference.adapters[1].source.name",
         "Duplicate adapter source name found: a (also adapter 0): adapter names must be unique")]),
    ("adapter-without-source", {"inference.adapters": [{"strength": "1.0"}]}, [
        ("error", "inference.adapters[0]", "adapter has no source: give source.name and source.image")]),
    ("adapter-without-name", {"inference.adapters": [adapter(None)]}, [
        ("error", "inference.adapters[0].source.name", "Name of Adapter field must be specified")]),
    ("adapter-name-not-a-label", {"inference.adapters": [adapter("Adapter.One")]}, [
        ("error", "inference.adapters[0].source.name",
         "Name of Adapter must be a valid DNS subdomain value: adapter name \"Adapter.One\" contains upper-case "
         "letters, contains characters other than a-z, 0-9 and '-': it must be a DNS-1123 label (lower-case "
         "letters, digits and '-', starting and ending with a letter or digit, at most 63 characters), because it "
         "names the adapter's init container and its directory; for example \"adapter-one\"")]),
    ("adapter-name-64-characters", {"inference.adapters": [adapter("a" * 64)]}, [
        ("error", "inference.adapters[0].source.name",
         f"Name of Adapter must be a valid DNS subdomain value: adapter name \"{'a' * 56}... (64 characters) is 64 "
         "characters long (at most 63): it must be a DNS-1123 label (lower-case letters, digits and '-', starting "
         "and ending with a letter or digit, at most 63 characters), because it names the adapter's init container "
         f"and its directory; for example \"{'a' * 56}... (63 characters)")]),
    ("adapter-named-like-workspace", {"inference.adapters": [adapter("ws-falcon")]}, [
        ("error", "inference.adapters[0].source.name",
         "adapter name \"ws-falcon\" is the workspace's name, which the main container uses: rename the adapter")]),
    ("adapter-name-reserved", {"inference.adapters": [adapter("kaitoctl-copy-tool")]}, [
        ("error", "inference.adapters[0].source.name",
         "adapter name \"kaitoctl-copy-tool\" is reserved: kaitoctl names one of its own init containers so; rename "
         "the adapter")]),
    ("adapter-without-image", {"inference.adapters": [{"source": {"name": "a"}}]}, [
        ("error", "inference.adapters[0].source.image",
         "Image of Adapter field must be specified: the image that holds the adapter files under /data")]),
    ("adapter-image-empty", {"inference.adapters": [adapter(image="")]}, [
        ("error", "inference.adapters[0].source.image",
         "Image of Adapter field must be specified: the image that holds the adapter files under /data")]),
    ("adapter-image-without-repository", {"inference.adapters": [adapter(image="adapter:1.0")]}, [
        ("error", "inference.adapters[0].source.image",
         "Invalid image format, require full input image URL: \"adapter:1.0\" has no registry or repository path (it "
         "would be pulled from Docker Hub's library/); give the full reference, e.g. "
         "myregistry.azurecr.io/adapters/my-adapter:0.0.1")]),
    ("adapter-image-without-tag", {"inference.adapters": [adapter(image="r.io/a/b")]}, [
        ("warning", "inference.adapters[0].source.image",
         "image \"r.io/a/b\" has no tag or digest, so Kubernetes pulls :latest, which can change under a running "
         "workspace: pin a tag or a digest")]),
    ("adapter-image-upper-case", {"inference.adapters": [adapter(image="r.io/A/b:1")]}, [
        ("error", "inference.adapters[0].source.image",
         "invalid image reference \"r.io/A/b:1\": repository names must be lower-case; expected "
         "registry/repository:tag or registry/repository@sha256:<digest>")]),
    ("adapter-image-with-scheme", {"inference.adapters": [adapter(image="https://r.io/a/b:1")]}, [
        ("error", "inference.adapters[0].source.image",
         "invalid image reference \"https://r.io/a/b:1\": give the reference without a scheme (no https://); "
         "expected registry/repository:tag or registry/repository@sha256:<digest>")]),
    ("adapter-urls", {"inference.adapters": [{"source": {"name": "a", "urls": ["https://x"]}}]}, [
        ("error", "inference.adapters[0].source.urls", URL_ADAPTERS)]),
    ("adapter-volume-empty-dir", {"inference.adapters": [{"source": {"name": "a", "volumeSource": {"emptyDir": {}}}}]},
     [("error", "inference.adapters[0].source.volumeSource",
       "an emptyDir holds no adapter files: use a volume with the adapter in it (a PersistentVolumeClaim, a CSI "
       "volume, ...)")]),
    ("adapter-volume-pvc", {"inference.adapters": [
        {"source": {"name": "a", "volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}}}}]}, []),
    ("adapter-volume-two-sources", {"inference.adapters": [
        {"source": {"name": "a", "volumeSource": {"persistentVolumeClaim": {"claimName": "x"}, "nfs": {}}}}]},
     [("error", "inference.adapters[0].source.volumeSource",
       "volumeSource must be one Kubernetes volume source, e.g. {persistentVolumeClaim: {claimName: my-adapters}}; "
       "it is mounted at /mnt/adapter/a")]),
    ("adapter-image-and-urls", {"inference.adapters": [adapter(urls=["https://x"])]}, [
        ("error", "inference.adapters[0].source",
         "Exactly one of URLs, Volume, or Image must be specified (found urls, image): keep one of source.image and "
         "source.volumeSource"),
        ("error", "inference.adapters[0].source.urls", URL_ADAPTERS)]),
    ("adapter-pull-secret-duplicate", {"inference.adapters": [adapter(imagePullSecrets=["s", "s"])]}, [
        ("warning", "inference.adapters[0].source.imagePullSecrets[1]", 'image pull secret "s" is listed twice')]),
    # strength
    ("strength-nan", {"inference.adapters": [adapter(strength="NaN")]}, [
        ("error", "inference.adapters[0].strength",
         "Strength value for Adapter 'adapter-a' must be between 0 and 1: \"NaN\" is not a finite number")]),
    ("strength-inf", {"inference.adapters": [adapter(strength="Inf")]}, [
        ("error", "inference.adapters[0].strength",
         "Strength value for Adapter 'adapter-a' must be between 0 and 1: \"Inf\" is not a finite number")]),
    ("strength-yaml-nan", {"inference.adapters": [adapter(strength=float("nan"))]}, [
        ("error", "inference.adapters[0].strength",
         "Strength value for Adapter 'adapter-a' must be between 0 and 1: \"nan\" is not a finite number")]),
    ("strength-negative", {"inference.adapters": [adapter(strength="-0.1")]}, [
        ("error", "inference.adapters[0].strength",
         "Strength value for Adapter 'adapter-a' must be between 0 and 1 (found -0.1): it scales the adapter's "
         "weights, 1.0 applies them fully")]),
    ("strength-above-one", {"inference.adapters": [adapter(strength="1.01")]}, [
        ("error", "inference.adapters[0].strength",
         "Strength value for Adapter 'adapter-a' must be between 0 and 1 (found 1.01): it scales the adapter's "
         "weights, 1.0 applies them fully")]),
    ("strength-not-a-number", {"inference.adapters": [adapter(strength="high")]}, [
        ("error", "inference.adapters[0].strength",
         "Invalid strength value for Adapter 'adapter-a': \"high\" is not a number; write a number between 0 and 1 "
         "as a string, e.g. \"0.5\"")]),
    ("strength-boolean", {"inference.adapters": [adapter(strength=True)]}, [
        ("error", "inference.adapters[0].strength", "expected a string, found a boolean (true): quote it")]),
    ("strength-yaml-number", {"inference.adapters": [adapter(strength=0.5)]}, [
        ("warning", "inference.adapters[0].strength",
         "strength is written as a YAML number; KAITO's CRD types it as a string: write strength: \"0.5\""),
        ("note", "inference.adapters[0].strength", NOT_PORTABLE)]),
    ("strength-yaml-integer-one", {"inference.adapters": [adapter(strength=1)]}, [
        ("warning", "inference.adapters[0].strength",
         "strength is written as a YAML number; KAITO's CRD types it as a string: write strength: \"1\"")]),
    ("strength-below-one-not-portable", {"inference.adapters": [adapter(strength="1e-1")]}, [
        ("note", "inference.adapters[0].strength", NOT_PORTABLE)]),
]


@pytest.mark.parametrize("changes,expected", [(c, e) for _, c, e in REJECTED], ids=[i for i, _, _ in REJECTED])
def test_rule_findings_are_exact(changes: dict, expected: list) -> None:
    assert triples(findings_of(mutate(changes))) == expected


def test_every_adapter_problem_is_reported_at_once() -> None:
    """All errors of a workspace come back together, not the first only (KAITO accumulates too)."""
    data = mutate({"metadata.name": "Bad_Name", "resource.count": 0,
                   "inference.adapters": [adapter("A", image="x", strength="2"), adapter("A", strength="NaN")]})
    errors = triples(findings_of(data), "error")
    assert [path for _, path, _ in errors] == [
        "metadata.name", "resource.count",
        "inference.adapters[0].source.name", "inference.adapters[0].source.image", "inference.adapters[0].strength",
        "inference.adapters[1].source.name", "inference.adapters[1].source.name", "inference.adapters[1].strength",
    ]


def test_strength_portability_is_one_note_per_workspace() -> None:
    data = mutate({"inference.adapters": [adapter("a", strength="1.0"), adapter("b", strength="0.2"),
                                          adapter("c", strength="0.5"), adapter("d", strength="0")]})
    assert triples(findings_of(data)) == [
        ("note", "inference.adapters[1].strength", NOT_PORTABLE + "; also set on adapters c, d")]


@pytest.mark.parametrize("strength", ["0", "1", "1.0", "0.25", "+0.5", "1.", ".5", "-0", "5e-1", "1E0"])
def test_strength_forms_accepted(strength: str) -> None:
    assert triples(findings_of(mutate({"inference.adapters": [adapter(strength=strength)]})), "error") == []


@pytest.mark.parametrize("strength", [" 0.5 ", "0x1p-1", "1_0", "", "0,5", "50%", "1/2"])
def test_strength_forms_rejected(strength: str) -> None:
    assert triples(findings_of(mutate({"inference.adapters": [adapter(strength=strength)]}))) == [
        ("error", "inference.adapters[0].strength",
         f"Invalid strength value for Adapter 'adapter-a': \"{strength}\" is not a number; write a number between 0 "
         "and 1 as a string, e.g. \"0.5\"")]


def test_trailing_newlines_from_block_scalars_are_not_valid_names() -> None:
    """`name: |` keeps a newline; Python's `$` would let it through, Kubernetes would not."""
    data = mutate({"metadata.name": "ws\n", "inference.adapters": [adapter("a\n", image="r.io/a/b:1\n")]})
    assert [(s, p) for s, p, _ in triples(findings_of(data))] == [
        ("error", "metadata.name"), ("error", "inference.adapters[0].source.name"),
        ("error", "inference.adapters[0].source.image")]
