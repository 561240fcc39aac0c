"""The first steps of the jobs one dispatch starts, several to a message (``TASKENGINE_STARTS_PER_MESSAGE``,
``bus.publish_starts``, ``runner.run_tasks``): fewer messages, the same steps run, and no task kept
waiting behind a long step of its message."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import pytest

from jobs.engine import bus, runner
from jobs.models import Job, Task, WorkflowDefinition
from jobs.states import JobState, TaskState
from jobs.workflows.registry import StepContext, step
from monitoring import broker as redis_queues
from monitoring import workers
from taskengine_site import publish, shutdown
from tests.engine.conftest import Broker, Message, json_log


@pytest.fixture(autouse=True)
def slots(db: None, setting: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    setting(max_jobs=10)
    # Every worker of every queue runs run_tasks (as their heartbeats would say; tested below with real
    # ones), and no earlier answer is remembered.
    monkeypatch.setattr(bus, "_group_gate", lambda queue: True)
    monkeypatch.setattr(bus, "_gate_answers", {})


def first_task(job: Job) -> int:
    return int(Task.objects.get(job=job, position=1).pk)


def one_each(jobs: list[Job]) -> list[tuple[str, list[int]]]:
    """(task, args) of a run_task message for each job's first task, in the jobs' order."""
    return [(bus.RUN_TASK, [first_task(job)]) for job in jobs]


def dispatched(broker: Broker) -> list[Message]:
    """Run the dispatch the submissions asked for; the messages it published."""
    [dispatch] = broker.pop_all()
    assert dispatch.task == bus.DISPATCH
    broker.run(dispatch)
    return broker.pop_all()


@pytest.mark.parametrize(
    ("count", "most", "groups"),
    [
        (7, 4, [[0, 2, 4, 6], [1, 3, 5]]),
        (5, 4, [[0, 2, 4], [1, 3]]),
        (4, 4, [[0, 1, 2, 3]]),
        (2, 4, [[0, 1]]),
        (1, 4, [[0]]),
        (3, 1, [[0], [1], [2]]),
        (9, 3, [[0, 3, 6], [1, 4, 7], [2, 5, 8]]),
        (0, 4, []),
    ],
)
def test_the_groups_are_the_fewest_messages_of_even_sizes_earliest_first(
    count: int, most: int, groups: list[list[int]]
) -> None:
    ids = [100 + n for n in range(count)]
    assert bus.start_groups(ids, most) == [[100 + n for n in group] for group in groups]


def test_one_task_a_message_when_the_setting_says_1(
    submit: Callable[..., Job], broker: Broker, settings: Any
) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 1
    jobs = [submit("noop") for _ in range(5)]
    messages = dispatched(broker)
    assert [(m.task, m.queue, m.args) for m in messages] == [
        (bus.RUN_TASK, "work", [first_task(job)]) for job in jobs
    ]


@pytest.fixture
def heartbeats() -> Iterator[Callable[..., None]]:
    """``beat(hostname, queues, runs_task_groups)``: a live worker's heartbeat in Redis, withdrawn after."""
    beaten: list[str] = []

    def beat(hostname: str, queues: list[str], runs_task_groups: bool) -> None:
        workers.publish_worker_heartbeat(hostname, queues, {}, runs_task_groups=runs_task_groups)
        beaten.append(hostname)

    yield beat
    for hostname in beaten:
        workers.withdraw_worker(hostname)


def test_while_a_worker_of_the_previous_release_consumes_the_queue_each_start_is_one_message(
    submit: Callable[..., Job],
    broker: Broker,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    heartbeats: Callable[..., None],
) -> None:
    # The gate the monitoring room registers, reading real heartbeats: a worker of the release before
    # (its heartbeat says nothing of run_tasks) still consumes "work" beside one of this release.
    monkeypatch.setattr(bus, "_group_gate", workers.every_worker_runs_task_groups)
    heartbeats("new@host", ["work", "controller"], True)
    heartbeats("old@host", ["work"], False)
    jobs = [submit("noop") for _ in range(3)]
    messages = dispatched(broker)
    assert [(m.task, m.args) for m in messages] == one_each(jobs)
    # Once it is gone (and the answer remembered for GROUP_GATE_SECONDS has expired), they are grouped.
    workers.withdraw_worker("old@host")
    bus._gate_answers.clear()
    more = [submit("noop") for _ in range(3)]
    messages = dispatched(broker)
    assert [(m.task, m.args) for m in messages] == [(bus.RUN_TASKS, [[first_task(job) for job in more]])]


