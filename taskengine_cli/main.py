"""Entry point of the ``taskengine`` console script (built out in issue 7)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("taskengine: the command-line client is not built yet", file=sys.stderr)
    return 2
