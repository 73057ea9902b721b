"""Run every benchmark, then regenerate the Performance page.

python -m benchmarks            # full sizes, 5 runs each (minutes)
python -m benchmarks --quick    # tiny sizes, 1 run: a smoke test (seconds)
"""

from __future__ import annotations

import subprocess
import sys

NAMES = [
    "bulk_insert",
    "pagination",
    "filter_sort",
    "locking",
    "api",
    "read_layers",
    "peers",
]
NAMES += ["testing"]
NAMES += ["workers"]
NAMES += ["export"]


def main() -> int:
    args = sys.argv[1:]
    for name in NAMES:
        print(f"== {name}", flush=True)
        command = [sys.executable, "-m", f"benchmarks.{name}", *args]
        if subprocess.run(command, check=False).returncode:
            return 1
    if "--quick" not in args:
        subprocess.run([sys.executable, "-m", "benchmarks.report"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
