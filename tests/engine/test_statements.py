"""The engine's named statements (jobs/engine/sql/*.sql): how they are read, and each branch of the
statements that move jobs on, run directly rather than only through ``run_task``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from jobs.engine import runner, transitions
from jobs.engine.sql import STATEMENTS, load, parse, sql
from jobs.models import Job, Task
from jobs.states import JobState, TaskState
from logs.models import LogEntry
from taskengine_site import prepared
from tests.engine.conftest import Broker, json_log

APPS = ("jobs", "callbacks", "media", "logs", "monitoring", "scheduling", "settings_app", "clients")
ROOT = Path(__file__).resolve().parents[2]


def test_every_statement_says_what_it_does_and_holds_no_placeholder():
    assert set(STATEMENTS) >= {
        "claim_task",
        "start_task",
        "step_end",
        "job_move",
        "insert_jobs",
        "insert_tasks",
    }
    for statement in STATEMENTS.values():
        assert statement.description and not statement.description.startswith("--"), statement.name
        # Ids and included statements are resolved once, when the files are read.
        assert not re.search(r"<(JobState|TaskState|Severity)\.|<<", statement.text), statement.name
    assert f"state = {int(TaskState.RUNNING)}," in sql("claim_task")
    assert sql("claim_task") in sql("start_task")


def test_the_files_are_parsed_into_named_blocks(tmp_path):
    (tmp_path / "a.sql").write_text(
        "-- header of the file --\n\n-- one --\n-- First.\nSELECT <JobState.QUEUED>\n\n"
        "-- two --\n-- Second, reusing the first.\nSELECT * FROM (<<one>>) AS o\n"
    )
    statements = load(tmp_path)
    assert [(s.name, s.description) for s in statements.values()] == [
        ("one", "First."),
        ("two", "Second, reusing the first."),
    ]
    assert statements["one"].text == f"SELECT {int(JobState.QUEUED)}"
    assert statements["two"].text == f"SELECT * FROM (SELECT {int(JobState.QUEUED)}) AS o"
    assert parse("-- x --\n-- X.\nSELECT 1", "f.sql")[0].text == "SELECT 1"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.sql": "-- one --\n-- A.\nSELECT 1\n", "b.sql": "-- one --\n-- B.\nSELECT 2\n"}, "named twice"),
        ({"a.sql": "-- one --\n-- A.\nSELECT * FROM (<<one>>) AS x\n"}, "includes itself"),
    ],
)
def test_a_name_given_twice_or_a_statement_including_itself_is_refused(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        load(tmp_path)


def _columns(statement: str, table: str) -> list[str]:
    match = re.search(rf"INSERT INTO {table} \(([^)]*)\)", statement)
    assert match, table
    return [column.strip() for column in match.group(1).split(",")]


def test_the_job_inserts_write_every_column_of_both_models():
    """A field added to Job or LogEntry must be added to the statement too, or this fails."""
    job_columns = [f.column for f in Job._meta.concrete_fields if not f.primary_key]
    entry_columns = [f.column for f in LogEntry._meta.concrete_fields if not f.primary_key]
    for name in ("insert_job", "insert_jobs"):
        assert sorted(_columns(sql(name), "jobs_job")) == sorted(job_columns), name
        assert sorted(_columns(sql(name), "logs_logentry")) == sorted(entry_columns), name


def _queue_state_writers(text: str) -> bool:
    return bool(
        re.search(r"UPDATE\s+jobs_job\b[^;]*?\bSET\b[^;]*?\bqueue_state\s*=", text, re.S | re.I)
    ) or bool(re.search(r"\.update\([^)]*\bqueue_state\s*=", text))


def test_only_the_transitions_module_changes_queue_state():
    writers = set()
    for app in APPS:
        for path in (ROOT / app).rglob("*"):
            if "migrations" in path.parts or path.suffix not in (".py", ".sql"):
                continue
            if _queue_state_writers(path.read_text(encoding="utf-8")):
                writers.add(path.relative_to(ROOT).as_posix())
    assert writers == {"jobs/engine/sql/transitions.sql"}
    # And only transitions.py runs those statements.
    runners = set()
    names = [s.name for s in STATEMENTS.values() if s.file == "transitions.sql"]
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if any(f'sql("{name}")' in text for name in names):
                runners.add(path.relative_to(ROOT).as_posix())
    assert runners == {"jobs/engine/transitions.py"}


# --- step_end, branch by branch --------------------------------------------------------------------


@pytest.fixture
def started(submit: Callable[..., Job], broker: Broker) -> Callable[..., tuple[Job, list[Task]]]:
    """``started(workflow)``: a started job whose first task this test's worker has claimed."""

    def make(workflow: str = "noop5") -> tuple[Job, list[Task]]:
        job = submit(workflow)
        broker.drain(skip=lambda message: message.task == "jobs.tasks.run_task")
        claimed = runner._claim(job.tasks.order_by("position")[0].pk, log_start=True)
        assert claimed is not None and claimed.attempt == 1
        job.refresh_from_db()
        assert job.queue_state == JobState.STARTED
        return job, list(job.tasks.order_by("position"))

    return make


