"""ffmpeg's confinement: a scrubbed environment, the job's work dir as its working directory, and a
Landlock sandbox where the host enforces one; each case judged by what ffmpeg could or could not do."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from celery import signals

from jobs.workflows.registry import PermanentError, StepCancelled
from media import ffmpeg, sandbox, storage, toolchain
from media.confine import CANNOT_CONFINE
from media.probe import probe
from tests.media.conftest import Recorder, decode, make_ctx, put, run_workflow

HOST_ABI, HOST_REASON = sandbox.host_support()
needs_landlock = pytest.mark.skipif(HOST_ABI is None, reason=f"this host has no Landlock: {HOST_REASON}")
UNSUPPORTED = "Landlock not available: Landlock not supported by this kernel"
SCRUBBED = {"PATH", "LANG", "LC_ALL", "TMPDIR"}


@pytest.fixture
def canary(monkeypatch, tmp_path) -> dict[str, str | Path]:
    """A secret in a file outside every work dir and in the worker's environment (as an AWS key and a
    TASKENGINE_ variable), besides the worker's real SECRET_KEY and DATABASE_URL."""
    secret = f"CANARY-{secrets.token_hex(16)}"
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "canary.txt"
    path.write_text(secret)
    monkeypatch.setenv("TASKENGINE_CANARY", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    return {"secret": secret, "path": path}


@pytest.fixture
def spawned(monkeypatch) -> list[subprocess.Popen]:
    """Every child process started from here on (ffmpeg runs and probes alike)."""
    processes: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        process = real(*args, **kwargs)
        processes.append(process)
        return process

    monkeypatch.setattr(subprocess, "Popen", popen)
    return processes


@pytest.fixture
def no_landlock(monkeypatch):
    """This host as one whose kernel lacks Landlock."""
    monkeypatch.setattr(sandbox, "host_support", lambda: (None, UNSUPPORTED))


def copy_raw(source: Path | str, output: Path) -> list[str]:
    """ffmpeg arguments that copy any file's bytes, as they are, into ``output``."""
    return ["-f", "data", "-i", str(source), "-map", "0", "-c", "copy", "-f", "data", str(output)]


def files_holding(folder: Path, needle: bytes) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()]


def argv(process: subprocess.Popen) -> list[str]:
    args = process.args
    return [str(arg) for arg in args] if isinstance(args, list | tuple) else [str(args)]


