"""The table `make mutation` ends with: mutants, killed and survived per mutated module, and the score.

Reads mutmut's results (mutants/<module>.py.meta). A mutant counts as killed when a test failed, timed
out or crashed on it; a survivor, or a mutant no focused test reaches ("no tests"), counts against the
score. Exits 1 when a module scores under the floor, so a release check can stop on it.

    python -m tests.mutation_score [--floor 90]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--floor", type=float, default=90.0, help="lowest acceptable score, in percent")
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    args = parser.parse_args(argv)
    metas = sorted(args.root.rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {args.root}/", file=sys.stderr)
        return 1
    print(f"{'module':<32} {'mutants':>7} {'killed':>7} {'survived':>8} {'score':>7}")
    failing = []
    for meta in metas:
        module = str(meta.relative_to(args.root)).removesuffix(".meta")
        statuses = [
            status_by_exit_code[code] for code in json.loads(meta.read_text())["exit_code_by_key"].values()
        ]
        unchecked = statuses.count("not checked")
        killed = sum(status in KILLED for status in statuses)
        survived = len(statuses) - killed
        score = 100.0 * killed / len(statuses) if statuses else 100.0
        note = f"  ({unchecked} not checked: the run was interrupted)" if unchecked else ""
        print(f"{module:<32} {len(statuses):>7} {killed:>7} {survived:>8} {score:>6.1f}%{note}")
        if score < args.floor or unchecked:
            failing.append(module)
    if failing:
        print(f"under {args.floor:g} % (or not fully checked): {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
