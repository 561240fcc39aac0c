"""The transition table of jobs/states.py checked whole against the state diagram of DESIGN §1, and the
only writer of ``queue_state`` (jobs/engine/transitions.py) refusing what the table refuses.

``job_update`` applies rules of its own before the table is consulted, and every engine caller passes one
legal source state, so the table itself is pinned here: every (from, to) pair of the seven states, directly
and through ``job_transition`` / ``job_transition_many`` on real rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from itertools import product

import pytest
from django.utils import timezone

from clients.models import Client
from jobs.engine.sql import sql
from jobs.engine.transitions import job_transition, job_transition_many
from jobs.models import Job
from jobs.states import (
    NAME_TO_STATE,
    NON_TERMINAL,
    OPERATOR_TARGETS,
    TERMINAL,
    TRANSITIONS,
    JobState,
    can_transition,
)

Q, S, C, P, B, SC, PA = (
    JobState.QUEUED,
    JobState.STARTED,
    JobState.COMPLETED,
    JobState.PENDING,
    JobState.BROKEN,
    JobState.SCHEDULED,
    JobState.PAUSED,
)

# DESIGN §1, one entry per arrow of the diagram (submission creates a job; it is not a move).
DIAGRAM: dict[str, set[tuple[JobState, JobState]]] = {
    "scheduled ─run_at passes─▶ pending (semaphore given) │ queued": {(SC, P), (SC, Q)},
    "pending ─semaphore answers 2xx/3xx─▶ queued": {(P, Q)},
    "queued ─dispatcher, slot free─▶ started": {(Q, S)},
    "started ─all tasks ok / a task fails past retry_limit─▶ completed": {(S, C)},
    "queued/scheduled/pending/started ─PUT queue_state=paused─▶ paused": {
        (Q, PA),
        (SC, PA),
        (P, PA),
        (S, PA),
    },
    "paused ─PUT queue_state=queued─▶ queued": {(PA, Q)},
    "any non-terminal ─PUT queue_state=broken─▶ broken": {(Q, B), (S, B), (P, B), (SC, B), (PA, B)},
    # A broken original stays broken: nothing to move.
    "any ─POST rerun─▶ broken": {(Q, B), (S, B), (C, B), (P, B), (SC, B), (PA, B)},
    "queued ─PUT run_at in the future─▶ scheduled": {(Q, SC)},
    # The same rule as the arrow above for the other waiting states ("the waiting state follows run_at and
    # the semaphore", job_update): a queued job given a semaphore URL waits for it, a pending job given a
    # run_at in the future waits for that first. The diagram does not draw these two arrows.
    "queued ─PUT semaphore_url─▶ pending": {(Q, P)},
    "pending ─PUT run_at in the future─▶ scheduled": {(P, SC)},
}
ALLOWED: set[tuple[JobState, JobState]] = set().union(*DIAGRAM.values())
EVERY_PAIR = list(product(JobState, JobState))
REFUSED = [pair for pair in EVERY_PAIR if pair not in ALLOWED]


def test_the_states_have_their_documented_ids_and_names() -> None:
    assert {(int(s), s.label) for s in JobState} == {
        (0, "queued"),
        (1, "started"),
        (2, "completed"),
        (3, "pending"),
        (4, "broken"),
        (5, "scheduled"),
        (6, "paused"),
    }
    assert {s.label: s for s in JobState} == NAME_TO_STATE
    assert {C, B} == TERMINAL
    assert {Q, S, P, SC, PA} == NON_TERMINAL
    assert (PA, B, Q) == OPERATOR_TARGETS


def test_the_table_is_the_diagram_whole() -> None:
    table = {(JobState(s), JobState(t)) for s, targets in TRANSITIONS.items() for t in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(JobState)  # every state has its row, an empty one included
    assert {(s, t) for s, t in EVERY_PAIR if can_transition(s, t)} == ALLOWED


@pytest.mark.parametrize(("source", "target"), EVERY_PAIR, ids=lambda s: s.label)
def test_each_pair_is_allowed_or_refused_as_drawn(source: JobState, target: JobState) -> None:
    assert can_transition(source, target) is ((source, target) in ALLOWED)
    assert can_transition(int(source), int(target)) is ((source, target) in ALLOWED)


def test_nothing_leaves_a_terminal_state_but_a_rerun_and_nothing_enters_an_unknown_one() -> None:
    assert [(s, t) for s, t in ALLOWED if s in TERMINAL] == [(C, B)]
    assert not any(can_transition(s, s) for s in JobState)
    assert not can_transition(99, Q)
    assert not any(can_transition(s, 99) for s in JobState)


@pytest.fixture
def job_at(db: None, make_client: Callable[..., tuple[Client, str]]) -> Callable[[JobState], Job]:
    """``job_at(state)``: a job row in ``state``, written directly (the moves under test come after)."""
    client, _key = make_client()

    def factory(state: JobState) -> Job:
        return Job.objects.create(
            client=client, workflow="noop", queue_state=state, run_at=timezone.now() - timedelta(hours=1)
        )

    return factory


def _state(job: Job) -> JobState:
    return JobState(Job.objects.values_list("queue_state", flat=True).get(pk=job.pk))


@pytest.mark.parametrize(("source", "target"), REFUSED, ids=lambda s: s.label)
def test_job_transition_refuses_a_move_the_table_refuses(
    job_at: Callable[[JobState], Job], source: JobState, target: JobState
) -> None:
    """The job is in ``source``, so the UPDATE would match: only the table stops it."""
    job = job_at(source)
    before = Job.objects.values().get(pk=job.pk)
    assert job_transition(job.pk, source=[source], target=target, message="moved") is False
    assert job_transition_many([job.pk], source=[source], target=target, message="moved") == []
    assert Job.objects.values().get(pk=job.pk) == before


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED), ids=lambda s: s.label)
def test_job_transition_makes_a_move_the_table_allows(
    job_at: Callable[[JobState], Job], source: JobState, target: JobState
) -> None:
    one, many = job_at(source), job_at(source)
    before = Job.objects.values_list("updated_at", flat=True).get(pk=one.pk)
    assert job_transition(one.pk, source=[source], target=target, message="moved") is True
    assert job_transition_many([many.pk], source=[source], target=target, message="moved") == [many.pk]
    for job in (one, many):
        row = Job.objects.values("queue_state", "message", "updated_at", "started_at", "finished_at").get(
            pk=job.pk
        )
        # What the move implies is set by its statement: the message of an end, the times of a start,
        # an end or a break; nothing else.
        assert row["queue_state"] == target
        assert row["message"] == ("moved" if target == C else "")
        assert (row["started_at"] is not None) == (target == S)
        assert (row["finished_at"] is not None) == (target in (C, JobState.BROKEN))
        assert row["updated_at"] > before


def test_only_the_allowed_sources_are_matched(job_at: Callable[[JobState], Job]) -> None:
    """Sources the table refuses for this target are dropped one by one, not the whole call."""
    queued, completed, paused = job_at(Q), job_at(C), job_at(PA)
    assert job_transition(completed.pk, source=[C, Q], target=S) is False
    assert job_transition(paused.pk, source=[C, Q], target=S) is False  # allowed move, not from its state
    moved = job_transition_many([queued.pk, completed.pk, paused.pk], source=[C, Q], target=S)
    assert moved == [queued.pk]
    assert [_state(j) for j in (queued, completed, paused)] == [S, C, PA]
    assert Job.objects.get(pk=queued.pk).started_at is not None


def test_a_move_is_a_compare_and_set(job_at: Callable[[JobState], Job]) -> None:
    """A second delivery of the same move, or a job that is gone, changes nothing and says so."""
    first, second = job_at(Q), job_at(Q)
    assert job_transition(first.pk, source=[Q], target=S) is True
    assert job_transition(first.pk, source=[Q], target=S) is False
    assert job_transition(999_999_999, source=[Q], target=S) is False
    assert sorted(job_transition_many([first.pk, second.pk, 999_999_999], source=[Q], target=S)) == [
        second.pk
    ]
    assert job_transition_many([first.pk, second.pk], source=[Q], target=S) == []
    assert job_transition_many([], source=[Q], target=S) == []
    assert job_transition_many(iter([first.pk]), source=[S], target=C, failed=True) == [first.pk]
    assert Job.objects.values_list("queue_state", "failed").get(pk=first.pk) == (C, True)


def test_the_end_statement_writes_the_move_the_table_allows() -> None:
    assert can_transition(S, C)
    ended = sql("step_end").split("ended AS (", 1)[1].split("),\nlogged AS", 1)[0]
    assert f"queue_state = {int(C)}" in ended
    assert f"j.queue_state = {int(S)}" in ended


def test_an_end_without_an_outcome_is_a_success_with_no_message(job_at: Callable[[JobState], Job]) -> None:
    one, many = job_at(S), job_at(S)
    for job in (one, many):
        Job.objects.filter(pk=job.pk).update(message="earlier", failed=True)
    assert job_transition(one.pk, source=[S], target=C) is True
    assert job_transition_many([many.pk], source=[S], target=C) == [many.pk]
    for job in (one, many):
        assert Job.objects.values_list("queue_state", "failed", "message").get(pk=job.pk) == (C, False, "")
