"""Callbacks (DESIGN §6): payloads computed once, one delivery per endpoint, signed, retried with backoff,
logged, in order per URL, and never a failure of the job."""

from __future__ import annotations

import json
import re
import socket
from datetime import timedelta
from typing import Any

from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from callbacks import services as callbacks
from callbacks.models import CallbackDelivery
from jobs.models import Job, Task, WorkflowDefinition
from jobs.states import JobState, TaskState
from logs.models import LogEntry, Severity
from taskengine_site import webhooks

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TASK_KEYS = {"job_id", "task_id", "task_name", "workflow", "event", "content_id", "message", "time", "client"}
JOB_KEYS = {
    "job_id",
    "status",
    "workflow",
    "content_id",
    "custom_data",
    "message",
    "files",
    "metadata",
    "time",
    "client",
}


def tasks_of(job: Job) -> list[Task]:
    return list(Task.objects.filter(job=job).order_by("position"))


def callback_log(job: Job) -> list[tuple[str, int]]:
    return list(
        LogEntry.objects.filter(job=job, progname="callback")
        .order_by("id")
        .values_list("message", "severity")
    )


def deliver_all(queues: Any, *, limit: int = 50) -> list[Any]:
    """Run every published callback message, and those they publish, like a callback worker."""
    ran: list[Any] = []
    for _ in range(limit):
        messages = [m for m in queues.pop_all() if m.queue == "callback"]
        if not messages:
            return ran
        for message in messages:
            queues.run(message)
            ran.append(message)
    raise AssertionError("callbacks kept publishing")


def test_no_endpoints_no_deliveries(make_job, queues, committed):
    job = make_job([])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
        callbacks.job_finished(job.pk)
    assert CallbackDelivery.objects.count() == 0
    assert queues.pop_all() == []


def test_a_task_event_stores_the_payload_once_per_endpoint_and_publishes_after_commit(
    make_job, queues, django_capture_on_commit_callbacks
):
    job = make_job(["https://a.example/cb", "https://b.example/cb", "https://a.example/cb"])
    task = tasks_of(job)[0]
    with django_capture_on_commit_callbacks(execute=True) as hooks:
        callbacks.task_event(task.pk, "start")
        assert queues.pop_all() == []  # nothing leaves before the commit
    assert len(hooks) == 1
    rows = list(CallbackDelivery.objects.order_by("id"))
    assert [r.url for r in rows] == ["https://a.example/cb", "https://b.example/cb"]
    assert rows[0].body == rows[1].body
    assert rows[0].webhook_id != rows[1].webhook_id
    payload = json.loads(rows[0].body)
    assert set(payload) == TASK_KEYS
    assert payload | {"time": None} == {
        "job_id": job.pk,
        "task_id": task.pk,
        "task_name": "get_filenames",
        "workflow": "drmswitch",
        "event": "start",
        "content_id": "c-42",
        "message": "",
        "time": None,
        "client": job.client.name,
    }
    assert TIME.match(payload["time"])
    published = queues.pop_all()
    assert sorted((m.queue, m.task, m.args[0]) for m in published) == [
        ("callback", "callbacks.deliver", rows[0].pk),
        ("callback", "callbacks.deliver", rows[1].pk),
    ]


def test_the_job_callback_carries_status_files_metadata_and_custom_data(make_job, queues, committed):
    job = make_job(["https://a.example/cb"])
    first, second, third = tasks_of(job)
    Task.objects.filter(pk=first.pk).update(state=TaskState.COMPLETED, result={"manifests": []})
    Task.objects.filter(pk=second.pk).update(state=TaskState.COMPLETED, result={"duration": 12.5})
    Task.objects.filter(pk=third.pk).update(
        state=TaskState.COMPLETED, result={"files": ["vod/c-42/index.m3u8", "vod/c-42/index.mpd"]}
    )
    Job.objects.filter(pk=job.pk).update(queue_state=JobState.COMPLETED, failed=False)
    with committed():
        callbacks.job_finished(job.pk)
    row = CallbackDelivery.objects.get()
    payload = json.loads(row.body)
    assert set(payload) == JOB_KEYS
    assert payload["status"] == "completed"
    assert payload["files"] == ["vod/c-42/index.m3u8", "vod/c-42/index.mpd"]
    assert payload["metadata"] == {"duration": 12.5}
    assert payload["custom_data"] == {"order": 7}
    assert payload["content_id"] == "c-42"
    assert payload["message"] == "job has completed successfully"
    assert (row.kind, row.event, row.task_id) == ("job", "completed", third.pk)


