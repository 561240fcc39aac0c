"""The ``taskengine`` CLI run as a real process against the real API (pytest-django's ``live_server``,
this run's Postgres), with a real client and key; ``engine_processes`` (real Celery workers) comes from
the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import engine_processes  # noqa: F401  (shared fixture, not a copy)


@dataclass
class Cli:
    """Runs ``python -m taskengine_cli`` (what the console script runs) with a given environment."""

    env: dict[str, str]
    client_name: str
    key: str

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "taskengine_cli", *args],
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        # However a command ends, the user sees a message, never a Python traceback.
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture
def cli(live_server: Any, make_client: Callable[..., Any]) -> Cli:
    """The CLI configured for a fresh (non-operator) client of the live server."""
    client, key = make_client()
    env = {
        name: value for name, value in os.environ.items() if not name.startswith("TASKENGINE_")
    }  # only what a user's shell would set, plus the three variables the CLI reads
    env.update(
        {"TASKENGINE_URL": live_server.url, "TASKENGINE_CLIENT": client.name, "TASKENGINE_API_KEY": key}
    )
    return Cli(env=env, client_name=client.name, key=key)
