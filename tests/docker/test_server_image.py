"""The inference server image: what it copies, installs, runs, and as whom (no Docker engine needed)."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .conftest import REPO, SERVER_DOCKERFILE, SERVER_DOCKERIGNORE
from .dockerfile_model import Dockerfile, DockerIgnore, copy_sources, expand

# The pod <-> server contract (notes/pod-contract.md): what a non-distributed pod runs.
CONTRACT_COMMAND = ["gunicorn"]
CONTRACT_ARGS = ["--config", "python:kaitoctl_server.gunicorn_conf", "kaitoctl_server.wsgi:app"]
KAITO_WEIGHTS_DIR = "/workspace/tfs/weights"
NAMED_CONTEXTS = {"model"}  # --build-context model=DIR, documented in the Dockerfile's header


def _context_copies(df: Dockerfile):
    """Every COPY/ADD that reads the build context (no --from), with its stage."""
    for stage in df.stages:
        for instruction in stage.instructions:
            if instruction.keyword in ("COPY", "ADD") and "from" not in instruction.flags:
                yield stage, instruction


def test_base_image_is_python_311_slim(server_dockerfile: Dockerfile) -> None:
    assert server_dockerfile.final.base == "python:3.11-slim"
    assert server_dockerfile.final.name == "server"


def test_every_path_copied_from_the_context_exists_and_is_sent(server_dockerfile: Dockerfile) -> None:
    ignore = DockerIgnore(SERVER_DOCKERIGNORE.read_text())
    checked = 0
    for _stage, instruction in _context_copies(server_dockerfile):
        sources, _dest = copy_sources(instruction)
        for source in sources:
            path = REPO / source
            assert path.exists(), f"line {instruction.line}: {source} is not in the build context (repo root)"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            assert files, f"line {instruction.line}: {source} is empty"
            for file in files:
                rel = file.relative_to(REPO).as_posix()
                assert not ignore.excluded(rel), f"{rel} is copied (line {instruction.line}) but Dockerfile.dockerignore leaves it out"
                checked += 1
    assert checked >= 10


def test_the_context_leaves_out_what_the_image_does_not_need() -> None:
    ignore = DockerIgnore(SERVER_DOCKERIGNORE.read_text())
    for rel in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".demo/model/model.safetensors",
                "kaitoctl/__pycache__/cli.cpython-311.pyc", "bench/run_all.py"):
        assert ignore.excluded(rel), rel


def test_copy_from_names_an_earlier_stage_or_the_documented_model_context(server_dockerfile: Dockerfile) -> None:
    seen: set[str] = set()
    header = SERVER_DOCKERFILE.read_text()
    for stage in server_dockerfile.stages:
        for instruction in stage.all("COPY"):
            for source in instruction.flags.get("from", []):
                assert source in seen or source in NAMED_CONTEXTS, f"line {instruction.line}: --from={source}"
                if source in NAMED_CONTEXTS:
                    assert f"--build-context {source}=" in header
        if stage.name:
            seen.add(stage.name)


@pytest.mark.parametrize("source", ["hub", "local"])
def test_each_weights_source_selects_a_stage_that_finalizes_the_weights(server_dockerfile: Dockerfile, source: str) -> None:
    selector = server_dockerfile.stage("weights")
    assert len(selector.instructions) == 1  # only picks the source stage
    chosen = expand(selector.instructions[0].text.split()[0], {"WEIGHTS_SOURCE": source})
    runs = [" ".join(i.words) for i in server_dockerfile.stage(chosen).all("RUN")]
    assert any("weights.py finalize /weights" in run for run in runs), chosen
    assert server_dockerfile.global_args["WEIGHTS_SOURCE"] == "hub"


def test_hub_weights_are_pinned_to_the_revision_build_arg(server_dockerfile: Dockerfile) -> None:
    fetch = " ".join(w for i in server_dockerfile.stage("weights-hub").all("RUN") for w in i.words)
    assert 'weights.py fetch --model-id "${MODEL_ID}" --revision "${MODEL_REVISION}" --dest /weights' in fetch
    # a gated model's token comes in as a build secret, never as a build argument baked into history
    assert "type=secret,id=hf_token" in " ".join(
        m for i in server_dockerfile.stage("weights-hub").all("RUN") for m in i.flags.get("mount", [])
    )


def test_weights_land_at_kaitos_path(server_dockerfile: Dockerfile) -> None:
    final = server_dockerfile.final
    weight_copies = [i for i in final.all("COPY") if i.flags.get("from") == ["weights"]]
    assert len(weight_copies) == 1
    assert copy_sources(weight_copies[0]) == (["/weights"], KAITO_WEIGHTS_DIR)
    assert final.env["KAITOCTL_MODEL"] == KAITO_WEIGHTS_DIR


def test_runs_as_non_root_uid_and_gid_1000(server_dockerfile: Dockerfile) -> None:
    final = server_dockerfile.final
    assert final.last("USER").words == ["1000:1000"]  # numeric: runAsNonRoot can check it
    users = " ".join(i.text for i in final.all("RUN"))
    assert "groupadd --gid 1000" in users and "useradd --uid 1000 --gid 1000" in users
    # nothing runs as the user before USER (installs stay root-owned, the weights read-only)
    user_index = final.instructions.index(final.last("USER"))
    assert all(i.keyword != "RUN" for i in final.instructions[user_index:])


def test_home_hf_home_and_workdir_are_under_tmp(server_dockerfile: Dockerfile) -> None:
    final = server_dockerfile.final
    for name in ("HOME", "HF_HOME", "XDG_CACHE_HOME"):
        assert final.env[name] == "/tmp" or final.env[name].startswith("/tmp/"), name
    assert final.last("WORKDIR").words == ["/tmp"]
    assert final.env["HF_HUB_OFFLINE"] == "1"  # weights are local: never wait on a hub at start-up


def test_exposes_the_server_port(server_dockerfile: Dockerfile) -> None:
    assert server_dockerfile.final.last("EXPOSE").words == ["5000"]


def test_cmd_is_the_pod_contract_command(server_dockerfile: Dockerfile) -> None:
    final = server_dockerfile.final
    assert final.last("ENTRYPOINT") is None  # so a pod's command + args replace the whole argv
    cmd = final.last("CMD")
    assert cmd.exec_form  # no shell: gunicorn is PID 1 and gets SIGTERM
    assert cmd.words == CONTRACT_COMMAND + CONTRACT_ARGS


def _module_defines(origin: str, name: str) -> bool:
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name) == name for alias in node.names):
                return True
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def test_cmd_names_a_gunicorn_config_and_app_that_exist(server_dockerfile: Dockerfile) -> None:
    words = server_dockerfile.final.last("CMD").words
    assert shutil.which(words[0], path=str(Path(sys.executable).parent)), "gunicorn is installed by the server extra"
    config = words[words.index("--config") + 1]
    assert config.startswith("python:")
    assert importlib.util.find_spec(config.removeprefix("python:")) is not None, config
    module, _, attribute = words[-1].partition(":")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    assert _module_defines(spec.origin, attribute), f"{module} defines no {attribute!r} at module level"


def test_torch_is_installed_first_pinned_within_the_server_extra(server_dockerfile: Dockerfile) -> None:
    final = server_dockerfile.final
    assert final.args["TORCH_VARIANT"] == "cuda"  # GPU nodes by default
    runs = [i.text for i in final.all("RUN")]
    torch_step = next(n for n, text in enumerate(runs) if '"torch==${TORCH_VERSION}"' in text)
    project_step = next(n for n, text in enumerate(runs) if "pip install \"/src/kaitoctl[server]\"" in text)
    assert torch_step < project_step
    assert "cuda)" in runs[torch_step] and "cpu)" in runs[torch_step] and "download.pytorch.org/whl/cpu" in runs[torch_step]
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    torch_req = next(
        Requirement(line) for line in setup["options.extras_require"]["server"].split("\n")
        if line.strip().startswith("torch")
    )
    assert torch_req.specifier.contains(final.args["TORCH_VERSION"]), (
        f"TORCH_VERSION {final.args['TORCH_VERSION']} is outside setup.cfg's {torch_req}: "
        "pip install .[server] would replace the chosen torch build"
    )


def _stage_context(df: Dockerfile, ignore: DockerIgnore, root: Path) -> Path:
    """Lay out under ``root`` what the final stage's context COPYs put in the image (as Docker copies)."""
    for stage, instruction in _context_copies(df):
        if stage is not df.final:
            continue
        sources, dest = copy_sources(instruction)
        for source in sources:
            src = REPO / source
            files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
            for file in files:
                rel = file.relative_to(REPO).as_posix()
                if ignore.excluded(rel):
                    continue
                if src.is_file():
                    target = root / dest.lstrip("/") / file.name if dest.endswith("/") or len(sources) > 1 else root / dest.lstrip("/")
                else:
                    target = root / dest.lstrip("/") / file.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)
    return root


def test_the_copied_sources_build_a_package_with_the_server_modules(
    server_dockerfile: Dockerfile, tmp_path: Path
) -> None:
    """What `pip install /src/kaitoctl[server]` installs in the image: setuptools' build of those files.

    build_py is the step of a wheel build that lays out the packages (package_dir mapping,
    package data); it needs no `wheel` package, so it runs with any setuptools a venv has.
    """
    image_root = _stage_context(server_dockerfile, DockerIgnore(SERVER_DOCKERIGNORE.read_text()), tmp_path / "image")
    project = image_root / "src" / "kaitoctl"
    out = tmp_path / "build"
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import setup; sys.argv[1:] = ['-q', 'build_py', '--build-lib', sys.argv[1]]; setup()", str(out)],
        cwd=project, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for needed in (
        "kaitoctl_server/gunicorn_conf.py",   # CMD --config
        "kaitoctl_server/wsgi.py",            # CMD app
        "kaitoctl_server/__main__.py",        # torchrun ... -m kaitoctl_server (distributed presets)
        "kaitoctl/catalog.py",
        "kaitoctl/data/presets.yaml",
    ):
        assert needed in names, f"{needed} missing from what the image installs"
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
