"""The ffmpeg runner: binary lookup, progress from ffmpeg's own output, and termination."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jobs.workflows.registry import PermanentError, StepCancelled
from media import ffmpeg
from media.probe import probe
from tests.media.conftest import Recorder, make_ctx

# A synthetic source read at its native rate: lasts its duration in real time, whatever the machine.
LIVE = ["-re", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration={seconds}"]


def live(seconds: float) -> list[str]:
    return [arg.format(seconds=seconds) for arg in LIVE] + ["-f", "null", "-"]


def test_binary_is_found_and_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv("TASKENGINE_FFMPEG", raising=False)
    found = ffmpeg.ffmpeg_exe()
    assert Path(found).is_file()
    assert subprocess.run([found, "-version"], capture_output=True, check=True).stdout.startswith(b"ffmpeg")

    monkeypatch.setenv("TASKENGINE_FFMPEG", str(tmp_path / "missing-ffmpeg"))
    with pytest.raises(PermanentError, match="is not an executable"):
        ffmpeg.ffmpeg_exe()
    monkeypatch.setenv("TASKENGINE_FFMPEG", found)
    assert ffmpeg.ffmpeg_exe() == found


def test_without_a_system_ffmpeg_the_packaged_one_is_used(monkeypatch):
    import imageio_ffmpeg

    monkeypatch.delenv("TASKENGINE_FFMPEG", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert ffmpeg.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()


def test_progress_and_milestones_come_from_ffmpeg(tmp_path):
    recorder = Recorder()
    ctx = make_ctx("test", {}, tmp_path, recorder=recorder)
    run = ffmpeg.run_ffmpeg(live(2), ctx, duration=2, label="encode", progress_span=(10, 50))
    assert run.seconds >= 1.0  # -re lets ffmpeg read half a second ahead
    # Rising percentages within the span, ending at its top; milestones in the job's log.
    assert recorder.progress == sorted(recorder.progress)
    assert 10 <= recorder.progress[0] < 40 and recorder.progress[-1] == 50
    assert len(recorder.progress) >= 4
    assert [line for line in recorder.lines if "done" in line] == [
        "encode: 25% done",
        "encode: 50% done",
        "encode: 75% done",
    ]


class Cancelling(Recorder):
    """A heartbeat that reports the job broken after a few beats, as the engine's does."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def heartbeat(self, progress: float | None = None) -> None:
        super().heartbeat(progress)
        if self.beats >= self.after:
            raise StepCancelled("the job was broken")


@pytest.fixture
def spawned(monkeypatch):
    """The ffmpeg processes the runner starts, to check they are gone."""
    processes: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        process = real(*args, **kwargs)
        processes.append(process)
        return process

    monkeypatch.setattr(ffmpeg.subprocess, "Popen", popen)
    return processes


def test_a_cancelled_step_terminates_ffmpeg_promptly(tmp_path, spawned):
    ctx = make_ctx("test", {}, tmp_path, recorder=Cancelling(after=3))
    started = time.monotonic()
    with pytest.raises(StepCancelled):
        ffmpeg.run_ffmpeg(live(60), ctx, duration=60)
    assert time.monotonic() - started < 5
    (process,) = spawned
    # SIGTERM was enough: ffmpeg exits on its own (255) rather than being killed.
    assert process.returncode is not None and process.returncode in (255, -signal.SIGTERM)


def test_a_child_ignoring_sigterm_is_killed():
    # An ignored signal stays ignored across exec, so the sleeping process ignores SIGTERM.
    process = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; exec sleep 30"], stdout=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    started = time.monotonic()
    ffmpeg.terminate(process, grace=0.5)
    assert time.monotonic() - started < 2
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL


def test_timeout_stops_ffmpeg(tmp_path, spawned):
    with pytest.raises(ffmpeg.FfmpegTimeout, match="longer than"):
        ffmpeg.run_ffmpeg(live(60), make_ctx("test", {}, tmp_path), duration=60, timeout=1)
    assert spawned[0].returncode is not None


def test_a_failure_reports_ffmpeg_own_words(tmp_path):
    with pytest.raises(ffmpeg.FfmpegFailed, match="No such file"):
        ffmpeg.run_ffmpeg(
            ["-i", str(tmp_path / "absent.mp4"), "-f", "null", "-"], make_ctx("t", {}, tmp_path)
        )


def test_probe_reads_duration_size_and_streams(media_cache, tmp_path):
    source = media_cache(4)
    info = probe(source, work_dir=source.parent)
    assert (info.width, info.height, info.fps, info.video_codec, info.audio_codec) == (
        640,
        360,
        25,
        "h264",
        "aac",
    )
    assert abs(info.duration - 4) < 0.05
    silent_source = media_cache(2, size="320x180", audio=False)
    silent = probe(silent_source, work_dir=silent_source.parent)
    assert not silent.has_audio and silent.height == 180
    (tmp_path / "text.mp4").write_text("not media")
    with pytest.raises(PermanentError, match="not a readable media file"):
        probe(tmp_path / "text.mp4", work_dir=tmp_path)
