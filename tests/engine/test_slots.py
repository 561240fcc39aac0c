"""The slot rule of DESIGN §2, as a table, and the dispatcher applying it to real rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from clients.models import Client
from jobs.engine.dispatcher import DISPATCH_LOCK_KEY, Slots, can_start, dispatch
from jobs.models import Job
from jobs.states import JobState
from tests.engine.conftest import Broker

# (max_jobs, priority_slots, started priority, started other, candidate is priority, may start)
SLOT_TABLE = [
    # No reserved slots: a plain limit of M.
    (2, 0, 0, 0, False, True),
    (2, 0, 0, 1, False, True),
    (2, 0, 0, 2, False, False),
    (2, 0, 1, 1, True, False),
    (2, 0, 2, 0, False, False),
    # One reserved slot of two: others get one slot, priority jobs both.
    (2, 1, 0, 0, False, True),
    (2, 1, 0, 1, False, False),
    (2, 1, 0, 1, True, True),
    (2, 1, 1, 0, False, True),  # the priority job sits in the reserved slot
    (2, 1, 1, 1, True, False),  # full
    (2, 1, 2, 0, False, False),  # the second priority job took the shared slot
    # Three reserved of five.
    (5, 3, 0, 2, False, False),
    (5, 3, 0, 2, True, True),
    (5, 3, 3, 1, False, True),
    (5, 3, 3, 2, False, False),
    (5, 3, 4, 1, False, False),  # one priority job overflowed into the shared slots
    (5, 3, 4, 0, False, True),
    (5, 3, 4, 1, True, False),
    # More reserved slots than slots: P = min(priority_slots, M), others never start.
    (2, 5, 0, 0, False, False),
    (2, 5, 0, 0, True, True),
    (2, 5, 1, 0, True, True),
    (2, 5, 2, 0, True, False),
    # All reserved: only priority jobs.
    (3, 3, 0, 0, False, False),
    (3, 3, 2, 0, True, True),
    # max_jobs 0 stops everything.
    (0, 0, 0, 0, True, False),
    (0, 0, 0, 0, False, False),
]


@pytest.mark.parametrize(("m", "p", "rp", "rn", "is_priority", "expected"), SLOT_TABLE)
def test_slot_rule(m: int, p: int, rp: int, rn: int, is_priority: bool, expected: bool) -> None:
    slots = Slots(max_jobs=m, priority_slots=p, priority_threshold=5)
    assert can_start(is_priority=is_priority, started_priority=rp, started_other=rn, slots=slots) is expected


def test_priority_threshold_decides_the_class() -> None:
    slots = Slots(max_jobs=2, priority_slots=1, priority_threshold=3)
    assert slots.is_priority(3)
    assert not slots.is_priority(4)


# (max_jobs, priority_slots, threshold, priorities queued in submission order, priorities started)
DISPATCH_TABLE = [
    (2, 0, 5, [5, 5, 5], [5, 5]),
    (2, 1, 5, [7, 7, 7], [7]),
    (2, 1, 5, [7, 7, 3], [3, 7]),
    (3, 1, 5, [9, 8, 7, 6], [6, 7]),
    (3, 2, 5, [1, 2, 3, 9], [1, 2, 3]),
    (4, 2, 5, [9, 9, 9, 1], [1, 9, 9]),
    (1, 1, 5, [6, 2], [2]),
    (2, 1, 2, [3, 3, 3], [3]),  # priority 3 is not a priority job under threshold 2
    (0, 0, 5, [1, 5], []),
]


@pytest.mark.parametrize(("m", "p", "threshold", "queued", "expected"), DISPATCH_TABLE)
def test_dispatch_fills_slots_by_the_rule(
    submit: Callable[..., Job],
    setting: Callable[..., None],
    broker: Broker,
    m: int,
    p: int,
    threshold: int,
    queued: list[int],
    expected: Any,
) -> None:
    setting(max_jobs=m, priority_slots=p, priority_threshold=threshold)
    jobs = [submit("noop", priority=priority) for priority in queued]
    started_ids = dispatch()
    started = Job.objects.filter(pk__in=started_ids)
    assert sorted(job.priority for job in started) == sorted(expected)
    assert Job.objects.filter(queue_state=JobState.STARTED).count() == len(expected)
    # Each started job has its tasks and exactly its first one queued.
    for job in started:
        assert job.tasks.count() == 1
        assert job.tasks.get().state == 1
    # A second dispatch with nothing freed starts nothing.
    assert dispatch() == []
    assert {j.pk for j in jobs} >= set(started_ids)


def test_dispatch_order(submit: Callable[..., Job], setting: Callable[..., None], broker: Broker) -> None:
    setting(max_jobs=1, priority_slots=0)
    later_urgent = submit("noop", priority=2)
    first = submit("noop", priority=5)
    top = submit("noop", priority=9)
    Job.objects.filter(pk=top.pk).update(top_of_queue=True)
    positioned = submit("noop", priority=2)
    Job.objects.filter(pk=positioned.pk).update(position=0)
    order = []
    for _ in range(4):
        started = dispatch()
        order.extend(started)
        Job.objects.filter(pk__in=started).update(queue_state=JobState.COMPLETED)
    # top_of_queue first, then priority, then position, then submission order.
    assert order == [top.pk, positioned.pk, later_urgent.pk, first.pk]


def test_dispatch_counts_jobs_already_started(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(max_jobs=2, priority_slots=1)
    running = submit("noop", priority=3)
    dispatch()
    assert Job.objects.get(pk=running.pk).queue_state == JobState.STARTED
    low = [submit("noop", priority=8) for _ in range(2)]
    assert dispatch() == [low[0].pk]  # the priority job sits in the reserved slot
    assert dispatch() == []


def test_a_dispatcher_finding_the_lock_taken_leaves_the_work_to_its_holder(
    transactional_db: None, make_client: Callable[..., tuple[Client, str]]
) -> None:
    """Another dispatcher holding the lock: this one neither waits (a worker process idle) nor fills a
    slot itself; it leaves a note, which the holder reads after its commit to dispatch again."""
    from django.db import connections

    from jobs.engine import bus
    from jobs.services import job_submit

    client, _ = make_client()
    job_submit(client=client, workflow="noop", parameters={})
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DISPATCH_LOCK_KEY])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")  # were it to wait, it would fail
            assert dispatch() == []
            cursor.execute("SET lock_timeout = 0")
        assert Job.objects.filter(queue_state=JobState.STARTED).count() == 0
        with other.cursor() as cursor:
            cursor.execute("ROLLBACK")
        # The holder's side: after its commit it finds the note, and runs again.
        assert bus.take_dispatch_again() is True
        assert bus.take_dispatch_again() is False  # read once
        assert len(dispatch()) == 1
    finally:
        other.close()


def test_the_lock_holder_dispatches_again_when_asked_while_it_ran(
    setting: Callable[..., None], submit: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.engine import bus, dispatcher

    setting(max_jobs=5)
    first = submit("noop")
    late: list[Job] = []
    real = dispatcher._dispatch_locked

    def holder_run() -> list[int] | None:
        started = real()
        if not late:  # while this run held the lock, a job arrived and its dispatcher left a note
            late.append(submit("noop"))
            bus.dispatch_again()
        return started

    monkeypatch.setattr(dispatcher, "_dispatch_locked", holder_run)
    assert dispatch() == [first.pk, late[0].pk]


def test_changing_a_slot_setting_requests_a_dispatch(setting: Callable[..., None], broker: Broker) -> None:
    setting(max_jobs=3)
    messages = broker.pop_all()
    assert [(m.queue, m.task) for m in messages] == [("controller", "jobs.tasks.dispatch")]
    setting(retry_limit=1)
    assert broker.pop_all() == []
