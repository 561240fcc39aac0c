"""Monitoring tests (health, queue page, metrics, workers) share the engine tests' fixtures (real
Postgres and Redis, the engine's messages executed in-process)."""

from tests.engine.conftest import broker, committed, setting, submit, te_client  # noqa: F401
