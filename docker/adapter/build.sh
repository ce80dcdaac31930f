#!/usr/bin/env bash
# Turn a peft output directory into an adapter image (FROM scratch, files under /data).
#
#   docker/adapter/build.sh [--push] [--base IMAGE] DIR IMAGE
#
# DIR    what `model.save_pretrained(DIR)` wrote: adapter_config.json + adapter_model.safetensors
# IMAGE  registry/name:tag, the value for the workspace's adapters[].source.image
# --push push IMAGE after building it
# --base base image (default scratch; busybox:1.36 for KAITO releases that copy with a shell)
# Environment: DOCKER (default docker), PYTHON (default python3, to check adapter_config.json).
set -euo pipefail

usage() { echo "usage: docker/adapter/build.sh [--push] [--base IMAGE] DIR IMAGE" >&2; exit 2; }
fail() { echo "build.sh: error: $*" >&2; exit 1; }

push=0
base=""
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --push) push=1; shift ;;
    --base) [[ $# -ge 2 ]] || usage; base="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; usage ;;
    *) positional+=("$1"); shift ;;
  esac
done
[[ ${#positional[@]} -eq 2 ]] || usage
dir="${positional[0]%/}"
image="${positional[1]}"
dockerfile="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/Dockerfile"

[[ -d "$dir" ]] || fail "$dir is not a directory"
if [[ ! -f "$dir/adapter_config.json" ]]; then
  nested=$(find "$dir" -mindepth 2 -maxdepth 2 -name adapter_config.json -printf '%h\n' 2>/dev/null | sort | head -3 | tr '\n' ' ')
  if [[ -n "$nested" ]]; then
    fail "$dir/adapter_config.json not found; peft saves several adapters one per subdirectory: pass one of: $nested"
  fi
  fail "$dir/adapter_config.json not found: DIR must be a peft output directory (model.save_pretrained(DIR))"
fi
if [[ ! -f "$dir/adapter_model.safetensors" ]]; then
  if [[ -f "$dir/adapter_model.bin" ]]; then
    fail "$dir holds adapter_model.bin (pickle), which kaitoctl and KAITO do not load: re-save it with model.save_pretrained(DIR, safe_serialization=True)"
  fi
  fail "$dir/adapter_model.safetensors not found: DIR must be a peft output directory (model.save_pretrained(DIR))"
fi
if [[ -f "$dir/adapter_model.bin" ]]; then
  echo "build.sh: note: $dir/adapter_model.bin is left out; the image holds the safetensors weights" >&2
fi
"${PYTHON:-python3}" - "$dir/adapter_config.json" <<'PY' || exit 1
import json, sys
path = sys.argv[1]
try:
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
except (OSError, ValueError) as exc:
    sys.exit(f"build.sh: error: {path} is not valid JSON: {exc}")
if not isinstance(config, dict):
    sys.exit(f"build.sh: error: {path} must hold a JSON object")
peft_type = config.get("peft_type", "LORA")
if peft_type != "LORA":
    sys.exit(f"build.sh: error: {path}: peft_type is {peft_type!r}; only LoRA adapters can be merged")
PY
# KAITO's rule for adapter images: registry/name:tag, no digest (and docker build -t takes no digest).
if [[ ! "$image" =~ ^.+/[^/:@]+:[^/:@]+$ ]]; then
  fail "image '$image' must look like registry/name:tag (what adapters[].source.image accepts)"
fi

docker="${DOCKER:-docker}"
build=("$docker" build --file "$dockerfile" --tag "$image")
[[ -n "$base" ]] && build+=(--build-arg "BASE_IMAGE=$base")
build+=("$dir")
echo "+ ${build[*]}" >&2
DOCKER_BUILDKIT=1 "${build[@]}"
if [[ $push -eq 1 ]]; then
  echo "+ $docker push $image" >&2
  "$docker" push "$image"
fi
echo "adapter image: $image (files under /data). Use it in the workspace as:" >&2
echo "  adapters: [{source: {name: <name>, image: $image}, strength: \"1.0\"}]" >&2
