"""Deliveries that arrive: recovered within seconds after a lost message or a killed sender, never
counted against the receiver for an attempt its sender did not finish, never starved by a slow receiver,
and visible (GET /jobs/<id>?callbacks=1, the admin, /metrics)."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from callbacks import leases
from callbacks import services as callbacks
from callbacks.models import CallbackDelivery
from clients.models import Client
from jobs.models import Job, WorkflowDefinition
from logs.models import LogEntry
from taskengine_site import shutdown
from tests import factories
from tests.callbacks.test_callbacks import deliver_all, tasks_of
from tests.sessions import raw_connection

SECRET_QUERY = "token=s3cr3t-query-value"


@pytest.fixture(autouse=True)
def _nothing_in_flight():
    """The in-process registry of attempts is per process: each test starts (and leaves) it empty."""
    with leases._lock:
        leases._in_flight.clear()
        leases._slow_until.clear()
    yield
    with leases._lock:
        leases._in_flight.clear()
        leases._slow_until.clear()


def deliver_once(queues: Any) -> None:
    """Run the callback messages published now (not those they publish: a retry's countdown)."""
    for message in queues.pop_all():
        if message.queue == "callback":
            queues.run(message)


def one_delivery(make_job: Any, committed: Any, url: str) -> CallbackDelivery:
    job = make_job([url])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    return CallbackDelivery.objects.get()


def test_an_attempt_whose_sender_was_killed_is_sent_again_at_once_without_counting_it(
    make_job, receiver, allow_loopback, queues, committed
):
    row = one_delivery(make_job, committed, receiver.url("/cb"))
    queues.clear()
    # A sender claimed it (attempt 1) and was killed mid-request: its lease is not renewed any more.
    claimed = timezone.now() - timedelta(seconds=10)
    CallbackDelivery.objects.filter(pk=row.pk).update(
        attempts=1, claimed_at=claimed, lease_until=claimed + callbacks.LEASE
    )
    with committed():
        assert callbacks.callbacks_redeliver() == 1
    row.refresh_from_db()
    assert (row.attempts, row.lease_until, row.claimed_at) == (0, None, None)
    assert row.next_attempt_at is not None and row.next_attempt_at <= timezone.now()
    [message] = queues.pop_all()
    assert (message.task, message.args, message.countdown) == ("callbacks.deliver", [row.pk], None)
    queues.run(message)
    row.refresh_from_db()
    assert (row.state, row.attempts) == (CallbackDelivery.State.SENT, 1)
    assert len(receiver.received("/cb")) == 1
    lines = list(
        LogEntry.objects.filter(job_id=row.job_id, progname="callback").values_list("message", flat=True)
    )
    assert any("interrupted (its sender stopped); sending again" in line for line in lines), lines


def test_a_lease_renewed_by_its_sender_is_left_alone(make_job, queues, committed):
    row = one_delivery(make_job, committed, "https://a.example/cb")
    claimed = timezone.now() - timedelta(seconds=30)
    CallbackDelivery.objects.filter(pk=row.pk).update(attempts=1, claimed_at=claimed, lease_until=claimed)
    leases.hold(row.pk, "a.example:", claimed_at=claimed, lease=callbacks.LEASE)
    try:
        assert leases.renew() == 1  # what the keeper thread does every LEASE_BEAT seconds
    finally:
        leases.release(row.pk)
    queues.clear()
    with committed():
        assert callbacks.callbacks_redeliver() == 0
    row.refresh_from_db()
    assert row.attempts == 1 and row.lease_until is not None and row.lease_until > timezone.now()


def test_a_sender_cannot_renew_or_record_an_attempt_the_sweep_took_from_it(
    make_job, receiver, allow_loopback, queues, committed
):
    row = one_delivery(make_job, committed, receiver.url("/cb"))
    stale = timezone.now() - timedelta(seconds=30)
    CallbackDelivery.objects.filter(pk=row.pk).update(attempts=1, claimed_at=stale, lease_until=stale)
    with committed():
        assert callbacks.callbacks_redeliver() == 1
    # Its old sender comes back to life: its lease renewal and its outcome are fenced out.
    leases.hold(row.pk, "x:", claimed_at=stale, lease=callbacks.LEASE)
    try:
        assert leases.renew() == 0
    finally:
        leases.release(row.pk)
    fresh = CallbackDelivery.objects.get(pk=row.pk)
    old_claim = callbacks.Claimed(
        pk=fresh.pk, job_id=fresh.job_id, task_id=fresh.task_id, kind=fresh.kind, event=fresh.event,
        url=fresh.url, body=fresh.body, webhook_id=fresh.webhook_id, attempts=1, workflow_uuid="w",
        client_name="c", stored_secret="", first_of_job=False, own_definitions=False, lines=[("x", 1)],
    )  # fmt: skip
    lines_before = LogEntry.objects.filter(job_id=fresh.job_id).count()
    outcome = callbacks._record_attempt(old_claim, stale, state=CallbackDelivery.State.SENT, outcome="sent")
    assert outcome == "skipped"
    assert CallbackDelivery.objects.get(pk=row.pk).state == CallbackDelivery.State.PENDING
    assert LogEntry.objects.filter(job_id=fresh.job_id).count() == lines_before  # its line is fenced out too


def test_a_lost_message_is_published_again_within_seconds_and_only_once_per_wait(make_job, queues, committed):
    row = one_delivery(make_job, committed, "https://a.example/cb")
    queues.clear()  # Redis flushed
    created = row.created_at
    with committed():
        assert callbacks.callbacks_redeliver(now=created + timedelta(seconds=2)) == 0  # on its way
        assert callbacks.callbacks_redeliver(now=created + callbacks.LOST_AFTER + timedelta(seconds=1)) == 1
    assert [m.args for m in queues.pop_all()] == [[row.pk]]
    later = created + callbacks.LOST_AFTER + timedelta(seconds=2)
    with committed():
        # Marked due when it was published again: the next sweep waits as long again for that message.
        assert callbacks.callbacks_redeliver(now=later) == 0
    assert timedelta(seconds=10) >= callbacks.LOST_AFTER


def test_the_next_delivery_in_line_is_due_when_the_one_before_is_done(
    make_job, receiver, allow_loopback, queues, committed
):
    job = make_job([receiver.url("/cb")])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
        callbacks.task_event(tasks_of(job)[0].pk, "complete")
    first, second = CallbackDelivery.objects.order_by("id")
    messages = queues.pop_all()
    queues.run(next(m for m in messages if m.args == [first.pk]))
    second.refresh_from_db()
    # Marked due, and sent right after the first by the same thread: no message of its own needed.
    assert second.next_attempt_at is not None
    assert abs((second.next_attempt_at - timezone.now()).total_seconds()) < 5
    assert second.state == CallbackDelivery.State.SENT
    assert [r.json()["event"] for r in receiver.received("/cb")] == ["start", "complete"]
    assert queues.pop_all() == []
    # Its own message, arriving afterwards, finds it sent.
    queues.run(next(m for m in messages if m.args == [second.pk]))
    assert len(receiver.received("/cb")) == 2


def test_a_line_longer_than_a_chain_is_handed_on_by_a_message(
    make_job, receiver, allow_loopback, queues, committed, monkeypatch
):
    monkeypatch.setattr(callbacks, "CHAIN", 2)
    job = make_job([receiver.url("/cb")])
    with committed():
        for event in ("start", "complete", "fail"):
            callbacks.task_event(tasks_of(job)[0].pk, event)
    first, second, third = CallbackDelivery.objects.order_by("id")
    queues.pop_all()
    assert callbacks.callback_deliver(delivery_id=first.pk) == "sent"
    states = dict(CallbackDelivery.objects.values_list("pk", "state"))
    assert (states[second.pk], states[third.pk]) == (
        CallbackDelivery.State.SENT,
        CallbackDelivery.State.PENDING,
    )
    assert [m.args for m in queues.pop_all()] == [[third.pk]]


def test_a_stopping_process_hands_the_next_in_line_on_by_a_message(
    make_job, receiver, allow_loopback, queues, committed, monkeypatch
):
    job = make_job([receiver.url("/cb")])
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
        callbacks.task_event(tasks_of(job)[0].pk, "complete")
    first, second = CallbackDelivery.objects.order_by("id")
    queues.pop_all()
    real_attempt = callbacks._attempt

    def attempt_then_told_to_stop(*args: Any, **kwargs: Any) -> str:
        outcome = real_attempt(*args, **kwargs)
        monkeypatch.setattr(shutdown, "_noticed_at", time.monotonic() - 10)
        return outcome

    monkeypatch.setattr(callbacks, "_attempt", attempt_then_told_to_stop)
    assert callbacks.callback_deliver(delivery_id=first.pk) == "sent"
    assert CallbackDelivery.objects.get(pk=second.pk).state == CallbackDelivery.State.PENDING
    assert [m.args for m in queues.pop_all()] == [[second.pk]]
    assert len(receiver.received("/cb")) == 1


def test_the_delivery_statements_name_only_the_models_tables():
    tables = {model._meta.db_table for model in (CallbackDelivery, LogEntry, Job, Client, WorkflowDefinition)}
    named = set()
    for statement in callbacks._SQL.values():
        named |= set(re.findall(r"(?:FROM|JOIN|UPDATE|INTO)\s+([a-z_]+)", statement.text))
    assert named - {"done", "unnest"} == tables  # and its own CTE, unnest()
    assert set(callbacks._SQL) == {"claim_delivery", "record_attempt", "next_in_line"}


def test_a_failing_receiver_still_waits_out_its_back_off(
    make_job, receiver, allow_loopback, queues, committed, settings
):
    settings.TASKENGINE_CALLBACK_RETRY_DELAYS = (60,)
    receiver.answer("/cb", 503)
    row = one_delivery(make_job, committed, receiver.url("/cb"))
    deliver_once(queues)
    row.refresh_from_db()
    assert (row.state, row.attempts, row.last_status) == (CallbackDelivery.State.PENDING, 1, 503)
    queues.clear()  # even its countdown message lost
    with committed():
        assert callbacks.callbacks_redeliver(now=timezone.now() + timedelta(seconds=30)) == 0
        assert callbacks.callbacks_redeliver(now=timezone.now() + timedelta(seconds=70)) == 1


def test_a_receiver_slow_for_every_request_has_its_next_deliveries_deferred_not_counted(
    make_job, receiver, allow_loopback, queues, committed, settings
):
    settings.TASKENGINE_CALLBACK_SLOW_HOST_LIMIT = 2
    row = one_delivery(make_job, committed, receiver.url("/cb"))
    queues.clear()
    host = f"127.0.0.1:{receiver.port}"
    long_ago = time.monotonic() - 5
    with leases._lock:  # two requests to that host outstanding for five seconds (hanging)
        leases._in_flight[-1] = leases.InFlight(host, long_ago, timezone.now())
        leases._in_flight[-2] = leases.InFlight(host, long_ago, timezone.now())
    assert callbacks.callback_deliver(delivery_id=row.pk) == "deferred"
    row.refresh_from_db()
    assert (row.state, row.attempts, row.lease_until) == (CallbackDelivery.State.PENDING, 0, None)
    wait = (row.next_attempt_at - timezone.now()).total_seconds()
    assert leases.MIN_WAIT - 0.5 <= wait <= leases.MAX_WAIT * leases.JITTER + 1
    [message] = queues.pop_all()
    assert message.args == [row.pk] and message.countdown is not None and message.countdown > 0.5
    assert receiver.received() == []
    # Another host is not held back, nor a busy one that answers; this one goes once its slow requests
    # are over.
    assert leases.slow_host_wait("other.example:", 2, 1.0, callbacks.ATTEMPT_DEADLINE) is None
    with leases._lock:
        for fresh in range(-10, -3):  # seven fresh requests (0.1 s old) to a host that answers
            leases._in_flight[fresh] = leases.InFlight(
                "busy.example:", time.monotonic() - 0.1, timezone.now()
            )
    assert leases.slow_host_wait("busy.example:", 2, 1.0, callbacks.ATTEMPT_DEADLINE) is None
    with leases._lock:
        leases._in_flight.clear()
    CallbackDelivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert callbacks.callback_deliver(delivery_id=row.pk) == "sent"


def test_a_host_seen_slow_stays_slow_after_its_hanging_requests_time_out_until_one_is_answered_fast():
    """Its requests that hung until their timeout are over; the next ones are fresh. Without the memory
    of its slowness, as many of them would start as arrive before one is old enough to count."""
    now = timezone.now()
    started = time.monotonic()
    with leases._lock:  # two requests outstanding for 12 s: they time out now
        leases._in_flight[-1] = leases.InFlight("hangs.example:", started - 12, now)
        leases._in_flight[-2] = leases.InFlight("hangs.example:", started - 12, now)
    leases.release(-1, slow_after=2.0)
    leases.release(-2, slow_after=2.0)
    with leases._lock:  # two fresh ones to it, 0.1 s old
        leases._in_flight[-3] = leases.InFlight("hangs.example:", started - 0.1, now)
        leases._in_flight[-4] = leases.InFlight("hangs.example:", started - 0.1, now)
    wait = leases.slow_host_wait("hangs.example:", 2, 2.0, callbacks.ATTEMPT_DEADLINE)
    assert wait is not None and leases.MIN_WAIT <= wait <= leases.MAX_WAIT * leases.JITTER
    # ... and with fewer than the limit outstanding, the next may go.
    leases.release(-4)
    assert leases.slow_host_wait("hangs.example:", 2, 2.0, callbacks.ATTEMPT_DEADLINE) is None
    # The memory runs out ...
    with leases._lock:
        leases._in_flight[-5] = leases.InFlight("hangs.example:", started - 0.1, now)
        leases._slow_until["hangs.example:"] = time.monotonic() - 0.01
    assert leases.slow_host_wait("hangs.example:", 2, 2.0, callbacks.ATTEMPT_DEADLINE) is None
    # ... or a request answered fast clears it at once.
    with leases._lock:
        leases._slow_until["hangs.example:"] = time.monotonic() + leases.SLOW_MEMORY
    assert leases.slow_host_wait("hangs.example:", 2, 2.0, callbacks.ATTEMPT_DEADLINE) is not None
    leases.release(-3, slow_after=2.0)
    with leases._lock:
        leases._in_flight[-6] = leases.InFlight("hangs.example:", started - 0.1, now)
    assert leases.slow_host_wait("hangs.example:", 2, 2.0, callbacks.ATTEMPT_DEADLINE) is None
    # Another host never was slow.
    assert leases.slow_host_wait("other.example:", 2, 2.0, callbacks.ATTEMPT_DEADLINE) is None


def test_a_stopping_process_hands_a_delivery_back_unclaimed(
    make_job, receiver, allow_loopback, queues, committed, monkeypatch
):
    row = one_delivery(make_job, committed, receiver.url("/cb"))
    queues.clear()
    # Told to stop a while ago (no SIGALRM armed in the test process).
    monkeypatch.setattr(shutdown, "_noticed_at", time.monotonic() - 10)
    assert callbacks.callback_deliver(delivery_id=row.pk) == "handed back"
    row.refresh_from_db()
    assert (row.state, row.attempts, row.lease_until) == (CallbackDelivery.State.PENDING, 0, None)
    assert [m.args for m in queues.pop_all()] == [[row.pk]]
    assert receiver.received() == []


# --- visible state --------------------------------------------------------------------------------------


def test_get_job_with_callbacks_lists_the_deliveries_with_the_query_redacted(
    api, operator_api, make_client, receiver, allow_loopback, queues, committed, settings
):
    settings.TASKENGINE_CALLBACK_RETRY_DELAYS = (30,)
    receiver.answer("/down", 502)
    job = factories.job(
        api.te_client,
        workflow="noop",
        tasks=("noop",),
        parameters={"rest_endpoints": [receiver.url(f"/ok?{SECRET_QUERY}"), receiver.url("/down")]},
    )
    with committed():
        callbacks.task_event(tasks_of(job)[0].pk, "start")
    deliver_once(queues)

    plain = api.get(f"/jobs/{job.pk}")
    assert "callbacks" not in plain.json()
    response = api.get(f"/jobs/{job.pk}?callbacks=1")
    assert response.status_code == 200, response.content
    body = response.json()
    assert "tasks" not in body
    # (The job's own parameters hold the URL as the client gave it; the deliveries do not repeat it.)
    assert SECRET_QUERY not in json.dumps(body["callbacks"])
    sent, retrying = body["callbacks"]
    assert set(sent) == {
        "id",
        "kind",
        "event",
        "task_id",
        "url",
        "state",
        "attempts",
        "last_status",
        "last_error",
        "next_attempt_at",
        "created_at",
        "sent_at",
    }
    assert (sent["event"], sent["url"], sent["state"], sent["attempts"], sent["last_status"]) == (
        "start",
        receiver.url("/ok"),
        "sent",
        1,
        200,
    )
    assert sent["next_attempt_at"] is None and sent["sent_at"]
    assert (retrying["state"], retrying["attempts"], retrying["last_status"]) == ("pending", 1, 502)
    assert retrying["next_attempt_at"] and retrying["sent_at"] is None
    assert retrying["last_error"] == "HTTP 502"
    both = api.get(f"/jobs/{job.pk}?callbacks=1&tasks=1").json()
    assert len(both["tasks"]) == 1 and len(both["callbacks"]) == 2
    # The access rule of the detail holds for its parts.
    stranger_job = factories.job(make_client()[0], workflow="noop")
    assert api.get(f"/jobs/{stranger_job.pk}?callbacks=1").status_code == 404
    assert operator_api.get(f"/jobs/{job.pk}?callbacks=1").json()["callbacks"][0]["id"] == sent["id"]
    assert api.get(f"/jobs/{job.pk}?callbacks=perhaps").status_code == 400


def test_the_admin_shows_a_delivery_without_its_query_string(make_job, admin_client, committed):
    row = one_delivery(make_job, committed, f"https://a.example/cb?{SECRET_QUERY}")
    listing = admin_client.get("/admin/callbacks/callbackdelivery/")
    page = admin_client.get(f"/admin/callbacks/callbackdelivery/{row.pk}/change/")
    assert listing.status_code == page.status_code == 200
    for content in (listing.content.decode(), page.content.decode()):
        assert "https://a.example/cb" in content
        assert SECRET_QUERY not in content
    assert "Next attempt at" in page.content.decode() or "next attempt at" in page.content.decode().lower()


def test_metrics_have_the_callback_latency_histogram(
    make_job, client, receiver, allow_loopback, queues, committed
):
    row = one_delivery(make_job, committed, receiver.url("/cb"))
    deliver_all(queues)
    row.refresh_from_db()
    assert row.state == CallbackDelivery.State.SENT
    # Its event happened 3 s before the receiver's 2xx.
    CallbackDelivery.objects.filter(pk=row.pk).update(created_at=row.sent_at - timedelta(seconds=3))
    text = client.get("/metrics").content.decode()
    assert "# TYPE taskengine_callback_latency_seconds histogram" in text
    assert 'taskengine_callback_latency_seconds_bucket{kind="task",le="2.0"} 0.0' in text
    assert 'taskengine_callback_latency_seconds_bucket{kind="task",le="5.0"} 1.0' in text
    assert 'taskengine_callback_latency_seconds_count{kind="task"} 1.0' in text
    [total] = [
        line
        for line in text.splitlines()
        if line.startswith('taskengine_callback_latency_seconds_sum{kind="task"}')
    ]
    assert abs(float(total.split()[-1]) - 3.0) < 0.01


@pytest.mark.django_db(transaction=True)
def test_a_claim_that_meets_the_earlier_delivery_being_recorded_waits_for_it_and_goes_out(
    make_job, receiver, allow_loopback, queues
):
    """The race behind 'lost' deliveries: a delivery's message arrives while another thread records the
    outcome of the one ahead of it, whose snapshot was taken before this delivery existed. Skipping here
    (the earlier one still looked pending) would leave this delivery to the recovery sweep, seconds
    later: the claim waits for that record's commit instead, then finds its line free."""
    import threading

    from django.db import connection

    job = make_job([receiver.url("/cb")])
    task = tasks_of(job)[0]
    callbacks.task_event(task.pk, "start")
    callbacks.task_event(task.pk, "complete")
    first, second = CallbackDelivery.objects.order_by("id")
    outcome: list[str] = []

    def deliver_second() -> None:
        try:
            outcome.append(callbacks.callback_deliver(delivery_id=second.pk))
        finally:
            connection.close()

    with raw_connection() as other:
        # Another sender records the first delivery as sent: its row is written, not yet committed.
        other.execute("BEGIN")
        other.execute("UPDATE scheduling_callbackdelivery SET state = %s WHERE id = %s", [1, first.pk])
        sender = threading.Thread(target=deliver_second)
        sender.start()
        sender.join(0.5)
        waited = sender.is_alive()
        other.execute("COMMIT")
    sender.join(10)
    assert waited, outcome  # it did not decide on what it saw before the record
    assert outcome == ["sent"]
    assert CallbackDelivery.objects.get(pk=second.pk).state == CallbackDelivery.State.SENT
    assert len(receiver.received("/cb")) == 1
