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


def test_a_log_gets_one_line_per_change() -> None:
    err = io.StringIO()
    watcher = follower(err)
    for _ in range(3):
        watcher.show_progress({"queue_state": "queued"})
    watcher.completed.add(1)
    watcher.show_progress({"queue_state": "started"})
    assert err.getvalue().splitlines() == ["job 7 queued: 0 steps done", "job 7 started: 1 step done"]
