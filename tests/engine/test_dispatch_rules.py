"""The dispatcher's loop on real rows, case by case (DESIGN §2): the slot rule at the threshold, the
reserved slots against ``top_of_queue``, the dispatch order and its ties, jobs moved under its feet, and
the one-job-at-a-time fallback of ``_start``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from clients.models import Client
from jobs.engine import bus, controller, dispatcher
from jobs.engine.bus import dispatch_after_job_end
from jobs.engine.dispatcher import Slots, current_slots, dispatch
from jobs.engine.sql import STATEMENTS, sql
from jobs.models import Job, Task, WorkflowDefinition
from jobs.states import DISPATCH_ORDER, JobState
from tests.engine.conftest import Broker


def make_job(client: Client, priority: int, *, workflow: str = "noop", **fields: Any) -> Job:
    fields.setdefault("queue_state", JobState.QUEUED)
    return Job.objects.create(
        client=client, workflow=workflow, priority=priority, run_at=timezone.now(), **fields
    )


# (max_jobs, priority_slots, threshold, priorities already started, queued jobs in submission order as
#  (name, priority, extra fields), names started by one dispatch)
CASES = [
    pytest.param(2, 1, 5, [7], [("at", 5, {})], ["at"], id="at-the-threshold-is-priority"),
    pytest.param(2, 1, 5, [7], [("over", 6, {})], [], id="one-over-the-threshold-is-not"),
    pytest.param(
        2, 1, 5, [5], [("other", 7, {})], ["other"], id="a-started-job-at-the-threshold-sits-reserved"
    ),
    pytest.param(2, 1, 5, [6], [("other", 7, {})], [], id="a-started-job-over-it-holds-the-shared-slot"),
    pytest.param(
        2,
        1,
        5,
        [7],
        [("low", 8, {}), ("at", 5, {})],
        ["at"],
        id="the-reserved-slot-skips-to-the-threshold-job",
    ),
    pytest.param(
        2,
        1,
        5,
        [7],
        [("top", 8, {"top_of_queue": True}), ("urgent", 3, {})],
        ["urgent"],
        id="top-of-queue-does-not-take-a-reserved-slot",
    ),
    pytest.param(
        3,
        1,
        5,
        [],
        [("top", 8, {"top_of_queue": True}), ("urgent", 3, {}), ("low", 8, {})],
        ["top", "urgent", "low"],
        id="top-of-queue-first-when-a-shared-slot-is-free",
    ),
    pytest.param(
        4,
        2,
        5,
        [],
        [("a", 8, {}), ("b", 8, {}), ("c", 8, {}), ("d", 3, {})],
        ["d", "a", "b"],
        id="two-shared-two-reserved",
    ),
    pytest.param(
        2,
        0,
        5,
        [],
        [("a", 8, {}), ("b", 8, {}), ("c", 1, {})],
        ["c", "a"],
        id="no-reserved-slots-priority-orders",
    ),
    pytest.param(
        3, 1, 5, [1, 1], [("a", 8, {}), ("b", 2, {})], ["b"], id="priority-overflow-eats-the-shared-slot"
    ),
    pytest.param(
        5, 2, 5, [], [(f"j{i}", 9, {}) for i in range(5)], ["j0", "j1", "j2"], id="others-get-m-minus-p"
    ),
    pytest.param(1, 1, 5, [], [("low", 9, {})], [], id="all-slots-reserved"),
    # An operator lowered max_jobs below the jobs running: nothing starts, and the dispatch does not fail.
    pytest.param(
        1,
        0,
        5,
        [8, 8, 8],
        [("waits", 8, {}), ("urgent", 3, {})],
        [],
        id="max-jobs-lowered-below-the-started-jobs",
    ),
    # A candidate refused in a batch (the shared slots filled) makes a second pass, counted from the first.
    pytest.param(
        3,
        1,
        5,
        [],
        [(name, 8, {"top_of_queue": True}) for name in ("a", "b", "c")] + [("urgent", 3, {})],
        ["a", "b", "urgent"],
        id="second-pass-counts-the-shared-slots-taken",
    ),
    pytest.param(
        4,
        2,
        5,
        [],
        [(name, 8, {"top_of_queue": True}) for name in ("a", "b", "c")] + [("p3", 3, {}), ("p4", 4, {})],
        ["a", "b", "p3", "p4"],
        id="second-pass-counts-the-reserved-slots-taken",
    ),
]


@pytest.mark.parametrize(("m", "p", "threshold", "running", "queued", "expected"), CASES)
def test_one_dispatch_starts_what_the_rule_admits_in_dispatch_order(
    setting: Callable[..., None],
    te_client: Client,
    broker: Broker,
    caplog: pytest.LogCaptureFixture,
    m: int,
    p: int,
    threshold: int,
    running: list[int],
    queued: list[tuple[str, int, dict[str, Any]]],
    expected: list[str],
) -> None:
    setting(max_jobs=m, priority_slots=p, priority_threshold=threshold)
    for priority in running:
        make_job(te_client, priority, queue_state=JobState.STARTED)
    # A finished_at left from an earlier run (a job queued again) is cleared when it starts.
    earlier = timezone.now() - timedelta(days=1)
    jobs = {
        name: make_job(te_client, priority, finished_at=earlier, **fields)
        for name, priority, fields in queued
    }
    names = {job.pk: name for name, job in jobs.items()}
    caplog.set_level(logging.INFO, logger="jobs.engine.dispatcher")
    started = dispatch()
    # All at once: no job fell back to starting alone.
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "jobs.engine.dispatcher"] == (
        [(logging.INFO, f"dispatch started jobs {started}")] if started else []
    )
    for job in Job.objects.filter(pk__in=started):
        assert job.started_at is not None and job.started_at > earlier and job.finished_at is None
    assert len(started) == len(set(started))
    assert {names[job_id] for job_id in started} == set(expected)
    now_started = Job.objects.filter(queue_state=JobState.STARTED, pk__in=names).values_list("pk", flat=True)
    assert {names[job_id] for job_id in now_started} == set(expected)
    assert Job.objects.filter(queue_state=JobState.STARTED).count() == len(running) + len(expected)


def test_the_dispatch_order_and_its_ties(
    setting: Callable[..., None], te_client: Client, broker: Broker
) -> None:
    """top_of_queue, then priority, then position, then submission time, then id; one slot at a time."""
    setting(max_jobs=1, priority_slots=0)
    t0 = timezone.now() - timedelta(hours=1)
    later, earlier = t0 + timedelta(seconds=2), t0 + timedelta(seconds=1)
    jobs = {
        # priority beats position: a lower position of a less urgent job does not go first
        "p4-pos0": make_job(te_client, 4, position=0),
        "p3-pos5": make_job(te_client, 3, position=5),
        # position beats submission time
        "p5-pos2-early": make_job(te_client, 5, position=2),
        "p5-pos1-late": make_job(te_client, 5, position=1),
        # submission time beats id, and id decides the rest
        "p6-late": make_job(te_client, 6),
        "p6-early": make_job(te_client, 6),
        "p7-same-a": make_job(te_client, 7),
        "p7-same-b": make_job(te_client, 7),
        # top_of_queue beats everything
        "top-p9": make_job(te_client, 9, top_of_queue=True),
    }
    Job.objects.filter(pk=jobs["p5-pos2-early"].pk).update(created_at=earlier)
    Job.objects.filter(pk=jobs["p5-pos1-late"].pk).update(created_at=later)
    Job.objects.filter(pk=jobs["p6-late"].pk).update(created_at=later)
    Job.objects.filter(pk=jobs["p6-early"].pk).update(created_at=earlier)
    Job.objects.filter(pk__in=[jobs["p7-same-a"].pk, jobs["p7-same-b"].pk]).update(created_at=t0)
    names = {job.pk: name for name, job in jobs.items()}
    order = []
    for _ in jobs:
        started = dispatch()
        assert len(started) == 1
        order.append(names[started[0]])
        Job.objects.filter(pk__in=started).update(queue_state=JobState.COMPLETED)
    assert order == [
        "top-p9",
        "p3-pos5",
        "p4-pos0",
        "p5-pos1-late",
        "p5-pos2-early",
        "p6-early",
        "p6-late",
        "p7-same-a",
        "p7-same-b",
    ]


def test_a_job_moved_under_the_dispatcher_does_not_stop_the_rest_of_its_batch(
    setting: Callable[..., None], te_client: Client, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One shared slot, two top-of-queue jobs of the shared slots and an urgent one: the second
    top-of-queue job is passed over (the shared slot looks taken) and the urgent one behind it admitted.
    The first is paused between the read and the move; the urgent one still starts, and the shared slot
    it left goes to the second."""
    setting(max_jobs=3, priority_slots=2)
    first = make_job(te_client, 8, top_of_queue=True)
    second = make_job(te_client, 8, top_of_queue=True)
    urgent = make_job(te_client, 3)
    real = dispatcher._start
    calls: list[list[int]] = []

    def paused_first(admitted: list[tuple[int, int]], definitions: Any) -> tuple[bool, list[int]]:
        calls.append([job_id for job_id, _ in admitted])
        if len(calls) == 1:
            Job.objects.filter(pk=first.pk).update(queue_state=JobState.PAUSED)
        return real(admitted, definitions)

    monkeypatch.setattr(dispatcher, "_start", paused_first)
    assert dispatch() == [urgent.pk, second.pk]
    assert calls == [[first.pk, urgent.pk], [second.pk]]
    assert Job.objects.get(pk=first.pk).queue_state == JobState.PAUSED