def test_with_no_live_worker_on_the_queue_each_start_is_one_message(
    submit: Callable[..., Job],
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    heartbeats: Callable[..., None],
) -> None:
    monkeypatch.setattr(bus, "_group_gate", workers.every_worker_runs_task_groups)
    heartbeats("other@host", ["windows_capture"], True)  # this release, but not on "work"
    jobs = [submit("noop") for _ in range(2)]
    messages = dispatched(broker)
    assert [(m.task, m.args) for m in messages] == one_each(jobs)


def test_a_failing_gate_means_one_task_a_message(
    submit: Callable[..., Job], broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(queue: str) -> bool:
        raise ConnectionError("redis went away")

    monkeypatch.setattr(bus, "_group_gate", broken)
    jobs = [submit("noop") for _ in range(2)]
    messages = dispatched(broker)
    assert [(m.task, m.args) for m in messages] == one_each(jobs)


def test_the_gate_is_asked_once_in_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def gate(queue: str) -> bool:
        asked.append(queue)
        return True

    monkeypatch.setattr(bus, "_group_gate", gate)
    assert [bus.groups_allowed("work") for _ in range(3)] == [True] * 3
    assert bus.groups_allowed("windows_capture")
    assert asked == ["work", "windows_capture"]
    monkeypatch.setattr(bus, "GROUP_GATE_SECONDS", 0.0)
    assert bus.groups_allowed("work")
    assert asked == ["work", "windows_capture", "work"]


def test_starts_go_several_to_a_message_and_every_job_runs_once(
    submit: Callable[..., Job], broker: Broker, settings: Any
) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    jobs = [submit("noop") for _ in range(6)]
    messages = dispatched(broker)
    tasks = [first_task(job) for job in jobs]
    assert [(m.task, m.queue, m.args) for m in messages] == [
        (bus.RUN_TASKS, "work", [tasks[0::2]]),
        (bus.RUN_TASKS, "work", [tasks[1::2]]),
    ]
    for message in messages:
        broker.run(message)
    for job in jobs:
        job.refresh_from_db()
        assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
        task = Task.objects.get(job=job)
        assert (task.state, task.attempts) == (TaskState.COMPLETED, 1)
        # Each job's log is the one a message of its own writes.
        assert [m for _, _, m, _ in json_log(job.pk)][-2:] == [
            "'noop' completed successfully",
            "job has completed successfully",
        ]
    # A message delivered twice runs nothing twice.
    broker.run(messages[0])
    assert Task.objects.filter(pk__in=tasks, attempts=1).count() == 6


def test_a_second_queue_gets_messages_of_its_own(submit: Callable[..., Job], settings: Any) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    client = redis_queues.redis_client()
    for queue in ("work", "windows_capture"):
        client.delete(*redis_queues.queue_keys(queue))
    bus._send_starts([(1, "work"), (2, "windows_capture"), (3, "work"), (4, "windows_capture"), (5, "work")])
    found = {}
    for queue in ("work", "windows_capture"):
        raws = client.lrange(publish.queue_key(queue), 0, -1)
        messages = [json.loads(raw) for raw in reversed(raws)]
        found[queue] = [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]
        client.delete(*redis_queues.queue_keys(queue))
    assert found == {"work": [(bus.RUN_TASKS, [[1, 3, 5]])], "windows_capture": [(bus.RUN_TASKS, [[2, 4]])]}


def test_a_task_left_behind_a_long_step_is_published_alone_for_another_worker(
    submit: Callable[..., Job], broker: Broker, settings: Any
) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    slow = submit("sleep", parameters={"seconds": 0.4})
    quick = [submit("noop"), submit("noop")]
    messages = dispatched(broker)
    tasks = [first_task(slow), *(first_task(job) for job in quick)]
    assert [(m.task, m.args) for m in messages] == [(bus.RUN_TASKS, [tasks])]
    began = time.monotonic()
    broker.run(messages[0])
    assert time.monotonic() - began >= 0.4
    slow.refresh_from_db()
    assert slow.queue_state == JobState.COMPLETED
    # The two tasks behind the sleep were not started here: they waited only the hand-off's delay,
    # then went out one to a message, in order, for any worker.
    left = broker.pop_all()
    assert [(m.task, m.queue, m.args) for m in left] == [(bus.RUN_TASK, "work", [t]) for t in tasks[1:]]
    assert (
        list(Task.objects.filter(pk__in=tasks[1:]).values_list("state", "attempts"))
        == [(TaskState.QUEUED, 0)] * 2
    )
    for message in left:
        broker.run(message)
    for job in quick:
        job.refresh_from_db()
        assert job.queue_state == JobState.COMPLETED


@step("test_group_watch")
def _watch(ctx: StepContext) -> dict[str, int]:
    """Waits (up to 2 s) until the tasks behind it in its message are on the queue, while it runs."""
    client = redis_queues.redis_client()
    began = time.monotonic()
    while time.monotonic() - began < 2.0:
        waiting = client.llen(publish.queue_key("work"))
        if waiting >= 2:
            return {"seen": int(waiting), "after_ms": int(1000 * (time.monotonic() - began))}
        time.sleep(0.005)
    return {"seen": 0, "after_ms": 2000}


def test_the_hand_off_happens_while_the_long_step_still_runs(
    te_client: Any, submit: Callable[..., Job], broker: Broker, settings: Any
) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    WorkflowDefinition.objects.create(client=te_client, name="watch", steps=[{"step": "test_group_watch"}])
    watcher = submit("watch")
    quick = [submit("noop"), submit("noop")]
    [message] = dispatched(broker)
    broker.run(message)
    result = Task.objects.get(job=watcher).result
    assert isinstance(result, dict)
    assert result["seen"] == 2
    assert runner.GROUP_HANDOFF_SECONDS * 1000 - 20 <= result["after_ms"] < 1000
    assert [(m.task, m.args) for m in broker.pop_all()] == one_each(quick)


@pytest.mark.parametrize("delivered_on", ["work", None])
def test_a_stopping_worker_passes_every_task_of_the_message_on(
    submit: Callable[..., Job],
    broker: Broker,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    delivered_on: str | None,
) -> None:
    # delivered_on None: a message whose delivery names no queue; each task goes to its own.
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    jobs = [submit("noop") for _ in range(3)]
    [message] = dispatched(broker)
    monkeypatch.setattr(shutdown, "CONSUMER_LETS_GO_SECONDS", 0.0)
    shutdown.reset()
    shutdown.begin()
    try:
        runner.run_tasks(message.args[0], delivered_on)
    finally:
        shutdown.reset()
    tasks = [first_task(job) for job in jobs]
    assert [(m.task, m.queue, m.args) for m in broker.pop_all()] == [
        (bus.RUN_TASK, "work", [t]) for t in tasks
    ]
    assert not Task.objects.filter(pk__in=tasks).exclude(state=TaskState.QUEUED).exists()


def test_an_error_between_tasks_leaves_none_behind(
    submit: Callable[..., Job], broker: Broker, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    jobs = [submit("noop") for _ in range(3)]
    [message] = dispatched(broker)
    tasks = [first_task(job) for job in jobs]
    real = runner._run_chain

    def second_fails(task_id: int, deadline: float) -> None:
        if task_id == tasks[1]:
            raise ConnectionError("the database went away")
        real(task_id, deadline)

    monkeypatch.setattr(runner, "_run_chain", second_fails)
    with pytest.raises(ConnectionError):
        runner.run_tasks(message.args[0], message.queue)
    # The first ran; the third, not started, went out alone (the second's message is Celery's to redeliver).
    assert Task.objects.get(pk=tasks[0]).state == TaskState.COMPLETED
    assert [(m.task, m.args) for m in broker.pop_all()] == [(bus.RUN_TASK, [tasks[2]])]


def test_publish_send_each_is_one_push_of_messages_send_would_write(monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis_queues.redis_client()
    client.delete(*redis_queues.queue_keys("work"))
    pushes: list[int] = []
    real = publish._redis()

    class Counting:
        def lpush(self, key: str, *values: str) -> Any:
            pushes.append(len(values))
            return real.lpush(key, *values)

    monkeypatch.setattr(publish, "_redis", lambda: Counting())
    publish.send_each(bus.RUN_TASK, [[1], [2], [3]], "work")
    publish.send(bus.RUN_TASK, [4], "work")
    raws = [json.loads(raw) for raw in reversed(client.lrange(publish.queue_key("work"), 0, -1))]
    client.delete(*redis_queues.queue_keys("work"))
    assert pushes == [3, 1]
    bodies = [json.loads(base64.b64decode(m["body"]))[0] for m in raws]
    assert bodies == [[1], [2], [3], [4]]

    def comparable(message: dict[str, Any]) -> dict[str, Any]:
        headers = {k: v for k, v in message["headers"].items() if k not in ("id", "root_id", "argsrepr")}
        properties = {
            k: v for k, v in message["properties"].items() if k not in ("correlation_id", "delivery_tag")
        }
        return {**message, "body": None, "headers": headers, "properties": properties}

    # Each message is the one send writes, but for its own ids and arguments.
    assert all(comparable(m) == comparable(raws[-1]) for m in raws)
    assert len({m["headers"]["id"] for m in raws}) == 4


@pytest.fixture
def live(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """The broker's queues with every commit real, as in a worker: a job end's hooks run when its
    statement commits, inside the message (the ``broker`` fixture runs them when the message is done)."""
    monkeypatch.setattr(runner, "heartbeat_seconds", lambda: 3600.0)
    b = Broker(lambda **_: nullcontext())
    b.clear()
    yield b
    b.clear()


def test_the_job_ends_of_a_message_ask_once_whether_a_job_waits(
    submit: Callable[..., Job],
    live: Broker,
    settings: Any,
    setting: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    setting(max_jobs=3)
    jobs = [submit("noop") for _ in range(3)]
    waiting = submit("noop")
    [message] = dispatched(live)
    assert message.task == bus.RUN_TASKS and len(message.args[0]) == 3
    checks: list[int] = []
    real = bus.dispatch_after_job_end

    def counted() -> None:
        checks.append(1)
        real()

    monkeypatch.setattr(bus, "dispatch_after_job_end", counted)
    live.run(message)
    assert checks == [1]  # one read for the three job ends, not one each
    for job in jobs:
        job.refresh_from_db()
        assert job.queue_state == JobState.COMPLETED
    # It saw the waiting job: one dispatch, due a moment later, which starts it.
    [dispatch] = live.pop_all()
    assert (dispatch.task, dispatch.eta is not None) == (bus.DISPATCH, True)
    live.run(dispatch)
    live.drain()
    waiting.refresh_from_db()
    assert waiting.queue_state == JobState.COMPLETED


def test_a_job_end_hook_run_after_its_message_checks_by_itself(
    submit: Callable[..., Job], broker: Broker, settings: Any, setting: Callable[..., None]
) -> None:
    # Under the ``broker`` fixture the hooks run after the message (a caller's transaction): each end
    # then checks on its own, and the waiting job is still started.
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    setting(max_jobs=2)
    [submit("noop") for _ in range(2)]
    waiting = submit("noop")
    [message] = dispatched(broker)
    broker.run(message)
    broker.drain()
    waiting.refresh_from_db()
    assert waiting.queue_state == JobState.COMPLETED


def test_without_a_waiting_job_the_message_asks_for_no_dispatch(
    submit: Callable[..., Job], live: Broker, settings: Any
) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    [submit("noop") for _ in range(3)]
    [message] = dispatched(live)
    live.run(message)
    assert live.pop_all() == []


@step("test_group_wait_dispatch")
def _wait_dispatch(ctx: StepContext) -> dict[str, int]:
    """Waits (up to 2 s) until a dispatch message is on the controller queue, while it runs."""
    client = redis_queues.redis_client()
    began = time.monotonic()
    while time.monotonic() - began < 2.0:
        if client.llen(publish.queue_key(bus.CONTROLLER_QUEUE)):
            return {"after_ms": int(1000 * (time.monotonic() - began))}
        time.sleep(0.005)
    return {"after_ms": 2000}


def test_slots_freed_before_a_long_step_are_offered_when_the_hand_off_is_due(
    te_client: Any, submit: Callable[..., Job], live: Broker, settings: Any, setting: Callable[..., None]
) -> None:
    settings.TASKENGINE_STARTS_PER_MESSAGE = 4
    setting(max_jobs=3)
    WorkflowDefinition.objects.create(
        client=te_client, name="waits", steps=[{"step": "test_group_wait_dispatch"}]
    )
    quick = [submit("noop"), submit("noop")]
    slow = submit("waits")
    waiting = submit("noop")
    [message] = dispatched(live)
    assert message.args == [[first_task(job) for job in (*quick, slow)]]
    live.run(message)
    # The two quick jobs ended before the long step began; their slots were offered by the hand-off
    # timer while it ran, not after it.
    result = Task.objects.get(job=slow).result
    assert isinstance(result, dict)
    assert result["after_ms"] < 1000
    [dispatch] = live.pop_all()  # one, though the long step's job ended since: the flag held it
    assert dispatch.task == bus.DISPATCH
    live.run(dispatch)
    live.drain()
    waiting.refresh_from_db()
    assert waiting.queue_state == JobState.COMPLETED
