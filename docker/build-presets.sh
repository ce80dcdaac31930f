#!/usr/bin/env bash
# Build (and push) the inference server image of every public preset, named and tagged exactly
# as kaitoctl/data/presets.yaml says (<registry>/<image_name>:<image_tag>), so the images the
# rendered pods pull are the images built here.
#
#   docker/build-presets.sh                       print the docker commands, run nothing
#   docker/build-presets.sh --run                 build every public preset
#   docker/build-presets.sh --push falcon-7b      build and push one preset
#   docker/build-presets.sh --run --weights ./llama-2-7b-hf llama-2-7b
#                                                 a private preset from local weights
#
# Options:
#   --registry R        registry/namespace (default: $KAITOCTL_PRESET_REGISTRY, else ghcr.io/kaitoctl)
#   --torch-variant V   cuda (default, for GPU nodes) | cpu
#   --platform P        target platform (default linux/amd64, the GPU node pools' architecture)
#   --weights DIR       take the weights from DIR instead of the Hub (one preset only)
#   --run | --push      build the images; --push also pushes them
# Environment: DOCKER (default docker), PYTHON (default .venv/bin/python, else python3),
# HF_TOKEN (passed to the build as the secret hf_token, for gated models).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$repo_root"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Read the catalog from this checkout (kaitoctl.catalog needs only PyYAML), installed or not.
export PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}"
export DOCKER="${DOCKER:-docker}" DOCKER_BUILDKIT=1

exec "$PYTHON" - "$@" <<'PY'
import argparse
import os
import shlex
import subprocess
import sys

try:
    from kaitoctl.catalog import presets
except ImportError as exc:
    sys.exit(f"build-presets.sh: error: cannot read the preset catalog ({exc}); "
             "install PyYAML or point PYTHON at the project's virtual environment")

parser = argparse.ArgumentParser(prog="docker/build-presets.sh")
parser.add_argument("presets", nargs="*", metavar="PRESET", help="default: every public preset")
parser.add_argument("--registry", default=None)
parser.add_argument("--torch-variant", choices=("cuda", "cpu"), default="cuda")
parser.add_argument("--platform", default="linux/amd64")
parser.add_argument("--weights", default=None, metavar="DIR")
mode = parser.add_mutually_exclusive_group()
mode.add_argument("--run", action="store_true")
mode.add_argument("--push", action="store_true")
args = parser.parse_args()

catalog = presets()
names = args.presets or [name for name, preset in catalog.items() if preset.access == "public"]
if args.weights and len(names) != 1:
    sys.exit("build-presets.sh: error: --weights DIR builds one preset; name exactly one")
unknown = [name for name in names if name not in catalog]
if unknown:
    sys.exit(f"build-presets.sh: error: unknown preset(s) {', '.join(unknown)}; "
             f"the catalog has: {', '.join(catalog)}")
if args.weights:
    if not os.path.isfile(os.path.join(args.weights, "config.json")):
        sys.exit(f"build-presets.sh: error: {args.weights}/config.json not found: "
                 "--weights takes a transformers model directory")
private = [name for name in names if catalog[name].access != "public"]
if private and not args.weights:
    sys.exit(f"build-presets.sh: error: {', '.join(private)} is private (its weights are not public): "
             "build it from local weights with --weights DIR, then set presetOptions.image")

docker = os.environ["DOCKER"]
commands = []
for name in names:
    preset = catalog[name]
    image = preset.image(args.registry)
    build = [docker, "build", "--file", "docker/server/Dockerfile", "--platform", args.platform,
             "--build-arg", f"PRESET={preset.name}",
             "--build-arg", f"MODEL_ID={preset.model_id}",
             "--build-arg", f"MODEL_REVISION={preset.model_revision}",
             "--build-arg", f"TORCH_VARIANT={args.torch_variant}"]
    if args.weights:
        build += ["--build-arg", "WEIGHTS_SOURCE=local", "--build-context", f"model={args.weights}"]
    elif os.environ.get("HF_TOKEN"):
        build += ["--secret", "id=hf_token,env=HF_TOKEN"]
    build += ["--tag", image, "."]
    commands.append(build)
    if args.push:
        commands.append([docker, "push", image])

if not (args.run or args.push):
    print(f"# from {os.getcwd()}")
    for command in commands:
        print(shlex.join(command))
    sys.exit(0)
for command in commands:
    print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        sys.exit(result.returncode)
PY