def test_a_failed_job_callback_says_failed_with_the_jobs_message(make_job, queues, committed):
    job = make_job(["https://a.example/cb"])
    Job.objects.filter(pk=job.pk).update(queue_state=JobState.COMPLETED, failed=True, message="disk on fire")
    with committed():
        callbacks.job_finished(job.pk)
    payload = json.loads(CallbackDelivery.objects.get().body)
    assert (payload["status"], payload["message"]) == ("failed", "disk on fire")


def test_delivery_posts_the_stored_body_with_workflow_id_and_logs(
    make_job, receiver, allow_loopback, queues, committed
):
    job = make_job([receiver.url("/cb")])
    task = tasks_of(job)[0]
    with committed():
        callbacks.task_event(task.pk, "start")
        callbacks.task_event(task.pk, "complete")
    deliver_all(queues)
    got = receiver.received("/cb")
    assert [r.json()["event"] for r in got] == ["start", "complete"]
    rows = list(CallbackDelivery.objects.order_by("id"))
    assert [r.body.encode() for r in rows] == [r.body for r in got]
    for request in got:
        assert request.method == "POST"
        assert request.headers["Workflow-Id"] == str(job.workflow_uuid)
        assert request.headers["Content-Type"] == "application/json"
        assert "webhook-signature" not in {k.lower() for k in request.headers}
    assert {r.state for r in rows} == {CallbackDelivery.State.SENT}
    url = receiver.url("/cb")
    assert callback_log(job) == [
        ("No client definitions. Using common definitions.", Severity.INFO),
        (f"'get_filenames' start callback sent to {url} (HTTP 200, attempt 1 of 8)", Severity.INFO),
        (f"'get_filenames' complete callback sent to {url} (HTTP 200, attempt 1 of 8)", Severity.INFO),
    ]
    assert set(LogEntry.objects.filter(progname="callback").values_list("task_id", flat=True)) == {task.pk}


def test_a_client_definition_is_announced_as_such(make_job, receiver, allow_loopback, queues, committed):
    job = make_job([receiver.url("/cb")])
    WorkflowDefinition.objects.create(client=job.client, name="drmswitch", steps=["get_filenames"])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    deliver_all(queues)
    assert callback_log(job)[0] == ("Using client definitions.", Severity.INFO)


def test_signed_when_the_client_has_a_webhook_secret(make_job, receiver, allow_loopback, queues, committed):
    secret = webhooks.generate_secret()
    job = make_job([receiver.url("/cb")], secret=secret)
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    deliver_all(queues)
    (request,) = receiver.received("/cb")
    assert request.headers["webhook-id"] == CallbackDelivery.objects.get().webhook_id
    assert Webhook(secret).verify(request.body.decode(), request.headers)["event"] == "start"


def test_failures_are_retried_with_backoff_and_the_same_body_and_id(
    make_job, receiver, allow_loopback, queues, committed
):
    secret = webhooks.generate_secret()
    job = make_job([receiver.url("/cb")], secret=secret)
    receiver.answer("/cb", 503)
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "fail", "boom")
    (first,) = queues.pop_all()
    queues.run(first)
    row = CallbackDelivery.objects.get()
    assert (row.state, row.attempts, row.last_status, row.last_error) == (0, 1, 503, "HTTP 503")
    assert row.next_attempt_at is not None
    assert timedelta(seconds=4) < row.next_attempt_at - timezone.now() <= timedelta(seconds=5)
    (retry,) = queues.pop_all()
    assert (retry.queue, retry.task, retry.args) == ("callback", "callbacks.deliver", [row.pk])
    assert 4 < retry.countdown <= 5

    # The retry message arrives early (clock skew, a duplicate): nothing is sent before its time.
    queues.run(retry)
    assert len(receiver.received("/cb")) == 1

    CallbackDelivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    receiver.answer("/cb", 200)
    queues.run(retry)
    row.refresh_from_db()
    assert (row.state, row.attempts) == (CallbackDelivery.State.SENT, 2)
    first_try, second_try = receiver.received("/cb")
    assert first_try.body == second_try.body
    assert json.loads(first_try.body)["message"] == "boom"
    assert first_try.headers["webhook-id"] == second_try.headers["webhook-id"]
    for request in (first_try, second_try):
        Webhook(secret).verify(request.body.decode(), request.headers)
    url = receiver.url("/cb")
    assert callback_log(job)[1:] == [
        (
            f"'get_filenames' fail callback to {url} failed: HTTP 503 (attempt 1 of 8); retrying in 5s",
            Severity.WARN,
        ),
        (f"'get_filenames' fail callback sent to {url} (HTTP 200, attempt 2 of 8)", Severity.INFO),
    ]


