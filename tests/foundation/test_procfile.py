"""The Procfile's processes consume every queue, callbacks and dispatch apart from the steps, and
``make run`` and the chaos harness start the same set."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.engine import bus
from tests.chaos import harness

ROOT = Path(__file__).resolve().parents[2]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def queues_of(command: str) -> set[str]:
    match = re.search(r"-Q (\S+)", command)
    assert match, command
    return set(match.group(1).split(","))


def test_steps_and_control_queues_have_processes_of_their_own():
    processes = procfile()
    assert set(processes) == {"release", "web", "worker", "control", "beat"}
    assert queues_of(processes["worker"]) == set(bus.WORKER_QUEUES) == {"work", "windows_capture"}
    assert (
        queues_of(processes["control"]) == set(bus.CONTROL_QUEUES) == {"controller", "callback", "scheduler"}
    )
    assert set(bus.WORKER_QUEUES) | set(bus.CONTROL_QUEUES) == set(bus.QUEUES)
    # Callbacks wait on receivers, not on the CPU: threads, so one hanging receiver holds one thread.
    assert "--pool threads" in processes["control"]
    assert "${CONTROL_CONCURRENCY:-" in processes["control"]


def test_make_run_and_the_chaos_harness_start_the_procfiles_processes():
    run = next(
        line for line in (ROOT / "Makefile").read_text().splitlines() if "honcho -f Procfile start" in line
    )
    assert run.rstrip("'").split()[-4:] == ["web", "worker", "control", "beat"]
    assert set(harness.WORKER_QUEUES.split(",")) == set(bus.WORKER_QUEUES)
    assert set(harness.CONTROL_QUEUES.split(",")) == set(bus.CONTROL_QUEUES)
