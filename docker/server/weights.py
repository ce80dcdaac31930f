"""Put a model's weights into the inference server image (run by docker/server/Dockerfile).

Two steps, one per build stage:

- ``fetch``: download a Hugging Face repository at a pinned revision, only the files
  transformers needs to load it (config, tokenizer, one weight format; safetensors when the
  repository has them), so the image does not carry duplicate formats.
- ``finalize``: check the directory is a loadable model and make every file readable by the
  server's non-root user. safetensors writes its files with mode 0600 and the build runs as
  root, so without this the server (uid 1000) cannot open its own weights.

Standard library only, except ``fetch`` which imports huggingface_hub.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

# Small text files transformers reads besides the weights (configs, tokenizers, chat
# templates, and the modelling code of presets that need trust_remote_code).
_SUPPORT_SUFFIXES = (".json", ".txt", ".model", ".py", ".tiktoken", ".jinja")
# Native checkpoints of the model's own runtime (Mistral, Meta), not loadable by transformers.
_NATIVE_PREFIXES = ("consolidated",)
FILE_MODE = 0o644
DIR_MODE = 0o755


class WeightsError(Exception):
    """A problem the person building the image must fix; printed without a traceback."""


@dataclass(frozen=True)
class Summary:
    """What ``finalize`` left in the directory."""

    files: int
    total_bytes: int


def _is_weight_index(name: str) -> bool:
    return name.endswith(".safetensors.index.json") or name.endswith(".bin.index.json")


def select_files(names: Iterable[str]) -> list[str]:
    """The files of a Hub repository listing that the server needs, in sorted order.

    Top-level files only (sub-folders hold other formats: ``original/``, ``onnx/``). Weights
    in safetensors when any exist, else ``pytorch_model*.bin``; never both.
    """
    top = sorted(n for n in set(names) if "/" not in n and not n.startswith(_NATIVE_PREFIXES))
    safetensors = [n for n in top if n.endswith(".safetensors") or n.endswith(".safetensors.index.json")]
    if safetensors:
        weights = safetensors
    else:
        weights = [n for n in top if n.startswith("pytorch_model") and (n.endswith(".bin") or n.endswith(".bin.index.json"))]
    if not weights:
        raise WeightsError(
            "the repository has no model.safetensors / pytorch_model.bin at its top level: "
            "it is not a transformers checkpoint this server can load"
        )
    support = [
        n for n in top
        if not _is_weight_index(n) and (n.startswith("tokenizer") or n.endswith(_SUPPORT_SUFFIXES))
    ]
    return sorted(set(weights) | set(support))


def fetch(model_id: str, revision: str, dest: Path) -> list[str]:
    """Download the needed files of ``model_id`` at ``revision`` into ``dest``; return them."""
    if not model_id:
        raise WeightsError("MODEL_ID is empty: pass --build-arg MODEL_ID=<org/name> (or WEIGHTS_SOURCE=local)")
    if not revision or revision == "user-built":
        raise WeightsError(
            f"MODEL_REVISION is {revision!r}: pass --build-arg MODEL_REVISION=<commit> so the image "
            "is reproducible (the preset catalog pins one for every public preset)"
        )
    from huggingface_hub import HfApi, snapshot_download

    files = select_files(HfApi().list_repo_files(model_id, revision=revision))
    snapshot_download(repo_id=model_id, revision=revision, local_dir=str(dest), allow_patterns=files)
    return files


def finalize(directory: Path) -> Summary:
    """Check ``directory`` holds a loadable model; make it root-owned-readable by everyone."""
    if not directory.is_dir():
        raise WeightsError(f"{directory} is not a directory")
    # huggingface_hub keeps download metadata here; the server never needs it.
    shutil.rmtree(directory / ".cache", ignore_errors=True)
    if not (directory / "config.json").is_file():
        raise WeightsError(
            f"{directory}/config.json is missing: the weights must be a transformers model "
            "directory (save_pretrained output or a Hub snapshot)"
        )
    names = [p.name for p in directory.iterdir()]
    if not any(n.endswith(".safetensors") or (n.startswith("pytorch_model") and n.endswith(".bin")) for n in names):
        raise WeightsError(f"{directory} has no *.safetensors or pytorch_model*.bin weight files")
    files = 0
    total = 0
    for root, dirs, filenames in os.walk(directory):
        _set_mode(root, DIR_MODE)
        for name in filenames:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            _set_mode(path, FILE_MODE)
            files += 1
            total += os.path.getsize(path)
    return Summary(files=files, total_bytes=total)


def _set_mode(path: str, mode: int) -> None:
    # Only when it differs: a chmod, even to the same mode, copies a file up into a new
    # overlay layer, and these files are gigabytes.
    if stat.S_IMODE(os.lstat(path).st_mode) != mode:
        os.chmod(path, mode)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: ``fetch --model-id ID --revision REV --dest DIR`` or ``finalize DIR``."""
    parser = argparse.ArgumentParser(prog="weights.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    fetch_parser = sub.add_parser("fetch", help="download a pinned Hub snapshot")
    fetch_parser.add_argument("--model-id", default="")
    fetch_parser.add_argument("--revision", default="")
    fetch_parser.add_argument("--dest", type=Path, required=True)
    finalize_parser = sub.add_parser("finalize", help="check the model and fix file modes")
    finalize_parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.step == "fetch":
            files = fetch(args.model_id, args.revision, args.dest)
            print(f"weights: fetched {len(files)} files of {args.model_id}@{args.revision}")
        else:
            summary = finalize(args.directory)
            print(f"weights: {summary.files} files, {summary.total_bytes / 2**30:.2f} GiB in {args.directory}")
    except WeightsError as exc:
        print(f"weights.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
