"""Run the full-size chaos scenarios (issue 5) and print their summary lines at the end::

    .venv/bin/python -m tests.chaos.run [extra pytest arguments]

The scenarios start their own PostgreSQL and Redis, so no service is needed; Django's settings still
want DATABASE_URL, REDIS_URL and SECRET_KEY to load, and get unused placeholders when they are unset.
The exit code is pytest's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="te-chaos-run-") as folder:
        summary = Path(folder) / "summary.txt"
        env = dict(os.environ, TASKENGINE_CHAOS_SUMMARY=str(summary), TASKENGINE_CHAOS_FULL="1")
        # Never connected to: every scenario runs on the servers the harness starts.
        env.setdefault("DATABASE_URL", "postgres://chaos@localhost/unused")
        env.setdefault("REDIS_URL", "redis://localhost:6379/0")
        env.setdefault("SECRET_KEY", "chaos-runner-placeholder")
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "tests/chaos", "--chaos-full", "-p", "no:cacheprovider", *argv],
            cwd=BASE_DIR,
            env=env,
        )
        print("\n".join(["", "== chaos summary (full size) =="]), flush=True)
        print(summary.read_text().rstrip() if summary.exists() else "no scenario finished", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
