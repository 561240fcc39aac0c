"""A request's or a task's first statement as the check of its kept database connection (in place of
``SELECT 1``).

With ``CONN_HEALTH_CHECKS`` Django runs ``SELECT 1`` on a kept connection before a request's first
statement, to find a connection the server closed meanwhile (a restart, a failover, an idle timeout);
a worker runs the same check before each task's (``taskengine_site.celery``): one more round trip, and
its CPU on both sides, for every authenticated request and every step (bench/README.md, issue 16). When
that first statement may run twice, running it checks the connection as well: if it fails and the
connection turns out unusable, the connection is closed and the statement runs once more on a new one,
which is what a failed health check leads to. A failure on a working connection is raised as it is,
and the health check keeps its place in every other case (a first statement that may not run twice, a
transaction already open).

A statement may run twice here when it only reads (the API key lookup), when running it again after
a lost connection can only find its work done (a claim: a compare-and-set on the task's state), or when
its second run first looks for what the first may have written (a job's insert: ``jobs.services``). The
second run may find the first one applied only when the connection died after the server executed it
and before its answer arrived; a claim then claims nothing, and the task is reclaimed once its
heartbeat goes stale, as after a worker killed mid-step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")


def first_statement(run: Callable[[], T]) -> T:
    """``run()``, a statement that may run twice (module docstring), with the connection's pending
    health check done by running it."""
    db: Any = connection  # the health check's attributes are Django's own, not in its type stubs
    if (
        db.connection is None  # a new connection is made for it: nothing to check
        or not db.health_check_enabled
        or db.health_check_done
        or db.in_atomic_block
    ):
        return run()
    db.health_check_done = True
    try:
        return run()
    except (OperationalError, InterfaceError):
        if db.is_usable():
            raise  # the statement failed, not the connection
        db.close()
    return run()
