"""The simulated kubelet: runs bound pods' containers through the states a real node shows.

Init containers run one after another (PodInitializing, then terminated Completed),
then the main containers start and turn Ready after ``ready_ticks`` ticks. Each image
behaves as the test chose with ``KubeSim.set_image_behaviour`` (``ok``, ``pull_error``,
``crash``, ``oom``, ``init_error``, ``never_ready``, ``slow``), with the container
states, restart counts, events and logs a real kubelet would produce for that failure.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from .cluster import Cluster, is_terminating, set_condition
from .errors import bad_request

BEHAVIOURS = ("ok", "pull_error", "crash", "oom", "init_error", "never_ready", "slow")
FAILING = ("crash", "oom", "init_error")

DEFAULT_LOGS = {
    "crash": (
        "Traceback (most recent call last):\n"
        '  File "/workspace/server.py", line 1, in <module>\n'
        "RuntimeError: simulated crash\n"
    ),
    "oom": "loading model weights\n",
    "init_error": "cp: can't stat '/data/*': No such file or directory\n",
}


@dataclass
class Behaviour:
    """What an image does when run: one of BEHAVIOURS plus its options."""

    name: str = "ok"
    opts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Instance:
    """One run of a container (a restart starts a new instance, with its own log)."""

    log: str
    started_at: str
    container_id: str
    terminated: dict[str, Any] | None = None


@dataclass
class ContainerRun:
    name: str
    image: str
    init: bool
    phase: str = "new"  # new, pulling, pull_error, running, crashed, backoff, done, failed
    ticks: int = 0
    restarts: int = 0
    ready: bool = False
    waiting: tuple[str, str | None] = ("PodInitializing", None)
    instances: list[Instance] = field(default_factory=list)
    last_unhealthy: int = -10**9


@dataclass
class PodRun:
    init: list[ContainerRun]
    main: list[ContainerRun]
    pod_ip: str
    terminating_ticks: int = 0
    published: tuple[Any, ...] = ()  # (container states, pod resourceVersion) last written


class Kubelet:
    """Every node's kubelet at once; ``tick`` advances all bound pods by one step."""

    def __init__(
        self,
        cluster: Cluster,
        ready_ticks: int = 3,
        pull_ticks: int = 1,
        init_ticks: int = 2,
        backoff_ticks: int = 4,
        terminate_ticks: int = 2,
    ) -> None:
        self.cluster = cluster
        self.ready_ticks = ready_ticks
        self.pull_ticks = pull_ticks
        self.init_ticks = init_ticks
        self.backoff_ticks = backoff_ticks
        self.terminate_ticks = terminate_ticks
        self.behaviours: dict[str, Behaviour] = {}
        self.runs: dict[str, PodRun] = {}
        self.ready_times: dict[tuple[str, str], float] = {}
        cluster.on_pod_removed.append(self.forget)

    def set_behaviour(self, image: str, name: str, opts: dict[str, Any]) -> None:
        if name not in BEHAVIOURS:
            raise ValueError(f"unknown image behaviour {name!r}; choose one of {', '.join(BEHAVIOURS)}")
        self.behaviours[image] = Behaviour(name, dict(opts))

    def forget(self, pod: dict[str, Any]) -> None:
        self.runs.pop(pod["metadata"]["uid"], None)

    # ------------------------------------------------------------------ tick

    def tick(self) -> None:
        store = self.cluster.store
        for pod in store.items("pods"):
            node_name = pod["spec"].get("nodeName")
            if not node_name:
                continue
            if store.get("nodes", None, node_name) is None:
                if is_terminating(pod):  # nobody is left to finish it: the pod GC would remove it
                    self.cluster.remove_pod(pod)
                continue
            run = self.runs.get(pod["metadata"]["uid"])
            if run is None:
                run = self._new_run(pod)
            if is_terminating(pod):
                self._terminate(pod, run)
                continue
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                continue
            self._advance(pod, run)
            self._publish(pod, run)

    def _new_run(self, pod: dict[str, Any]) -> PodRun:
        spec = pod["spec"]
        n = self.cluster.rng.randrange(0, 60000)
        run = PodRun(
            init=[ContainerRun(c["name"], c.get("image", ""), True) for c in spec.get("initContainers") or []],
            main=[ContainerRun(c["name"], c.get("image", ""), False) for c in spec.get("containers") or []],
            pod_ip=f"10.244.{n // 250}.{n % 250 + 2}",
        )
        self.runs[pod["metadata"]["uid"]] = run
        return run

    def _terminate(self, pod: dict[str, Any], run: PodRun) -> None:
        run.terminating_ticks += 1
        if run.terminating_ticks == 1:
            for container in run.init + run.main:
                if container.phase == "running":
                    self._emit(pod, container, "Normal", "Killing", f"Stopping container {container.name}")
        if run.terminating_ticks >= self.terminate_ticks:
            self.cluster.remove_pod(pod)

    def _advance(self, pod: dict[str, Any], run: PodRun) -> None:
        policy = pod["spec"].get("restartPolicy") or "Always"
        for container in run.init:
            if container.phase != "done":
                if container.phase != "failed":
                    self._step(pod, run, container, policy)
                return
        for container in run.main:
            if container.phase != "failed":
                self._step(pod, run, container, policy)

    # ------------------------------------------------------------------ containers

    def _emit(self, pod: dict[str, Any], c: ContainerRun, type_: str, reason: str, message: str) -> None:
        section = "initContainers" if c.init else "containers"
        self.cluster.emit(
            pod, type_, reason, message, "kubelet", host=pod["spec"].get("nodeName"), field_path=f"spec.{section}{{{c.name}}}"
        )

    def _pull_failure(self, image: str, behaviour: Behaviour) -> str:
        return behaviour.opts.get(
            "message",
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
            f'failed to resolve reference "{image}": {image}: not found',
        )

    def _start(self, pod: dict[str, Any], c: ContainerRun, behaviour: Behaviour) -> None:
        self._emit(pod, c, "Normal", "Created", f"Created container: {c.name}")
        self._emit(pod, c, "Normal", "Started", f"Started container {c.name}")
        default = DEFAULT_LOGS.get(behaviour.name, f"[kubesim] {c.name} started\n")
        digest = hashlib.sha256(f"{pod['metadata']['uid']}/{c.name}/{len(c.instances)}".encode()).hexdigest()
        c.instances.append(Instance(str(behaviour.opts.get("log", default)), self.cluster.now(), f"containerd://{digest}"))
        c.phase, c.ticks, c.ready = "running", 0, False

    def _finish(self, c: ContainerRun, exit_code: int, reason: str, message: str | None = None) -> None:
        instance = c.instances[-1]
        instance.terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": instance.started_at,
            "finishedAt": self.cluster.now(),
            "containerID": instance.container_id,
        }
        if message:  # what the container wrote to its terminationMessagePath
            instance.terminated["message"] = message
        c.ready = False

    def _step(self, pod: dict[str, Any], run: PodRun, c: ContainerRun, policy: str) -> None:
        behaviour = self.behaviours.get(c.image, Behaviour())
        c.ticks += 1
        if c.phase == "new":
            self._emit(pod, c, "Normal", "Pulling", f'Pulling image "{c.image}"')
            c.phase, c.ticks = "pulling", 0
            c.waiting = ("PodInitializing" if c.init else "ContainerCreating", None)
        elif c.phase == "pulling" and c.ticks >= self.pull_ticks:
            if behaviour.name == "pull_error":
                failure = self._pull_failure(c.image, behaviour)
                self._emit(pod, c, "Warning", "Failed", f'Failed to pull image "{c.image}": {failure}')
                self._emit(pod, c, "Warning", "Failed", "Error: ErrImagePull")
                c.phase, c.ticks, c.waiting = "pull_error", 0, ("ErrImagePull", failure)
            else:
                size = 1_000_000 + len(c.image)
                self._emit(
                    pod,
                    c,
                    "Normal",
                    "Pulled",
                    f'Successfully pulled image "{c.image}" in 1.2s (1.2s including waiting). Image size: {size} bytes.',
                )
                self._start(pod, c, behaviour)
        elif c.phase == "pull_error":
            if behaviour.name != "pull_error":
                c.phase, c.ticks = "pulling", 0
            elif c.waiting[0] == "ErrImagePull":
                failure = self._pull_failure(c.image, behaviour)
                c.waiting = ("ImagePullBackOff", f'Back-off pulling image "{c.image}": ErrImagePull: {failure}')
                self._emit(pod, c, "Normal", "BackOff", f'Back-off pulling image "{c.image}"')
                self._emit(pod, c, "Warning", "Failed", "Error: ImagePullBackOff")
            elif c.ticks >= self.backoff_ticks * 3:
                failure = self._pull_failure(c.image, behaviour)
                self._emit(pod, c, "Normal", "Pulling", f'Pulling image "{c.image}"')
                self._emit(pod, c, "Warning", "Failed", f'Failed to pull image "{c.image}": {failure}')
                self._emit(pod, c, "Warning", "Failed", "Error: ErrImagePull")
                c.ticks, c.waiting = 0, ("ErrImagePull", failure)
        elif c.phase == "running":
            self._run(pod, run, c, behaviour, policy)
        elif c.phase == "crashed":
            if c.restarts == 0:
                self._restart(pod, c, behaviour)
            else:
                c.phase, c.ticks = "backoff", 0
                meta = pod["metadata"]
                self._emit(
                    pod,
                    c,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {c.name} in pod {meta['name']}_{meta['namespace']}({meta['uid']})",
                )
        elif c.phase == "backoff" and c.ticks >= self.backoff_ticks:
            self._restart(pod, c, behaviour)

    def _restart(self, pod: dict[str, Any], c: ContainerRun, behaviour: Behaviour) -> None:
        c.restarts += 1
        self._emit(pod, c, "Normal", "Pulled", f'Container image "{c.image}" already present on machine')
        self._start(pod, c, behaviour)

    def _run(self, pod: dict[str, Any], run: PodRun, c: ContainerRun, behaviour: Behaviour, policy: str) -> None:
        if behaviour.name in FAILING and c.ticks >= int(behaviour.opts.get("after_ticks", 1)):
            oom = behaviour.name == "oom"
            self._finish(c, 137 if oom else int(behaviour.opts.get("exit_code", 1)), "OOMKilled" if oom else "Error",
                         behaviour.opts.get("termination_message"))
            c.phase, c.ticks = ("failed" if policy == "Never" else "crashed"), 0
        elif c.init:
            needed = int(behaviour.opts.get("ticks", 20)) if behaviour.name == "slow" else self.init_ticks
            if behaviour.name != "never_ready" and c.ticks >= needed:
                self._finish(c, 0, "Completed")
                c.phase = "done"
        elif behaviour.name == "never_ready":
            if c.ticks >= self.ready_ticks and c.ticks - c.last_unhealthy >= 10:
                port = behaviour.opts.get("port", 5000)
                self._emit(
                    pod,
                    c,
                    "Warning",
                    "Unhealthy",
                    f'Readiness probe failed: Get "http://{run.pod_ip}:{port}/health": dial tcp '
                    f"{run.pod_ip}:{port}: connect: connection refused",
                )
                c.last_unhealthy = c.ticks
        else:
            needed = int(behaviour.opts.get("ticks", 20)) if behaviour.name == "slow" else self.ready_ticks
            c.ready = c.ticks >= needed

    # ------------------------------------------------------------------ status

    def _container_status(self, c: ContainerRun, init_running: bool) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": c.name,
            "image": c.image,
            "imageID": "",
            "ready": c.ready,
            "restartCount": c.restarts,
            "started": c.phase == "running",
        }
        if c.instances:
            digest = hashlib.sha256(c.image.encode()).hexdigest()
            status["imageID"] = f"{c.image.split(':')[0]}@sha256:{digest}"
            status["containerID"] = c.instances[-1].container_id
        shown = c.instances[-1] if c.phase in ("crashed", "done", "failed") else None
        if c.phase == "running":
            status["state"] = {"running": {"startedAt": c.instances[-1].started_at}}
        elif shown is not None:
            status["state"] = {"terminated": shown.terminated}
        elif c.phase == "backoff":
            meta_message = f"back-off {10 * 2 ** min(c.restarts - 1, 5)}s restarting failed container={c.name}"
            status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": meta_message}}
        else:
            reason, message = ("PodInitializing", None) if (init_running and not c.init) else c.waiting
            status["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        previous = [i for i in c.instances if i.terminated and i is not shown]
        status["lastState"] = {"terminated": previous[-1].terminated} if previous else {}
        if c.init:
            status.pop("started")
        return status

    def _publish(self, pod: dict[str, Any], run: PodRun) -> None:
        signature = (
            tuple((c.phase, c.ready, c.restarts, c.waiting, len(c.instances)) for c in run.init + run.main),
            pod["metadata"]["resourceVersion"],
        )
        if signature == run.published:
            return
        now = self.cluster.now()
        init_done = all(c.phase == "done" for c in run.init)
        failed = any(c.phase == "failed" for c in run.init + run.main)
        status = copy.deepcopy(pod["status"])
        if failed:
            status["phase"] = "Failed"
        elif init_done and all(c.instances for c in run.main):
            status["phase"] = "Running"
        else:
            status["phase"] = "Pending"
        node = self.cluster.store.get("nodes", None, pod["spec"]["nodeName"]) or {}
        host_ip = next(
            (a["address"] for a in (node.get("status") or {}).get("addresses") or [] if a.get("type") == "InternalIP"),
            "10.0.0.1",
        )
        status.setdefault("startTime", now)
        status["hostIP"], status["hostIPs"] = host_ip, [{"ip": host_ip}]
        status["podIP"], status["podIPs"] = run.pod_ip, [{"ip": run.pod_ip}]
        pending_init = [c.name for c in run.init if c.phase != "done"]
        unready = [c.name for c in run.main if not c.ready]
        set_condition(status, {"type": "PodReadyToStartContainers", "status": "True"}, now)
        if pending_init:
            set_condition(
                status,
                {
                    "type": "Initialized",
                    "status": "False",
                    "reason": "ContainersNotInitialized",
                    "message": f"containers with incomplete status: [{' '.join(pending_init)}]",
                },
                now,
            )
        else:
            set_condition(status, {"type": "Initialized", "status": "True"}, now)
        for kind in ("Ready", "ContainersReady"):
            if unready or pending_init:
                set_condition(
                    status,
                    {
                        "type": kind,
                        "status": "False",
                        "reason": "ContainersNotReady",
                        "message": f"containers with unready status: [{' '.join(unready)}]",
                    },
                    now,
                )
            else:
                set_condition(status, {"type": kind, "status": "True"}, now)
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        status["conditions"].sort(key=lambda cond: order.index(cond["type"]) if cond["type"] in order else 99)
        if run.init:
            status["initContainerStatuses"] = [self._container_status(c, False) for c in run.init]
        status["containerStatuses"] = [self._container_status(c, not init_done) for c in run.main]
        stored = pod
        if status != pod["status"]:
            stored = self.cluster.store.update("pods", {**pod, "status": status})
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if not (unready or pending_init) and key not in self.ready_times:
                self.ready_times[key] = time.time()
        run.published = (signature[0], stored["metadata"]["resourceVersion"])

    # ------------------------------------------------------------------ logs

    def read_log(self, pod: dict[str, Any], container: str | None, previous: bool) -> str:
        """The ``pods/log`` answer, with the kubelet's errors for containers that never ran."""
        meta, spec = pod["metadata"], pod["spec"]
        main = [c["name"] for c in spec.get("containers") or []]
        init = [c["name"] for c in spec.get("initContainers") or []]
        if container is None:
            if len(main) != 1:
                message = f"a container name must be specified for pod {meta['name']}, choose one of: [{' '.join(main)}]"
                if init:
                    message += f" or one of the init containers: [{' '.join(init)}]"
                raise bad_request(message)
            container = main[0]
        if container not in main + init:
            raise bad_request(f"container {container} is not valid for pod {meta['name']}")
        run = self.runs.get(meta["uid"])
        found = next((c for c in (run.init + run.main if run else []) if c.name == container), None)
        if found is None or not found.instances:
            reason = "PodInitializing" if found is None else found.waiting[0]
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                reason = "trying and failing to pull image"
            raise bad_request(f'container "{container}" in pod "{meta["name"]}" is waiting to start: {reason}')
        if previous:
            if len(found.instances) < 2:
                raise bad_request(f'previous terminated container "{container}" in pod "{meta["name"]}" not found')
            return found.instances[-2].log
        return found.instances[-1].log
