"""Run one program inside a Landlock sandbox.

    python -I confine.py --rw DIR [--rx PATH]... [--ro FILE]... -- PROGRAM ARG...

The worker starts ffmpeg through this script instead of directly, so the restriction is applied in the
child and never in the worker itself (a ``preexec_fn`` would run Python between fork and exec in a
threaded process). The script restricts itself and then ``execv``\\ s the program, which inherits the
restriction, keeps the script's process id (so the worker's signals reach it) and its file descriptors
(ffmpeg's progress pipe and stderr file).

- ``--rw DIR``: read and write files and folders beneath DIR (the job's work dir). No execution, no
  symbolic links, devices, sockets or pipes made there.
- ``--rx PATH``: read and execute PATH, a file or every file beneath a folder (the program, and for a
  dynamically linked one its loader and library folders).
- ``--ro FILE``: read FILE and nothing else (``/dev/urandom``, which Shaka Packager reads for the
  random IVs it encrypts with).
- Everything else on the file system is refused: ``/proc/self/environ``, ``/etc/passwd``, the storage
  root, the project's own files.

It also sets ``PR_SET_NO_NEW_PRIVS`` (Landlock needs it; no set-uid program can gain rights) and a core
size limit of 0 (a crashing ffmpeg must not drop a memory image into a folder that gets published), and
restores the default actions for SIGPIPE and SIGXFSZ, which Python ignores and exec would pass on.

``--check`` restricts the script itself to nothing, confirms a read is refused, prints
``landlock ABI <n>`` and exits 0; otherwise it prints why not and exits 1. The worker runs it once to
learn whether this host enforces Landlock (a kernel may lack it, or a container forbid its calls).

This runs as a plain script with ``-I`` (isolated: no ``PYTHON*`` variables, no script folder on
``sys.path``), so it imports nothing from the project: only the standard library and ``landlock``.
A failure to confine exits 126 with a message on stderr; ffmpeg is then never started.
"""

from __future__ import annotations

import os
import resource
import signal
import sys

CANNOT_CONFINE = 126


def _fail(message: str) -> int:
    sys.stderr.write(f"confine: {message}\n")
    return CANNOT_CONFINE


def _rights(abi: int) -> tuple[int, int, int]:
    """(every right this ABI can restrict, the work dir's rights, the program's rights)."""
    from landlock import FSAccess

    handled = FSAccess.all()
    work = (
        FSAccess.READ_FILE
        | FSAccess.WRITE_FILE
        | FSAccess.READ_DIR
        | FSAccess.REMOVE_DIR
        | FSAccess.REMOVE_FILE
        | FSAccess.MAKE_DIR
        | FSAccess.MAKE_REG
    )
    if abi >= 2:
        work |= FSAccess.REFER  # a rename between two folders of the work dir (hls temp files)
    if abi >= 3:
        work |= FSAccess.TRUNCATE  # -y overwrites an output in place
    program = FSAccess.READ_FILE | FSAccess.EXECUTE
    return int(handled), int(work), int(program)


def _restrict(rw: list[str], rx: list[str], ro: list[str] | None = None) -> int:
    from landlock import FSAccess, Ruleset, landlock_abi_version

    abi = landlock_abi_version()
    handled, work, program = _rights(abi)
    ruleset = Ruleset(FSAccess(handled))
    for path in rw:
        ruleset.allow(path, rules=FSAccess(work))
    for path in rx:
        ruleset.allow(path, rules=FSAccess(program))
    for path in ro or []:
        ruleset.allow(path, rules=FSAccess(FSAccess.READ_FILE))
    ruleset.apply()
    return abi


def _check() -> int:
    try:
        abi = _restrict([], [])
    except Exception as exc:  # the package raises OSError subclasses and its own errors alike
        sys.stderr.write(f"{' '.join(str(exc).split())}\n")
        return 1
    try:
        with open(__file__, "rb"):
            pass
    except PermissionError:
        sys.stdout.write(f"landlock ABI {abi}\n")
        return 0
    sys.stderr.write(f"Landlock ABI {abi} was accepted but not enforced (a read was allowed)\n")
    return 1


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        return _check()
    rw: list[str] = []
    rx: list[str] = []
    ro: list[str] = []
    index = 0
    while index < len(argv) and argv[index] != "--":
        option = argv[index]
        if option not in ("--rw", "--rx", "--ro") or index + 1 >= len(argv):
            return _fail(
                f"usage: confine.py --rw DIR [--rx PATH]... [--ro FILE]... -- PROGRAM ARG... (got {option!r})"
            )
        {"--rw": rw, "--rx": rx, "--ro": ro}[option].append(argv[index + 1])
        index += 2
    command = argv[index + 1 :]
    if not rw or not command:
        return _fail("a work dir (--rw) and a program after -- are required")
    try:
        _restrict(rw, rx, ro)
    except Exception as exc:
        return _fail(f"cannot apply Landlock: {' '.join(str(exc).split())}")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execv(command[0], command)  # noqa: S606  (the worker's argument list, no shell)
    except OSError as exc:
        return _fail(
            f"cannot run {command[0]} inside the sandbox: {exc.strerror}. A program that needs files "
            "beyond itself, its loader and its libraries (a shell script, for one) cannot run confined"
        )
    return CANNOT_CONFINE  # not reached: execv replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
