"""job_submit: validation, initial state, the creation log entry, idempotency, dispatch on commit."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from clients.models import Client
from jobs.engine.dispatcher import dispatch
from jobs.models import Job, WorkflowDefinition
from jobs.services import job_submit
from jobs.states import JobState
from logs.models import LogEntry
from taskengine_site.errors import DomainError
from tests.engine.conftest import Broker
from tests.sessions import raw_connection
from tests.waiting import wait_until


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workflow": "nope"}, "workflow: unknown workflow 'nope'"),
        ({"workflow": ""}, "workflow: required"),
        ({"parameters": []}, "parameters: must be a JSON object"),
        ({"parameters": "x"}, "parameters: must be a JSON object"),
        ({"priority": 0}, "priority: must be an integer between 1 and 10, got 0"),
        ({"priority": 11}, "priority: must be an integer between 1 and 10, got 11"),
        ({"priority": "high"}, "priority: must be an integer between 1 and 10"),
        ({"priority": True}, "priority: must be an integer between 1 and 10"),
        ({"semaphore_url": "ftp://x.example/"}, "semaphore_url: must be an http(s) URL"),
        ({"persist": "yes"}, "persist: must be true or false"),
        ({"run_at": "2040-01-01"}, "run_at: must be a date and time in UTC"),
    ],
)
def test_refused_submissions_create_nothing(
    te_client: Client, broker: Broker, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"client": te_client, "workflow": "noop", "parameters": {}} | kwargs
    with pytest.raises(DomainError) as excinfo:
        job_submit(**arguments)
    assert excinfo.value.message.startswith(message)
    assert Job.objects.count() == 0
    assert LogEntry.objects.count() == 0


def test_priority_accepts_integer_strings(submit: Callable[..., Job]) -> None:
    assert submit("noop", priority="3").priority == 3


def test_a_queued_job_requests_a_dispatch_after_commit(submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop", parameters={"content_id": "c1"})
    assert job.queue_state == JobState.QUEUED
    assert job.priority == 5
    assert [(m.queue, m.task) for m in broker.pop_all()] == [("controller", "jobs.tasks.dispatch")]


def test_a_burst_of_submissions_shares_one_dispatch_that_sees_them_all(
    submit: Callable[..., Job], broker: Broker, setting: Callable[..., None]
) -> None:
    setting(max_jobs=10)
    broker.pop_all()
    jobs = [submit("noop") for _ in range(3)]
    waiting = broker.pop_all()  # taking the message off the queue is its dispatcher starting
    assert [m.task for m in waiting] == ["jobs.tasks.dispatch"]
    later = submit("noop")  # after the dispatcher started: a new message, or this job could be missed
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"]
    assert sorted(dispatch()) == sorted(job.pk for job in [*jobs, later])


def test_a_lost_dispatch_flag_publishes_again(submit: Callable[..., Job], broker: Broker) -> None:
    from django.core.cache import cache

    from jobs.engine import bus

    submit("noop")
    assert cache.get(bus.DISPATCH_PENDING_KEY) == 1
    key = cache.make_and_validate_key(bus.DISPATCH_PENDING_KEY)
    ttl = cache._cache.get_client(key).ttl(key)  # type: ignore[attr-defined]
    assert 0 < ttl <= bus.DISPATCH_PENDING_SECONDS  # the flag of a lost message expires
    cache.delete(bus.DISPATCH_PENDING_KEY)  # a flushed Redis
    submit("noop")
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"] * 2


def test_nothing_is_published_before_commit(
    te_client: Client, broker: Broker, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as hooks:
        job_submit(client=te_client, workflow="noop", parameters={})
        assert broker.pop_all() == []
    assert len(hooks) == 1


def test_initial_states(submit: Callable[..., Job], broker: Broker) -> None:
    future = timezone.now() + timedelta(hours=1)
    past = timezone.now() - timedelta(minutes=1)
    assert submit("noop", run_at=future).queue_state == JobState.SCHEDULED
    assert (
        submit("noop", run_at=future, semaphore_url="https://sem.example/").queue_state == JobState.SCHEDULED
    )
    assert submit("noop", run_at=past, semaphore_url="https://sem.example/").queue_state == JobState.PENDING
    assert submit("noop", semaphore_url="https://sem.example/").queue_state == JobState.PENDING
    assert submit("noop", run_at=past).queue_state == JobState.QUEUED
    assert Job.objects.get(queue_state=JobState.SCHEDULED, semaphore_url=None).run_at == future


def test_a_client_definition_makes_a_workflow_known(te_client: Client, submit: Callable[..., Job]) -> None:
    WorkflowDefinition.objects.create(client=te_client, name="mine", steps=[{"step": "noop"}])
    assert submit("mine").workflow == "mine"


def test_creation_log_entry_masks_keys(te_client: Client, broker: Broker) -> None:
    key = "te_0123456789ab_secretsecretsecret9xyz"
    body = {"client": te_client.name, "job": {"workflow": "noop"}, "parameters": {"content_id": "abc"}}
    job, _ = job_submit(
        client=te_client,
        workflow="noop",
        parameters={"content_id": "abc"},
        request_meta={
            "path": "POST /job",
            "remote_addr": "203.0.113.9",
            "headers": {"client": te_client.name, "api-key": key, "Content-Type": "application/json"},
            "body": body,
        },
    )
    entry = LogEntry.objects.get(job=job)
    assert (entry.progname, entry.task_id, entry.severity) == ("api", 0, 1)
    message = json.loads(entry.message)
    assert message == {
        "path": "POST /job",
        "remote_addr": "203.0.113.9",
        "headers": {
            "client": te_client.name,
            "api-key": "*" * (len(key) - 4) + "9xyz",
            "Content-Type": "application/json",
        },
        "parameters": body,
        "payload": "job_created",
    }
    assert key not in entry.message


def test_idempotency_key_returns_the_first_job(te_client: Client, broker: Broker) -> None:
    first, created = job_submit(client=te_client, workflow="noop", parameters={}, idempotency_key="k1")
    again, created_again = job_submit(client=te_client, workflow="noop", parameters={}, idempotency_key="k1")
    assert created and not created_again
    assert again.pk == first.pk
    assert Job.objects.count() == 1
    other, created_other = job_submit(client=te_client, workflow="noop", parameters={}, idempotency_key="k2")
    assert created_other and other.pk != first.pk


def test_idempotency_key_is_per_client(
    make_client: Callable[..., tuple[Client, str]], broker: Broker
) -> None:
    a, _ = make_client()
    b, _ = make_client()
    ja, _ = job_submit(client=a, workflow="noop", parameters={}, idempotency_key="same")
    jb, created = job_submit(client=b, workflow="noop", parameters={}, idempotency_key="same")
    assert created and ja.pk != jb.pk


@pytest.mark.django_db(transaction=True)
def test_idempotency_race_is_settled_by_the_unique_constraint(
    make_client: Callable[..., tuple[Client, str]],
) -> None:
    """A second submission that passed the lookup before the first committed gets the first job: its
    INSERT waits on the first one's uncommitted row, fails on the unique key once that commits, and the
    IntegrityError branch answers the first job."""
    import threading

    from django.db import connection

    client, _ = make_client()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (submitter_pid,) = cursor.fetchone()
    waited: list[bool] = []
    with raw_connection() as other, raw_connection() as watcher:
        # The other request's transaction inserted the same key but has not committed yet.
        other.execute("BEGIN")
        inserted = other.execute(
            "INSERT INTO jobs_job (client_id, workflow, priority, position, top_of_queue, parameters, "
            "queue_state, failed, persist, run_at, workflow_uuid, idempotency_key, message, created_at, "
            "updated_at) VALUES (%s, 'noop', 5, 1, false, '{}', 0, false, false, now(), "
            "gen_random_uuid(), 'race', '', now(), now()) RETURNING id",
            [client.pk],
        ).fetchone()
        assert inserted is not None
        first_id = inserted[0]

        def blocked_on_the_row() -> bool:
            row = watcher.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", [submitter_pid]
            ).fetchone()
            return bool(row and row[0])

        def commit_once_the_insert_waits() -> None:
            try:
                # Only an INSERT waits on the other row's lock: the lookup before it found nothing.
                wait_until(blocked_on_the_row, what="the second submission's INSERT to wait on the first")
                waited.append(True)
            finally:
                other.execute("COMMIT")

        committer = threading.Thread(target=commit_once_the_insert_waits)
        committer.start()
        job, created = job_submit(client=client, workflow="noop", parameters={}, idempotency_key="race")
        committer.join()
    assert waited == [True]
    assert not created
    assert job.pk == first_id
    assert Job.objects.filter(idempotency_key="race").count() == 1


def test_media_parameters_are_checked_at_submission(te_client: Client, broker: Broker) -> None:
    with pytest.raises(DomainError) as excinfo:
        job_submit(
            client=te_client,
            workflow="vodstream",
            parameters={"content_id": "c1", "source_folder": "in", "drm": ["primetime"]},
        )
    assert "drm" in excinfo.value.message and "not supported" in excinfo.value.message
    assert Job.objects.count() == 0


def test_a_capture_ending_in_the_future_is_scheduled_for_the_latest_clip_end(
    submit: Callable[..., Job], broker: Broker
) -> None:
    end = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    clips = [
        {"source": "https://live.example.com/a.m3u8", "start": "2020-01-01T00:00:00Z", "end": str(end)},
        {
            "source": "https://live.example.com/a.m3u8",
            "start": "2020-01-01T00:00:00Z",
            "end": (end - timedelta(hours=1)).isoformat(),
        },
    ]
    job = submit("vodcapture", parameters={"content_id": "c1", "output_folder": "out", "clips": clips})
    assert job.queue_state == JobState.SCHEDULED
    assert job.run_at == end


def test_the_job_and_its_entry_are_the_rows_the_orm_would_write(te_client: Client, broker: Broker) -> None:
    """job_submit writes both rows in one statement; every column is what Model.save would write."""
    from django.forms.models import model_to_dict

    job, _ = job_submit(
        client=te_client, workflow="noop", parameters={"content_id": "c1", "n": [1, {"x": None}]}, priority=3
    )
    assert not job._state.adding and job._state.db == "default"
    stored = Job.objects.get(pk=job.pk)
    reference = Job.objects.create(
        client=te_client, workflow="noop", parameters={"content_id": "c1", "n": [1, {"x": None}]}, priority=3,
        run_at=stored.run_at,
    )  # fmt: skip
    differing = {"id", "workflow_uuid", "created_at", "updated_at"}
    assert {k: v for k, v in model_to_dict(stored).items() if k not in differing} == {
        k: v for k, v in model_to_dict(reference).items() if k not in differing
    }
    assert stored.workflow_uuid != reference.workflow_uuid
    assert stored.workflow_uuid == job.workflow_uuid
    # Each auto_now field reads the clock in its own pre_save, as in Model.save.
    assert (stored.created_at, stored.updated_at) == (job.created_at, job.updated_at)
    assert stored.created_at <= stored.updated_at
    assert stored.run_at == job.run_at

    entry = LogEntry.objects.get(job=job)
    assert (entry.progname, entry.task_id, entry.severity, entry.visible) == ("api", 0, 1, True)
    assert entry.created_at <= entry.updated_at
    assert json.loads(entry.message)["payload"] == "job_created"


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_job_and_entry_commit_together_and_dispatch_follows(
    make_client: Callable[..., tuple[Client, str]],
) -> None:
    """Outside a transaction one statement needs no BEGIN/COMMIT: both rows are committed, then the
    dispatch is published; an insert the idempotency constraint refuses leaves neither row."""
    from django.db import connection

    client, _ = make_client()
    broker = Broker(lambda **kwargs: None)
    broker.clear()
    assert not connection.in_atomic_block
    job, created = job_submit(client=client, workflow="noop", parameters={}, idempotency_key="once")
    assert created
    assert LogEntry.objects.filter(job=job).count() == 1
    assert [(m.queue, m.task) for m in broker.pop_all()] == [("controller", "jobs.tasks.dispatch")]

    from jobs import services

    entries = LogEntry.objects.count()
    duplicate = Job(
        client=client, workflow="noop", parameters={}, run_at=timezone.now(), idempotency_key="once"
    )
    assert services._insert_many([(duplicate, LogEntry(message="x", progname="api"))]) == {}
    assert LogEntry.objects.count() == entries
    assert Job.objects.filter(client=client).count() == 1
    broker.clear()
