"""The unsaved rows a submission prepares (jobs.services._prepare builds them without Model.__init__):
the same instances the models' constructors make, field by field."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import signals
from django.utils import timezone

from jobs.models import Job
from jobs.services import SubmitRequest, _prepare, _unsaved
from logs.models import LogEntry

pytestmark = pytest.mark.django_db


def _fields(instance: Any) -> dict[str, Any]:
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


@pytest.mark.parametrize(
    "wanted",
    [
        {},
        {"priority": "2", "persist": True, "idempotency_key": "order-7"},
        {"run_at": "later"},
        {"semaphore_url": "https://example.com/ready"},
    ],
)
def test_a_prepared_job_and_entry_are_what_the_models_constructors_make(make_client, wanted):
    client, _ = make_client("acme")
    now = timezone.now()
    if wanted.get("run_at") == "later":
        wanted = {**wanted, "run_at": now + timedelta(hours=1)}
    request = SubmitRequest(
        "noop",
        {"content_id": "x"},
        wanted.get("priority", 5),
        wanted.get("run_at"),
        wanted.get("semaphore_url"),
        wanted.get("persist", False),
        wanted.get("idempotency_key"),
        {"path": "POST /job", "headers": {"api-key": "te_live_abcdefgh1234"}},
    )
    job, entry = _prepare(client, request, now)
    made = Job(
        client=client,
        workflow="noop",
        priority=job.priority,
        parameters={"content_id": "x"},
        queue_state=job.queue_state,
        persist=wanted.get("persist", False),
        run_at=job.run_at,
        semaphore_url=wanted.get("semaphore_url"),
        idempotency_key=wanted.get("idempotency_key"),
        created_at=now,
        updated_at=now,
    )
    ours, theirs = _fields(job), _fields(made)
    assert isinstance(ours.pop("workflow_uuid"), uuid.UUID) and isinstance(
        theirs.pop("workflow_uuid"), uuid.UUID
    )
    assert ours == theirs
    assert (job._state.adding, job._state.db) == (True, None)
    assert job.client is client  # cached, as the constructor caches it: no query to read it
    made_entry = LogEntry(message=entry.message, progname="api", created_at=now, updated_at=now)
    assert _fields(entry) == _fields(made_entry)
    assert "abcdefgh" not in entry.message and entry.message.count("1234") == 1  # masked
    assert '"client": "acme"' in entry.message  # read through job.client, the cached object


def test_each_unsaved_row_gets_its_own_default_values():
    first, second = _unsaved(Job, {"workflow": "a"}), _unsaved(Job, {"workflow": "b"})
    assert first.workflow_uuid != second.workflow_uuid  # a callable default, called for each row
    assert first.parameters == {} and first.parameters is not second.parameters  # not one shared dict
    assert (first.workflow, second.workflow) == ("a", "b")


def test_neither_model_has_init_signal_receivers_that_skipping_the_constructor_would_miss():
    for model in (Job, LogEntry):
        assert not signals.pre_init.has_listeners(model)
        assert not signals.post_init.has_listeners(model)
