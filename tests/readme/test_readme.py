"""The README's commands, run as written.

Convention (the README follows it; tests/readme/fixture/README.md shows every case):

- A fenced code block with the info string ``sh`` whose FIRST line is ``# test: KIND`` is run;
  every other block is documentation only.
- One command per line; a line ending in ``\\`` continues on the next; blank lines and lines
  that are only a comment are skipped. Each command must exit 0, unless it ends in a comment
  ``# expect exit N``.
- ``# test: offline``: run from the repository root with bash, this environment's bin directory
  first on PATH, no network (HF_HUB_OFFLINE=1) and no kubeconfig. ``make demo`` runs the
  Makefile's demo recipe without its ``install`` prerequisite: that step creates .venv and
  pip-installs from the network, which a test cannot do; CI's ``.ci/run`` (``make test``) runs
  it on a fresh clone. ``make test`` is refused (it would run this test again). ``kaitoctl demo``
  runs on a free port in a temporary --dir (KAITOCTL_DEMO_PORT / KAITOCTL_DEMO_DIR), so the test
  neither needs port 5000 free nor touches the checkout's .demo.
- ``# test: demo-server``: curl lines against the demo server. The test starts
  ``kaitoctl demo --serve`` on a free port, rewrites ``127.0.0.1:5000`` / ``localhost:5000`` to
  it, runs each line, and checks the answer is JSON with the keys the route documents (or, for
  ``"stream": true``, server-sent events of JSON ending in ``[DONE]``); then Ctrl-C must stop
  the demo with exit 0. curl must be installed (it is here and on CI); nothing stands in for it.
- ``# test: cluster``: kaitoctl commands, run in order against one test cluster (tests/kubesim: a real
  control plane from KUBEBUILDER_ASSETS)
  per README, with KUBECONFIG pointing at it. The cluster has what the examples/ workspaces
  need: for each labelSelector and instanceType, ``resource.count`` Ready GPU nodes with those
  labels, that instance type and its GPUs (named after preferredNodes, then aks-gpu-0, -1, ...;
  the falcon-7b examples get one 2-GPU Standard_NC12s_v3 node labelled apps=falcon-7b), every
  namespace, and the pull secrets and API-key secrets they name.

The real README.md must have at least one tagged block, so that this test cannot pass by
having nothing to run.

Output blocks (README "real output", so that it cannot go stale): a fenced block with no info
string whose first line is ``$ COMMAND``. A ``$ `` line at the start of the block or after a blank
line is a command; every other line is what the commands print (stdout and stderr together, as
a terminal shows them). Commands run with bash from the repository root, in the same
environment as the tagged blocks. Their output must match, line by line, after both sides are
normalised: runs of spaces count as one (table widths follow the values), and what varies from
run to run is replaced (times and durations, IP addresses and ports, generated pod and request
ids). In an expected line ``...`` stands for any text; a line that is only ``...`` stands for any
number of lines. Blocks whose commands talk to a cluster (apply, preflight, status, adapters,
history, rollback, delete) run in README order against one fresh test cluster, prepared as for
``# test: cluster`` (plus ``FAILING_IMAGES``); the others run offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FIXTURE = Path(__file__).resolve().parent / "fixture" / "README.md"
BIN = Path(sys.executable).parent
KINDS = ("offline", "demo-server", "cluster")
COMMAND_TIMEOUT = 300

_OPEN_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")
_TAG = re.compile(r"^#\s*test:\s*(?P<kind>\S+)\s*$")
_EXPECT = re.compile(r"\s+#\s*expect exit (?P<code>\d+)\s*$")
_URL = re.compile(r"https?://[^\s'\"]+")
# Keys each route's JSON answer has (docs/server.md).
ROUTE_KEYS = {
    "/": {"message"},
    "/health": {"status"},
    "/healthz": {"status"},
    "/chat": {"Result"},
    "/v1/models": {"object", "data"},
    "/v1/completions": {"id", "object", "created", "model", "choices", "usage"},
    "/v1/chat/completions": {"id", "object", "created", "model", "choices", "usage"},
}


@dataclass(frozen=True)
class Command:
    text: str
    line: int  # first line in the README, 1-based
    expect: int = 0


@dataclass(frozen=True)
class Block:
    path: Path
    kind: str
    line: int
    commands: tuple[Command, ...]

    def where(self, command: Optional[Command] = None) -> str:
        return f"{self.path.relative_to(ROOT)}:{command.line if command else self.line}"


def _fenced_blocks(text: str) -> Iterator[tuple[int, str, list[tuple[int, str]]]]:
    """Every fenced code block: (index of its opening line, info string, [(line number, line)] of its body)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _OPEN_FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening.group("fence")
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        start, i = i, i + 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and not closing.match(lines[i]):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1  # past the closing fence
        yield start, opening.group("info") or "", body


