"""Entry points of the engine's processes for the benchmarks that count Postgres queries.

``celery -A bench.counting worker`` and ``gunicorn bench.counting:application`` run the engine
unchanged, with a Django ``execute_wrapper`` on every connection counting the statements the process
sends. Each process adds its count to the Redis key ``<prefix>bench:queries`` after every Celery task
and every HTTP request (one INCRBY, ~0.1 ms), so the total over all processes is exact at the end.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.signals import request_finished
from django.db.backends.signals import connection_created

from taskengine_site.celery import app

__all__ = ["app", "application", "flush"]

_count = [0]
_redis: list[Any] = []


_LOG = os.environ.get("BENCH_LOG_SQL")  # a file: every statement, for finding what to remove


def _wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    _count[0] += 1
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

    n, _count[0] = _count[0], 0
    if not _redis:
        _redis.append(redis.Redis.from_url(os.environ["REDIS_URL"]))
    _redis[0].incrby(os.environ.get("TASKENGINE_BROKER_PREFIX", "") + "bench:queries", n)


connection_created.connect(_on_connection, weak=False)
request_finished.connect(flush, weak=False)

from celery.signals import task_postrun  # noqa: E402

task_postrun.connect(flush, weak=False)


def _wsgi() -> Any:
    import django

    django.setup(set_prefix=False)
    from taskengine_site.handler import Handler  # the web process's handler (taskengine_site/wsgi.py)

    return Handler()


application = _wsgi()
