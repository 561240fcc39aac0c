"""Running ffmpeg and Shaka Packager as child processes of a step.

The binaries come from ``media.toolchain`` (the pinned wheel's, or configured and version-checked).

``run_ffmpeg`` asks ffmpeg for its machine-readable progress (``-progress pipe:1 -nostats``), turns
``out_time_us`` into a percentage of the expected duration, and beats the step's heartbeat while ffmpeg
works. The heartbeat raises ``StepCancelled`` when the job is broken; the tool is then terminated
(SIGTERM, then SIGKILL after a grace period) before the exception goes on, so a broken job never leaves
an encoder running. A timeout or any other exception in the step's thread (Celery's soft time limit, the
worker's shutdown: ``StepInterrupted``) terminates it the same way. A tool that exits with an error while
its worker is stopping was stopped by the platform's SIGTERM (which reaches every process) rather than
failed on its input: the step is interrupted and handed back, not failed. ``run_packager`` runs Shaka
Packager the same way, with the heartbeat only.

Every run is confined to the job's work dir (``media.sandbox``): a scrubbed environment, the work dir
(or a folder inside it) as working directory, and Landlock where the host enforces it.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from jobs.workflows.registry import PermanentError, StepContext, StepInterrupted, TransientError
from media import sandbox, storage, toolchain
from taskengine_site import shutdown

# How long ffmpeg gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE_SECONDS = 3.0
# How often the step's thread looks at ffmpeg's progress and beats the heartbeat.
POLL_SECONDS = 0.2
# A progress value is written to the task at most this often unless it moved by PROGRESS_STEP points.
PROGRESS_INTERVAL_SECONDS = 5.0
PROGRESS_STEP = 1.0
# Percentages at which a line goes to the job's log.
LOG_MILESTONES = (25, 50, 75)
STDERR_TAIL_CHARS = 2000


class FfmpegFailed(PermanentError):
    """ffmpeg exited with an error: the input or the parameters are wrong, so retrying cannot help."""


class FfmpegTimeout(TransientError):
    """ffmpeg ran longer than its timeout and was terminated."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary to run (``media.toolchain``): the pinned wheel's unless configured."""
    return toolchain.ffmpeg_exe()


def encoder_threads() -> str:
    """``-threads`` for encoders: ``TASKENGINE_FFMPEG_THREADS`` (0, ffmpeg's default, uses every core)."""
    return str(int(settings.TASKENGINE_FFMPEG_THREADS))


class PackagerFailed(PermanentError):
    """Shaka Packager exited with an error: what it was given cannot be packaged."""


@dataclass
class _Progress:
    """What the reader thread learned from ffmpeg's ``-progress`` output."""

    out_time_us: int = 0
    ended: bool = False
    lines: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _read_progress(stream: Any, progress: _Progress) -> None:
    for raw in iter(stream.readline, b""):
        key, _, value = raw.decode("ascii", errors="replace").strip().partition("=")
        with progress.lock:
            progress.lines += 1
            if key == "out_time_us" and value.lstrip("-").isdigit():
                progress.out_time_us = max(progress.out_time_us, int(value))
            elif key == "progress" and value == "end":
                progress.ended = True