def _end(task: Task, *, attempt: int = 1, hold: str | None = None) -> tuple[Any, ...] | None:
    now = timezone.now()
    with prepared.cursor():  # the statement runs as the runner runs it
        return transitions.step_end(
            {
                "job": task.job_id,
                "task": task.pk,
                "attempt": attempt,
                "started": Task.objects.get(pk=task.pk).started_at,
                "result": json.dumps({"n": task.position}),
                "now": now,
                "hold": hold,
                "worker": "test-worker",
                "progname": "worker",
                "controller": "controller",
                "message": f"'{task.name}' completed successfully",
                "notice": runner.NO_CLIENT_DEFINITIONS,
                "end_message": "job has completed successfully",
            }
        )


def _states(job: Job) -> list[int]:
    return list(job.tasks.order_by("position").values_list("state", flat=True))


@pytest.mark.django_db
def test_step_end_keeps_the_next_step_on_this_worker(started):
    job, tasks = started()
    row = _end(tasks[0], hold="work")
    assert row is not None
    job_state, ended, next_id, next_state, attempts, _name, position, queue, _params = row
    assert (job_state, ended) == (JobState.STARTED, False)
    assert (next_id, next_state, attempts, position, queue) == (tasks[1].pk, TaskState.RUNNING, 1, 2, "work")
    assert _states(job)[:3] == [TaskState.COMPLETED, TaskState.RUNNING, TaskState.PENDING]
    assert Task.objects.get(pk=tasks[1].pk).worker == "test-worker"
    assert [m for _, _, m, _ in json_log(job.pk)][-3:] == [
        "'noop' completed successfully",
        runner.NO_CLIENT_DEFINITIONS,
        "Task 'noop' started",
    ]


@pytest.mark.django_db
def test_step_end_queues_the_next_step_for_the_broker(started):
    job, tasks = started()
    row = _end(tasks[0], hold=None)
    assert row is not None and row[2:4] == (tasks[1].pk, TaskState.QUEUED)
    assert _states(job)[:2] == [TaskState.COMPLETED, TaskState.QUEUED]
    assert Task.objects.get(pk=tasks[1].pk).attempts == 0
    assert json_log(job.pk)[-1][2] == "'noop' completed successfully"


@pytest.mark.django_db
def test_step_end_ends_the_job_after_its_last_step(started):
    job, tasks = started("noop")
    row = _end(tasks[0], hold="work")
    assert row is not None and row[:3] == (JobState.STARTED, True, None)
    job.refresh_from_db()
    assert (job.queue_state, job.failed, job.message) == (
        JobState.COMPLETED,
        False,
        "job has completed successfully",
    )
    assert job.finished_at is not None
    # Under the last step's id, as the reference's log shows the job's end.
    assert json_log(job.pk)[-1][:3] == ("controller", tasks[0].pk, "job has completed successfully")


