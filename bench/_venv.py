"""Run a benchmark with the project's virtualenv, whichever ``python`` started it.

``python bench/bench_X.py`` with a system Python lacks kaitoctl's packages (and, for the server
benchmark, torch). Then: re-run the same command with ``.venv/bin/python`` when ``make install``
(or ``make demo`` / ``make test``) has made it, else say what to run instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def use_project_venv(*modules: str) -> None:
    """Return when ``modules`` import here; else re-exec with the project's venv, or exit 2 saying what to run."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if not missing:
        return
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve():
        print(f"bench: {', '.join(missing)} not installed for {sys.executable}; using {VENV_PYTHON}",
              file=sys.stderr, flush=True)
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    script = Path(sys.argv[0]).name
    print(f"bench: {script} needs {', '.join(missing)}, which {sys.executable} does not have.\n"
          f"hint: run `make bench` (it installs everything into .venv first), or `make install` and then "
          f".venv/bin/python bench/{script}", file=sys.stderr)
    sys.exit(2)
