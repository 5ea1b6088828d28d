"""Run every tests/bench/bench_*.py script in turn and print what each prints (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        # One process per script: each measures on a fresh interpreter, one core.
        result = subprocess.run([sys.executable, str(script)], cwd=HERE.parents[1], check=False)
        if result.returncode != 0:
            print(f"{script.name} failed with exit code {result.returncode}", flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
