"""Numbers for /health: worker heartbeats, queue lengths in Redis, task counters."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobs.models import Job, Task
from jobs.states import TaskState
from monitoring import broker as redis_queues
from monitoring import selectors, workers
from tests.engine.conftest import Broker
from tests.waiting import wait_until


@pytest.fixture
def clean_monitor(broker: Broker) -> Iterator[None]:
    client = redis_queues.redis_client()
    keys = [workers._workers_key(), workers._stat_key("processed"), workers._stat_key("failed")]
    client.delete(*keys)
    yield
    for hostname in client.zrange(workers._workers_key(), 0, -1):
        workers.withdraw_worker(str(hostname))
    client.delete(*keys)


def test_queue_numbers_from_heartbeats_and_queue_lengths(
    clean_monitor: None, submit: Callable[..., Job], broker: Broker
) -> None:
    workers.publish_worker_heartbeat("w1@host", ["controller", "work"], {"work": 2})
    workers.publish_worker_heartbeat("w2@host", ["work", "callback", "scheduler"], {"callback": 1})
    submit("noop")
    submit("noop")  # one dispatch request waits on the controller queue for both (jobs.engine.bus)
    numbers = selectors.queue_numbers()
    assert numbers == {
        "controller": {"workers": 1, "working": 0, "pending": 1},
        "work": {"workers": 2, "working": 2, "pending": 0},
        "windows_capture": {"workers": 0, "working": 0, "pending": 0},
        "callback": {"workers": 1, "working": 1, "pending": 0},
        "scheduler": {"workers": 1, "working": 0, "pending": 0},
    }


def test_a_silent_worker_stops_counting(clean_monitor: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "WORKER_TTL_SECONDS", 1)
    workers.publish_worker_heartbeat("w1@host", ["work"], {})
    assert selectors.queue_numbers()["work"]["workers"] == 1
    # Silent for its TTL: it drops out of the count, with nothing but the clock moving.
    wait_until(lambda: selectors.queue_numbers()["work"]["workers"] == 0, timeout=10, what="the TTL to pass")
    assert workers.live_workers() == []


def test_withdrawn_worker_is_gone_at_once(clean_monitor: None) -> None:
    workers.publish_worker_heartbeat("w1@host", ["work"], {})
    workers.withdraw_worker("w1@host")
    assert selectors.queue_numbers()["work"]["workers"] == 0


def test_task_numbers(
    clean_monitor: None, submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(retry_limit=1, retry_delay=3600)
    submit("noop5")
    submit("fail")
    broker.drain()
    numbers = selectors.health_numbers()
    # noop5: 5 processed; fail: 1 processed and failed, now waiting to retry (pending).
    assert numbers["tasks"] == {"failed": 1, "pending": 1, "processed": 6}
    assert Task.objects.filter(state=TaskState.RETRYING).count() == 1
    assert set(numbers["queues"]) == set(redis_queues.QUEUES)


def test_priority_lists_are_counted(clean_monitor: None, broker: Broker) -> None:
    client = redis_queues.redis_client()
    client.lpush(redis_queues.queue_keys("work")[0], "a")
    client.lpush(redis_queues.queue_keys("work")[2], "b", "c")
    assert redis_queues.messages_waiting()["work"] == 3
    broker.clear()


def test_redis_down_raises_cleanly(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_queues, "_client", None)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    started = time.monotonic()
    with pytest.raises(redis_queues.MonitorUnavailable, match="redis"):
        selectors.queue_numbers()
    assert time.monotonic() - started < 5
    monkeypatch.setattr(redis_queues, "_client", None)
