"""ffmpeg when its worker stops (DESIGN §5): stopped cleanly, and the step handed back, never failed."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobs.workflows.registry import StepInterrupted
from media import ffmpeg
from taskengine_site import shutdown
from tests.media.conftest import Recorder, make_ctx
from tests.media.test_ffmpeg import live


@pytest.fixture(autouse=True)
def not_stopping() -> Iterator[None]:
    shutdown.reset()
    yield
    shutdown.reset()


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    processes: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = real(*args, **kwargs)
        processes.append(process)
        return process

    monkeypatch.setattr(ffmpeg.subprocess, "Popen", popen)
    return processes


class Stopping(Recorder):
    """The runner's heartbeat in a worker that was told to stop: after a few beats the step is
    interrupted (it cannot end within the grace)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def heartbeat(self, progress: float | None = None) -> None:
        super().heartbeat(progress)
        if self.beats >= self.after:
            raise StepInterrupted("the worker is stopping")


def test_an_interrupted_step_stops_ffmpeg_cleanly_before_it_is_handed_back(tmp_path, spawned):
    ctx = make_ctx("test", {}, tmp_path, recorder=Stopping(after=3))
    started = time.monotonic()
    with pytest.raises(StepInterrupted):
        ffmpeg.run_ffmpeg(live(60), ctx, duration=60)
    assert time.monotonic() - started < 5
    process = spawned[-1]  # the tool (an earlier one may be the sandbox's check)
    # Gone before the interruption reached the runner, and by its SIGTERM: ffmpeg closed its outputs
    # and exited on its own (255) rather than being killed.
    assert process.returncode in (255, -signal.SIGTERM)


def test_ffmpeg_stopped_by_the_platforms_sigterm_interrupts_the_step_instead_of_failing_it(tmp_path, spawned):
    # A platform signals every process of the dyno: ffmpeg gets its own SIGTERM as the worker does.
    def platform_stops_everything() -> None:
        time.sleep(1.0)
        shutdown.begin()  # off the main thread: the notice without the deadline's timer
        os.kill(spawned[-1].pid, signal.SIGTERM)

    threading.Thread(target=platform_stops_everything, daemon=True).start()
    with pytest.raises(StepInterrupted, match="stopped with the worker"):
        ffmpeg.run_ffmpeg(live(60), make_ctx("test", {}, tmp_path), duration=60)
    assert spawned[-1].returncode is not None


def test_a_failing_ffmpeg_still_fails_the_step_when_the_worker_is_not_stopping(tmp_path):
    with pytest.raises(ffmpeg.FfmpegFailed):
        ffmpeg.run_ffmpeg(
            ["-i", str(tmp_path / "absent.mp4"), "-f", "null", "-"], make_ctx("t", {}, tmp_path)
        )
