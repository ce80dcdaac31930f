"""docker/build-presets.sh builds exactly the images the catalog (and so the rendered pods) name."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from kaitoctl.catalog import DEFAULT_REGISTRY, REGISTRY_ENV, presets

from .conftest import REPO, script_env

SCRIPT = REPO / "docker" / "build-presets.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=script_env(**env), timeout=60)


def _builds(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


def _build_args(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, word in enumerate(command) if word == "--build-arg"]
    return dict(pair.split("=", 1) for pair in pairs)


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_prints_one_build_per_public_preset_tagged_as_the_catalog_says() -> None:
    result = _run()
    assert result.returncode == 0, result.stderr
    builds = _builds(result.stdout)
    public = [p for p in presets().values() if p.access == "public"]
    assert public, "the catalog has public presets"
    assert [_build_args(b)["PRESET"] for b in builds] == [p.name for p in public]
    for command, preset in zip(builds, public):
        assert command[:2] == ["docker", "build"]
        assert _option(command, "--file") == "docker/server/Dockerfile"
        assert command[-1] == "."  # the repository root is the build context
        assert _option(command, "--tag") == preset.image() == f"{DEFAULT_REGISTRY}/{preset.image_name}:{preset.image_tag}"
        assert _build_args(command) == {
            "PRESET": preset.name,
            "MODEL_ID": preset.model_id,
            "MODEL_REVISION": preset.model_revision,
            "TORCH_VARIANT": "cuda",
        }
    assert result.stdout.startswith(f"# from {REPO}")


def test_registry_comes_from_the_flag_or_the_same_variable_render_uses() -> None:
    preset = next(p for p in presets().values() if p.access == "public")
    from_env = _builds(_run(preset.name, **{REGISTRY_ENV: "registry.example/team"}).stdout)
    assert _option(from_env[0], "--tag") == f"registry.example/team/{preset.image_name}:{preset.image_tag}"
    from_flag = _builds(_run("--registry", "other.example/x/", preset.name).stdout)
    assert _option(from_flag[0], "--tag") == preset.image("other.example/x/")


def test_run_and_push_call_docker_in_order(fake_docker) -> None:
    docker, calls = fake_docker
    preset = next(p for p in presets().values() if p.access == "public")
    result = _run("--push", "--torch-variant", "cpu", preset.name, DOCKER=str(docker))
    assert result.returncode == 0, result.stderr
    build, push = calls()
    assert build[0] == "build" and _build_args(build)["TORCH_VARIANT"] == "cpu"
    assert push == ["push", preset.image()]
    assert f"+ {docker} build" in result.stderr  # the user sees what runs


def test_hf_token_is_passed_as_a_build_secret_not_an_argument() -> None:
    preset = next(p for p in presets().values() if p.access == "public")
    command = _builds(_run(preset.name, HF_TOKEN="hf_secret_value").stdout)[0]
    assert _option(command, "--secret") == "id=hf_token,env=HF_TOKEN"
    assert "hf_secret_value" not in " ".join(command)


def test_private_presets_need_local_weights(tmp_path: Path) -> None:
    private = [p for p in presets().values() if p.access == "private"]
    assert private, "the catalog has private presets"
    preset = private[0]
    refused = _run(preset.name)
    assert refused.returncode == 1
    assert f"{preset.name} is private" in refused.stderr and "--weights DIR" in refused.stderr
    assert "Traceback" not in refused.stderr
    (tmp_path / "config.json").write_text("{}")
    command = _builds(_run("--weights", str(tmp_path), preset.name).stdout)[0]
    assert _build_args(command)["WEIGHTS_SOURCE"] == "local"
    assert _option(command, "--build-context") == f"model={tmp_path}"
    assert _option(command, "--tag") == preset.image()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-preset"], "unknown preset(s) no-such-preset"),
        (["--weights", "/nonexistent", "x", "y"], "--weights DIR builds one preset"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
