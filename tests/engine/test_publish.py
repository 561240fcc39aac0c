"""taskengine_site.publish: the engine's one-LPUSH publish leaves on the queue the message Celery's
``send_task`` leaves there, and falls back to ``send_task`` for what it does not build."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from celery import _state
from celery.app.registry import TaskRegistry

from jobs.engine import bus
from monitoring import broker as redis_queues
from taskengine_site import publish
from taskengine_site.celery import app

# Made fresh for each message: compared by shape, not value.
FRESH_HEADERS = ("id", "root_id")
FRESH_PROPERTIES = ("correlation_id", "delivery_tag")


@pytest.fixture
def queue() -> Any:
    client = redis_queues.redis_client()
    keys = redis_queues.queue_keys("work")
    client.delete(*keys)
    yield client, keys
    client.delete(*keys)


def _pop_one(client: Any, keys: list[str]) -> dict[str, Any]:
    """The only message waiting on the queue's lists, and the list it was on."""
    found = [(key, raw) for key in keys for raw in client.lrange(key, 0, -1)]
    assert len(found) == 1, found
    client.delete(*keys)
    key, raw = found[0]
    message = json.loads(raw)
    message["list"] = key
    return message


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(message))
    for name in FRESH_HEADERS:
        assert isinstance(copy["headers"].pop(name), str)
    for name in FRESH_PROPERTIES:
        assert isinstance(copy["properties"].pop(name), str)
    return copy


def _both(queue: Any, name: str, args: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    client, keys = queue
    app.send_task(name, args=args, queue="work")
    celery_message = _pop_one(client, keys)
    publish.send(name, args, "work")
    own = _pop_one(client, keys)
    return celery_message, own


@pytest.fixture(params=["web process", "worker"])
def registry(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the message is published from: a process that has not registered the engine's tasks (the
    web process: send_task writes no time limits) or one that has (a worker: it writes the task's)."""
    if request.param == "worker":
        assert app.tasks[bus.RUN_TASK].time_limit == app.conf.task_time_limit  # registers them
    else:
        monkeypatch.setattr(app, "_tasks", TaskRegistry())
    return str(request.param)


def test_the_message_is_celerys_but_for_its_fresh_ids(queue: Any, registry: str) -> None:
    celery_message, own = _both(queue, bus.RUN_TASK, [12345])
    limits = (
        [None, None]
        if registry == "web process"
        else [app.conf.task_time_limit, app.conf.task_soft_time_limit]
    )
    assert celery_message["headers"]["timelimit"] == limits
    assert _comparable(own) == _comparable(celery_message)
    assert own["list"] == publish.queue_key("work")
    headers, properties = own["headers"], own["properties"]
    assert headers["root_id"] == headers["id"] == properties["correlation_id"]
    assert headers["parent_id"] is None
    assert headers["id"] != celery_message["headers"]["id"]
    assert properties["delivery_tag"] != celery_message["properties"]["delivery_tag"]


def test_a_message_published_inside_a_task_names_it_as_parent_and_root(queue: Any, registry: str) -> None:
    task = app.tasks[bus.DISPATCH]
    task.push_request(id="the-running-task", root_id="the-root", called_directly=False)
    stack: Any = _state._task_stack  # type: ignore[attr-defined]  # what current_worker_task reads
    stack.push(task)
    try:
        celery_message, own = _both(queue, bus.RUN_TASK, [7])
    finally:
        stack.pop()
        task.pop_request()
    assert celery_message["headers"]["parent_id"] == "the-running-task"
    assert _comparable(own) == _comparable(celery_message)
    assert own["headers"]["parent_id"] == "the-running-task"
    assert own["headers"]["root_id"] == "the-root"


def test_each_message_gets_its_own_task_id_and_delivery_tag(queue: Any) -> None:
    client, _ = queue
    for _ in range(3):
        publish.send(bus.RUN_TASK, [1], "work")
    raws = [json.loads(raw) for raw in client.lrange(publish.queue_key("work"), 0, -1)]
    assert len({m["headers"]["id"] for m in raws}) == 3
    assert len({m["properties"]["delivery_tag"] for m in raws}) == 3


def test_a_countdown_goes_through_celery(queue: Any) -> None:
    client, keys = queue
    publish.send(bus.RUN_TASK, [9], "work", countdown=30)
    message = _pop_one(client, keys)
    assert message["headers"]["eta"] is not None  # send_task wrote it; the direct path never does


def test_a_failed_push_falls_back_to_celerys_publish(queue: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, keys = queue

    class Down:
        def lpush(self, *args: Any) -> None:
            raise redis.ConnectionError("refused")

    monkeypatch.setattr(publish, "_redis", lambda: Down())
    publish.send(bus.RUN_TASK, [4], "work")
    message = _pop_one(client, keys)
    assert json.loads(base64.b64decode(message["body"]))[0] == [4]
