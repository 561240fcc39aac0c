"""How the engine confines every media tool it runs (ffmpeg, ffprobe, Shaka Packager: "ffmpeg" below):
a second wall behind the parsing of untrusted media.

Whatever a hostile input makes ffmpeg read or write, ffmpeg

- gets a **scrubbed environment**: a fixed ``PATH``, the C locale and ``TMPDIR`` in the work dir, and
  ``LD_LIBRARY_PATH`` when the worker has one (a library path, not a secret). Nothing else of the
  worker's: no ``SECRET_KEY``, ``DATABASE_URL``, ``REDIS_URL``, ``TASKENGINE_*`` or ``AWS_*``;
- runs in the **job's work dir** (or a folder inside it) as its working directory;
- where the host enforces Landlock, runs in a **file-system sandbox** (``media/confine.py``) that lets
  it read and write the work dir, read and execute its own binary, its loader and library folders, read
  ``/dev/urandom`` (the packager's IVs), and nothing else: not ``/proc/self/environ``, not the storage
  root, not the project's files.

``TASKENGINE_FFMPEG_SANDBOX`` chooses: ``auto`` (the default) confines when this host enforces
Landlock and otherwise runs ffmpeg with the environment and working directory above only; ``off``
never confines; ``required`` refuses to run ffmpeg without the sandbox, failing the step.

Whether the host enforces Landlock is learnt once per process by running the wrapper's ``--check`` in
a child (the worker itself is never restricted), at worker start through the Celery signals connected
in ``media.apps``, which also log which confinement is in force.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from jobs.workflows.registry import PermanentError

logger = logging.getLogger(__name__)

WRAPPER = Path(__file__).resolve().with_name("confine.py")
CHECK_TIMEOUT_SECONDS = 30
# Folders a dynamically linked program's libraries come from when its loader cannot list them.
STANDARD_LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
LOADER_CACHE = "/etc/ld.so.cache"
# Files every tool may read: randomness, never a secret (the packager's IVs come from here).
READ_ONLY_FILES = ("/dev/urandom",)

_LIBRARY_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-fA-F]+\)")


@dataclass(frozen=True)
class Confinement:
    """The confinement ffmpeg runs under in this process: Landlock's ABI, or ``None`` and why not."""

    mode: str
    abi: int | None
    reason: str = ""

    @property
    def confined(self) -> bool:
        return self.abi is not None

    @property
    def refused(self) -> bool:
        """ffmpeg may not run at all: the sandbox is required and this host cannot give it."""
        return self.mode == "required" and self.abi is None

    def describe(self) -> str:
        if self.abi is not None:
            return f"ffmpeg confinement: landlock ABI {self.abi} (work dir only, scrubbed environment)"
        if self.refused:
            return (
                f"ffmpeg confinement: none ({self.reason}); TASKENGINE_FFMPEG_SANDBOX=required, so every "
                "media step that runs ffmpeg will fail"
            )
        return (
            f"ffmpeg confinement: none ({self.reason}); scrubbed environment and the work dir as working "
            "directory only"
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())


