"""The dispatcher: moves queued jobs to started while slots are free (DESIGN.md §2).

With M = ``max_jobs``, P = min(``priority_slots``, M), R_p started priority jobs and R_n started others,
a priority job (``priority <= priority_threshold``) may start when R_p + R_n < M, any other job when
R_n + max(0, R_p - P) < M - P. Dispatch is serialised by one transaction holding a Postgres advisory
lock, so two controllers can never both fill the same free slot.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from jobs.engine import bus, controller
from jobs.engine.sql import sql
from jobs.engine.transitions import job_transition
from jobs.states import JobState
from settings_app.services import settings_ints_from
from taskengine_site import prepared

logger = logging.getLogger(__name__)

# Arbitrary but fixed: the key every dispatcher locks on ("TEDISP" in ASCII).
DISPATCH_LOCK_KEY = 0x544544495350
SLOT_SETTINGS = ("max_jobs", "priority_slots", "priority_threshold")
# Jobs started by one set of statements (their task rows are one INSERT).
START_CHUNK = 100


@dataclass(frozen=True)
class Slots:
    """The slot settings in force for one dispatch."""

    max_jobs: int
    priority_slots: int
    priority_threshold: int

    @property
    def reserved(self) -> int:
        return min(self.priority_slots, self.max_jobs)

    def is_priority(self, priority: int) -> bool:
        return priority <= self.priority_threshold


def can_start(*, is_priority: bool, started_priority: int, started_other: int, slots: Slots) -> bool:
    """The slot rule of DESIGN §2 for one candidate, given the jobs started now."""
    m, p = slots.max_jobs, slots.reserved
    if is_priority:
        return started_priority + started_other < m
    # Priority jobs beyond the reserved slots eat into the shared ones.
    return started_other + max(0, started_priority - p) < m - p


def current_slots() -> Slots:
    """The slot settings in force, read as a dispatch reads them."""
    with prepared.cursor() as cursor:
        return _slot_state(cursor)[0]


def _slot_state(cursor: Any) -> tuple[Slots, int, int]:
    """The slot settings and the started jobs, (slots, priority ones, others), in one statement."""
    cursor.execute(sql("dispatch_state"), {"names": list(SLOT_SETTINGS)})
    # jsonb arrives as its text on Django's connections (Django parses JSONField values itself).
    stored, per_priority = (json.loads(text) for text in cursor.fetchone())
    values = settings_ints_from(stored, SLOT_SETTINGS)
    slots = Slots(values["max_jobs"], values["priority_slots"], values["priority_threshold"])
    started_priority = sum(n for p, n in per_priority.items() if slots.is_priority(int(p)))
    return slots, started_priority, sum(per_priority.values()) - started_priority


def dispatch() -> list[int]:
    """Start queued jobs, in dispatch order, while the slot rule allows; return the ids started.

    Each started job gets its task rows and its first task published (after commit) in the same
    transaction, so a started job always has tasks.

    Only one dispatcher runs at a time (an advisory lock). One that finds the lock taken does not wait
    for it, which would hold a worker process idle: it leaves a note (``bus.dispatch_again``) and tries
    once more; the holder reads the note after its commit and dispatches again, so a job queued after
    the holder read the queue is not left waiting for the next event.
    """
    bus.dispatch_starting()
    started: list[int] = []
    while True:
        batch = _dispatch_locked()
        if batch is None:
            bus.dispatch_again()
            batch = _dispatch_locked()  # the holder may have finished between the two tries
            if batch is None:
                return started  # the holder has not read the note yet: it will dispatch again
        started += batch
        if not bus.take_dispatch_again():
            return started


def _dispatch_locked() -> list[int] | None:
    """One dispatch under the advisory lock; None when another dispatcher holds it.

    Its reads are named statements (``sql/dispatch.sql``), each after the lock so each sees every
    dispatch committed before it: a dispatch of a few jobs, as when jobs arrive one by one, cost more
    CPU in the ORM's compilation of these reads than in the jobs' start (bench/README.md, issue 16).
    """
    started: list[int] = []
    definitions: dict[tuple[int, str], controller.Resolved] = {}
    with transaction.atomic(), prepared.cursor() as cursor:
        cursor.execute(sql("dispatch_lock"), {"key": DISPATCH_LOCK_KEY})
        row = cursor.fetchone()
        if not row or not row[0]:
            return None
        slots, started_priority, started_other = _slot_state(cursor)
        while started_priority + started_other < slots.max_jobs:
            # The next candidates in dispatch order, as many as there are free slots: one query a batch.
            free = slots.max_jobs - started_priority - started_other
            if can_start(
                is_priority=False, started_priority=started_priority, started_other=started_other, slots=slots
            ):
                cursor.execute(sql("dispatch_candidates"), {"limit": free})
            else:
                cursor.execute(
                    sql("dispatch_priority_candidates"),
                    {"limit": free, "threshold": slots.priority_threshold},
                )
            batch = [(int(job_id), int(priority)) for job_id, priority in cursor.fetchall()]
            # Which of them the slot rule admits, in order, as if each one started.
            admitted: list[tuple[int, int]] = []
            would_p, would_n = started_priority, started_other
            for job_id, priority in batch:
                if not can_start(
                    is_priority=slots.is_priority(priority),
                    started_priority=would_p,
                    started_other=would_n,
                    slots=slots,
                ):
                    continue  # a job of the shared slots while only reserved ones are free
                admitted.append((job_id, priority))
                if slots.is_priority(priority):
                    would_p += 1
                else:
                    would_n += 1
            moved, ok = False, []
            for at in range(0, len(admitted), START_CHUNK):
                chunk_moved, chunk_ok = _start(admitted[at : at + START_CHUNK], definitions)
                moved = moved or chunk_moved
                ok += chunk_ok
            priorities = dict(admitted)
            for job_id in ok:
                started.append(job_id)
                if slots.is_priority(priorities[job_id]):
                    started_priority += 1
                else:
                    started_other += 1
            if not moved:
                break  # nothing in this batch could move: the next event looks again
            if len(batch) < free:
                # The queue held no more than this when read: a job queued since asked for a dispatch
                # of its own after its commit (bus.publish_dispatch), which runs after this one.
                break
    if started:
        logger.info("dispatch started jobs %s", started)
    return started


def _start(
    admitted: list[tuple[int, int]], definitions: dict[tuple[int, str], controller.Resolved]
) -> tuple[bool, list[int]]:
    """Start ``admitted`` jobs (in the dispatcher's transaction): (whether any moved, the ids started).

    All at once first: one read that locks them, one transition that also stores the new jobs'
    definitions, and the task rows of them all (``controller.start_queued``). If
    that raises, its savepoint is rolled back and the jobs start one at a time, each in a savepoint of
    its own, so one job that cannot start ends failed without undoing (or blocking) the others.
    """
    ids = [job_id for job_id, _ in admitted]
    try:
        with transaction.atomic():
            moved, started = controller.start_queued(ids, definitions=definitions)
            return bool(moved), started
    except Exception:
        logger.exception("jobs %s could not start together; starting them one at a time", ids)
    any_moved, started = False, []
    for job_id in ids:
        if not job_transition(job_id, source=[JobState.QUEUED], target=JobState.STARTED):
            continue  # moved by someone else since the read
        any_moved = True
        try:
            with transaction.atomic():
                ok = controller.start_job(job_id, definitions=definitions)
        except Exception as exc:
            logger.exception("job %s could not start", job_id)
            controller.fail_start(job_id, f"could not start: {exc}")
            continue
        if ok:
            started.append(job_id)
    return any_moved, started


def on_setting_changed(name: str) -> None:
    """A changed slot setting may free slots: dispatch (registered with the settings' effects by
    ``JobsConfig.ready``)."""
    if name in SLOT_SETTINGS:
        # Runs after the setting's commit (effects defers hooks), so on_commit fires at once.
        bus.request_dispatch()
