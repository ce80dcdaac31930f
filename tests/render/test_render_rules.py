"""Every rendering rule, table-driven where there are cases: what a user relies on in the manifests."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from kaitoctl.errors import InvalidWorkspace
from kaitoctl.output import dump_yaml
from kaitoctl.plan import Plan
from kaitoctl.render import image_pull_policy, render_workspace

K8S_VERSION = "1.35.0"
LABELS = {
    "app.kubernetes.io/component": "inference",
    "app.kubernetes.io/instance": "ws",
    "app.kubernetes.io/managed-by": "kaitoctl",
    "app.kubernetes.io/name": "kaito-workspace",
    "kaito.sh/workspace": "ws",
}
PRIVATE_LLAMA = {
    "preset": {
        "name": "llama-2-13b-chat",
        "accessMode": "private",
        "presetOptions": {"image": "my.azurecr.io/llama-13b:1.0", "imagePullSecrets": ["preset-pull"]},
    }
}


def workload(objs: list[dict]) -> dict:
    return objs[-1]


def pod(objs: list[dict]) -> dict:
    return objs[-1]["spec"]["template"]["spec"]


def main(objs: list[dict]) -> dict:
    return pod(objs)["containers"][0]


def env_of(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def assert_valid(objs: list[dict]) -> None:
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# --- objects, names, labels ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "inference, count, kinds",
    [
        ({"preset": {"name": "falcon-7b"}}, 1, [("Service", "ws"), ("Deployment", "ws")]),
        ({"preset": {"name": "phi-3-mini-4k-instruct"}}, 3, [("Service", "ws"), ("Deployment", "ws")]),
        (PRIVATE_LLAMA, 2, [("Service", "ws"), ("Service", "ws-headless"), ("StatefulSet", "ws")]),
        (
            {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
            1,
            [("Service", "ws"), ("Deployment", "ws")],
        ),
    ],
)
def test_objects_in_apply_order_with_labels_and_no_owner(make_ws, inference, count, kinds) -> None:
    ws = make_ws(inference=inference, resource={"count": count})
    objs = render_workspace(ws)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == kinds
    for obj in objs:
        assert obj["metadata"]["labels"] == LABELS
        assert "ownerReferences" not in obj["metadata"]
    w = workload(objs)
    assert w["spec"]["replicas"] == count
    assert w["spec"]["selector"] == {"matchLabels": {"kaito.sh/workspace": "ws"}}
    assert LABELS.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    assert_valid(objs)


def test_workload_records_canonical_workspace_json(make_ws) -> None:
    ws = make_ws(inference={"preset": {"name": "falcon-7b"}, "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}]})
    recorded = workload(render_workspace(ws))["metadata"]["annotations"]["kaitoctl.io/workspace"]
    assert recorded == json.dumps(ws.canonical(), sort_keys=True, separators=(",", ":"))
    assert json.loads(recorded)["inference"]["adapters"][0]["strength"] == "1.0"


@pytest.mark.parametrize("namespace", [None, "llm"])
def test_namespace_only_when_the_workspace_has_one(make_ws, namespace) -> None:
    objs = render_workspace(make_ws(metadata={"name": "ws", "namespace": namespace}))
    for obj in objs:
        assert obj["metadata"].get("namespace") == namespace


# --- Services --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "annotations, service_type",
    [({}, "ClusterIP"), ({"kaito.sh/enablelb": "True"}, "LoadBalancer"), ({"kaito.sh/enablelb": "true"}, "ClusterIP")],
)
def test_service_port_80_to_5000_only_ready_pods(make_ws, annotations, service_type) -> None:
    svc = render_workspace(make_ws(metadata={"name": "ws", "annotations": annotations}))[0]
    assert svc["spec"]["type"] == service_type
    assert svc["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 5000}]
    assert svc["spec"]["selector"] == {"kaito.sh/workspace": "ws"}
    assert "publishNotReadyAddresses" not in svc["spec"]


def test_distributed_services(make_ws) -> None:
    svc, headless, _ = render_workspace(make_ws(inference=PRIVATE_LLAMA, resource={"count": 2}))
    assert svc["spec"]["selector"] == {"kaito.sh/workspace": "ws", "statefulset.kubernetes.io/pod-name": "ws-0"}
    assert "publishNotReadyAddresses" not in svc["spec"]
    assert headless["spec"] == {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {"kaito.sh/workspace": "ws"},
        "ports": [{"name": "torchrun", "protocol": "TCP", "port": 29500, "targetPort": 29500}],
    }


# --- workload shape --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan, strategy",
    [
        (Plan(gpus_per_pod=1, strategy="RollingUpdate"), {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
        (Plan(gpus_per_pod=1, strategy="Recreate"), {"type": "Recreate"}),
    ],
)
def test_deployment_strategy_from_plan(make_ws, plan, strategy) -> None:
    spec = workload(render_workspace(make_ws(), plan))["spec"]
    assert spec["strategy"] == strategy
    assert spec["revisionHistoryLimit"] == 10
    # falcon-7b's readiness timeout is 1800 s; the deadline adds time to schedule and pull the image.
    assert spec["progressDeadlineSeconds"] > 1800


def test_statefulset_shape_and_torchrun(make_ws) -> None:
    objs = render_workspace(make_ws(inference=PRIVATE_LLAMA, resource={"count": 2}))
    sts = workload(objs)
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == "ws-headless"
    # The torchrun group is replaced as a unit, never one pod at a time.
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}
    c = main(objs)
    assert c["image"] == "my.azurecr.io/llama-13b:1.0"
    assert c["command"] == ["torchrun"]
    assert c["args"] == [
        "--master_addr=ws-0.ws-headless.$(KAITOCTL_NAMESPACE).svc.cluster.local",
        "--master_port=29500",
        "--nnodes=2",
        "--node_rank=$(KAITOCTL_NODE_RANK)",
        "--nproc_per_node=1",
        "-m",
        "kaitoctl_server",
    ]
    env = env_of(c)
    assert env["KAITOCTL_NODE_RANK"] == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    assert env["KAITOCTL_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {"name": "torchrun", "containerPort": 29500, "protocol": "TCP"} in c["ports"]
    assert pod(objs)["imagePullSecrets"] == [{"name": "preset-pull"}]


@pytest.mark.parametrize("count, nproc", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_torchrun_flags_are_per_workspace(make_ws, count, nproc) -> None:
    inference = {"preset": {"name": "llama-2-70b", "accessMode": "private", "presetOptions": {"image": "r.io/l:1"}}}
    ws = make_ws(inference=inference, resource={"count": count, "instanceType": "Standard_ND96asr_v4"})
    c = main(render_workspace(ws))
    assert f"--nnodes={count}" in c["args"] and f"--nproc_per_node={nproc}" in c["args"]
    flags = [a for a in c["args"] if a.startswith("--")]
    assert flags == sorted(flags)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == str(nproc)


def test_non_distributed_runs_gunicorn(make_ws) -> None:
    c = main(render_workspace(make_ws()))
    assert c["name"] == "ws"
    assert c["image"] == "ghcr.io/kaitoctl/kaitoctl-falcon-7b:0.1.0"
    assert c["command"] == ["gunicorn"]
    assert c["args"] == ["--config", "python:kaitoctl_server.gunicorn_conf", "kaitoctl_server.wsgi:app"]
    assert c["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]


def test_registry_override_and_private_image(make_ws, monkeypatch) -> None:
    assert main(render_workspace(make_ws(), registry="mirror.example/k"))["image"] == "mirror.example/k/kaitoctl-falcon-7b:0.1.0"
    monkeypatch.setenv("KAITOCTL_PRESET_REGISTRY", "env.example/k")
    assert main(render_workspace(make_ws()))["image"] == "env.example/k/kaitoctl-falcon-7b:0.1.0"
    # A public preset in private mode uses the user's image and secrets, as KAITO does.
    ws = make_ws(inference={"preset": {"name": "falcon-7b", "accessMode": "private",
                                       "presetOptions": {"image": "mine.io/f:2", "imagePullSecrets": ["s"]}}})
    objs = render_workspace(ws)
    assert main(objs)["image"] == "mine.io/f:2" and pod(objs)["imagePullSecrets"] == [{"name": "s"}]


def test_public_mode_ignores_preset_options(make_ws) -> None:
    ws = make_ws(inference={"preset": {"name": "falcon-7b", "presetOptions": {"image": "x.io/y:1", "imagePullSecrets": ["s"]}}})
    objs = render_workspace(ws)
    assert main(objs)["image"] == "ghcr.io/kaitoctl/kaitoctl-falcon-7b:0.1.0"
    assert "imagePullSecrets" not in pod(objs)


@pytest.mark.parametrize(
    "image, policy",
    [
        ("r.io/a:1.0", "IfNotPresent"),
        ("r.io/a", "Always"),
        ("r.io/a:latest", "Always"),
        ("r.io:5000/a", "Always"),
        ("r.io:5000/a:2", "IfNotPresent"),
        ("r.io/a@sha256:" + "0" * 64, "IfNotPresent"),
        ("r.io/a:1@sha256:" + "0" * 64, "IfNotPresent"),
    ],
)
def test_image_pull_policy(image, policy) -> None:
    assert image_pull_policy(image) == policy


# --- placement -------------------------------------------------------------------------------------

IT_IN = {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC12s_v3"]}
GA_NONE = {"key": "node.kubernetes.io/instance-type", "operator": "DoesNotExist"}
# Nodes with only the deprecated beta label (preflight accepts them), and nodes with neither.
IT_BETA = [GA_NONE, {"key": "beta.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC12s_v3"]}]
IT_NONE = [GA_NONE, {"key": "beta.kubernetes.io/instance-type", "operator": "DoesNotExist"}]


@pytest.mark.parametrize(
    "selector, expected",
    [
        (None, []),
        ({"matchLabels": {"b": "2", "a": "1"}}, [
            {"key": "a", "operator": "In", "values": ["1"]}, {"key": "b", "operator": "In", "values": ["2"]}]),
        ({"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["1", "2"]},
            {"key": "spot", "operator": "NotIn", "values": ["true"]},
            {"key": "gpu", "operator": "Exists"},
            {"key": "tainted", "operator": "DoesNotExist"},
        ]}, [
            {"key": "zone", "operator": "In", "values": ["1", "2"]},
            {"key": "spot", "operator": "NotIn", "values": ["true"]},
            {"key": "gpu", "operator": "Exists"},
            {"key": "tainted", "operator": "DoesNotExist"},
        ]),
        ({"matchLabels": {"apps": "x"}, "matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, [
            {"key": "apps", "operator": "In", "values": ["x"]}, {"key": "gpu", "operator": "Exists"}]),
    ],
)
def test_required_affinity_from_whole_selector_plus_instance_type(make_ws, selector, expected) -> None:
    data = {"instanceType": "Standard_NC12s_v3", "labelSelector": selector}
    ws = make_ws()
    ws = ws.model_copy(update={"resource": ws.resource.model_validate(data)})
    objs = render_workspace(ws)
    node = pod(objs)["affinity"]["nodeAffinity"]
    assert node["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": expected + [IT_IN]}, {"matchExpressions": expected + IT_BETA},
                              {"matchExpressions": expected + IT_NONE}]
    }
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in node
    assert_valid(objs)


def test_preferred_nodes_are_preferred_not_required(make_ws) -> None:
    node = pod(render_workspace(make_ws(resource={"preferredNodes": ["n2", "n1", "n2"]})))["affinity"]["nodeAffinity"]
    assert node["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1", "n2"]}]}}
    ]
    required = json.dumps(node["requiredDuringSchedulingIgnoredDuringExecution"])
    assert "kubernetes.io/hostname" not in required


def test_kaito_gpu_tolerations(make_ws) -> None:
    assert pod(render_workspace(make_ws()))["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    ]


# --- GPUs, probes, lifecycle, volumes, security ----------------------------------------------------


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_gpus_per_pod_from_plan(make_ws, gpus) -> None:
    resources = main(render_workspace(make_ws(), Plan(gpus_per_pod=gpus)))["resources"]
    assert resources == {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}


@pytest.mark.parametrize("preset", ["falcon-7b", "phi-3-mini-4k-instruct", "llama-2-7b", "llama-2-13b-chat"])
def test_probes_sized_from_readiness_timeout(make_ws, preset) -> None:
    from kaitoctl.catalog import get_preset

    inference = {"preset": {"name": preset, "accessMode": "private", "presetOptions": {"image": "r.io/m:1"}}}
    c = main(render_workspace(make_ws(inference=inference)))
    timeout = get_preset(preset).readiness_timeout_seconds
    startup, liveness, readiness = c["startupProbe"], c["livenessProbe"], c["readinessProbe"]
    for probe in (startup, liveness, readiness):
        assert probe["httpGet"] == {"path": "/health", "port": "http"}
        assert "initialDelaySeconds" not in probe
    assert startup["failureThreshold"] * startup["periodSeconds"] >= timeout
    assert (liveness["periodSeconds"], liveness["failureThreshold"]) == (10, 3)
    assert readiness["periodSeconds"] == 5


def test_prestop_sleep_and_grace_period(make_ws) -> None:
    objs = render_workspace(make_ws())
    sleep = main(objs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep > 0
    grace = pod(objs)["terminationGracePeriodSeconds"]
    # After the preStop sleep, gunicorn drains in-flight generations for a long time, and stops before SIGKILL.
    drain = int(env_of(main(objs))["KAITOCTL_GRACEFUL_TIMEOUT"])
    assert drain >= 120
    assert sleep + drain < grace


@pytest.mark.parametrize("count", [1, 2])
def test_shm_tmp_and_read_only_root(make_ws, count) -> None:
    objs = render_workspace(make_ws(resource={"count": count}))
    volumes = {v["name"]: v for v in pod(objs)["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and volumes["dshm"]["emptyDir"]["sizeLimit"]
    assert "medium" not in volumes["tmp"]["emptyDir"]
    mounts = {m["mountPath"]: m["name"] for m in main(objs)["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/tmp": "tmp"}
    env = env_of(main(objs))
    assert env["HOME"].startswith("/tmp") and env["HF_HOME"].startswith("/tmp/")


def test_restrictive_security_context(make_ws) -> None:
    ws = make_ws(inference={"preset": {"name": "falcon-7b"}, "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}]})
    spec = pod(render_workspace(ws))
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False
    for container in spec["initContainers"] + spec["containers"]:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
        }


@pytest.mark.parametrize(
    "preset, dtype, pipeline, trust",
    [
        ("falcon-7b", "bfloat16", "text-generation", None),
        ("phi-3-mini-4k-instruct", "auto", "chat", "true"),
        ("mistral-7b-instruct", "bfloat16", "chat", None),
    ],
)
def test_server_env(make_ws, preset, dtype, pipeline, trust) -> None:
    env = env_of(main(render_workspace(make_ws(inference={"preset": {"name": preset}}))))
    assert env["KAITOCTL_DTYPE"] == dtype
    assert env["KAITOCTL_PIPELINE"] == pipeline
    assert env.get("KAITOCTL_TRUST_REMOTE_CODE") == trust
    assert env["KAITOCTL_MODEL"] == "/workspace/tfs/weights"
    assert env["KAITOCTL_ADAPTERS"] == "[]"
    assert "KAITOCTL_API_KEY" not in env


def test_api_key_from_secret(make_ws) -> None:
    ws = make_ws(metadata={"name": "ws", "annotations": {"kaitoctl.io/api-key-secret": "my-key"}})
    env = env_of(main(render_workspace(ws)))
    assert env["KAITOCTL_API_KEY"] == {"secretKeyRef": {"name": "my-key", "key": "api-key"}}


def test_env_sorted_and_no_adapter_named_variables(make_ws) -> None:
    ws = make_ws(inference={"preset": {"name": "falcon-7b"}, "adapters": [{"source": {"name": "path", "image": "r.io/a:1"}}]})
    names = [e["name"] for e in main(render_workspace(ws))["env"]]
    assert names == sorted(names)
    assert "path" not in names and "PATH" not in names


# --- adapters --------------------------------------------------------------------------------------

ADAPTERS = [
    {"source": {"name": "b-adapter", "image": "r.io/b:0.1", "imagePullSecrets": ["zeta", "alpha"]}, "strength": "0.2"},
    {"source": {"name": "a-adapter", "image": "r.io/a", "imagePullSecrets": ["alpha"]}, "strength": "0.5"},
    {"source": {"name": "c", "image": "r.io/c:latest"}},
]


@pytest.mark.parametrize("preset", [{"preset": {"name": "falcon-7b"}}, PRIVATE_LLAMA])
def test_adapters_init_containers_argv_only(make_ws, preset) -> None:
    objs = render_workspace(make_ws(inference={**preset, "adapters": ADAPTERS}))
    spec = pod(objs)
    tool, *copies = spec["initContainers"]
    assert tool["name"] == "kaitoctl-copy-tool"
    assert tool["image"] == "busybox:1.36.1-musl"
    assert tool["command"] == ["/bin/busybox", "cp", "/bin/busybox", "/kaitoctl-tools/busybox"]
    assert [c["name"] for c in copies] == ["b-adapter", "a-adapter", "c"]
    assert [c["image"] for c in copies] == ["r.io/b:0.1", "r.io/a", "r.io/c:latest"]
    assert [c["imagePullPolicy"] for c in copies] == ["IfNotPresent", "Always", "Always"]
    for c in copies:
        assert c["command"] == ["/kaitoctl-tools/busybox", "cp", "-r", "/data/.", f"/mnt/adapter/{c['name']}"]
        assert "args" not in c
        assert {"name": "adapter-volume", "mountPath": "/mnt/adapter"} in c["volumeMounts"]
    assert not any("sh" in part.split("/")[-1] for c in spec["initContainers"] for part in c["command"][:1])
    volumes = {v["name"] for v in spec["volumes"]}
    assert {"adapter-volume", "kaitoctl-tools"} <= volumes
    assert {"name": "adapter-volume", "mountPath": "/mnt/adapter", "readOnly": True} in main(objs)["volumeMounts"]
    assert env_of(main(objs))["KAITOCTL_ADAPTERS"] == (
        '[{"name":"b-adapter","strength":0.2},{"name":"a-adapter","strength":0.5},{"name":"c","strength":1.0}]'
    )
    assert_valid(objs)


def test_pull_secrets_preset_and_adapters_deduplicated_sorted(make_ws) -> None:
    spec = pod(render_workspace(make_ws(inference={**PRIVATE_LLAMA, "adapters": ADAPTERS})))
    assert spec["imagePullSecrets"] == [{"name": "alpha"}, {"name": "preset-pull"}, {"name": "zeta"}]


def test_copy_tool_image_configurable(make_ws, monkeypatch) -> None:
    monkeypatch.setenv("KAITOCTL_COPY_TOOL_IMAGE", "mirror.example/busybox:1.36.1-musl")
    spec = pod(render_workspace(make_ws(inference={"preset": {"name": "falcon-7b"}, "adapters": ADAPTERS})))
    assert spec["initContainers"][0]["image"] == "mirror.example/busybox:1.36.1-musl"


def test_no_adapters_no_init_containers(make_ws) -> None:
    spec = pod(render_workspace(make_ws()))
    assert "initContainers" not in spec
    assert {v["name"] for v in spec["volumes"]} == {"dshm", "tmp"}


# --- custom pod template ---------------------------------------------------------------------------

USER_TEMPLATE = {
    "metadata": {"labels": {"team": "nlp"}, "annotations": {"note": "kept"}},
    "spec": {
        "securityContext": {"runAsUser": 0},
        "containers": [
            {"name": "sidecar", "image": "r.io/sidecar:1"},
            {
                "name": "server",
                "image": "r.io/tgi:2",
                "ports": [{"containerPort": 8080}, {"containerPort": 9090}],
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            },
        ],
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}],
                         "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["bad"]}]},
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "preference": {"matchExpressions": [{"key": "fast", "operator": "Exists"}]}}
                ],
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                      "labelSelector": {"matchLabels": {"team": "nlp"}}}}
                ]
            },
        },
    },
}


def test_template_keeps_user_pod_and_merges_placement(make_ws) -> None:
    ws = make_ws(inference={"template": USER_TEMPLATE}, resource={"count": 2, "preferredNodes": ["n1"]})
    objs = render_workspace(ws)
    svc, deploy = objs
    assert svc["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    template = deploy["spec"]["template"]
    assert template["metadata"]["labels"] == {"team": "nlp", **LABELS}
    assert template["metadata"]["annotations"] == {"note": "kept"}
    spec = template["spec"]
    assert spec["securityContext"] == {"runAsUser": 0}
    assert spec["containers"] == USER_TEMPLATE["spec"]["containers"]
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    ]
    node = spec["affinity"]["nodeAffinity"]
    apps = {"key": "apps", "operator": "In", "values": ["falcon-7b"]}
    zone_a = {"key": "zone", "operator": "In", "values": ["a"]}
    zone_b = {"key": "zone", "operator": "In", "values": ["b"]}
    fields = [{"key": "metadata.name", "operator": "NotIn", "values": ["bad"]}]
    # (zone a OR zone b+fields) AND (ours: selector + type In, beta type In, or no type label): six terms.
    assert node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [zone_a, apps, IT_IN]},
        {"matchExpressions": [zone_a, apps] + IT_BETA},
        {"matchExpressions": [zone_a, apps] + IT_NONE},
        {"matchExpressions": [zone_b, apps, IT_IN], "matchFields": fields},
        {"matchExpressions": [zone_b, apps] + IT_BETA, "matchFields": fields},
        {"matchExpressions": [zone_b, apps] + IT_NONE, "matchFields": fields},
    ]
    assert [p["weight"] for p in node["preferredDuringSchedulingIgnoredDuringExecution"]] == [5, 100]
    assert spec["affinity"]["podAntiAffinity"] == USER_TEMPLATE["spec"]["affinity"]["podAntiAffinity"]
    assert deploy["metadata"]["annotations"]["kaitoctl.io/workspace"]
    # The user's input object is not modified by rendering.
    assert ws.inference.template == USER_TEMPLATE
    assert "&id" not in dump_yaml(objs)
    assert_valid(objs)


def test_template_without_ports_targets_5000(make_ws) -> None:
    ws = make_ws(inference={"template": {"spec": {"containers": [{"name": "c", "image": "r.io/c:1"}]}}})
    svc, deploy = render_workspace(ws)
    assert svc["spec"]["ports"][0]["targetPort"] == 5000
    spec = deploy["spec"]["template"]["spec"]
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "apps", "operator": "In", "values": ["falcon-7b"]}, IT_IN]},
        {"matchExpressions": [{"key": "apps", "operator": "In", "values": ["falcon-7b"]}] + IT_BETA},
        {"matchExpressions": [{"key": "apps", "operator": "In", "values": ["falcon-7b"]}] + IT_NONE},
    ]
    assert "resources" not in spec["containers"][0]


# --- determinism and errors ------------------------------------------------------------------------


def test_render_twice_identical_bytes_and_no_yaml_aliases(make_ws) -> None:
    ws = make_ws(inference={**PRIVATE_LLAMA, "adapters": ADAPTERS}, resource={"count": 2, "preferredNodes": ["b", "a"]})
    first, second = dump_yaml(render_workspace(ws)), dump_yaml(render_workspace(ws))
    assert first == second
    assert "&id" not in first and "*id" not in first


def test_order_of_sets_does_not_change_output(make_ws) -> None:
    a = make_ws(resource={"preferredNodes": ["n1", "n2"]})
    b = make_ws(resource={"preferredNodes": ["n2", "n1"]})
    strip = lambda objs: dump_yaml([o for o in objs if o["kind"] != "Deployment"] + [
        {**objs[-1], "metadata": {k: v for k, v in objs[-1]["metadata"].items() if k != "annotations"}}])
    assert strip(render_workspace(a)) == strip(render_workspace(b))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"inference": None}, "`inference` is not set"),
        ({"inference": {"preset": {"name": "gpt-5"}}}, "Unsupported inference preset name gpt-5"),
        ({"inference": {"preset": {"name": "llama-2-13b-chat", "accessMode": "private"}}}, "an image must be provided"),
        ({"inference": {"preset": {"name": "falcon-7b"}, "adapters": [{"source": {"name": "a"}}]}}, "Image of Adapter"),
        ({"inference": {"preset": {"name": "falcon-7b"}, "adapters": [{"source": {"name": "ws", "image": "r.io/a:1"}}]}},
         "differ from the workspace name"),
        ({"inference": {"preset": {"name": "falcon-7b"}, "adapters": [{"source": {"name": "a", "image": "r.io/a:1"},
                                                                      "strength": "nan"}]}}, "is not a number"),
        ({"inference": {"template": {"spec": {}}}}, "at least one container"),
        ({"inference": {"preset": {"name": "falcon-7b"}, "template": {"spec": {}}}}, "cannot be set at the same time"),
        ({"inference": {"template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}},
                        "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}]}}, "adapters need a preset"),
    ],
)
def test_unrenderable_workspaces_raise_clear_errors(make_ws, overrides, message) -> None:
    from kaitoctl.workspace import Workspace

    data = make_ws().model_dump(exclude_none=True)
    data.update(overrides)
    ws = Workspace.model_validate({k: v for k, v in data.items() if v is not None})
    with pytest.raises(InvalidWorkspace) as info:
        render_workspace(ws, Plan(gpus_per_pod=1))
    assert message in info.value.message
    assert "'ws'" in info.value.message


def test_strict_schema_check_is_real() -> None:
    # The schema check used above does reject a misspelt field: guard against a vacuous check.
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
