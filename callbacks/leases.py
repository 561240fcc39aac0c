"""The deliveries a process is sending now: their leases, renewed while they are in flight, and how
many requests it has outstanding per receiver host.

A claimed delivery carries a short lease (``lease_until``). While its request is in flight a keeper
thread of the sending process renews the leases of all its deliveries in one statement every
``LEASE_BEAT`` seconds, so the lease runs out only when the process is gone (killed, or frozen): the
recovery sweep then sends the delivery again at once instead of waiting for an attempt's longest
possible duration. The keeper runs only while something is in flight, and closes its database
connection when it stops.

The same registry answers ``slow_host_wait``: a host with a request outstanding for longer than
``slow_after`` seconds is slow for everyone; while it is, it gets at most ``limit`` requests at once,
and its next deliveries wait instead of taking the threads that other clients' callbacks need.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from callbacks.models import CallbackDelivery

logger = logging.getLogger(__name__)

LEASE_BEAT = 2.0
# A host seen slow stays slow this long after the last evidence (a request outstanding or finished past
# the slow threshold), unless a request to it is answered fast: otherwise, when its hanging requests
# timed out together, the next burst would again take as many threads as arrive before one of them is
# old enough to count.
SLOW_MEMORY = 30.0
# A deferred delivery waits at least this long, and at most MAX_WAIT, for its slow host.
MIN_WAIT = 0.5
MAX_WAIT = 15.0
JITTER = 1.5


@dataclass(frozen=True)
class InFlight:
    host: str
    started: float  # time.monotonic()
    claimed_at: datetime


_lock = threading.Lock()
_in_flight: dict[int, InFlight] = {}
_lease = timedelta(seconds=8)
_keeper: threading.Thread | None = None
_slow_until: dict[str, float] = {}  # host -> time.monotonic() until which it counts as slow


def hold(delivery_id: int, host: str, *, claimed_at: datetime, lease: timedelta) -> None:
    """Note that this process sends ``delivery_id`` to ``host`` now; its lease is renewed until
    ``release``."""
    global _keeper, _lease
    with _lock:
        _lease = lease
        _in_flight[delivery_id] = InFlight(host, time.monotonic(), claimed_at)
        if _keeper is None or not _keeper.is_alive():
            _keeper = threading.Thread(target=_keep, name="taskengine-callback-leases", daemon=True)
            _keeper.start()


def release(delivery_id: int, slow_after: float | None = None) -> None:
    """The attempt at ``delivery_id`` is over (recorded, or given back). With ``slow_after``: an attempt
    that took longer marks its host slow for ``SLOW_MEMORY`` seconds; a quicker one clears the mark."""
    with _lock:
        item = _in_flight.pop(delivery_id, None)
        if item is None or slow_after is None:
            return
        if time.monotonic() - item.started > slow_after:
            _slow_until[item.host] = time.monotonic() + SLOW_MEMORY
        else:
            _slow_until.pop(item.host, None)


def in_flight() -> dict[int, InFlight]:
    """A copy of what this process is sending now."""
    with _lock:
        return dict(_in_flight)


def slow_host_wait(host: str, limit: int, slow_after: float, deadline: float) -> float | None:
    """None when a request to ``host`` may start now; else how long the next delivery to it waits.

    A host with a request outstanding for over ``slow_after`` seconds is slow (and stays so for
    ``SLOW_MEMORY`` seconds, see ``release``): it gets at most ``limit``
    requests at once (counting the fresh ones too, or every deferred delivery coming due together
    would take a thread each). The wait lasts until the oldest slow request reaches its ``deadline``,
    within [MIN_WAIT, MAX_WAIT], stretched by a random factor up to ``JITTER`` so the deferred
    deliveries do not all come back together (0.5 s of jitter at most let them come back in bursts that
    raised the other clients' p99 by up to 0.75 s in bench.callbacks; with the factor, 0.17 s at most in
    two runs).
    """
    if limit <= 0:
        return None
    now = time.monotonic()
    with _lock:
        ages = [now - item.started for item in _in_flight.values() if item.host == host]
        oldest = max(ages, default=0.0)
        if oldest > slow_after:
            _slow_until[host] = now + SLOW_MEMORY
        slow = _slow_until.get(host, 0.0) > now
        if not slow:
            _slow_until.pop(host, None)
    if not slow or len(ages) < limit:
        return None
    soonest = max(0.0, deadline - oldest)
    wait = min(MAX_WAIT, max(MIN_WAIT, soonest))
    return wait * random.uniform(1.0, JITTER)  # noqa: S311 (jitter, not a secret)


def renew(now: datetime | None = None) -> int:
    """Extend the lease of every delivery this process sends now (one statement); return how many."""
    items = in_flight()
    if not items:
        return 0
    now = now or timezone.now()
    # Fenced by the claim: a delivery the sweep has taken from this process (its lease had run out
    # while the process was frozen) keeps its new owner's lease.
    mine = Q()
    for pk, item in items.items():
        mine |= Q(pk=pk, claimed_at=item.claimed_at)
    return CallbackDelivery.objects.filter(mine, state=CallbackDelivery.State.PENDING).update(
        lease_until=now + _lease
    )


def _keep() -> None:
    global _keeper
    try:
        while True:
            time.sleep(LEASE_BEAT)
            with _lock:
                if not _in_flight:
                    _keeper = None
                    return
            try:
                close_old_connections()
                renew()
            except Exception:
                # Postgres away: the leases run out and the sweep sends those deliveries again, which
                # is what a lost process costs anyway.
                logger.warning("callback leases not renewed", exc_info=True)
    finally:
        connection.close()
