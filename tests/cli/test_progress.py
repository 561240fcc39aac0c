"""How ``watch`` draws its progress: a bar redrawn in place on a terminal, one line per change in a log."""

from __future__ import annotations

import io
from typing import Any

from taskengine_cli.main import Api, Follower, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def follower(err: io.StringIO) -> Follower:
    return Follower(Api(url="http://unused", client="c", key="k"), 7, out=io.StringIO(), err=err)


def test_bar_with_and_without_a_known_step_count() -> None:
    assert progress_bar(0, 4, width=8) == "[........] 0/4 steps"
    assert progress_bar(3, 4, width=8) == "[######..] 3/4 steps"
    assert progress_bar(1, None) == "1 step done"
    assert progress_bar(5, None) == "5 steps done"


def test_a_terminal_gets_the_bar_redrawn_in_place() -> None:
    err = Terminal()
    watcher = follower(err)
    detail: dict[str, Any] = {"queue_state": "started", "tasks": [{}, {}, {}, {}]}
    watcher.current = "encode"
    watcher.show_progress(detail)
    watcher.completed.update({1, 2})
    watcher.show_progress(detail)
    drawn = err.getvalue()
    assert "\n" not in drawn  # redrawn with carriage returns, not scrolled
    assert drawn.count("\r") == 2
    assert drawn.endswith("job 7 started: [###############...............] 2/4 steps (running 'encode')")


def test_the_running_step_shows_its_progress_with_at_most_one_decimal() -> None:
    err = io.StringIO()
    watcher = follower(err)
    steps: list[dict[str, Any]] = [
        {"name": "fetch", "state": "completed", "progress": 100.0},
        {"name": "encode", "state": "running", "progress": 31.370715999999277},
        {"name": "publish", "state": "pending", "progress": None},
    ]
    watcher.show_progress({"queue_state": "started", "tasks": steps})
    steps[1]["progress"] = 100.0
    watcher.show_progress({"queue_state": "started", "tasks": steps})
    bar = f"[{'#' * 10}{'.' * 20}] 1/3 steps"
    assert err.getvalue().splitlines() == [
        f"job 7 started: {bar} (running 'encode', 31.4 %)",
        f"job 7 started: {bar} (running 'encode', 100 %)",
    ]


def test_a_log_gets_one_line_per_change() -> None:
    err = io.StringIO()
    watcher = follower(err)
    for _ in range(3):
        watcher.show_progress({"queue_state": "queued"})
    watcher.completed.add(1)
    watcher.show_progress({"queue_state": "started"})
    assert err.getvalue().splitlines() == ["job 7 queued: 0 steps done", "job 7 started: 1 step done"]


def test_steps_done_and_total_come_from_the_tasks_list_and_the_total_is_kept() -> None:
    err = io.StringIO()
    watcher = follower(err)
    watcher.show_progress({"queue_state": "queued", "tasks": []})  # not started: no task rows yet
    steps = [{"state": "completed"}, {"state": "completed"}, {"state": "running"}, {"state": "pending"}]
    watcher.show_progress({"queue_state": "started", "tasks": steps})
    watcher.show_progress({"queue_state": "started"})  # an answer without tasks keeps what is known
    steps[2]["state"] = "completed"
    watcher.show_progress({"queue_state": "started", "tasks": steps})
    assert err.getvalue().splitlines() == [
        "job 7 queued: 0 steps done",
        f"job 7 started: [{'#' * 15}{'.' * 15}] 2/4 steps",
        f"job 7 started: [{'#' * 22}{'.' * 8}] 3/4 steps",
    ]