@pytest.mark.django_db
def test_step_end_fences_a_stale_attempt(started):
    job, tasks = started()
    before = (_states(job), len(json_log(job.pk)))
    assert _end(tasks[0], attempt=2) is None  # attempt 2 does not own the task (attempt 1 does)
    assert (_states(job), len(json_log(job.pk))) == before
    assert Task.objects.get(pk=tasks[0].pk).result is None


@pytest.mark.django_db
def test_step_end_leaves_an_unusual_job_to_the_controller(started):
    """An earlier step not completed: the step is recorded, nothing moves, the job stays started."""
    job, tasks = started()
    Task.objects.filter(pk=tasks[1].pk).update(state=TaskState.RUNNING, attempts=1, started_at=timezone.now())
    row = _end(Task.objects.get(pk=tasks[1].pk), hold="work")
    assert row is not None and row[:3] == (JobState.STARTED, False, None)
    assert _states(job)[:3] == [TaskState.RUNNING, TaskState.COMPLETED, TaskState.PENDING]
    job.refresh_from_db()
    assert job.queue_state == JobState.STARTED


@pytest.mark.django_db
def test_a_refused_move_changes_nothing(submit):
    job = submit("noop", run_at=timezone.now() + timezone.timedelta(hours=1))
    assert job.queue_state == JobState.SCHEDULED
    # scheduled -> completed is not in the table: refused before any statement runs.
    assert not transitions.job_transition(job.pk, source=[JobState.SCHEDULED], target=JobState.COMPLETED)
    assert (
        transitions.job_transition_many([job.pk], source=[JobState.SCHEDULED], target=JobState.STARTED) == []
    )
    job.refresh_from_db()
    assert job.queue_state == JobState.SCHEDULED


# --- start_task_quiet: the claim of a job that cannot call back ---------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {"rest_endpoints": None},
        {"rest_endpoints": []},
        {"rest_endpoints": ""},
        {"rest_endpoints": False},
        {"rest_endpoints": 0},
        {"rest_endpoints": {}},
        {"rest_endpoints": ["https://example.com/hook"]},
        {"rest_endpoints": "https://example.com/hook"},
        {"rest_endpoints": [""]},
        {"rest_endpoints": 1},
        {"other": 1},
    ],
)
def test_the_quiet_claim_agrees_with_the_callback_hand_off(submit, broker, parameters):
    """``cannot_call_back`` is true only where ``notify.may_call_back`` is false: a job the statement
    claims quietly never had a start callback to record."""
    from jobs.engine import notify

    job = submit("noop", parameters=parameters)
    broker.drain(skip=lambda message: message.task == "jobs.tasks.run_task")
    task = job.tasks.get()
    claimed = runner._claim_quiet(task.pk)
    if notify.may_call_back(parameters):
        assert claimed is runner.MAY_CALL_BACK
        assert Task.objects.get(pk=task.pk).state == TaskState.QUEUED  # nothing claimed
        assert runner._claim(task.pk, log_start=True) is not None
    else:
        assert isinstance(claimed, runner.Claimed) and claimed.attempt == 1
        assert claimed.job_parameters == parameters
    assert Task.objects.get(pk=task.pk).state == TaskState.RUNNING
    assert [m for _, _, m, _ in json_log(job.pk)][-2:] == [
        runner.NO_CLIENT_DEFINITIONS,
        "Task 'noop' started",
    ]


@pytest.mark.django_db
def test_the_quiet_claim_writes_what_the_transactional_one_writes(submit, broker):
    quiet, loud = submit("noop5"), submit("noop5")
    broker.drain(skip=lambda message: message.task == "jobs.tasks.run_task")
    a = runner._claim_quiet(quiet.tasks.get(position=1).pk)
    b = runner._claim(loud.tasks.get(position=1).pk, log_start=True)
    assert isinstance(a, runner.Claimed) and isinstance(b, runner.Claimed)
    fields = ("attempt", "name", "position", "queue", "parameters", "workflow", "common_definition")
    assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
    assert [row[0::2] for row in json_log(quiet.pk)] == [row[0::2] for row in json_log(loud.pk)]
    columns = ("state", "attempts", "worker", "started_at", "heartbeat_at")
    qa = Task.objects.filter(pk=a.pk).values_list(*columns[:3]).get()
    qb = Task.objects.filter(pk=b.pk).values_list(*columns[:3]).get()
    assert qa == qb
    # Not claimable a second time (a duplicate delivery), by either statement.
    assert runner._claim_quiet(a.pk) is None
    assert runner._claim(a.pk, log_start=True) is None


