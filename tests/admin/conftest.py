"""Admin tests: a logged-in Django superuser, and the engine helpers of tests/engine (real Postgres and
Redis, engine functions executed in-process from the messages really published)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

# Re-exported so these tests share the engine tests' fixtures instead of copies of them.
from tests.engine.conftest import broker, committed, setting, submit, te_client  # noqa: F401


@pytest.fixture
def admin_http(db: None) -> HttpClient:
    """A browser-like client logged in as a Django superuser (an operator)."""
    user = User.objects.create_superuser("operator", "operator@example.com", "pw-for-tests-only")
    http = HttpClient()
    http.force_login(user)
    return http


@pytest.fixture
def notices() -> Callable[[Any], list[str]]:
    """The admin messages a followed response shows, as text."""
    return lambda response: [str(message) for message in response.context["messages"]]
