"""Fixtures of the chaos scenarios (tests/chaos/harness.py).

``--chaos-full`` (or ``TASKENGINE_CHAOS_FULL=1``) runs the full-size variants of issue 5 (200 jobs, five
kills, …); without it the fast variants run, small enough for every ``make test``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.chaos.harness import Cluster, Engine


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-full", action="store_true", default=False, help="run the full-size chaos scenarios"
    )


@dataclass(frozen=True)
class Size:
    full: bool
    jobs: int
    step_seconds: float
    kills: int
    kill_window: float  # seconds over which the kills are spread
    workers: int
    concurrency: int
    max_jobs: int
    reconcile_every: int  # the reconcile schedule (production: 15 s)
    terminal_bound: float  # every job terminal within this many seconds after the last fault


FAST = Size(
    full=False,
    jobs=24,
    step_seconds=1.0,
    kills=5,
    kill_window=15.0,
    workers=2,
    concurrency=2,
    max_jobs=12,
    reconcile_every=5,
    terminal_bound=90.0,
)
FULL = Size(
    full=True,
    jobs=200,
    step_seconds=0.5,
    kills=5,
    kill_window=60.0,
    workers=2,
    concurrency=3,
    max_jobs=40,
    reconcile_every=15,
    terminal_bound=300.0,
)


@pytest.fixture(scope="session")
def size(request: pytest.FixtureRequest) -> Size:
    full = bool(request.config.getoption("--chaos-full", default=False)) or os.environ.get(
        "TASKENGINE_CHAOS_FULL", ""
    ).lower() in ("1", "true", "yes")
    return FULL if full else FAST


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """One embedded PostgreSQL for every scenario, with a migrated template database."""
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def make_engine(cluster: Cluster) -> Iterator[type[Engine]]:
    """``make_engine(extra_env={...})``: a fresh database and Redis; everything stopped at teardown."""
    engines: list[Engine] = []

    def factory(**kwargs: object) -> Engine:
        if not cluster.postgres.running:
            cluster.postgres.start()
        engine = Engine(cluster, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield factory  # type: ignore[misc]
    for engine in engines:
        engine.stop()
    if not cluster.postgres.running:
        cluster.postgres.start()