def terminate(process: subprocess.Popen[bytes], grace: float = TERMINATE_GRACE_SECONDS) -> None:
    """Stop ``process``: SIGTERM lets ffmpeg close its outputs; SIGKILL if it has not exited in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class FfmpegRun:
    """The outcome of one successful ffmpeg run."""

    command: list[str]
    seconds: float
    stderr: str


def build_command(args: Sequence[str]) -> list[str]:
    """The full command line for ``args``: the binary, quiet output and machine-readable progress."""
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "warning",
        "-progress",
        "pipe:1",
        "-nostats",
        *args,
    ]


def confinement_root(ctx: StepContext | None, work_dir: Path | None) -> Path:
    """The folder ffmpeg is confined to: ``work_dir`` if given, else ``ctx``'s job's work dir (made)."""
    if work_dir is not None:
        return Path(work_dir)
    if ctx is None:
        raise ValueError("ffmpeg runs inside a job's work dir: pass a step context or a work_dir")
    return storage.work_dir(ctx)


def inside(path: Path, root: Path) -> Path:
    """``path`` when it is ``root`` or a folder beneath it; a programming error otherwise."""
    if not Path(path).resolve().is_relative_to(Path(root).resolve()):
        raise ValueError(f"{path} is outside the work dir {root}")
    return Path(path)


def run_ffmpeg(
    args: Sequence[str],
    ctx: StepContext | None = None,
    *,
    duration: float | None = None,
    label: str = "ffmpeg",
    timeout: float | None = None,
    progress_span: tuple[float, float] = (0.0, 100.0),
    cwd: Path | None = None,
    work_dir: Path | None = None,
) -> FfmpegRun:
    """Run ffmpeg with ``args`` (inputs, filters, outputs) and wait for it, beating ``ctx``'s heartbeat.

    ffmpeg is confined to ``work_dir`` (default: ``ctx``'s job's work dir), so every file it reads or
    writes must lie inside it; ``cwd`` (a folder inside it, default the work dir itself) is where
    relative output names land. ``duration`` (seconds of output expected) turns ffmpeg's position into
    a percentage, mapped into ``progress_span`` so a step running several commands reports one rising
    figure. Raises ``FfmpegFailed`` on a non-zero exit, ``FfmpegTimeout`` after ``timeout`` seconds,
    ``PermanentError`` when the sandbox is required and unavailable (ffmpeg is then not started), and
    lets ``StepCancelled`` from the heartbeat through, in every case after ffmpeg has been stopped.
    """
    return _run_confined(
        build_command(args),
        ctx,
        work_dir=work_dir,
        cwd=cwd,
        duration=duration,
        label=label,
        timeout=timeout,
        progress_span=progress_span,
        failure=FfmpegFailed,
    )


def run_packager(
    args: Sequence[str],
    ctx: StepContext | None = None,
    *,
    label: str = "packaging",
    timeout: float | None = None,
    progress_span: tuple[float, float] = (0.0, 100.0),
    cwd: Path | None = None,
    work_dir: Path | None = None,
) -> FfmpegRun:
    """Run Shaka Packager with ``args`` (stream descriptors and flags), confined like ffmpeg.

    Packager reports no position, so the step's progress moves to the top of ``progress_span`` when it
    is done; the heartbeat beats meanwhile. Raises ``PackagerFailed`` on a non-zero exit.
    """
    return _run_confined(
        [toolchain.packager_exe(), *args],
        ctx,
        work_dir=work_dir,
        cwd=cwd,
        duration=None,
        label=label,
        timeout=timeout,
        progress_span=progress_span,
        failure=PackagerFailed,
        stdout_progress=False,
    )


def _run_confined(
    command: list[str],
    ctx: StepContext | None,
    *,
    work_dir: Path | None,
    cwd: Path | None,
    duration: float | None,
    label: str,
    timeout: float | None,
    progress_span: tuple[float, float],
    failure: type[PermanentError],
    stdout_progress: bool = True,
) -> FfmpegRun:
    root = confinement_root(ctx, work_dir)
    run_in = inside(cwd, root) if cwd is not None else root
    argv, env = sandbox.child_command(command, root)
    low, high = progress_span
    progress = _Progress()
    started = time.monotonic()
    # stderr goes to a file, not a pipe: a chatty tool must never block on a pipe nobody reads.
    with tempfile.TemporaryFile() as stderr_file:
        process = subprocess.Popen(  # noqa: S603  (argument list, no shell; the binary is located above)
            argv,
            stdout=subprocess.PIPE if stdout_progress else subprocess.DEVNULL,
            stderr=stderr_file,
            stdin=subprocess.DEVNULL,
            cwd=run_in,
            env=env,
        )
        reader = None
        if stdout_progress:
            reader = threading.Thread(target=_read_progress, args=(process.stdout, progress), daemon=True)
            reader.start()
        try:
            _watch(process, progress, ctx, duration, label, timeout, started, low, high)
        except BaseException:
            terminate(process)
            raise
        finally:
            if reader is not None:
                reader.join(timeout=5)
            if process.stdout is not None:
                process.stdout.close()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", errors="replace")
    seconds = time.monotonic() - started
    if process.returncode != 0 and shutdown.requested():
        raise StepInterrupted(f"{label} stopped with the worker (exit status {process.returncode})")
    if process.returncode != 0:
        tail = _error_lines(stderr).strip()[-STDERR_TAIL_CHARS:] or f"exit status {process.returncode}"
        raise failure(f"{label} failed: {tail}")
    if ctx is not None:
        ctx.heartbeat(progress=high)
    return FfmpegRun(command=command, seconds=seconds, stderr=stderr)


def _error_lines(stderr: str) -> str:
    """What a failed run said that matters: Shaka Packager logs an info line per file it writes, which
    would push its one error line out of the tail kept in the job's log."""
    lines = stderr.splitlines()
    kept = (
        [line for line in lines if not line.startswith("I")]
        if any(line.startswith("E") for line in lines)
        else lines
    )
    return "\n".join(kept)


def _watch(
    process: subprocess.Popen[bytes],
    progress: _Progress,
    ctx: StepContext | None,
    duration: float | None,
    label: str,
    timeout: float | None,
    started: float,
    low: float,
    high: float,
) -> None:
    last_reported = -1.0
    last_report_at = 0.0
    milestones = list(LOG_MILESTONES)
    while True:
        try:
            process.wait(timeout=POLL_SECONDS)
            return
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if timeout is not None and now - started > timeout:
            raise FfmpegTimeout(f"{label} ran longer than {timeout:.0f} seconds and was stopped")
        if ctx is None:
            continue
        percent = None
        if duration and duration > 0:
            with progress.lock:
                position = progress.out_time_us / 1_000_000
            percent = max(0.0, min(100.0, 100.0 * position / duration))
        if percent is None:
            ctx.heartbeat()
            continue
        overall = low + (high - low) * percent / 100.0
        if overall - last_reported >= PROGRESS_STEP or now - last_report_at >= PROGRESS_INTERVAL_SECONDS:
            ctx.heartbeat(progress=round(overall, 1))
            last_reported, last_report_at = overall, now
        else:
            ctx.heartbeat()
        while milestones and percent >= milestones[0]:
            ctx.log(f"{label}: {milestones.pop(0)}% done")
