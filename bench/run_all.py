"""Run every benchmark under bench/ in turn (what `make bench` does).

Each benchmark measures its own baseline in the same run and prints ratios;
see the docstring at the top of each file for what it measures:

    bench_render.py   kaitoctl render start-up vs the import floor of its libraries
    bench_status.py   kaitoctl status API calls and time for 1/10/100 workspaces; apply's Ready delay
    bench_startup.py  kaitoctl status -A / apply start-up vs kubectl on the real test control plane
    bench_server.py   merged vs base vs unmerged-PEFT tokens/s; HTTP /chat vs raw generate(); merge cost
    bench_batching.py continuous batching: tokens/s at 1-16 clients, TTFT; merged vs no-adapter over HTTP
    bench_tp.py       tensor parallel on CPU: weight bytes per rank / whole model; tokens/s world size 2 / 1
    bench_soak.py     50 apply/adapters update/rollback/scale cycles with API faults: objects left inconsistent
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _venv import use_project_venv

use_project_venv("torch", "kubernetes", "kaitoctl", "kaitoctl_server")

BENCHES = ["bench_render.py", "bench_status.py", "bench_startup.py", "bench_server.py", "bench_batching.py", "bench_tp.py", "bench_soak.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.call([sys.executable, str(here / name)]) != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
