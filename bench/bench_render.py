"""Start-up cost of `kaitoctl render`, next to the floor its libraries set.

Runs, as fresh subprocesses and interleaved so that machine noise hits all
of them alike:

    python -c pass                                            (bare interpreter)
    python -c "import typer, rich.console, pydantic, yaml"    (the import floor)
    the floor + one pydantic model + Typer's option coercion  (context, see below)
    kaitoctl render -f examples/falcon-7b-adapters.yaml       (the command)

and prints the median wall time of each and the ratios. Target: render within
1.5x of the import floor. `import pydantic` alone is lazy and loads almost none
of pydantic; the first model class costs ~45 ms more here (BaseModel's machinery,
its first schema build, and pydantic's plugin lookup, which imports
importlib.metadata; kaitoctl skips that lookup when no plugin is installed), and
Typer >= 0.29 coerces options through pydantic too. "floor + models" measures
that, so the report shows what kaitoctl itself adds.

Bytecode: a pip install compiles every module to .pyc, so a user never pays for
compiling kaitoctl's sources at start-up. This machine sets
PYTHONDONTWRITEBYTECODE=1, which would make every run recompile kaitoctl (and
nothing else, whose .pyc came with the install). So all three commands run with
bytecode writing on and a private PYTHONPYCACHEPREFIX (a temporary directory,
filled by one warm-up run of each command, so the checkout stays clean).

Usage:

    python bench/bench_render.py [--runs N] [--file EXAMPLE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _venv import use_project_venv

use_project_venv("typer", "rich", "pydantic", "yaml", "kaitoctl")

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5
FULL_FLOOR = (
    "import typer, rich.console, pydantic, yaml\n"
    "from pydantic import BaseModel\n"
    "import typer._adapters\n"
    "class M(BaseModel):\n    x: int = 0\n"
    "M(x=1)"
)


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _kaitoctl() -> list[str]:
    """The installed ``kaitoctl`` script next to this interpreter (what users run), else ``-m kaitoctl``."""
    script = Path(sys.executable).with_name("kaitoctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kaitoctl"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (median reported)")
    parser.add_argument("--file", default="examples/falcon-7b-adapters.yaml", help="workspace file to render")
    args = parser.parse_args()

    py = sys.executable
    commands = {
        "python -c pass": [py, "-c", "pass"],
        "import floor": [py, "-c", "import typer, rich.console, pydantic, yaml"],
        # Context, not the target: `import pydantic` is lazy and loads almost none of pydantic; a
        # pydantic model needs BaseModel's machinery, and Typer >= 0.29 coerces options with it.
        "floor + models": [py, "-c", FULL_FLOOR],
        "kaitoctl render": [*_kaitoctl(), "render", "-f", args.file],
    }
    with tempfile.TemporaryDirectory(prefix="kaitoctl-bench-pycache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        for argv in commands.values():  # warm the OS file cache and write the .pyc files once
            _time(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(_time(argv, env))
    median = {name: statistics.median(values) for name, values in samples.items()}

    bare, floor, render = median["python -c pass"], median["import floor"], median["kaitoctl render"]
    print(f"runs per command: {args.runs} (median wall time, fresh subprocesses)")
    for name, value in median.items():
        print(f"  {name:<18} {value * 1000:8.1f} ms")
    print(f"import floor / bare python : {floor / bare:5.2f}x")
    print(f"floor + models / floor     : {median['floor + models'] / floor:5.2f}x")
    print(f"render / floor + models    : {render / median['floor + models']:5.2f}x")
    print(f"render / bare python       : {render / bare:5.2f}x")
    ratio = render / floor
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"render / import floor      : {ratio:5.2f}x ({verdict} the {TARGET}x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