def tagged_blocks(text: str, path: Path) -> list[Block]:
    """Every ``sh`` block whose first line is ``# test: KIND``, with its commands, in file order."""
    blocks: list[Block] = []
    for start, info, body in _fenced_blocks(text):
        if info != "sh" or not body:
            continue
        tag = _TAG.match(body[0][1].strip())
        if tag:
            blocks.append(Block(path, tag.group("kind"), start + 1, tuple(_commands(body[1:]))))
    return blocks


def _commands(body: list[tuple[int, str]]) -> Iterator[Command]:
    pending: list[str] = []
    first = 0
    for number, raw in body:
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            first = number
        if line.endswith("\\"):  # kept as written: bash joins the lines
            pending.append(line)
            continue
        pending.append(line)
        text = "\n".join(pending).strip()
        pending = []
        expect = _EXPECT.search(text)
        yield Command(text, first, int(expect.group("code")) if expect else 0)
    if pending:
        raise AssertionError(f"line {first}: the last command ends in a backslash")


def readme_blocks(path: Path) -> list[Block]:
    return tagged_blocks(path.read_text(encoding="utf-8"), path) if path.is_file() else []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def command_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", KUBECONFIG=os.devnull,
               KAITOCTL_PRESET_REGISTRY="myregistry.azurecr.io/kaitoctl")  # README: "export KAITOCTL_PRESET_REGISTRY=R"
    env.update(extra)
    return env