@functools.cache
def host_support() -> tuple[int | None, str]:
    """(Landlock ABI, "") when this host enforces Landlock on a child process, else (None, why not)."""
    if not sys.platform.startswith("linux"):
        return None, f"Landlock exists only on Linux, this is {sys.platform}"
    if not sys.executable:
        return None, "no Python interpreter path to start the sandbox wrapper with"
    try:
        completed = subprocess.run(  # noqa: S603  (this interpreter and the project's own script)
            [sys.executable, "-I", str(WRAPPER), "--check"],
            capture_output=True,
            timeout=CHECK_TIMEOUT_SECONDS,
            check=False,
            env=environment(None),
            cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"the Landlock check could not run: {_one_line(str(exc))}"
    answer = completed.stdout.decode("ascii", errors="replace").split()
    if (
        completed.returncode == 0
        and len(answer) == 3
        and answer[:2] == ["landlock", "ABI"]
        and answer[2].isdigit()
    ):
        return int(answer[2]), ""
    why = _one_line(completed.stderr.decode("utf-8", errors="replace")) or f"exit {completed.returncode}"
    return None, f"Landlock not available: {why}"


def current() -> Confinement:
    """The confinement the next ffmpeg gets, from ``TASKENGINE_FFMPEG_SANDBOX`` and the host."""
    mode = settings.TASKENGINE_FFMPEG_SANDBOX
    if mode == "off":
        return Confinement(mode, None, "TASKENGINE_FFMPEG_SANDBOX=off")
    abi, reason = host_support()
    return Confinement(mode, abi, reason)


def environment(work_dir: Path | None) -> dict[str, str]:
    """The whole environment a child gets: nothing of the worker's but a library search path."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"}
    if work_dir is not None:
        env["TMPDIR"] = str(work_dir)
    library_path = os.environ.get("LD_LIBRARY_PATH")
    if library_path:
        env["LD_LIBRARY_PATH"] = library_path
    return env


def elf_interpreter(path: str) -> str | None:
    """The loader a dynamically linked ELF program names (``PT_INTERP``); ``None`` for a static
    program or a file that is not ELF (a script)."""
    try:
        with open(path, "rb") as file:
            header = file.read(64)
            if len(header) < 52 or header[:4] != b"\x7fELF" or header[4] not in (1, 2):
                return None
            order = "<" if header[5] == 1 else ">"
            if header[4] == 2:  # 64-bit
                (phoff,) = struct.unpack_from(order + "Q", header, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
                offset_at, size_at, word = 8, 32, "Q"
            else:
                (phoff,) = struct.unpack_from(order + "I", header, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
                offset_at, size_at, word = 4, 16, "I"
            for index in range(phnum):
                file.seek(phoff + index * phentsize)
                entry = file.read(phentsize)
                if len(entry) < size_at + struct.calcsize(word):
                    return None
                if struct.unpack_from(order + "I", entry, 0)[0] == 3:  # PT_INTERP
                    (offset,) = struct.unpack_from(order + word, entry, offset_at)
                    (size,) = struct.unpack_from(order + word, entry, size_at)
                    file.seek(offset)
                    return file.read(min(size, 4096)).split(b"\0", 1)[0].decode("utf-8", errors="replace")
    except OSError:  # unreadable: not a program the sandbox can describe
        return None
    return None


def _listed_libraries(interpreter: str, program: str) -> list[str]:
    """The libraries ``program`` loads, as its own loader resolves them (``ld.so --list``, which loads
    but never runs the program); empty when the loader cannot say."""
    try:
        completed = subprocess.run(  # noqa: S603  (the program's own loader, an argument list)
            [interpreter, "--list", program],
            capture_output=True,
            timeout=CHECK_TIMEOUT_SECONDS,
            check=False,
            env=environment(None),
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if completed.returncode != 0:
        return []
    text = completed.stdout.decode("utf-8", errors="replace")
    return [match.group(1) for match in map(_LIBRARY_LINE.search, text.splitlines()) if match]


@functools.cache
def program_paths(program: str) -> tuple[str, ...]:
    """What the sandbox lets ``program`` read and execute: the program itself and, when it is
    dynamically linked, its loader, the folders its libraries are in and the loader's cache."""
    real = os.path.realpath(program)
    paths = [real]
    interpreter = elf_interpreter(real)
    if interpreter is None:
        return tuple(paths)
    paths.append(os.path.realpath(interpreter))
    libraries = _listed_libraries(interpreter, real)
    folders = {os.path.dirname(os.path.realpath(lib)) for lib in libraries}
    if not folders:
        folders = {os.path.realpath(folder) for folder in STANDARD_LIBRARY_DIRS}
    paths += sorted(folder for folder in folders if os.path.isdir(folder))
    if os.path.isfile(LOADER_CACHE):
        paths.append(LOADER_CACHE)
    return tuple(dict.fromkeys(paths))


def child_command(command: Sequence[str], work_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The argument list and environment that run ``command`` (a program and its arguments) confined
    to ``work_dir`` as far as this host and ``TASKENGINE_FFMPEG_SANDBOX`` allow.

    Raises ``PermanentError`` when the sandbox is required and unavailable: ffmpeg is not started.
    """
    confinement = current()
    if confinement.refused:
        raise PermanentError(
            f"ffmpeg was not run: TASKENGINE_FFMPEG_SANDBOX=required, but {confinement.reason}"
        )
    env = environment(work_dir)
    if not confinement.confined:
        return list(command), env
    wrapper = [sys.executable, "-I", str(WRAPPER), "--rw", str(work_dir)]
    for path in program_paths(command[0]):
        wrapper += ["--rx", path]
    for path in READ_ONLY_FILES:
        if os.path.exists(path):
            wrapper += ["--ro", path]
    return [*wrapper, "--", *command], env


def on_worker_init(**_: Any) -> None:
    """Learn the host's Landlock support before the pool forks, so its processes inherit the answer."""
    host_support()


def on_worker_ready(**_: Any) -> None:
    """The one line that says which confinement this worker's ffmpeg runs under, and why."""
    confinement = current()
    logger.log(logging.ERROR if confinement.refused else logging.INFO, confinement.describe())
