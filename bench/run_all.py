"""Run every benchmark under bench/ in turn (what `make bench` does).

Each benchmark measures its own baseline in the same run and prints ratios;
see the docstring at the top of each file for what it measures:

    bench_render.py   kaitoctl render start-up vs the import floor of its libraries
    bench_status.py   kaitoctl status API calls and time for 1/10/100 workspaces; apply's Ready delay
    bench_startup.py  kaitoctl status -A / apply start-up vs kubectl on the real test control plane
    bench_server.py   merged vs base vs unmerged-PEFT tokens/s; HTTP /chat vs raw generate(); merge cost
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["bench_render.py", "bench_status.py", "bench_startup.py", "bench_server.py"]


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
