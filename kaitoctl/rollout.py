"""Rollout status: is the workload rolled out, still progressing, or failed, and why.

The core is pure, in the manner of kubectl's ``rollout status``: functions from
the workload, its pods and their events to ``(message, done, failure)``. kubectl
stops there and waits forever on a crash-looping pod (kubectl#738, k8s#18568);
here the pods of the current template are diagnosed too, and the first failure
that will not heal by itself ends the wait with a one-line reason and the
detail under it: image pulls (naming the adapter and the pull secret), failed
init containers, CrashLoopBackOff and OOMKilled (with the tail of the log),
Unschedulable (the scheduler's message), ProgressDeadlineExceeded, and a
no-progress deadline for StatefulSets, which have none of their own.

:func:`watch` is the loop around it: it watches (never polls) the workload, its
pods and the namespace's events through :class:`kaitoctl.kube.Informer`s,
recomputes the status on every change and reports progress.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from kaitoctl.history import LABEL_TEMPLATE_HASH, WORKSPACE_LABEL, adapters_of, recorded_workspace

FETCH_CONTAINER = "kaitoctl-fetch-weights"  # kaitoctl.render's init container that downloads the weights
PULL_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable")
CONFIG_ERRORS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
DEFAULT_PROGRESS_DEADLINE_S = 600.0
LOG_TAIL_LINES = 20

# Conditions that usually heal are waited out, for a bounded time the watch explains:
# an image pull that failed for a reason other than "no such image" or "not allowed" (a registry
# 429 or 5xx, a timeout on a multi-GB layer) ...
PULL_GRACE_S = 300.0
# ... a pod no node fits yet, while a cluster autoscaler or Karpenter says it is adding one ...
SCALE_UP_GRACE_S = 900.0
# ... and the first Unschedulable, before an autoscaler had time to react (it looks every ~10 s).
AUTOSCALER_NOTICE_S = 60.0
# What a registry or the kubelet says when waiting will not help.
PULL_PERMANENT = ("not found", "manifest unknown", "name unknown", "repository does not exist", "notfound",
                  "unauthorized", "401", "403 forbidden", "denied", "authentication required",
                  "invalid reference format", "no match for platform")
PULL_PERMANENT_REASONS = ("InvalidImageName", "ErrImageNeverPull")
SCALE_UP_REASONS = ("TriggeredScaleUp",)                    # cluster-autoscaler
KARPENTER_REASONS = ("Nominated",)                          # Karpenter: "Pod should schedule on: nodeclaim/..."
NO_SCALE_UP_REASONS = ("NotTriggerScaleUp",)                # cluster-autoscaler: no node group would fit it


@dataclass
class Failure:
    """A rollout failure: ``message`` is the one line; ``details`` go under it.

    ``log`` names a container whose log tail belongs in the details:
    (pod, container, previous instance?). The pure functions cannot read logs;
    the watch loop fetches it.
    """

    reason: str
    message: str
    details: list[str] = field(default_factory=list)
    hint: Optional[str] = None
    log: Optional[tuple[str, str, bool]] = None
    # A condition that may heal: waited out for ``grace_s`` from ``since`` (the cluster's
    # timestamp of its first sign) before it counts; ``waiting`` says what is waited for.
    grace_s: Optional[float] = None
    since: Optional[str] = None
    waiting: str = ""
    track: str = ""         # what stays the same while it lasts (the kubelet alternates pull reasons)

    @property
    def key(self) -> str:
        return self.track or f"{self.reason}:{self.message}"


@dataclass
class RolloutStatus:
    """One evaluation: kubectl's message, whether it is done, a failure if any, one line per pod.

    ``waiting`` is a condition being waited out (``failure`` stays None until its grace ends);
    ``message`` then explains it.
    """

    message: str
    done: bool
    failure: Optional[Failure]
    pods: list[str] = field(default_factory=list)
    waiting: Optional[Failure] = None


# --------------------------------------------------------------------------------------------
# Workload level (kubectl's semantics)


def _condition(obj: dict[str, Any], ctype: str) -> Optional[dict[str, Any]]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def workload_status(workload: dict[str, Any]) -> tuple[str, bool, Optional[Failure]]:
    """kubectl ``rollout status`` for a Deployment or StatefulSet: (message, done, failure)."""
    kind = workload.get("kind")
    meta = workload.get("metadata") or {}
    name = meta.get("name", "?")
    spec = workload.get("spec") or {}
    st = workload.get("status") or {}
    replicas = spec.get("replicas", 1)
    if meta.get("generation", 0) > st.get("observedGeneration", 0):
        return f"Waiting for {kind.lower()} spec update to be observed...", False, None
    if kind == "Deployment":
        progressing = _condition(workload, "Progressing")
        if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "", False, Failure(
                "ProgressDeadlineExceeded",
                f'deployment "{name}" exceeded its progress deadline',
                details=[progressing.get("message", "")] if progressing.get("message") else [],
                hint="the pods did not become Ready in time; `kaitoctl status` shows what they are doing",
            )
        replica_failure = _condition(workload, "ReplicaFailure")
        if replica_failure and replica_failure.get("status") == "True":
            return "", False, Failure(
                replica_failure.get("reason") or "ReplicaFailure",
                f'deployment "{name}" cannot create pods: {replica_failure.get("message", "")}',
                hint="a ResourceQuota, LimitRange or admission policy refused the pods",
            )
        updated = st.get("updatedReplicas", 0)
        total = st.get("replicas", 0)
        available = st.get("availableReplicas", 0)
        if updated < replicas:
            return (f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} new replicas '
                    "have been updated..."), False, None
        if total > updated:
            return (f'Waiting for deployment "{name}" rollout to finish: {total - updated} old replicas are '
                    "pending termination..."), False, None
        if available < updated:
            return (f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated '
                    "replicas are available..."), False, None
        return f'deployment "{name}" successfully rolled out', True, None
    if kind == "StatefulSet":
        ready = st.get("readyReplicas", 0)
        if ready < replicas:
            return f"Waiting for {replicas - ready} pods to be ready...", False, None
        rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
        partition = rolling.get("partition") or 0
        if partition and st.get("updatedReplicas", 0) < replicas - partition:
            return (f"Waiting for partitioned roll out to finish: {st.get('updatedReplicas', 0)} out of "
                    f"{replicas - partition} new pods have been updated..."), False, None
        update_rev, current_rev = st.get("updateRevision"), st.get("currentRevision")
        if update_rev and current_rev and update_rev != current_rev:
            return (f"Waiting for statefulset rolling update to complete {st.get('updatedReplicas', 0)} pods at "
                    f"revision {update_rev}..."), False, None
        return f"statefulset rolling update complete {ready} pods at revision {update_rev or '?'}...", True, None
    raise ValueError(f"no rollout status for kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Pod level


def current_pods(workload: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods of the workload's current template (all of its pods when the template carries no hash)."""
    name = (workload.get("metadata") or {}).get("name")
    tmpl_labels = ((((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})
    want = tmpl_labels.get(LABEL_TEMPLATE_HASH)
    out = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(WORKSPACE_LABEL) != name:
            continue
        if want is not None and labels.get(LABEL_TEMPLATE_HASH) != want:
            continue
        out.append(pod)
    return sorted(out, key=lambda p: (p.get("metadata") or {}).get("name", ""))


def _adapter_for(container: dict[str, Any], adapters: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The adapter an init container fetches: same image and its name in the container's name."""
    cname, image = container.get("name", ""), container.get("image", "")
    for rule in (lambda a: a["image"] == image and a["name"] and a["name"] in cname,
                 lambda a: a["name"] == cname or cname in (f"adapter-{a['name']}", f"{a['name']}-adapter"),
                 lambda a: a["image"] == image):
        for adapter in adapters:
            if rule(adapter):
                return adapter
    return None


def pod_events(pod: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events about ``pod``, oldest first."""
    meta = pod.get("metadata") or {}
    name, uid = meta.get("name"), meta.get("uid")
    out = []
    for ev in events:
        inv = ev.get("involvedObject") or {}
        if inv.get("kind", "Pod") != "Pod" or inv.get("name") != name:
            continue
        if uid and inv.get("uid") and inv.get("uid") != uid:
            continue
        out.append(ev)
    return sorted(out, key=event_time)


def event_time(ev: dict[str, Any]) -> str:
    return ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp") \
        or (ev.get("metadata") or {}).get("creationTimestamp") or ""


def _statuses(pod: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {s.get("name"): s for s in (pod.get("status") or {}).get(key) or []}


def _termination_text(term: dict[str, Any]) -> str:
    reason = term.get("reason") or "Error"
    text = f"{reason}, exit code {term.get('exitCode', '?')}"
    if term.get("signal"):
        text += f", signal {term['signal']}"
    return text


def _pull_secret_line(pod: dict[str, Any], adapter: Optional[dict[str, Any]]) -> str:
    used = [s.get("name") for s in (pod.get("spec") or {}).get("imagePullSecrets") or [] if s.get("name")]
    if used:
        return f"pull secret(s) in use: {', '.join(used)}"
    if adapter is not None:
        return ("no pull secret in use: for a private registry set "
                f"imagePullSecrets on adapter {adapter['name']!r}'s source")
    return "no pull secret in use: for a private registry set inference.preset.presetOptions.imagePullSecrets"


def diagnose_pod(pod: dict[str, Any], events: list[dict[str, Any]],
                 adapters: list[dict[str, Any]]) -> Optional[Failure]:
    """The failure one pod shows that will not heal by waiting, or None."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    name = meta.get("name", "?")
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    evs = pod_events(pod, events)
    warnings = [e for e in evs if e.get("type") == "Warning"]

    if status.get("phase") == "Failed":
        return Failure(status.get("reason") or "PodFailed",
                       f"pod {name} failed: {status.get('message') or status.get('reason') or 'no reason given'}")

    scheduled = _condition(pod, "PodScheduled")
    sched_events = [e for e in warnings if e.get("reason") == "FailedScheduling"]
    unschedulable = (scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable")
    if (unschedulable or sched_events) and not spec.get("nodeName"):
        return _unschedulable(pod, name, scheduled, sched_events, evs)

    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    for cname, cs in _statuses(pod, "initContainerStatuses").items():
        container = init_specs.get(cname, {"name": cname, "image": cs.get("image", "")})
        adapter = _adapter_for(container, adapters)
        what = (f"adapter {adapter['name']!r} (init container {cname})" if adapter else
                f"the weights download (init container {cname})" if cname == FETCH_CONTAINER else
                f"init container {cname}")
        waiting = (cs.get("state") or {}).get("waiting") or {}
        stuck = _waiting_failure(pod, what, container.get("image") or cs.get("image", ""), waiting, adapter, warnings,
                                 pull_hint="check the image name and tag, and that the pull secret can read it")
        if stuck is not None:
            return stuck
        terminated = (cs.get("state") or {}).get("terminated")
        last = (cs.get("lastState") or {}).get("terminated")
        failed = terminated if terminated and terminated.get("exitCode", 0) != 0 else None
        previous = False
        if failed is None and last and last.get("exitCode", 0) != 0:
            failed, previous = last, True
        if failed is not None:
            return Failure(failed.get("reason") or "InitContainerFailed",
                           f"{what} failed ({_termination_text(failed)})",
                           details=_nonempty([failed.get("message")]),
                           hint=("the adapter image must hold the adapter files under /data"
                                 if adapter else None),
                           log=(name, cname, previous))

    main_specs = {c.get("name"): c for c in spec.get("containers") or []}
    for cname, cs in _statuses(pod, "containerStatuses").items():
        container = main_specs.get(cname, {"name": cname, "image": cs.get("image", "")})
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        current = state.get("terminated") or {}
        stuck = _waiting_failure(pod, f"container {cname}", container.get("image") or cs.get("image", ""), waiting,
                                 None, warnings, pull_hint="check the image name and tag (KAITOCTL_PRESET_REGISTRY), "
                                                           "and the pull secret")
        if stuck is not None:
            return stuck
        oom = current if current.get("reason") == "OOMKilled" else last if last.get("reason") == "OOMKilled" else None
        if oom is not None:
            return Failure("OOMKilled",
                           f"container {cname} of pod {name} was killed for using too much memory (OOMKilled, "
                           f"restarted {cs.get('restartCount', 0)} times)",
                           hint="use a smaller model or a bigger instance type (more GPU and host memory), or "
                                "raise the container's memory limit",
                           log=(name, cname, oom is last))
        if waiting.get("reason") == "CrashLoopBackOff":
            last_text = _termination_text(last) if last else "unknown"
            return Failure("CrashLoopBackOff",
                           f"container {cname} of pod {name} is crash-looping (restarted "
                           f"{cs.get('restartCount', 0)} times; last exit: {last_text})",
                           details=_nonempty([last.get("message")]),
                           hint="the log tail above shows why the server exits",
                           log=(name, cname, True))
    return None


def _waiting_failure(pod: dict[str, Any], what: str, image: str, waiting: dict[str, Any],
                     adapter: Optional[dict[str, Any]], warnings: list[dict[str, Any]], *,
                     pull_hint: str) -> Optional[Failure]:
    """A container (init or main) waiting on what will not heal by itself: an image pull, or its config."""
    reason = waiting.get("reason")
    if reason in PULL_ERRORS:
        failure = Failure(reason, f"{what}: image {image} cannot be pulled ({reason})",
                          details=_nonempty([waiting.get("message"), _pull_secret_line(pod, adapter)]
                                            + _event_lines(warnings, "Failed")),
                          hint=pull_hint)
        said = " ".join([waiting.get("message") or ""] + [str(e.get("message", "")) for e in warnings
                                                          if e.get("reason") == "Failed"]).lower()
        if reason not in PULL_PERMANENT_REASONS and not any(word in said for word in PULL_PERMANENT):
            pulls = [e for e in warnings if e.get("reason") == "Failed"]
            failure.grace_s = PULL_GRACE_S
            failure.since = _first_time(pulls) or _condition_time(pod, "Ready")
            # ErrImagePull and ImagePullBackOff alternate while the kubelet retries: one condition.
            shown = "ErrImagePull" if reason == "ImagePullBackOff" else reason
            failure.waiting = f"{shown} ({_registry_answer(said)})"
            failure.track = f"pull:{pod.get('metadata', {}).get('name')}:{what}:{image}"
        return failure
    if reason in CONFIG_ERRORS:
        return Failure(reason, f"{what} cannot start: {waiting.get('message', reason)}")
    return None


def _unschedulable(pod: dict[str, Any], name: str, scheduled: Optional[dict[str, Any]],
                   sched_events: list[dict[str, Any]], evs: list[dict[str, Any]]) -> Failure:
    """Unschedulable: waited out while an autoscaler may add a node, final when nothing can match."""
    msg = (scheduled or {}).get("message") or (sched_events[-1].get("message") if sched_events else "")
    failure = Failure("Unschedulable", f"pod {name} cannot be scheduled: {msg}".rstrip(": "),
                      hint="`kaitoctl preflight -f FILE` shows which nodes match and how many GPUs are free")
    since = (scheduled or {}).get("lastTransitionTime") or _first_time(sched_events)
    failure.track = f"unschedulable:{name}"
    scale_up = [e for e in evs if e.get("reason") in SCALE_UP_REASONS + KARPENTER_REASONS]
    refused = [e for e in evs if e.get("reason") in NO_SCALE_UP_REASONS]
    if scale_up and not (refused and event_time(refused[-1]) > event_time(scale_up[-1])):
        who = "Karpenter" if scale_up[-1].get("reason") in KARPENTER_REASONS else "a cluster autoscaler"
        failure.grace_s = SCALE_UP_GRACE_S
        failure.since = _first_time(scale_up) or since
        asked = _first_time(scale_up)
        failure.waiting = f"no node fits yet; {who} asked for one" + (f" at {asked}" if asked else "")
        return failure
    if refused:
        failure.details = [f"event {e.get('reason')}: {e.get('message', '')}" for e in refused[-1:]]
        return failure
    if not _nothing_matches(msg):
        failure.grace_s = AUTOSCALER_NOTICE_S
        failure.since = since
        failure.waiting = "no node fits yet; waiting for a cluster autoscaler or Karpenter to add one"
    return failure


def _nothing_matches(message: str) -> bool:
    """The scheduler says every node fails the node selector / affinity (no added node of the same kind helps)."""
    import re

    total = re.match(r"0/(\d+) nodes are available", message)
    mismatched = re.search(r"(\d+) node\(s\) didn't match Pod's node affinity/selector", message)
    return bool(total and mismatched and int(total.group(1)) > 0 and total.group(1) == mismatched.group(1))


def _registry_answer(said: str) -> str:
    """What the registry or the network answered, in a few words."""
    import re

    if "429" in said or "too many requests" in said or "toomanyrequests" in said or "rate limit" in said:
        return "registry answered 429"
    code = re.search(r"\b(5\d\d)\b", said)
    if code:
        return f"registry answered {code.group(1)}"
    if "timeout" in said or "timed out" in said or "deadline exceeded" in said:
        return "the pull timed out"
    if "connection reset" in said or "connection refused" in said or "no such host" in said:
        return "the registry could not be reached"
    return "not a missing image"


def _first_time(events: list[dict[str, Any]]) -> Optional[str]:
    times = [e.get("firstTimestamp") or event_time(e) for e in events]
    times = [t for t in times if t]
    return min(times) if times else None


def _condition_time(pod: dict[str, Any], ctype: str) -> Optional[str]:
    return (_condition(pod, ctype) or {}).get("lastTransitionTime")


def _seconds_between(start: Optional[str], end: Optional[str]) -> float:
    """Seconds from one API timestamp to another (0 when either is missing)."""
    import datetime

    def parse(text: Optional[str]) -> Optional[datetime.datetime]:
        if not text:
            return None
        try:
            return datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return None

    a, b = parse(start), parse(end)
    return max(0.0, (b - a).total_seconds()) if a and b else 0.0


def cluster_now(pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> Optional[str]:
    """The latest timestamp the cluster has shown (its clock, free of any skew with this machine's)."""
    times = [event_time(e) for e in events]
    for pod in pods:
        times.extend(c.get("lastTransitionTime") or "" for c in (pod.get("status") or {}).get("conditions") or [])
    times = [t for t in times if t]
    return max(times) if times else None


def _waiting_message(found: Failure, lasted: float) -> str:
    """What the watch is waiting out, for how long so far, and for how long at most."""
    limit = _short_duration(found.grace_s or 0.0)
    if found.reason in PULL_ERRORS:
        return (f"image pull failing for {_short_duration(lasted)}: {found.waiting}, waiting up to {limit} "
                "before giving up")
    return f"{found.waiting}; waiting up to {limit} (unschedulable for {_short_duration(lasted)})"


def _short_duration(seconds: float) -> str:
    """``45 s``, ``3m``: coarse, so that a waiting message changes only every 15 s."""
    if seconds < 60:
        return f"{int(seconds // 15 * 15)} s"
    return f"{int(seconds // 60)}m"


def _nonempty(lines: list[Optional[str]]) -> list[str]:
    seen: list[str] = []
    for line in lines:
        if line and line not in seen:
            seen.append(line)
    return seen


def _event_lines(events: list[dict[str, Any]], reason: str) -> list[str]:
    # "Error: ImagePullBackOff" events only repeat the container state; keep the ones with the cause.
    return [f"event {e.get('reason')}: {e.get('message', '')}" for e in events
            if e.get("reason") == reason and not str(e.get("message", "")).startswith("Error: ")][-2:]


def describe_pod(pod: dict[str, Any], adapters: Sequence[dict[str, Any]] = ()) -> str:
    """A pod's state in one phrase, like kubectl's STATUS column but naming adapters."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    phase = status.get("phase") or "Pending"
    if phase in ("Succeeded", "Failed"):
        return status.get("reason") or phase
    if not spec.get("nodeName"):
        sched = _condition(pod, "PodScheduled")
        if sched and sched.get("status") == "False":
            return f"Pending: {sched.get('reason', 'not scheduled')}"
        return "Pending: waiting to be scheduled"
    inits = spec.get("initContainers") or []
    init_status = _statuses(pod, "initContainerStatuses")
    for i, container in enumerate(inits):
        cs = init_status.get(container.get("name"))
        state = (cs or {}).get("state") or {}
        if state.get("terminated", {}).get("exitCode", 1) == 0 and "terminated" in state:
            continue
        adapter = _adapter_for(container, list(adapters))
        label = f"adapter {adapter['name']}" if adapter else container.get("name")
        if "running" in state:
            doing = "running"
        elif state.get("waiting", {}).get("reason"):
            doing = state["waiting"]["reason"]
        elif "terminated" in state:
            doing = _termination_text(state["terminated"])
        else:
            doing = "waiting"
        return f"Init:{i}/{len(inits)} ({label}: {doing})"
    statuses = list(_statuses(pod, "containerStatuses").values())
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return waiting["reason"]
    if not statuses:
        return "ContainerCreating"
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(cs.get("restartCount", 0) for cs in statuses)
    extra = f", {restarts} restart(s)" if restarts else ""
    if ready == len(statuses):
        return f"Running, ready{extra}"
    return f"Running, not ready yet (loading the model){extra}"


def rollout_status(workload: dict[str, Any], pods: list[dict[str, Any]], events: list[dict[str, Any]], *,
                   stalled_s: float = 0.0, progress_deadline_s: Optional[float] = None,
                   seen_for: Optional[Callable[[str], float]] = None) -> RolloutStatus:
    """Everything together: workload semantics, then the pods of the current template, then the deadline.

    ``stalled_s``: seconds since anything last changed. StatefulSets have no
    progress deadline of their own, so kaitoctl applies ``progress_deadline_s``
    to them (Deployments get theirs from the API server's condition).
    A failure that may heal (:attr:`Failure.grace_s`) is reported as ``waiting``
    until it has lasted its grace: by the cluster's own timestamps, or by
    ``seen_for(key)`` (seconds this watcher has seen it) when that is longer.
    """
    workspace = recorded_workspace(workload)
    adapters = adapters_of(workspace)
    mine = current_pods(workload, pods)
    lines = [f"pod {(p.get('metadata') or {}).get('name')}: {describe_pod(p, adapters)}" for p in mine]
    message, done, failure = workload_status(workload)
    waiting: Optional[Failure] = None
    if failure is None and not done:
        now = cluster_now(pods, events)
        for pod in mine:
            found = diagnose_pod(pod, events, adapters)
            if found is None:
                continue
            if found.grace_s is None:
                failure = found
                break
            lasted = max(_seconds_between(found.since, now), seen_for(found.key) if seen_for else 0.0)
            if lasted >= found.grace_s:
                found.message = f"{found.message}; still failing after {_short_duration(lasted)}"
                failure = found
                break
            if waiting is None:
                waiting = found
                message = _waiting_message(found, lasted)
    if failure is None and not done:
        failure = _stalled(workload, stalled_s, progress_deadline_s, lines)
    return RolloutStatus(message=message, done=done, failure=failure, pods=lines,
                         waiting=waiting if failure is None else None)


def _stalled(workload: dict[str, Any], stalled_s: float, progress_deadline_s: Optional[float],
             lines: list[str]) -> Optional[Failure]:
    """kaitoctl's own no-progress deadline, where the API server sets none.

    StatefulSets have no progress deadline at all. A Deployment's controller checks
    its progressDeadlineSeconds during a template rollout, but not for a plain
    scale-up after a finished rollout (it stays "NewReplicaSetAvailable"), so a
    new pod that never becomes Ready would be waited on until --timeout: the
    watch applies the Deployment's own deadline to the time nothing changed.
    """
    name = (workload.get("metadata") or {}).get("name")
    if workload.get("kind") == "StatefulSet":
        deadline = progress_deadline_s if progress_deadline_s is not None else DEFAULT_PROGRESS_DEADLINE_S
        message = (f'statefulset "{name}" made no progress for {int(stalled_s)}s '
                   f"(kaitoctl's deadline for StatefulSets: {int(deadline)}s)")
    else:
        deadline = float((workload.get("spec") or {}).get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE_S)
        message = (f'deployment "{name}" exceeded its progress deadline: no progress for {int(stalled_s)}s '
                   f"(progressDeadlineSeconds {int(deadline)})")
    if stalled_s <= deadline:
        return None
    return Failure("ProgressDeadlineExceeded", message, details=lines,
                   hint="`kaitoctl status NAME` shows what the pods are doing")


# --------------------------------------------------------------------------------------------
# The watch loop


@dataclass
class WatchResult:
    """How a watched rollout ended: done, with how long it took."""

    status: RolloutStatus
    seconds: float


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"


def watch(kube: Any, kind: str, name: str, namespace: str, *, timeout_s: float,
          on_progress: Callable[[RolloutStatus, float], None] = lambda status, elapsed: None,
          progress_deadline_s: Optional[float] = None, tick_s: float = 0.25) -> WatchResult:
    """Watch the rollout of ``kind``/``name`` until done; raise RolloutFailed or RolloutTimeout.

    Watches the workload, its pods and the namespace's events concurrently (one
    informer thread each), re-evaluates :func:`rollout_status` on every change,
    and calls ``on_progress`` when the message or a pod line changes.
    KeyboardInterrupt propagates (the informers are stopped first).
    """
    from kaitoctl.errors import RolloutFailed
    from kaitoctl.kube import Informer, is_forbidden

    informers = [
        Informer(kube, kind, namespace, field_selector=f"metadata.name={name}"),
        Informer(kube, "Pod", namespace, label_selector=f"{WORKSPACE_LABEL}={name}"),
        # Pod events only: the diagnosis reads nothing else, and a busy namespace has many.
        Informer(kube, "Event", namespace, field_selector="involvedObject.kind=Pod"),
    ]
    events: "queue.Queue[tuple[str, Any]]" = queue.Queue()

    def pump(informer: Informer) -> None:
        try:
            for ev in informer.events():
                events.put(("event", ev))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            if informer.stopped:
                return
            if informer.spec.kind == "Event" and is_forbidden(exc):
                events.put(("no-events", exc))  # events only add detail: carry on without them
            else:
                events.put(("error", exc))

    threads = [threading.Thread(target=pump, args=(inf,), daemon=True, name=f"watch-{inf.spec.plural}")
               for inf in informers]
    for t in threads:
        t.start()
    cache: dict[str, dict[str, dict[str, Any]]] = {kind: {}, "Pod": {}, "Event": {}}
    synced: set[str] = set()
    started = time.monotonic()
    last_change = started
    last_shown: tuple[str, tuple[str, ...]] = ("", ())
    status: Optional[RolloutStatus] = None
    first_seen: dict[str, float] = {}

    def seen_for(key: str) -> float:
        return time.monotonic() - first_seen.setdefault(key, time.monotonic())

    try:
        while True:
            now = time.monotonic()
            if now - started > timeout_s:
                raise _timeout_error(kind, name, namespace, timeout_s, status, cache)
            try:
                what, payload = events.get(timeout=tick_s)
            except queue.Empty:
                what, payload = "tick", None
            if what == "error":
                raise payload
            if what == "no-events":
                synced.add("Event")
            if what == "event":
                bucket = cache[payload.kind]
                if payload.type == "SYNC":
                    bucket.clear()
                    for obj in payload.items or []:
                        bucket[_key(obj)] = obj
                    synced.add(payload.kind)
                elif payload.type == "DELETED":
                    bucket.pop(_key(payload.obj), None)
                else:
                    bucket[_key(payload.obj)] = payload.obj
                if not events.empty():
                    continue  # apply every queued change before evaluating
            if len(synced) < len(cache):
                continue
            workloads = [w for w in cache[kind].values() if (w.get("metadata") or {}).get("name") == name]
            if not workloads:
                raise _gone_error(kind, name, namespace)
            status = rollout_status(workloads[0], list(cache["Pod"].values()), list(cache["Event"].values()),
                                    stalled_s=time.monotonic() - last_change,
                                    progress_deadline_s=progress_deadline_s, seen_for=seen_for)
            shown = (status.message, tuple(status.pods))
            if shown != last_shown:
                last_change = time.monotonic()
                last_shown = shown
                on_progress(status, last_change - started)
            if status.failure is not None:
                failure = status.failure
                details = list(failure.details)
                if failure.log is not None:
                    details.extend(_log_tail(kube, namespace, *failure.log))
                raise RolloutFailed(failure.message, details=details, hint=failure.hint)
            if status.done:
                return WatchResult(status=status, seconds=time.monotonic() - started)
    finally:
        for informer in informers:
            informer.stop()


def _log_tail(kube: Any, namespace: str, pod: str, container: str, previous: bool) -> list[str]:
    from kaitoctl.errors import KaitoctlError

    try:
        text = kube.pod_log(pod, container, namespace, tail_lines=LOG_TAIL_LINES, previous=previous)
    except KaitoctlError as err:
        return [f"(log of {pod}/{container} unavailable: {err.message})"]
    lines = text.rstrip("\n").splitlines()
    if not lines:
        return [f"(log of {pod}/{container} is empty)"]
    which = "previous instance" if previous else "log"
    return [f"last {len(lines)} line(s) of {pod}/{container} ({which}):"] + [f"  | {line}" for line in lines]


def _timeout_error(kind: str, name: str, namespace: str, timeout_s: float,
                   status: Optional[RolloutStatus], cache: dict[str, dict[str, dict[str, Any]]]) -> Exception:
    from kaitoctl.errors import RolloutTimeout

    details = list(status.pods) if status else []
    warnings = sorted((e for e in cache["Event"].values() if e.get("type") == "Warning"
                       and ((e.get("involvedObject") or {}).get("name") or "").startswith(name)), key=event_time)
    details += [f"event {e.get('reason')}: {e.get('message', '')}" for e in warnings[-5:]]
    last = status.message if status else "waiting for the first status"
    return RolloutTimeout(f"timed out after {_duration(timeout_s)} waiting for {kind.lower()} {namespace}/{name}: "
                          f"{last}", details=details,
                          hint=f"everything applied stays in place; `kaitoctl status {name} -n {namespace}` shows "
                               f"why, `kaitoctl status {name} -n {namespace} --watch` keeps waiting")


def _gone_error(kind: str, name: str, namespace: str) -> Exception:
    from kaitoctl.errors import RolloutFailed

    return RolloutFailed(f"{kind.lower()} {namespace}/{name} was deleted while kaitoctl was watching it")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    return f"{minutes}m{sec:02d}s" if sec else f"{minutes}m"
