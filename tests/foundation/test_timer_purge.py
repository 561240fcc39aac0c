"""A worker's event loop drops the time-limit timers of ended tasks (taskengine_site.celery)."""

from __future__ import annotations

from kombu.asynchronous.timer import Timer

from taskengine_site import celery as celery_module


def _noop() -> None:
    pass


def test_cancelled_entries_leave_the_heap_and_the_others_still_fire_in_order() -> None:
    timer = Timer()
    entries = [timer.call_after(3600 + i, _noop) for i in range(6)]
    for entry in entries[::2]:
        entry.cancel()
    assert len(timer) == 6
    assert celery_module.purge_cancelled_timers(timer) == 3
    assert len(timer) == 3
    assert [event[2] for event in timer.queue] == [entries[1], entries[3], entries[5]]
    assert celery_module.purge_cancelled_timers(timer) == 0


def test_due_entries_still_fire_after_a_purge() -> None:
    fired: list[int] = []
    timer = Timer()
    keep = timer.call_after(0, fired.append, (1,))
    gone = timer.call_after(0, fired.append, (2,))
    gone.cancel()
    celery_module.purge_cancelled_timers(timer)
    for _, entry in timer:
        if entry is None:
            break
        timer.apply_entry(entry)
    assert fired == [1]
    assert keep.canceled is False


def test_every_worker_runs_the_purge_step() -> None:
    steps = celery_module.app.steps["worker"]
    assert celery_module.PurgeCancelledTimers in steps
