"""Shared fixtures. Tests run on a real PostgreSQL and a real Redis (started by `make test` when the
environment names none); each xdist worker gets its own database (pytest-django) and its own Redis key
prefix (tests/testenv.py), so parallel workers never read each other's queues or cache entries."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_dispatch_in_flight():
    """Each test starts with no dispatch message "on its way" (jobs.engine.bus coalesces them): a
    message an earlier test published and never consumed must not hold back this test's."""
    from jobs.engine import bus

    bus.dispatch_starting()
    # Nor an answer of the run_tasks gate remembered from an earlier test's worker heartbeats.
    bus._gate_answers.clear()


@pytest.fixture
def make_client(db):
    """Create a client with one key: ``make_client("acme", operator=False) -> (client, key)``."""
    # Imported here: this conftest is loaded before pytest-django sets Django up.
    from tests import factories

    return factories.client


@pytest.fixture
def api(make_client):
    """An APIClient authenticated as a fresh non-operator client; ``.te_client`` is the Client."""
    from rest_framework.test import APIClient

    client, key = make_client()
    c = APIClient()
    c.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key)
    c.te_client = client
    c.te_key = key
    return c


@pytest.fixture
def operator_api(make_client):
    from rest_framework.test import APIClient

    client, key = make_client(operator=True)
    c = APIClient()
    c.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key)
    c.te_client = client
    c.te_key = key
    return c


@pytest.fixture
def one_rate_window(monkeypatch):
    """The rate limit's clock held at one instant for the test, so the requests it counts all fall in one
    window of TASKENGINE_RATE_LIMIT: with the wall clock, a window that ends between two of its requests
    starts the count again (a 2/minute limit crossed a minute's end once in CI and answered 200, not
    429). The instant is now, so the counters it writes expire as any other."""
    import time
    from types import SimpleNamespace

    from taskengine_site import api

    instant = time.time()
    monkeypatch.setattr(api, "time", SimpleNamespace(time=lambda: instant))
    return instant
