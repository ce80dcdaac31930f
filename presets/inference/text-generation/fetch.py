"""Fetch a preset's weights from Hugging Face before the server starts (the pods' init container).

    python -m kaitoctl_server.fetch --repo meta-llama/Llama-3.1-8B-Instruct --revision 0e9e39f249a1 \\
        --dir /workspace/weights [--termination-log /dev/termination-log]

KAITO downloads today's big presets when the pod starts; kaitoctl's rendered pods run this module
in an init container of the server image, into the emptyDir the server then loads
(``KAITOCTL_MODEL``). It uses huggingface_hub's own functions (``HfApi.model_info`` to pin the
revision to its commit and list the files, ``hf_hub_download`` per file into ``--dir``):

- the token is ``HF_TOKEN`` (the workspace's modelAccessSecret, by secretKeyRef); the endpoint
  ``HF_ENDPOINT`` (default the public Hub);
- resumable: a dropped connection is resumed with an HTTP range by huggingface_hub; files already
  complete are not fetched again, so a restarted init container (same pod, same emptyDir) goes on
  from the first file it had not finished; a finished fetch leaves a marker so that a restart is
  done at once. huggingface_hub >= 2 writes each download to a per-process temporary file that a
  later process cannot resume: what a killed attempt left of those is removed first (said in the
  log), so restarts cannot fill the volume;
- progress: one line per file on stdout (the pod log);
- failure: one line saying why (401/403 gated or refused token, 404 revision, disk full, endpoint
  unreachable), on stderr and in the termination message file, which Kubernetes puts into the
  container's status, where ``kaitoctl apply``'s rollout watch reads it. Exit code 1.

Imports huggingface_hub only (no torch).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

DONE_MARKER = ".kaitoctl-fetched"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# Kubernetes keeps at most 4096 bytes of a termination message.
MAX_MESSAGE_BYTES = 4096
# Weight formats the server does not need when safetensors are there (KAITO's repos ship both).
SKIPPED_WITH_SAFETENSORS = (".bin", ".pth", ".pt", ".gguf", ".msgpack", ".h5", ".onnx")
SKIPPED_DIRS = ("original/",)
# huggingface_hub's per-process partial file in <dir>/.cache/huggingface/download/:
# <file>.<etag>.<8 hex of a uuid>.incomplete. Only the process that made it could resume it.
ORPHANED_PARTIAL = re.compile(r"\.[0-9a-f]{32,64}\.[0-9a-f]{8}\.incomplete$")


class FetchError(Exception):
    """A failure with its one-line reason."""


def choose_files(names: list[str]) -> list[str]:
    """The files the server loads: everything but duplicate weight formats and the original/ checkpoints."""
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    out = []
    for name in sorted(names):
        if name.startswith(SKIPPED_DIRS) or name.startswith("."):
            continue
        if has_safetensors and name.endswith(SKIPPED_WITH_SAFETENSORS):
            continue
        out.append(name)
    return out


def _size(value: Optional[int]) -> str:
    if value is None:
        return "? bytes"
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value} bytes"


def fetch(repo: str, revision: str, directory: str, *, token: Optional[str] = None,
          endpoint: Optional[str] = None, say=print) -> str:
    """Download ``repo`` at ``revision`` into ``directory``; return the commit. Raises FetchError."""
    from huggingface_hub import HfApi, hf_hub_download

    target = Path(directory)
    marker = target / DONE_MARKER
    if marker.is_file() and marker.read_text().split() [:2] == [repo, revision]:
        say(f"fetch: {repo}@{revision} is already in {directory}")
        return marker.read_text().split()[2]
    where = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        info = HfApi(endpoint=where, token=token).model_info(repo, revision=revision, files_metadata=True)
        commit = info.sha or revision
        sizes = {s.rfilename: s.size for s in info.siblings or []}
        files = choose_files(list(sizes))
        total = sum(sizes[f] or 0 for f in files)
        say(f"fetch: {repo}@{revision} (commit {commit}) from {where}: {len(files)} files, {_size(total)}, "
            f"into {directory}")
        target.mkdir(parents=True, exist_ok=True)
        count, size = remove_orphaned_partials(target)
        if count:
            say(f"fetch: removed {count} partial file(s) ({_size(size)}) an interrupted earlier attempt left")
        started = time.monotonic()
        done = 0
        for index, name in enumerate(files, 1):
            hf_hub_download(repo, name, revision=commit, local_dir=directory, token=token, endpoint=where)
            done += sizes[name] or 0
            say(f"fetch: [{index}/{len(files)}] {name} ({_size(sizes[name])}; {_size(done)} of {_size(total)}, "
                f"{time.monotonic() - started:.0f}s)")
        marker.write_text(f"{repo} {revision} {commit}\n")
    except FetchError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure becomes its one-line reason
        raise FetchError(reason(err, repo, revision, directory, where, token)) from err
    say(f"fetch: done: {repo}@{revision} in {directory}")
    return commit


def remove_orphaned_partials(target: Path) -> tuple[int, int]:
    """Delete the partial downloads a killed earlier attempt left; return (files, bytes)."""
    count = size = 0
    for path in (target / ".cache" / "huggingface" / "download").rglob("*.incomplete"):
        if ORPHANED_PARTIAL.search(path.name) and path.is_file():
            size += path.stat().st_size
            path.unlink(missing_ok=True)
            count += 1
    return count, size


def reason(err: BaseException, repo: str, revision: str, directory: str, endpoint: str,
           token: Optional[str]) -> str:
    """One line a user can act on, with the registry's own answer when there is one."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    chain: list[BaseException] = []
    probe: Optional[BaseException] = err
    while probe is not None and probe not in chain:
        chain.append(probe)
        probe = probe.__cause__ or probe.__context__
    for item in chain:
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT):
            return (f"disk full while writing the weights of {repo} into {directory}: give the weights volume more "
                    "room (the node's disk, or the emptyDir sizeLimit)")
    http = next((e for e in chain if isinstance(e, HfHubHTTPError)), None)
    if http is not None:
        status = http.response.status_code if getattr(http, "response", None) is not None else None
        answer = (getattr(http, "server_message", None) or str(http).splitlines()[0]).strip().replace("\n", " ")
        said = f"{endpoint} answered HTTP {status}: {answer}"
        if isinstance(http, RevisionNotFoundError):
            return f"revision {revision} of {repo} not found: {said}"
        if status in (401, 403) or isinstance(http, GatedRepoError):
            if token:
                return (f"access to {repo} refused with the token in HF_TOKEN: {said}; check the token in the "
                        "workspace's modelAccessSecret and that its account accepted the model's license")
            return (f"access to {repo} refused without a token (gated repository): {said}; set "
                    "presetOptions.modelAccessSecret to a Secret whose key HF_TOKEN holds a token")
        if isinstance(http, RepositoryNotFoundError) or status == 404:
            return f"{repo}@{revision} not found: {said}"
        return f"downloading {repo}@{revision} failed: {said}"
    return f"downloading {repo}@{revision} from {endpoint} failed: {type(err).__name__}: {err}".replace("\n", " ")


def write_termination_message(path: str, message: str) -> None:
    """Kubernetes shows this file's content in the container's terminated state (best effort)."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(message.encode("utf-8")[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore"))
    except OSError:
        pass


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaitoctl_server.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="Hugging Face repository, e.g. meta-llama/Llama-3.1-8B-Instruct")
    parser.add_argument("--revision", required=True, help="the pinned commit (or a branch/tag)")
    parser.add_argument("--dir", required=True, help="where the server loads the model from")
    parser.add_argument("--termination-log", default=DEFAULT_TERMINATION_LOG,
                        help="where the failure reason goes (Kubernetes' terminationMessagePath)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own progress lines, not \r bars in a log
    try:
        fetch(args.repo, args.revision, args.dir, token=os.environ.get("HF_TOKEN") or None,
              say=lambda line: print(line, flush=True))
    except FetchError as err:
        message = f"fetch failed: {err}"
        print(message, file=sys.stderr, flush=True)
        write_termination_message(args.termination_log, message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
