"""Each rollout failure is detected and explained in one line, with the detail under it."""

from __future__ import annotations

import re

from .conftest import MODEL_IMAGE, Lines, adapter, gpu_node, scheduler_retry, workspace_doc, writes

ADAPTER_IMAGE = "registry.example.com/adapters/sql:1"


def _error_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("kaitoctl: error: "))


def test_model_image_pull_error(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "pull_error")
    result = kaitoctl("apply", "-f", write_ws(), "--timeout", "60s")
    assert result.returncode == 6, result.stderr
    assert re.search(rf"kaitoctl: error: container falcon: image {re.escape(MODEL_IMAGE)} cannot be pulled "
                     r"\((ErrImagePull|ImagePullBackOff)\)", result.stderr)
    assert "no pull secret in use" in result.stderr
    assert "not found" in result.stderr                      # the registry's answer, from the kubelet
    assert "nothing to roll back to (first revision)" in result.stderr


def test_adapter_image_pull_error_names_adapter_and_secret(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.add_secret("default", "regcred")
    sim.set_image_behaviour(ADAPTER_IMAGE, "pull_error", message="unexpected status code 401 Unauthorized")
    doc = workspace_doc(adapters=[adapter("sql", ADAPTER_IMAGE, "0.5", secrets=["regcred"])])
    result = kaitoctl("apply", "-f", write_ws(doc), "--timeout", "60s")
    assert result.returncode == 6, result.stderr
    assert re.match(rf"kaitoctl: error: adapter 'sql' \(init container sql\): image {re.escape(ADAPTER_IMAGE)} "
                    r"cannot be pulled \((ErrImagePull|ImagePullBackOff)\)", _error_line(result.stderr))
    assert "  pull secret(s) in use: regcred" in result.stderr
    assert "401 Unauthorized" in result.stderr


def test_missing_pull_secret_fails_preflight_before_writing(sim, kaitoctl, write_ws):
    gpu_node(sim)
    doc = workspace_doc(adapters=[adapter("sql", ADAPTER_IMAGE, secrets=["regcred"])])
    result = kaitoctl("apply", "-f", write_ws(doc))
    assert result.returncode == 5, result.stderr
    assert "pull secret 'regcred' does not exist in namespace 'default'" in result.stderr
    assert "nothing was applied" in result.stderr
    assert writes(sim) == []


def test_failed_adapter_init_container_shows_its_log(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(ADAPTER_IMAGE, "init_error")
    doc = workspace_doc(adapters=[adapter("sql", ADAPTER_IMAGE)])
    result = kaitoctl("apply", "-f", write_ws(doc), "--timeout", "60s")
    assert result.returncode == 6, result.stderr
    assert _error_line(result.stderr) == \
        "kaitoctl: error: adapter 'sql' (init container sql) failed (Error, exit code 1)"
    assert "  | cp: can't stat '/data/*': No such file or directory" in result.stderr
    assert "/data" in result.stderr.split("hint:")[-1]


def test_crash_loop_shows_last_exit_and_log_tail(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "crash", exit_code=3)
    result = kaitoctl("apply", "-f", write_ws(), "--timeout", "60s")
    assert result.returncode == 6, result.stderr
    assert re.match(r"kaitoctl: error: container falcon of pod falcon-\S+ is crash-looping \(restarted \d+ times; "
                    r"last exit: Error, exit code 3\)", _error_line(result.stderr))
    assert "  | RuntimeError: simulated crash" in result.stderr


def test_oom_killed(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "oom")
    result = kaitoctl("apply", "-f", write_ws(), "--timeout", "60s")
    assert result.returncode == 6, result.stderr
    assert re.match(r"kaitoctl: error: container falcon of pod falcon-\S+ was killed for using too much memory "
                    r"\(OOMKilled", _error_line(result.stderr))
    assert "  | loading model weights" in result.stderr
    assert "smaller model" in result.stderr


def test_unschedulable_quotes_the_scheduler(sim, kaitoctl, write_ws):
    gpu_node(sim, gpus=1)
    sim.add_pod("team-b", "trainer", "gpu-1", gpus=1)
    path = write_ws()
    refused = kaitoctl("preflight", "-f", path)
    assert refused.returncode == 5
    assert "0 GPU(s) free, a pod needs 1 (1 requested by other pods)" in refused.stdout

    proc = kaitoctl.start("apply", "-f", path, "--skip-preflight", "--timeout", "60s")
    stderr = Lines(proc.stderr)
    sim.wait_until(lambda: stderr.has("no node fits yet; waiting for a cluster autoscaler or Karpenter to add one"),
                   timeout=30.0, what="kaitoctl waiting for an autoscaler")
    sim.advance(90)     # no autoscaler answers within the first minute: it will not heal
    scheduler_retry(sim)
    assert proc.wait(timeout=60) == 6
    err = stderr.text()
    assert re.match(r"kaitoctl: error: pod falcon-\S+ cannot be scheduled: 0/1 nodes are available: "
                    r"1 Insufficient nvidia\.com/gpu.*still failing after 1m", _error_line(err))


def test_progress_deadline_exceeded(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "never_ready")
    proc = kaitoctl.start("apply", "-f", write_ws(), "--timeout", "120s")
    sim.wait_until(lambda: [p for p in sim.list("Pod", "default") if p["status"].get("phase") == "Running"],
                   timeout=30.0, what="a running pod")
    sim.advance(4000)  # past progressDeadlineSeconds (the preset's readiness timeout + pull allowance)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert _error_line(err) == 'kaitoctl: error: deployment "falcon" exceeded its progress deadline'
    assert 'ReplicaSet "falcon-' in err and "has timed out progressing" in err


def test_timeout_says_where_it_stands(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "never_ready")
    result = kaitoctl("apply", "-f", write_ws(), "--timeout", "2s")
    assert result.returncode == 7, result.stderr
    assert _error_line(result.stderr).startswith(
        "kaitoctl: error: timed out after 2s waiting for deployment default/falcon: ")
    assert "Running, not ready yet" in result.stderr
    assert "Readiness probe failed" in result.stderr or "kaitoctl status falcon -n default" in result.stderr