def ffmpeg_runs(processes: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """The media tools' runs among ``processes``: ffmpeg, ffprobe and Shaka Packager (not the loader
    listing a program's libraries, nor the toolchain's version check: the first
    ``toolchain.packager_exe()`` of a process, made here, runs ``packager --version`` unconfined, and
    was taken for the step's last run when a test ran first in its process)."""
    packager = toolchain.packager_exe()
    return [
        p
        for p in processes
        if ("-hide_banner" in argv(p) or packager in argv(p)) and argv(p)[-1:] != ["--version"]
    ]


def through_wrapper(process: subprocess.Popen) -> bool:
    return argv(process)[:4] == [sys.executable, "-I", str(sandbox.WRAPPER), "--rw"]


# --- the file-system sandbox -----------------------------------------------------------------------


@needs_landlock
@pytest.mark.parametrize("target", ["canary file", "/proc/self/environ"])
def test_confined_ffmpeg_cannot_read_outside_the_work_dir(target, tmp_path, canary, settings):
    settings.TASKENGINE_FFMPEG_SANDBOX = "required"
    source = canary["path"] if target == "canary file" else target
    ctx = make_ctx("test", {}, tmp_path)
    work = storage.work_dir(ctx)
    with pytest.raises(ffmpeg.FfmpegFailed, match="Permission denied") as failure:
        ffmpeg.run_ffmpeg(copy_raw(source, work / "loot.bin"), ctx)
    with pytest.raises(PermanentError, match="Permission denied") as probed:
        probe(source, work_dir=work)
    secret = str(canary["secret"])
    assert secret not in str(failure.value) and secret not in str(probed.value)
    assert files_holding(tmp_path / "work", secret.encode()) == []
    assert not (work / "loot.bin").exists()


def test_unconfined_ffmpeg_reads_what_the_sandbox_would_have_refused(tmp_path, canary, settings):
    # The same command without the sandbox copies the canary: the test above is not vacuous.
    settings.TASKENGINE_FFMPEG_SANDBOX = "off"
    ctx = make_ctx("test", {}, tmp_path)
    work = storage.work_dir(ctx)
    ffmpeg.run_ffmpeg(copy_raw(canary["path"], work / "loot.bin"), ctx)
    assert (work / "loot.bin").read_bytes() == str(canary["secret"]).encode()


@needs_landlock
def test_a_dynamically_linked_program_gets_its_loader_and_libraries_and_nothing_else(
    tmp_path, canary, settings
):
    settings.TASKENGINE_FFMPEG_SANDBOX = "required"
    cat = os.path.realpath(shutil.which("cat") or "/bin/cat")
    if sandbox.elf_interpreter(cat) is None:
        pytest.skip("cat is statically linked here")
    work = tmp_path / "work"
    work.mkdir()
    (work / "inside.txt").write_text("inside")

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        argv, env = sandbox.child_command([cat, *args], work)
        return subprocess.run(argv, env=env, cwd=work, capture_output=True, check=False)

    assert run(str(work / "inside.txt")).stdout == b"inside"
    refused = run(str(canary["path"]), "/etc/passwd")
    assert refused.returncode != 0 and b"Permission denied" in refused.stderr
    assert str(canary["secret"]).encode() not in refused.stdout + refused.stderr
    assert b"root:" not in refused.stdout


@needs_landlock
def test_a_program_that_needs_more_than_its_own_files_is_refused_clearly(tmp_path, settings):
    settings.TASKENGINE_FFMPEG_SANDBOX = "required"
    script = tmp_path / "ffmpeg-wrapper.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)
    assert sandbox.elf_interpreter(str(script)) is None
    work = tmp_path / "work"
    work.mkdir()
    argv, env = sandbox.child_command([str(script)], work)
    result = subprocess.run(argv, env=env, cwd=work, capture_output=True, check=False)
    assert result.returncode == CANNOT_CONFINE and result.stdout == b""
    assert result.stderr.startswith(b"confine: cannot run " + str(script).encode())


# --- the environment and the working directory ------------------------------------------------------


class Watching(Recorder):
    """A heartbeat that looks at the running ffmpeg through /proc, then cancels the step."""

    def __init__(self, spawned: list[subprocess.Popen]) -> None:
        super().__init__()
        self.spawned = spawned
        self.seen: dict[str, str | bytes] = {}

    def heartbeat(self, progress: float | None = None) -> None:
        super().heartbeat(progress)
        proc = Path(f"/proc/{ffmpeg_runs(self.spawned)[-1].pid}")
        exe = os.readlink(proc / "exe")
        if exe != os.path.realpath(ffmpeg.ffmpeg_exe()) and self.beats < 50:
            return  # the wrapper has not replaced itself with ffmpeg yet
        self.seen = {
            "exe": exe,
            "cwd": os.readlink(proc / "cwd"),
            "environ": (proc / "environ").read_bytes(),
            "status": (proc / "status").read_text(),
            "limits": (proc / "limits").read_text(),
        }
        raise StepCancelled("seen enough")


@pytest.mark.parametrize("confined", [True, False], ids=["confined", "unconfined"])
def test_ffmpeg_runs_in_the_work_dir_with_nothing_of_the_workers_environment(
    confined, tmp_path, canary, settings, spawned
):
    if confined and HOST_ABI is None:
        pytest.skip(f"this host has no Landlock: {HOST_REASON}")
    settings.TASKENGINE_FFMPEG_SANDBOX = "required" if confined else "off"
    assert os.environ["SECRET_KEY"] and os.environ["DATABASE_URL"]
    watching = Watching(spawned)
    ctx = make_ctx("test", {}, tmp_path, recorder=watching)
    live = ["-re", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=30", "-f", "null", "-"]
    with pytest.raises(StepCancelled):
        ffmpeg.run_ffmpeg(live, ctx, duration=30)
    (process,) = ffmpeg_runs(spawned)
    assert through_wrapper(process) is confined
    work = storage.job_work_dir(ctx.job_id)
    assert watching.seen["exe"] == os.path.realpath(ffmpeg.ffmpeg_exe())
    assert watching.seen["cwd"] == str(work.resolve())
    environ = dict(entry.split(b"=", 1) for entry in bytes(watching.seen["environ"]).split(b"\0") if entry)
    assert set(environ) == {name.encode() for name in SCRUBBED}
    assert environ[b"TMPDIR"] == str(work).encode() and environ[b"LC_ALL"] == b"C"
    assert str(canary["secret"]).encode() not in watching.seen["environ"]
    assert os.environ["SECRET_KEY"].encode() not in watching.seen["environ"]
    if confined:
        # The wrapper's other settings, inherited by ffmpeg across exec.
        assert "NoNewPrivs:\t1" in str(watching.seen["status"])
        core = next(line for line in str(watching.seen["limits"]).splitlines() if "core" in line)
        assert core.split()[-3:-1] == ["0", "0"]


def test_unconfined_ffmpeg_reading_its_own_environment_finds_no_secret(tmp_path, canary, settings):
    settings.TASKENGINE_FFMPEG_SANDBOX = "off"
    ctx = make_ctx("test", {}, tmp_path)
    work = storage.work_dir(ctx)
    ffmpeg.run_ffmpeg(copy_raw("/proc/self/environ", work / "environ.bin"), ctx)
    copied = (work / "environ.bin").read_bytes()
    assert b"LC_ALL=C" in copied  # it did read its environment
    assert str(canary["secret"]).encode() not in copied
    for name in (b"SECRET_KEY", b"DATABASE_URL", b"REDIS_URL", b"TASKENGINE_", b"AWS_"):
        assert name not in copied


def test_relative_outputs_land_in_the_work_dir_and_other_folders_are_refused(tmp_path):
    ctx = make_ctx("test", {}, tmp_path)
    one_frame = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.1", "-frames:v", "1"]
    ffmpeg.run_ffmpeg([*one_frame, "frame.jpg"], ctx)
    assert (storage.job_work_dir(ctx.job_id) / "frame.jpg").is_file()
    with pytest.raises(ValueError, match="outside the work dir"):
        ffmpeg.run_ffmpeg([*one_frame, "frame.jpg"], ctx, cwd=tmp_path)


# --- whole workflows, confined and not --------------------------------------------------------------


def small_vodstream(area, media_cache, spawned):
    put(area, media_cache(2, size="320x180", audio=False), "small/a.mp4")
    spawned.clear()  # making the source ran an ffmpeg of the test's own
    parameters = {
        "content_id": "small",
        "source_folder": "small",
        "segment_duration": 1,
        "video_preset": "ultrafast",
        "thumbnail_time": 1,
        "generate_mp4": True,
    }
    return run_workflow("vodstream", parameters, area)


def assert_small_vodstream_plays(area):
    (video,) = decode(area / "small/small.m3u8")["video"]
    assert video["size"] == (256, 144) and video["frames"] == 50
    assert decode(area / "small/small.mp4")["video"][0]["frames"] == 50
    assert decode(area / "small/small.jpg")["video"][0]["size"] == (320, 180)


@needs_landlock
def test_a_real_encode_runs_confined(area, media_cache, settings, spawned):
    settings.TASKENGINE_FFMPEG_SANDBOX = "required"
    small_vodstream(area, media_cache, spawned)
    runs = ffmpeg_runs(spawned)
    # Probes, the encode, the packager, the thumbnail and the MP4: every one through the sandbox.
    assert len(runs) >= 5 and all(through_wrapper(p) for p in runs)
    assert any(toolchain.packager_exe() in argv(p) for p in runs)
    assert_small_vodstream_plays(area)


@pytest.mark.parametrize("why", ["off", "no landlock"])
def test_without_the_sandbox_ffmpeg_still_encodes(why, area, media_cache, settings, spawned, monkeypatch):
    if why == "off":
        settings.TASKENGINE_FFMPEG_SANDBOX = "off"
    else:
        settings.TASKENGINE_FFMPEG_SANDBOX = "auto"
        monkeypatch.setattr(sandbox, "host_support", lambda: (None, UNSUPPORTED))
    small_vodstream(area, media_cache, spawned)
    runs = ffmpeg_runs(spawned)
    tools = {toolchain.ffmpeg_exe(), toolchain.ffprobe_exe(), toolchain.packager_exe()}
    assert len(runs) >= 5 and all(argv(p)[0] in tools for p in runs)
    assert_small_vodstream_plays(area)


def test_required_without_landlock_fails_the_step_and_runs_no_ffmpeg(
    area, media_cache, settings, spawned, no_landlock
):
    settings.TASKENGINE_FFMPEG_SANDBOX = "required"
    with pytest.raises(PermanentError) as failure:
        small_vodstream(area, media_cache, spawned)
    assert str(failure.value) == f"ffmpeg was not run: TASKENGINE_FFMPEG_SANDBOX=required, but {UNSUPPORTED}"
    assert ffmpeg_runs(spawned) == []
    with pytest.raises(PermanentError, match="TASKENGINE_FFMPEG_SANDBOX=required"):
        ffmpeg.run_ffmpeg(["-version"], make_ctx("test", {}, area))


# --- what the worker says at start ------------------------------------------------------------------


def test_the_host_check_says_why_landlock_is_missing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert sandbox.host_support.__wrapped__() == (None, "Landlock exists only on Linux, this is darwin")


@pytest.mark.parametrize(
    ("mode", "host", "level", "line"),
    [
        (
            "auto",
            (7, ""),
            logging.INFO,
            "ffmpeg confinement: landlock ABI 7 (work dir only, scrubbed environment)",
        ),
        (
            "auto",
            (None, UNSUPPORTED),
            logging.INFO,
            f"ffmpeg confinement: none ({UNSUPPORTED}); scrubbed environment and the work dir as working "
            "directory only",
        ),
        (
            "off",
            (7, ""),
            logging.INFO,
            "ffmpeg confinement: none (TASKENGINE_FFMPEG_SANDBOX=off); scrubbed environment and the work "
            "dir as working directory only",
        ),
        (
            "required",
            (None, UNSUPPORTED),
            logging.ERROR,
            f"ffmpeg confinement: none ({UNSUPPORTED}); TASKENGINE_FFMPEG_SANDBOX=required, so every "
            "media step that runs ffmpeg will fail",
        ),
    ],
)
def test_the_worker_says_at_start_which_confinement_is_active(
    mode, host, level, line, settings, monkeypatch, caplog
):
    # Connected under their dispatch_uids by the media app (Celery keys receivers by them).
    assert any("taskengine-ffmpeg-sandbox-check" in repr(key) for key, _ in signals.worker_init.receivers)
    assert any("taskengine-ffmpeg-sandbox-log" in repr(key) for key, _ in signals.worker_ready.receivers)
    settings.TASKENGINE_FFMPEG_SANDBOX = mode
    monkeypatch.setattr(sandbox, "host_support", lambda: host)
    with caplog.at_level(logging.INFO, logger="media.sandbox"):
        sandbox.on_worker_ready(sender=None)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(level, line)]


@needs_landlock
def test_this_host_reports_its_own_landlock_abi(settings, caplog):
    settings.TASKENGINE_FFMPEG_SANDBOX = "auto"
    with caplog.at_level(logging.INFO, logger="media.sandbox"):
        sandbox.on_worker_ready(sender=None)
    assert caplog.records[0].getMessage() == (
        f"ffmpeg confinement: landlock ABI {HOST_ABI} (work dir only, scrubbed environment)"
    )