def test_nothing_moves_when_every_admitted_job_was_taken(
    setting: Callable[..., None], te_client: Client, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting(max_jobs=2, priority_slots=0)
    jobs = [make_job(te_client, 5) for _ in range(3)]
    real = dispatcher._start

    def all_taken(admitted: list[tuple[int, int]], definitions: Any) -> tuple[bool, list[int]]:
        Job.objects.filter(pk__in=[job_id for job_id, _ in admitted]).update(queue_state=JobState.PAUSED)
        return real(admitted, definitions)

    monkeypatch.setattr(dispatcher, "_start", all_taken)
    assert dispatch() == []  # and it stops there instead of reading the same queue again
    assert [
        JobState(j.queue_state) for j in Job.objects.filter(pk__in=[j.pk for j in jobs]).order_by("id")
    ] == [
        JobState.PAUSED,
        JobState.PAUSED,
        JobState.QUEUED,
    ]


def _batch_fails(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Make the all-at-once start of more than one job raise; a single job's start still works. The ids
    of each start, in order: the batch's (``start_queued``), then the fallback's (``start_jobs``, one
    job each, moved first)."""
    real_queued, real_jobs = controller.start_queued, controller.start_jobs
    calls: list[list[int]] = []

    def start_queued(job_ids: list[int], *, definitions: Any) -> tuple[list[int], list[int]]:
        calls.append(list(job_ids))
        if len(job_ids) > 1:
            raise RuntimeError("the batch cannot start")
        return real_queued(job_ids, definitions=definitions)

    def start_jobs(job_ids: list[int], *, definitions: Any) -> list[int]:
        calls.append(list(job_ids))
        return real_jobs(job_ids, definitions=definitions)

    monkeypatch.setattr(controller, "start_queued", start_queued)
    monkeypatch.setattr(controller, "start_jobs", start_jobs)
    return calls


def test_when_the_batch_cannot_start_the_jobs_start_one_at_a_time(
    setting: Callable[..., None],
    te_client: Client,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    setting(max_jobs=3, priority_slots=0)
    jobs = [make_job(te_client, 5, finished_at=timezone.now() - timedelta(days=1)) for _ in range(3)]
    calls = _batch_fails(monkeypatch)
    assert dispatch() == [j.pk for j in jobs]
    ids = [j.pk for j in jobs]
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR] == [
        (logging.ERROR, f"jobs {ids} could not start together; starting them one at a time")
    ]
    assert calls == [[j.pk for j in jobs]] + [[j.pk] for j in jobs]
    for job in Job.objects.filter(pk__in=[j.pk for j in jobs]):
        assert (job.queue_state, job.failed, job.finished_at) == (JobState.STARTED, False, None)
        assert job.started_at is not None
        assert job.tasks.count() == 1


def test_one_job_that_cannot_start_ends_failed_without_holding_back_the_others(
    setting: Callable[..., None],
    te_client: Client,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Their slots are free again at once: the jobs waiting behind them start in the same dispatch."""
    setting(max_jobs=3, priority_slots=0)
    first = make_job(te_client, 5)
    broken = make_job(te_client, 5)
    # A client definition naming a step that no longer exists: its start ends it as failed.
    WorkflowDefinition.objects.create(client=te_client, name="gone", steps=[{"step": "no_such_step"}])
    vanished = make_job(te_client, 5, workflow="gone")
    behind = [make_job(te_client, 5) for _ in range(2)]
    calls = _batch_fails(monkeypatch)
    real_start_jobs = controller.start_jobs

    def start_jobs(job_ids: list[int], *, definitions: Any) -> list[int]:
        if job_ids == [broken.pk]:
            raise RuntimeError("this one cannot start")
        return real_start_jobs(job_ids, definitions=definitions)

    monkeypatch.setattr(controller, "start_jobs", start_jobs)
    assert dispatch() == [first.pk] + [j.pk for j in behind]
    assert calls[0] == [first.pk, broken.pk, vanished.pk]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"job {broken.pk} could not start" in errors
    states = {
        j.pk: (j.queue_state, j.failed) for j in Job.objects.filter(pk__in=[first.pk, broken.pk, vanished.pk])
    }
    assert states == {
        first.pk: (JobState.STARTED, False),
        broken.pk: (JobState.COMPLETED, True),
        vanished.pk: (JobState.COMPLETED, True),
    }
    assert Job.objects.get(pk=broken.pk).message == "could not start: this one cannot start"


@pytest.mark.django_db(transaction=True)
def test_the_fallback_skips_a_job_moved_by_someone_else_meanwhile(
    setting: Callable[..., None], te_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch fails before it moved anything; by then another process has paused the first job. The
    ones after it still start, in this same pass."""
    setting(max_jobs=3, priority_slots=0)
    taken, first, third = (make_job(te_client, 5) for _ in range(3))

    def paused_elsewhere_then_fail(*args: Any, **kwargs: Any) -> list[int]:
        other = connections.create_connection("default")  # autocommit: committed at once
        try:
            with other.cursor() as cursor:
                cursor.execute(
                    "UPDATE jobs_job SET queue_state = %s WHERE id = %s", [int(JobState.PAUSED), taken.pk]
                )
        finally:
            other.close()
        raise RuntimeError("the batch cannot start")

    monkeypatch.setattr(controller, "start_queued", paused_elsewhere_then_fail)
    assert dispatch() == [first.pk, third.pk]
    assert Job.objects.get(pk=taken.pk).queue_state == JobState.PAUSED


def test_the_slot_settings_are_read_from_the_settings(setting: Callable[..., None], broker: Broker) -> None:
    setting(max_jobs=7, priority_slots=3, priority_threshold=2)
    assert current_slots() == Slots(max_jobs=7, priority_slots=3, priority_threshold=2)
    assert Slots(max_jobs=2, priority_slots=5, priority_threshold=5).reserved == 2
    assert Slots(max_jobs=5, priority_slots=2, priority_threshold=5).reserved == 2


def test_a_job_end_requests_a_dispatch_only_when_a_job_waits(
    te_client: Client, broker: Broker, committed: Callable[[], Any]
) -> None:
    with committed():
        dispatch_after_job_end()
    assert broker.pop_all() == []
    make_job(te_client, 5, queue_state=JobState.PAUSED)
    with committed():
        dispatch_after_job_end()
    assert broker.pop_all() == []
    make_job(te_client, 5)
    asked = datetime.now(UTC)
    with committed():
        dispatch_after_job_end()
    [message] = broker.pop_all()
    assert (message.queue, message.task) == ("controller", "jobs.tasks.dispatch")
    # Due DISPATCH_AFTER_END_SECONDS later, so the job ends of those milliseconds share the dispatch.
    assert message.eta is not None
    due = datetime.fromisoformat(message.eta) - asked
    assert timedelta(seconds=bus.DISPATCH_AFTER_END_SECONDS) <= due < timedelta(seconds=1)


def test_job_ends_meanwhile_share_the_dispatch_a_job_end_asked_for(
    te_client: Client, broker: Broker, committed: Callable[[], Any]
) -> None:
    make_job(te_client, 5)
    for _ in range(3):
        with committed():
            dispatch_after_job_end()
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"]
    # A submission's own dispatch is asked for at once, as before.
    with committed():
        bus.request_dispatch()
    assert [(m.task, m.eta) for m in broker.pop_all()] == [("jobs.tasks.dispatch", None)]


def test_a_dispatcher_that_finds_the_lock_taken_twice_leaves_a_note(
    te_client: Client, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_job(te_client, 5)
    tries: list[None] = []

    def locked() -> None:
        tries.append(None)
        return None

    monkeypatch.setattr(dispatcher, "_dispatch_locked", locked)
    assert dispatch() == []
    assert len(tries) == 2
    assert bus.take_dispatch_again() is True


def test_more_jobs_than_one_start_chunk_are_counted_across_chunks(
    setting: Callable[..., None], te_client: Client, broker: Broker
) -> None:
    """Started in chunks of START_CHUNK; every chunk counts against max_jobs, not only the last one."""
    over = dispatcher.START_CHUNK + 20
    setting(max_jobs=over, priority_slots=0)
    Job.objects.bulk_create(
        Job(client=te_client, workflow="noop", priority=5, run_at=timezone.now(), queue_state=JobState.QUEUED)
        for _ in range(over + 30)
    )
    started = dispatch()
    assert len(started) == over
    assert Job.objects.filter(queue_state=JobState.STARTED).count() == over


def test_a_dispatch_of_one_job_runs_the_named_statements_only(
    setting: Callable[..., None], te_client: Client, broker: Broker, committed: Callable[[], Any]
) -> None:
    """Jobs that arrive one by one are dispatched a few at a time: each dispatch reads the lock, the slot
    state and the queue once, with named statements (no ORM query, no second read of a queue that
    held fewer jobs than the free slots), then starts the job: it locks it, moves it with its definition
    in one write of its row, and inserts its tasks."""
    setting(max_jobs=5)
    job = make_job(te_client, 5)
    broker.clear()  # the setting's own dispatch request
    names = {statement.text: name for name, statement in STATEMENTS.items()}
    ran: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
            ran.append(names.get(sql, sql))
        return execute(sql, params, many, context)

    with committed(), connections["default"].execute_wrapper(record):
        assert dispatch() == [job.pk]
    assert ran == [
        "dispatch_lock",
        "dispatch_state",
        "dispatch_candidates",
        "lock_starting_jobs",
        "job_start_defined",
        "insert_tasks",
    ]
    assert [(m.task, m.args) for m in broker.pop_all()] == [
        (bus.RUN_TASK, [Task.objects.get(job=job).pk]),
    ]


def test_one_dispatch_starts_new_resumed_and_unresolvable_jobs_together(
    setting: Callable[..., None], te_client: Client, broker: Broker, committed: Callable[[], Any]
) -> None:
    """The batch's one move (``job_start_defined``) stores a new job's definition, keeps a resumed job's,
    and moves a job whose workflow no longer resolves, which then ends failed; nothing falls back to
    the one-at-a-time start."""
    setting(max_jobs=10, priority_slots=0)
    resumed = make_job(te_client, 5)
    assert dispatch() == [resumed.pk]
    kept = Job.objects.get(pk=resumed.pk).definition
    assert kept == {"source": "common", "steps": [{"step": "noop", "queue": "work", "parameters": {}}]}
    # Paused and resumed: queued again, with its definition and its task.
    Job.objects.filter(pk=resumed.pk).update(queue_state=JobState.QUEUED)
    Job.objects.filter(pk=resumed.pk).update(definition={**kept, "marker": "kept"})
    new = make_job(te_client, 5)
    WorkflowDefinition.objects.create(client=te_client, name="gone", steps=[{"step": "no_such_step"}])
    vanished = make_job(te_client, 5, workflow="gone")
    broker.clear()
    with committed():
        assert dispatch() == [resumed.pk, new.pk]
    jobs = {j.pk: j for j in Job.objects.filter(pk__in=[resumed.pk, new.pk, vanished.pk])}
    assert jobs[resumed.pk].queue_state == JobState.STARTED
    assert jobs[resumed.pk].definition == {**kept, "marker": "kept"}
    assert jobs[new.pk].queue_state == JobState.STARTED
    assert jobs[new.pk].definition == kept
    assert jobs[new.pk].started_at is not None and jobs[new.pk].finished_at is None
    assert (jobs[vanished.pk].queue_state, jobs[vanished.pk].failed) == (JobState.COMPLETED, True)
    assert jobs[vanished.pk].message.startswith("invalid workflow definition 'gone': ")
    assert jobs[vanished.pk].started_at is not None
    assert Task.objects.filter(job=resumed.pk).count() == 1
    assert list(Task.objects.filter(job=new.pk).values_list("position", "name")) == [(1, "noop")]
    assert sorted(m.args for m in broker.pop_all() if m.task == bus.RUN_TASK) == sorted(
        [[Task.objects.get(job=resumed.pk).pk], [Task.objects.get(job=new.pk).pk]]
    )


def test_the_candidates_statements_read_in_dispatch_order() -> None:
    """The named candidate reads order as ``DISPATCH_ORDER`` says (and its index, job_dispatch_order)."""
    order = ", ".join(f"{f[1:]} DESC" if f.startswith("-") else f for f in DISPATCH_ORDER)
    for name in ("dispatch_candidates", "dispatch_priority_candidates"):
        assert f"ORDER BY {order} LIMIT" in sql(name), name
