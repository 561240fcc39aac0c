"""Entry points of the engine's processes for the benchmarks that count Postgres queries.

``celery -A bench.counting worker`` and ``gunicorn bench.counting:application`` run the engine
unchanged, with a Django ``execute_wrapper`` on every connection counting the statements the process
sends. Each process adds its count to the Redis key ``<prefix>bench:queries`` from a thread of its own,
every ``FLUSH_SECONDS`` while it has counted something (one INCRBY, ~0.1 ms of CPU: once per task or
request, it was a cost the raw Celery side of ``bench.e2e`` does not pay), so the total over all
processes is exact ``FLUSH_SECONDS`` after the last statement.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from django.db.backends.signals import connection_created

from taskengine_site.celery import app

__all__ = ["FLUSH_SECONDS", "app", "application", "flush"]

FLUSH_SECONDS = 0.2
_count = [0]
_redis: list[Any] = []
_flusher = [0]  # the pid whose flushing thread runs (a forked pool process starts its own)
_lock = threading.Lock()  # the count is read and reset by the flushing thread


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # never one a thread of the parent held at the fork
    _count[0] = 0  # the parent flushes its own


os.register_at_fork(after_in_child=_after_fork)


_LOG = os.environ.get("BENCH_LOG_SQL")  # a file: every statement, for finding what to remove


def _wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    with _lock:
        _count[0] += 1
    if _flusher[0] != os.getpid():
        _flusher[0] = os.getpid()
        threading.Thread(target=_flush_forever, name="bench-counting", daemon=True).start()
    if _LOG:
        with open(_LOG, "a") as out:
            out.write(f"{os.getpid()} {sql[:300]}\n")
    return execute(sql, params, many, context)


def _on_connection(sender: Any, connection: Any, **_: Any) -> None:
    if _wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_wrapper)


def flush(**_: Any) -> None:
    if not _count[0]:
        return
    import redis

    with _lock:
        n, _count[0] = _count[0], 0
    if not _redis:
        _redis.append(redis.Redis.from_url(os.environ["REDIS_URL"]))
    _redis[0].incrby(os.environ.get("TASKENGINE_BROKER_PREFIX", "") + "bench:queries", n)


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        try:
            flush()
        except Exception:  # a benchmark's Redis going away at its end
            return


connection_created.connect(_on_connection, weak=False)


def _wsgi() -> Any:
    import django

    django.setup(set_prefix=False)
    from taskengine_site.handler import Handler  # the web process's handler (taskengine_site/wsgi.py)

    return Handler()


application = _wsgi()