def test_it_gives_up_after_the_last_attempt(make_job, receiver, allow_loopback, queues, committed, settings):
    settings.TASKENGINE_CALLBACK_RETRY_DELAYS = (0, 0)
    job = make_job([receiver.url("/cb")])
    receiver.answer("/cb", 500)
    with committed():
        callbacks.job_finished(job.pk)
    deliver_all(queues)
    row = CallbackDelivery.objects.get()
    assert (row.state, row.attempts) == (CallbackDelivery.State.FAILED, 3)
    assert len(receiver.received("/cb")) == 3
    messages = [m for m, _ in callback_log(job)]
    assert messages[-1].endswith("failed: HTTP 500 (attempt 3 of 3); giving up")
    assert callback_log(job)[-1][1] == Severity.ERROR


def test_a_dead_receiver_is_retried_and_the_job_is_untouched(make_job, allow_loopback, queues, committed):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = make_job([f"http://127.0.0.1:{port}/cb"])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    (message,) = queues.pop_all()
    queues.run(message)
    row = CallbackDelivery.objects.get()
    assert (row.state, row.attempts, row.last_error) == (0, 1, "connection refused")
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.STARTED, False)


def test_a_refused_url_fails_at_once_without_a_request(make_job, receiver, settings, queues, committed):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    job = make_job([receiver.url("/cb?token=secret")])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    deliver_all(queues)
    assert receiver.received() == []
    row = CallbackDelivery.objects.get()
    assert (row.state, row.attempts) == (CallbackDelivery.State.FAILED, 1)
    message, severity = callback_log(job)[-1]
    assert severity == Severity.ERROR
    assert "url not allowed: 127.0.0.1 is a loopback address" in message
    assert "token=secret" not in message


def test_one_url_gets_its_callbacks_in_event_order_even_while_one_is_retried(
    make_job, receiver, allow_loopback, queues, committed, settings
):
    settings.TASKENGINE_CALLBACK_RETRY_DELAYS = (0,)
    job = make_job([receiver.url("/slow-start"), receiver.url("/ok")])
    task = tasks_of(job)[0]
    receiver.answer("/slow-start", 503)
    with committed():
        callbacks.task_event(task.pk, "start")
        callbacks.task_event(task.pk, "complete")
    messages = queues.pop_all()
    assert len(messages) == 4
    # Run them all at once, as two workers would: the "complete" of /slow-start must wait.
    for message in messages:
        queues.run(message)
    assert [r.json()["event"] for r in receiver.received("/ok")] == ["start", "complete"]
    assert [r.json()["event"] for r in receiver.received("/slow-start")] == ["start"]
    receiver.answer("/slow-start", 200)
    deliver_all(queues)
    assert [r.json()["event"] for r in receiver.received("/slow-start")] == ["start", "start", "complete"]


def test_a_duplicate_message_during_an_attempt_sends_nothing(make_job, receiver, allow_loopback, committed):
    job = make_job([receiver.url("/cb")])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    row = CallbackDelivery.objects.get()
    CallbackDelivery.objects.filter(pk=row.pk).update(lease_until=timezone.now() + timedelta(seconds=30))
    assert callbacks.callback_deliver(delivery_id=row.pk) == "skipped"
    assert receiver.received() == []
    CallbackDelivery.objects.filter(pk=row.pk).update(lease_until=None, state=CallbackDelivery.State.SENT)
    assert callbacks.callback_deliver(delivery_id=row.pk) == "skipped"
    assert callbacks.callback_deliver(delivery_id=999_999_999) == "skipped"


