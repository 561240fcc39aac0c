"""Step events (jobs.engine.bus) in-process: off by default, nothing is sent; on, one attempt's events, in
order; a broker that refuses them never costs the step. A real worker and monitor: tests/e2e."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from jobs.engine import bus
from jobs.models import Job
from jobs.states import JobState
from taskengine_site.celery import app
from tests.engine.conftest import Broker


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, kind: str, **fields: Any) -> None:
        self.sent.append((kind, fields))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recording = Recorder()
    monkeypatch.setattr(app.events, "Dispatcher", lambda *args, **kwargs: recording)
    monkeypatch.setattr(bus, "_step_dispatcher", None)
    return recording


def test_off_by_default_nothing_is_sent(
    submit: Callable[..., Job], broker: Broker, recorder: Recorder
) -> None:
    job = submit("noop5")
    broker.drain()
    assert Job.objects.get(pk=job.pk).queue_state == JobState.COMPLETED
    assert recorder.sent == []


def test_on_each_attempt_is_received_started_then_ended(
    submit: Callable[..., Job], broker: Broker, recorder: Recorder, settings: Any
) -> None:
    settings.TASKENGINE_CELERY_EVENTS = True
    job = submit("fail", parameters={"permanent": True, "message": "no disk"})
    broker.drain()
    task = job.tasks.get()
    assert [kind for kind, _ in recorder.sent] == ["task-received", "task-started", "task-failed"]
    assert len({fields["uuid"] for _, fields in recorder.sent}) == 1  # one attempt, one event task
    received, _, failed = (fields for _, fields in recorder.sent)
    assert (received["name"], received["job_id"], received["task_id"], received["step"]) == (
        "step:fail",
        job.pk,
        task.pk,
        "fail",
    )
    assert (failed["exception"], failed["permanent"]) == ("no disk", True)
    assert failed["duration"] >= 0


def test_a_broker_that_refuses_events_does_not_fail_the_step(
    submit: Callable[..., Job], broker: Broker, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.TASKENGINE_CELERY_EVENTS = True

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("events unavailable")

    monkeypatch.setattr(app.events, "Dispatcher", refuse)
    monkeypatch.setattr(bus, "_step_dispatcher", None)
    job = submit("noop5")
    broker.drain()
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
