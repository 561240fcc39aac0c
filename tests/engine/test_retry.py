"""The retry policy (jobs/engine/retry.py): another attempt or failure for good, and whether the next
attempt waits in a Celery countdown (at most 300 s, within the broker's visibility timeout) or is left
to the reconciler."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs.engine import bus
from jobs.engine.bus import MAX_COUNTDOWN_SECONDS
from jobs.engine.retry import RetryDecision, decide
from jobs.models import Job
from jobs.states import TaskState
from tests.engine.conftest import Broker


@pytest.mark.parametrize(
    ("retry_", "delay", "countdown"),
    [
        (True, 0, True),
        (True, 299, True),
        (True, 300, True),  # the boundary itself still counts down
        (True, 301, False),
        (False, 0, False),
        (False, 300, False),
    ],
)
def test_the_countdown_boundary(retry_: bool, delay: int, countdown: bool) -> None:
    assert MAX_COUNTDOWN_SECONDS == 300
    assert RetryDecision(retry=retry_, delay=delay, limit=3).use_countdown is countdown


@pytest.mark.parametrize(
    ("attempt", "permanent", "again"),
    [(1, False, True), (2, False, True), (3, False, False), (1, True, False), (2, True, False)],
)
def test_an_attempt_is_retried_while_the_limit_allows_and_the_error_is_transient(
    setting: Callable[..., None], broker: Broker, attempt: int, permanent: bool, again: bool
) -> None:
    setting(retry_limit=2, retry_delay=45)
    assert decide(attempt=attempt, permanent=permanent) == RetryDecision(retry=again, delay=45, limit=2)


def test_the_settings_are_read_at_each_decision(setting: Callable[..., None], broker: Broker) -> None:
    setting(retry_limit=0, retry_delay=7)
    assert decide(attempt=1, permanent=False) == RetryDecision(retry=False, delay=7, limit=0)
    setting(retry_limit=1, retry_delay=301)
    decision = decide(attempt=1, permanent=False)
    assert decision == RetryDecision(retry=True, delay=301, limit=1)
    assert not decision.use_countdown


@pytest.mark.parametrize(("delay", "countdown"), [(299, True), (300, True), (301, False)])
def test_the_runner_holds_a_countdown_only_up_to_the_boundary(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker, delay: int, countdown: bool
) -> None:
    setting(retry_limit=1, retry_delay=delay)
    job = submit("fail")
    broker.drain(skip=lambda m: m.eta is not None)
    task = job.tasks.get()
    assert (task.state, task.attempts) == (TaskState.RETRYING, 1)
    held = [(m.task, m.args) for m in broker.held]
    assert held == ([("jobs.tasks.run_task", [task.pk])] if countdown else [])
    assert bus.MAX_COUNTDOWN_SECONDS == 300