def test_lost_messages_are_redelivered_head_of_line_only(make_job, queues, committed):
    job = make_job(["https://a.example/cb", "https://b.example/cb"])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
        callbacks.task_event(tasks_of(job)[0].pk, "complete")
    queues.clear()  # Redis flushed
    a_start, b_start, _a_complete, _b_complete = CallbackDelivery.objects.order_by("id")
    with committed():
        assert callbacks.callbacks_redeliver() == 0  # too recent: their messages may be on their way
    later = timezone.now() + timedelta(minutes=1)
    with committed():
        assert callbacks.callbacks_redeliver(now=later) == 2
    assert sorted(m.args[0] for m in queues.pop_all()) == [a_start.pk, b_start.pk]


def test_task_event_and_job_finished_never_raise(queues, committed):
    with committed():
        callbacks.task_event(999_999_999, "start")
        callbacks.job_finished(999_999_999)
    # About a task and a job that do not exist: no delivery, no message, no log line.
    assert CallbackDelivery.objects.count() == 0
    assert queues.pop_all() == []
    assert LogEntry.objects.count() == 0


def test_unknown_events_are_ignored(make_job, committed):
    job = make_job(["https://a.example/cb"])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "exploded")
    assert CallbackDelivery.objects.count() == 0


def test_retry_delays_never_exceed_the_visibility_timeout(settings):
    settings.TASKENGINE_VISIBILITY_TIMEOUT = 100
    assert max(callbacks.retry_delays()) == 80
    settings.TASKENGINE_VISIBILITY_TIMEOUT = 3600
    default = settings.TASKENGINE_CALLBACK_RETRY_DELAYS
    assert callbacks.retry_delays() == default
    assert len(default) + 1 == 8
    assert 3000 <= sum(default) <= 4200  # about an hour


def test_time_is_utc_with_milliseconds_and_z():
    from datetime import UTC, datetime

    moment = datetime(2019, 11, 29, 10, 47, 50, 431_999, tzinfo=UTC)
    assert callbacks.format_time(moment) == "2019-11-29T10:47:50.431Z"


def test_a_long_backoff_is_left_to_the_redelivery_schedule(
    make_job, receiver, allow_loopback, queues, committed, settings
):
    settings.TASKENGINE_CALLBACK_RETRY_DELAYS = (600,)
    job = make_job([receiver.url("/cb")])
    receiver.answer("/cb", 502)
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    deliver_all(queues)  # one attempt, and no countdown message held for ten minutes
    row = CallbackDelivery.objects.get()
    assert (row.state, row.attempts) == (CallbackDelivery.State.PENDING, 1)
    receiver.answer("/cb", 200)
    with committed():
        assert callbacks.callbacks_redeliver(now=timezone.now() + timedelta(seconds=300)) == 0
        assert callbacks.callbacks_redeliver(now=timezone.now() + timedelta(seconds=640)) == 1
    CallbackDelivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    deliver_all(queues)
    row.refresh_from_db()
    assert (row.state, row.attempts) == (CallbackDelivery.State.SENT, 2)


def test_deliveries_are_listed_read_only_in_the_admin(make_job, admin_client, committed):
    job = make_job(["https://a.example/cb"])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    row = CallbackDelivery.objects.get()
    listing = admin_client.get("/admin/callbacks/callbackdelivery/")
    assert listing.status_code == 200
    assert str(row.webhook_id) not in listing.content.decode()  # ids are searchable, not listed
    assert admin_client.get(f"/admin/callbacks/callbackdelivery/{row.pk}/change/").status_code == 200
    assert (
        admin_client.post(f"/admin/callbacks/callbackdelivery/{row.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert CallbackDelivery.objects.filter(pk=row.pk).exists()


def test_an_invalid_webhook_secret_fails_the_delivery_without_sending(
    make_job, receiver, allow_loopback, queues, committed
):
    job = make_job([receiver.url("/cb")], secret="whsec_not base64!")
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    deliver_all(queues)
    assert receiver.received() == []
    row = CallbackDelivery.objects.get()
    assert (row.state, row.attempts) == (CallbackDelivery.State.FAILED, 1)
    assert callback_log(job)[-1] == (
        f"'get_filenames' start callback to {receiver.url('/cb')} not sent: "
        "the client's webhook secret is not valid",
        Severity.ERROR,
    )