def run(block: Block, command: Command, text: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``text`` (``command`` as the test runs it) with bash from the repository root; check its exit code."""
    result = subprocess.run(["bash", "-c", f"set -o pipefail\n{text}"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=COMMAND_TIMEOUT, check=False)
    assert result.returncode == command.expect, (
        f"{block.where(command)}: `{command.text}` exited {result.returncode}, expected {command.expect}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    return result


# --- make targets -------------------------------------------------------------------------------


def makefile_recipe(target: str, makefile: Path = ROOT / "Makefile") -> list[str]:
    """The recipe lines of ``target`` in the Makefile."""
    lines = makefile.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"^{re.escape(target)}\s*:(?!=)", line):
            recipe = []
            for following in lines[index + 1:]:
                if not following.startswith("\t"):
                    break
                recipe.append(following.strip())
            return recipe
    raise AssertionError(f"the Makefile has no target {target!r}")


def make_as_run_here(text: str) -> str:
    """``make TARGET``: the target's recipe with the venv's bin directory taken from PATH (see the module)."""
    target = text.split()[1] if len(text.split()) == 2 else ""
    assert target and target != "test", (
        f"`{text}`: only `make <target>` with a target other than test can run in a test "
        "(`make test` would run this test again); put it in an untagged block")
    commands = []
    for line in makefile_recipe(target):
        assert line.startswith("$(VENV)/bin/"), f"make {target}: recipe line {line!r} does not run from the venv"
        commands.append(line.removeprefix("$(VENV)/bin/").replace("$(PY)", "python"))
    return "\n".join(commands)


# --- demo server ---------------------------------------------------------------------------------


class DemoServer:
    """``kaitoctl demo --serve`` on a free port, its output in files."""

    def __init__(self, demo_dir: Path) -> None:
        self.port = free_port()
        self.log = demo_dir.parent / f"demo-server-{self.port}.log"  # beside: the demo's --dir holds its files only
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "kaitoctl"), "demo", "--serve", "--dir", str(demo_dir), "--port", str(self.port)],
            cwd=ROOT, env=command_env(), stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"kaitoctl demo --serve exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        pytest.fail(f"kaitoctl demo --serve not ready after {timeout}s:\n{self.log.read_text()}")

    def rewrite(self, text: str) -> str:
        return re.sub(r"(?:127\.0\.0\.1|localhost):5000\b", f"127.0.0.1:{self.port}", text)

    def close(self) -> Optional[int]:
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        else:
            code = self.proc.returncode
        self._log.close()
        return code


def check_answer(block: Block, command: Command, sent: str, output: str) -> None:
    """The answer is JSON with the route's keys (or a stream of JSON events ending in [DONE])."""
    urls = _URL.findall(sent)
    assert urls, f"{block.where(command)}: no URL in `{command.text}`"
    route = urlparse(urls[0]).path.rstrip("/") or "/"
    where = f"{block.where(command)}: `{command.text}` answered {output[:500]!r}"
    if output.lstrip().startswith("data:"):
        events = [line[len("data:"):].strip() for line in output.splitlines() if line.startswith("data:")]
        assert events[-1] == "[DONE]", where
        chunks = [json.loads(event) for event in events[:-1]]
        assert chunks and all("choices" in chunk for chunk in chunks), where
        return
    try:
        answer = json.loads(output)
    except ValueError:
        raise AssertionError(f"{where}: not JSON") from None
    expected = ROUTE_KEYS.get(route) or ({"id", "object"} if route.startswith("/v1/models/") else None)
    assert expected is not None, f"{block.where(command)}: no expected keys known for route {route}; add them here"
    assert isinstance(answer, dict) and expected <= set(answer), f"{where}: expected keys {sorted(expected)}"


# --- test cluster --------------------------------------------------------------------------------


def prepare_cluster(sim: Any) -> None:
    """Give the test cluster what the example workspaces need (see the module docstring)."""
    from kaitoctl.catalog import get_sku

    groups: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    namespaces: set[str] = set()
    secrets: dict[tuple[str, str], dict[str, str]] = {}
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(doc, dict) or doc.get("kind") != "Workspace":
                continue
            meta, resource, inference = doc.get("metadata", {}), doc.get("resource", {}), doc.get("inference") or {}
            namespace = meta.get("namespace") or "default"
            namespaces.add(namespace)
            labels = (resource.get("labelSelector") or {}).get("matchLabels") or {}
            key = (resource.get("instanceType", "Standard_NC12s_v3"), tuple(sorted(labels.items())))
            group = groups.setdefault(key, {"count": 1, "preferred": []})
            group["count"] = max(group["count"], int(resource.get("count", 1)))
            group["preferred"] += [n for n in resource.get("preferredNodes") or [] if n not in group["preferred"]]
            pulls = ((inference.get("preset") or {}).get("presetOptions") or {}).get("imagePullSecrets") or []
            for adapter in inference.get("adapters") or []:
                pulls += (adapter.get("source") or {}).get("imagePullSecrets") or []
            for name in pulls:
                secrets[(namespace, name)] = {"type": "kubernetes.io/dockerconfigjson",
                                              "data": {".dockerconfigjson": '{"auths": {}}'}}
            api_key = (meta.get("annotations") or {}).get("kaitoctl.io/api-key-secret")
            if api_key:
                secrets[(namespace, api_key)] = {"type": "Opaque", "data": {"api-key": "readme-test-key"}}
    for namespace in sorted(namespaces - {"default", "kube-system"}):
        sim.add_namespace(namespace)
    for (namespace, name), secret in sorted(secrets.items()):
        sim.add_secret(namespace, name, data=secret["data"], type=secret["type"])
    serial = 0
    for (instance_type, labels), group in sorted(groups.items()):
        sku = get_sku(instance_type)
        names = list(group["preferred"])
        while len(names) < group["count"]:
            names.append(f"aks-gpu-{serial}")
            serial += 1
        for name in names:
            sim.add_node(name, labels=dict(labels), gpus=sku.gpu_count if sku else 1, instance_type=instance_type)


# --- running a README --------------------------------------------------------------------------


def run_offline(blocks: list[Block], demo_dir: Path) -> None:
    env = command_env(KAITOCTL_DEMO_DIR=str(demo_dir), KAITOCTL_DEMO_PORT=str(free_port()))
    for block in blocks:
        for command in block.commands:
            text = command.text
            if re.match(r"^make\s", text):
                text = make_as_run_here(_EXPECT.sub("", text).strip())
            run(block, command, text, env)


def run_demo_server(blocks: list[Block], demo_dir: Path) -> None:
    assert shutil.which("curl"), "curl is not installed: the README's curl lines are run with curl itself"
    server = DemoServer(demo_dir)
    try:
        server.wait_ready()
        for block in blocks:
            for command in block.commands:
                assert command.text.startswith("curl "), (
                    f"{block.where(command)}: a demo-server block holds curl lines only, not `{command.text}`")
                sent = server.rewrite(command.text)
                result = run(block, command, sent, command_env())
                if command.expect == 0:
                    check_answer(block, command, sent, result.stdout)
    finally:
        code = server.close()
    assert code == 0, f"Ctrl-C should stop `kaitoctl demo --serve` with exit 0, got {code}:\n{server.log.read_text()}"


def run_cluster(blocks: list[Block], _demo_dir: Path) -> None:
    from kubesim import KubeSim, controlplane

    controlplane.skip_unless_available()
    with KubeSim(tick_seconds=0.02) as sim:
        prepare_cluster(sim)
        env = command_env(KUBECONFIG=sim.kubeconfig_path)
        for block in blocks:
            for command in block.commands:
                assert command.text.startswith("kaitoctl "), (
                    f"{block.where(command)}: a cluster block holds kaitoctl commands only, not `{command.text}`")
                run(block, command, command.text, env)


RUNNERS = {"offline": run_offline, "demo-server": run_demo_server, "cluster": run_cluster}


# --- output blocks -------------------------------------------------------------------------------

CLUSTER_COMMANDS = {"apply", "preflight", "status", "adapters", "history", "rollback", "delete"}
# Images the README's output shows failing, and how the test cluster makes them fail.
FAILING_IMAGES = {"myregistry.azurecr.io/adapters/typo:0.1.0": "pull_error"}
_VARYING = [  # (pattern, stand-in), applied in order to both sides
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"), "<TIME>"),
    (re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\]"), "<LOGTIME>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ADDR>"),
    (re.compile(r"\b(?:localhost|\[::1\]):\d+\b"), "<ADDR>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<ID>"),
    (re.compile(r"-[a-z0-9]{10}-[a-z0-9]{5}\b"), "-<POD>"),
    (re.compile(r"\b\d+(?:\.\d+)?m?s\b"), "<DUR>"),
    (re.compile(r"--port \d+"), "--port <PORT>"),
    (re.compile(r"\s+"), " "),
]


@dataclass(frozen=True)
class Output:
    """One ``$ COMMAND`` of an output block and the lines the README shows for it."""

    path: Path
    line: int
    command: str
    expected: tuple[str, ...]

    @property
    def cluster(self) -> bool:
        words = self.command.split()
        return len(words) > 1 and words[0] == "kaitoctl" and words[1] in CLUSTER_COMMANDS

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def output_blocks(text: str, path: Path) -> list[Output]:
    """Every ``$ COMMAND`` of every output block (see the module docstring), in file order."""
    found: list[Output] = []
    for _start, info, body in _fenced_blocks(text):
        if info or not body or not body[0][1].startswith("$ "):
            continue
        current: Optional[tuple[int, str, list[str]]] = None
        previous_blank = True
        for number, line in body:
            if line.startswith("$ ") and previous_blank:
                if current:
                    found.append(Output(path, current[0], current[1], tuple(current[2])))
                current = (number, line[2:].strip(), [])
            elif current is not None and line.strip():
                current[2].append(line)
            previous_blank = not line.strip()
        if current:
            found.append(Output(path, current[0], current[1], tuple(current[2])))
    return found


def normalise(line: str) -> str:
    for pattern, stand_in in _VARYING:
        line = pattern.sub(stand_in, line)
    return line.strip()


def _pattern(expected: str) -> "re.Pattern[str]":
    parts = re.split(r"\s*\.\.\.\s*", normalise(expected))
    return re.compile(".*".join(re.escape(part) for part in parts) + r"\Z", re.DOTALL)


def output_mismatch(expected: list[str], actual: list[str]) -> Optional[str]:
    """None when ``actual`` lines are what ``expected`` shows (``...`` rules in the module docstring), else
    the furthest expected line that could not be matched."""
    want = [line for line in expected if line.strip()]
    have = [normalise(line) for line in actual if line.strip()]
    furthest = [0]

    def match(w: int, h: int) -> bool:
        furthest[0] = max(furthest[0], w)
        if w == len(want):
            return h == len(have)
        if want[w].strip() == "...":
            return any(match(w + 1, k) for k in range(h, len(have) + 1))
        return h < len(have) and bool(_pattern(want[w]).match(have[h])) and match(w + 1, h + 1)

    if match(0, 0):
        return None
    return want[furthest[0]] if furthest[0] < len(want) else "(the end: more lines were printed)"


def output_matches(expected: list[str], actual: list[str]) -> bool:
    return output_mismatch(expected, actual) is None


def check_output(output: Output, env: dict[str, str], cwd: Path = ROOT) -> None:
    result = subprocess.run(["bash", "-c", f"set -o pipefail\n{output.command} 2>&1"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    mismatch = output_mismatch(list(output.expected), result.stdout.splitlines())
    assert mismatch is None, (
        f"{output.where()}: `{output.command}` no longer prints what the README shows; first unmatched README "
        f"line:\n{mismatch}\n--- it printed (exit {result.returncode}):\n{result.stdout[-6000:]}")


def _output_cases() -> list[Any]:
    cases = []
    for path in (FIXTURE, README):
        outputs = output_blocks(path.read_text(encoding="utf-8"), path) if path.is_file() else []
        for kind, chosen in (("offline", [o for o in outputs if not o.cluster]),
                             ("cluster", [o for o in outputs if o.cluster])):
            if chosen:
                cases.append(pytest.param(chosen, kind, id=f"{path.relative_to(ROOT)}-{kind}"))
    return cases


@pytest.mark.parametrize(("outputs", "kind"), _output_cases())
def test_readme_output_is_what_the_commands_print(outputs: list[Output], kind: str, demo_dir: Path) -> None:
    if kind == "offline":
        # `kaitoctl demo` as written, with its default --dir .demo: in a directory whose .demo is the
        # test's demo directory (the checkout's .demo stays untouched), on a free port.
        home = demo_dir.parent / "home"
        home.mkdir(exist_ok=True)
        demo_dir.mkdir(exist_ok=True)  # an empty --dir is the demo's to fill
        if not (home / ".demo").is_symlink():
            (home / ".demo").symlink_to(demo_dir, target_is_directory=True)
        env = command_env(KAITOCTL_DEMO_PORT=str(free_port()))
        for output in outputs:
            check_output(output, env, home if output.command.startswith("kaitoctl demo") else ROOT)
        return
    from kubesim import KubeSim

    with KubeSim(tick_seconds=0.02) as sim:
        prepare_cluster(sim)
        for image, behaviour in FAILING_IMAGES.items():
            sim.set_image_behaviour(image, behaviour)
        env = command_env(KUBECONFIG=sim.kubeconfig_path)
        for output in outputs:
            check_output(output, env)


def test_output_blocks_are_read_and_compared_as_documented() -> None:
    text = """
```
$ kaitoctl status -n llm
NAME  AGE  ENDPOINT
w     3s   10.96.0.1:80
$ not a command: it follows output

$ kaitoctl demo
...
done at 2026-11-29T06:50:21Z after 0.4s ...
```

```sh
$ not an output block: it has an info string
```
"""
    outputs = output_blocks(text, README)
    assert [(o.command, o.cluster) for o in outputs] == [("kaitoctl status -n llm", True), ("kaitoctl demo", False)]
    assert outputs[0].expected == ("NAME  AGE  ENDPOINT", "w     3s   10.96.0.1:80",
                                   "$ not a command: it follows output")
    assert output_matches(["NAME AGE ENDPOINT", "w 3s 10.96.0.1:80"],
                          ["NAME    AGE  ENDPOINT", "w       12s  10.96.7.9:80"])
    assert not output_matches(["NAME AGE ENDPOINT", "w 3s 10.96.0.1:80"], ["NAME AGE ENDPOINT", "v 3s 10.96.0.1:80"])
    assert output_matches(list(outputs[1].expected), ["a", "b", "done at 2026-12-01T00:00:00Z after 12.5s, with more"])
    assert not output_matches(list(outputs[1].expected), ["done at 2026-12-01T00:00:00Z after 1s", "one more line"])
    assert not output_matches(["a"], [])  # a README line the command no longer prints


def _cases() -> list[Any]:
    cases = []
    for path in (FIXTURE, README):
        blocks = readme_blocks(path)
        for kind in KINDS:
            if any(block.kind == kind for block in blocks):
                cases.append(pytest.param(path, kind, id=f"{path.relative_to(ROOT)}-{kind}"))
    return cases


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo directory for every README run here: made by the first demo, reused by the others."""
    return tmp_path_factory.mktemp("readme") / "demo"


@pytest.mark.parametrize(("path", "kind"), _cases())
def test_readme_commands_run_as_written(path: Path, kind: str, demo_dir: Path) -> None:
    blocks = [block for block in readme_blocks(path) if block.kind == kind]
    assert all(block.commands for block in blocks), f"{[b.where() for b in blocks if not b.commands]}: empty block"
    RUNNERS[kind](blocks, demo_dir)


@pytest.mark.parametrize("path", [FIXTURE, README], ids=lambda p: str(p.relative_to(ROOT)))
def test_readme_has_tagged_blocks_of_known_kinds(path: Path) -> None:
    blocks = readme_blocks(path)
    assert blocks, (f"{path.relative_to(ROOT)} has no ```sh block starting with `# test: offline|demo-server|"
                    "cluster`: its commands would go untested")
    unknown = [f"{block.where()}: {block.kind}" for block in blocks if block.kind not in KINDS]
    assert not unknown, f"unknown `# test:` kinds (known: {', '.join(KINDS)}): {unknown}"


def test_the_fixture_covers_every_kind_and_the_parser_reads_it_as_written() -> None:
    blocks = readme_blocks(FIXTURE)
    assert [block.kind for block in blocks] == list(KINDS)  # the untagged and console blocks are not run
    offline = blocks[0].commands
    assert offline[1].text == "kaitoctl render -f examples/falcon-7b-adapters.yaml \\\n  -o json > /dev/null"
    assert [c.expect for c in offline] == [0, 0, 3, 0]
    assert offline[2].line == blocks[0].line + 5  # the fence, the tag, two commands (one on two lines)
    assert [c.expect for c in blocks[2].commands] == [0, 4, 0]


def test_make_demo_runs_the_makefiles_demo_recipe() -> None:
    assert make_as_run_here("make demo") == "kaitoctl demo"
    with pytest.raises(AssertionError, match="would run this test again"):
        make_as_run_here("make test")
