"""Steps that do no media work: used by tests, benchmarks and as building blocks."""

from __future__ import annotations

import time
from typing import Any

from jobs.workflows.registry import PermanentError, StepContext, TransientError, step

# Long sleeps wake this often to beat the heartbeat (and to stop promptly when the job is broken).
SLEEP_TICK_SECONDS = 0.25


@step("noop")
def noop(ctx: StepContext) -> dict[str, Any]:
    """Does nothing and succeeds."""
    return {"noop": True}


@step("sleep")
def sleep(ctx: StepContext) -> dict[str, Any]:
    """Sleeps ``seconds`` (default 1), beating the heartbeat and recording progress meanwhile."""
    raw = ctx.param("seconds", 1)
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise PermanentError(f"sleep: seconds must be a number, got {raw!r}") from None
    if not 0 <= seconds <= 86_400:
        raise PermanentError(f"sleep: seconds must be between 0 and 86400, got {seconds}")
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(SLEEP_TICK_SECONDS, remaining))
        ctx.heartbeat(100.0 * (1 - max(0.0, deadline - time.monotonic()) / seconds) if seconds else 100.0)
    return {"slept": seconds}


@step("fail")
def fail(ctx: StepContext) -> None:
    """Always fails with ``message``; ``permanent`` true fails the job at once, else it is retried."""
    message = str(ctx.param("message", "the fail step failed on purpose"))
    if ctx.param("permanent", False) is True:
        raise PermanentError(message)
    raise TransientError(message)
