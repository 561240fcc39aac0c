"""Every benchmark of bench/README.md in turn (each in its own process), then their summary lines.

    .venv/bin/python -m bench.run_all [--quick]

``--quick`` runs small variants (100 jobs end to end, a few seconds of load, 100,000 rows, 2,000/20,000
steps of memory) to check that everything works; the README's table comes from the full runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench.common import BASE_DIR

FULL: list[tuple[str, list[str]]] = [
    ("e2e", []),
    ("submit", []),
    ("scale", []),
    ("schedule", []),
    ("memory", ["--first", "2000", "--second", "20000"]),
]
QUICK: list[tuple[str, list[str]]] = [
    ("e2e", ["--jobs", "100"]),
    ("submit", ["--seconds", "5", "--wrk-seconds", "3"]),
    ("scale", ["--rows", "100000", "--requests", "20"]),
    ("schedule", ["--jobs", "100", "--spread", "10", "--lead", "10"]),
    ("memory", ["--first", "1000", "--second", "5000"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    summaries: list[str] = []
    failed = 0
    for name, run_args in QUICK if args.quick else FULL:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", *run_args],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sys.stdout.write(proc.stdout)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(f"{name} ")]
        summaries.append(lines[-1] if lines else f"{name} FAILED (exit {proc.returncode})")
        failed += proc.returncode != 0
        print(f"[{name} took {time.monotonic() - started:.0f} s]", flush=True)
    print(f"summary ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc={os.cpu_count()}):")
    for line in summaries:
        print("  " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
