"""Publishing a Celery task message with one Redis command instead of Celery's ``send_task``.

``app.send_task`` costs about 0.77 ms of CPU per message on this project's machine (bench/README.md,
issue 16): it resolves routes, builds a signature's options, checks the producer's connection, declares
the queue, serializes through kombu, and runs the publish through kombu's retry wrapper. The engine
publishes a message per job start and per dispatch request, always the same shape (a registered task
name, a list of primary keys, a named queue, no countdown), and the Redis transport turns each into one
``LPUSH`` of a JSON document onto the queue's list. :func:`send` builds that document (Celery's task
message protocol 2, as ``celery.app.amqp.AMQP.as_task_v2`` and kombu's Redis channel build it: the same
headers, properties and body, a fresh task id and delivery tag) and pushes it to the list kombu would
choose (``<global_keyprefix><queue>``: the default exchange routes by queue name, and priority 0 lives in
the list without a suffix). tests/engine/test_publish.py compares it with ``send_task``'s message field
by field, and a real worker runs what it publishes in the e2e tests.

Anything else (a countdown, a failure of the push) goes through ``send_task`` as before, with its retry
policy: a push whose answer was lost may then leave the message twice, which every consumer of the
engine's messages already tolerates (each one re-reads Postgres and claims).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import uuid
from typing import Any

import redis
from celery.utils.nodenames import anon_nodename
from django.conf import settings

from taskengine_site.celery import app

# The body's third part: no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

_origin: tuple[int, str] | None = None


@functools.cache
def _redis() -> redis.Redis:
    """The process's client of the broker's Redis (its connection pool renews itself after a fork)."""
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=options.get("socket_connect_timeout"),
        socket_timeout=options.get("socket_timeout"),
    )


def _origin_name() -> str:
    global _origin
    pid = os.getpid()
    if _origin is None or _origin[0] != pid:
        _origin = (pid, anon_nodename())
    return _origin[1]


# Execution options a task may declare that this module does not write into a message: a task declaring
# any of them is published by send_task.
_UNHANDLED_OPTIONS = (
    "queue",
    "routing_key",
    "exchange",
    "priority",
    "expires",
    "delivery_mode",
    "compression",
)


def _time_limits(name: str) -> list[int | None] | None:
    """The header's ``timelimit`` send_task writes for task ``name``: its own limits when this process
    has it registered (a worker), none otherwise (the web process); None when the task declares options
    only send_task writes."""
    registry: Any = app._tasks  # type: ignore[attr-defined]  # as it is: looking must not finalize the app
    task = registry.get(name)
    if task is None:
        return [None, None]
    options = task._get_exec_options()
    if any(options.get(option) is not None for option in _UNHANDLED_OPTIONS):
        return None
    if options.get("serializer") not in (None, "json"):
        return None
    return [options.get("time_limit"), options.get("soft_time_limit")]


def message(name: str, args: list[Any], queue: str) -> dict[str, Any] | None:
    """The message ``app.send_task(name, args=args, queue=queue)`` would push onto the queue's list,
    or None when only send_task can write it (``_time_limits``)."""
    limits = _time_limits(name)
    if limits is None:
        return None
    task_id = str(uuid.uuid4())
    parent = app.current_worker_task  # what send_task names as parent: the task a worker runs now
    root_id = (parent.request.root_id or parent.request.id) if parent else task_id
    body = json.dumps([args, {}, _EMBED]).encode()
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": name,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": limits,
            "root_id": root_id,
            "parent_id": parent.request.id if parent else None,
            "argsrepr": repr(args),
            "kwargsrepr": "{}",
            "origin": _origin_name(),
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": app.thread_oid,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def queue_key(queue: str) -> str:
    """The Redis list kombu pushes a priority-0 message for ``queue`` onto."""
    return str(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")) + queue


def _keys(args: list[Any]) -> bool:
    """True for arguments this module writes: primary keys, or lists of them."""
    return all(
        type(arg) is int or (type(arg) is list and all(type(item) is int for item in arg)) for arg in args
    )


def send(name: str, args: list[Any], queue: str, countdown: float | None = None) -> None:
    """Publish task ``name`` with ``args`` on ``queue``, as ``app.send_task`` would (module docstring)."""
    if countdown is None:
        send_each(name, [args], queue)
    else:
        app.send_task(name, args=args, queue=queue, countdown=countdown)


def send_each(name: str, each: list[list[Any]], queue: str) -> None:
    """Publish task ``name`` once for each argument list of ``each`` on ``queue``, in order: one
    ``LPUSH`` of them all (a worker takes them oldest first, as if sent one by one)."""
    built = [message(name, args, queue) if _keys(args) else None for args in each]
    if built and all(item is not None for item in built):
        try:
            _redis().lpush(queue_key(queue), *(json.dumps(item) for item in built))
            return
        except redis.RedisError:
            pass  # Celery's publish, with its retries, decides
    for args in each:
        app.send_task(name, args=args, queue=queue)