@pytest.mark.django_db
def test_inside_a_transaction_the_quiet_claim_leaves_its_commit_alone(submit, broker):
    """The test's transaction stands for a caller's: the claim must not make its commit asynchronous."""
    from django.db import connection

    job = submit("noop")
    broker.drain(skip=lambda message: message.task == "jobs.tasks.run_task")
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        before = cursor.fetchone()[0]
        assert runner._claim_quiet(job.tasks.get().pk) is not None
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == before


@pytest.mark.django_db(transaction=True)
def test_in_autocommit_the_quiet_claim_is_asynchronous_for_its_own_commit_only(make_client):
    from django.db import connection

    from jobs.engine import dispatcher
    from jobs.services import job_submit

    client, _ = make_client()
    job, _ = job_submit(client=client, workflow="noop", parameters={})
    dispatcher.dispatch()
    assert not connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        before = cursor.fetchone()[0]
    assert before != "off"
    with prepared.cursor() as cursor:
        now = timezone.now()
        params = {
            "worker": "w", "now": now, "task": job.tasks.get().pk, "stale": now, "quiet_only": True,
            "progname": "worker", "notice": runner.NO_CLIENT_DEFINITIONS, "async": True,
        }  # fmt: skip
        cursor.execute(sql("start_task_quiet"), params)
        row = cursor.fetchone()
    assert row[0] is True and row[-1] == "off"  # what set_config set, for that statement's commit
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == before  # and no longer
    assert Task.objects.get(pk=job.tasks.get().pk).state == TaskState.RUNNING


@pytest.mark.django_db
def test_an_attempt_whose_claim_was_lost_and_made_again_records_nothing(submit, broker):
    """A quiet claim lost in a Postgres crash leaves ``attempts`` as it was, so the next claim takes the
    same number while the first execution may still run: the claim's time tells them apart."""
    job = submit("noop5")
    broker.drain(skip=lambda message: message.task == "jobs.tasks.run_task")
    first_task = job.tasks.get(position=1)
    lost = runner._claim_quiet(first_task.pk)
    assert isinstance(lost, runner.Claimed) and lost.attempt == 1
    # What the crash leaves: the row as before the claim (its log lines are gone too, not needed here).
    Task.objects.filter(pk=first_task.pk).update(
        state=TaskState.QUEUED, attempts=0, worker="", started_at=None, heartbeat_at=None
    )
    again = runner._claim_quiet(first_task.pk)
    assert isinstance(again, runner.Claimed) and again.attempt == 1
    assert again.claimed_at != lost.claimed_at
    # The first execution ends, beats, fails or is handed back: none of it touches the second's row.
    assert runner._complete(lost, 1, {"first": True}, hold_queue="work") is None
    beat = runner._Heartbeat(task_id=lost.pk, job_id=lost.job_id, attempt=1, claimed_at=lost.claimed_at)
    beat.beat()
    assert beat.cancelled.is_set()
    assert not runner._owned(lost, 1).exists()
    runner._hand_back(lost, 1)
    row = Task.objects.get(pk=first_task.pk)
    assert (row.state, row.attempts, row.started_at, row.result) == (
        TaskState.RUNNING,
        1,
        again.claimed_at,
        None,
    )
    # The second one owns the task and moves the job on.
    following = runner._complete(again, 1, {"second": True}, hold_queue="work")
    assert following is not None and following.position == 2
    assert Task.objects.get(pk=first_task.pk).result == {"second": True}
    assert following.claimed_at == Task.objects.get(pk=following.pk).started_at
