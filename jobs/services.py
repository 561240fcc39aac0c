"""Job services: the only code that creates jobs or changes them on request (DESIGN §1, §8).

The API and the admin call these; the engine moves jobs on through ``jobs.engine``. Every refusal is a
``DomainError`` whose message says which field and why. Client workflow definitions are saved here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from django.db import IntegrityError, connection, transaction
from django.db.models.base import ModelState
from django.utils import timezone

from clients.keys import mask
from clients.models import Client
from jobs import signals
from jobs.engine.bus import request_dispatch
from jobs.engine.sql import sql
from jobs.engine.transitions import job_transition
from jobs.models import Job, Task, WorkflowDefinition
from jobs.states import (
    NAME_TO_STATE,
    OPERATOR_TARGETS,
    TASK_WAITING,
    TERMINAL,
    JobState,
    TaskState,
    can_transition,
)
from jobs.workflows.registry import validate_definition, validate_submission, workflow_exists
from logs.models import LogEntry
from logs.services import job_log
from taskengine_site import outbound, prepared
from taskengine_site.connections import first_statement
from taskengine_site.errors import DomainError
from taskengine_site.inputs import json_problem

UPDATABLE = ("queue_state", "run_at", "priority", "semaphore_url", "persist", "top_of_queue")
# Header names whose values are secrets: shown masked in the creation log entry.
SECRET_HEADERS = frozenset({"api-key", "x-api-key", "authorization", "proxy-authorization", "cookie"})


# --- validation ------------------------------------------------------------------------------------


def _priority(value: Any) -> int:
    if isinstance(value, bool):
        raise DomainError("priority: must be an integer between 1 and 10")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise DomainError(f"priority: must be an integer between 1 and 10, got {value!r}") from None
    if not 1 <= number <= 10:
        raise DomainError(f"priority: must be an integer between 1 and 10, got {number}")
    return number


def _semaphore_url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise DomainError("semaphore_url: must be an http(s) URL of at most 2000 characters")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise DomainError(f"semaphore_url: must be an http(s) URL, got {value!r}")
    # Syntax and literal addresses now; what a name resolves to is checked when the semaphore is called.
    outbound.validate_url(value, what="semaphore_url")
    return value


def _aware(field: str, value: Any) -> datetime:
    if not isinstance(value, datetime) or timezone.is_naive(value):
        raise DomainError(f"{field}: must be a date and time in UTC")
    return value


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise DomainError(f"{field}: must be true or false")
    return value


def mask_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Headers as the log shows them: secrets reduced to asterisks and their last four characters."""
    masked: dict[str, Any] = {}
    for name, value in headers.items():
        normal = name.lower().replace("_", "-")
        if normal.startswith("http-"):
            normal = normal[len("http-") :]
        secret = normal in SECRET_HEADERS or "secret" in normal or "token" in normal
        masked[name] = mask(str(value)) if secret else value
    return masked


def _initial_state(run_at: datetime, semaphore_url: str | None, now: datetime) -> JobState:
    if run_at > now:
        return JobState.SCHEDULED
    if semaphore_url:
        return JobState.PENDING
    return JobState.QUEUED


# --- submit ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitRequest:
    """One job to submit: what ``POST /job`` (or one item of ``POST /jobs``) asks for."""

    workflow: str
    parameters: Any
    priority: Any = 5
    run_at: datetime | None = None
    semaphore_url: str | None = None
    persist: bool = False
    idempotency_key: str | None = None
    request_meta: Mapping[str, Any] | None = None


@dataclass
class Submitted:
    """The outcome of one submission: the job's id and whether this call created it, or why not."""

    job_id: int | None = None
    created: bool = False
    error: str | None = None


def _prepare(client: Client, wanted: SubmitRequest, now: datetime) -> tuple[Job, LogEntry]:
    """The new job and its creation log entry (unsaved), or a ``DomainError`` naming what is refused."""
    workflow, parameters = wanted.workflow, wanted.parameters
    if not isinstance(workflow, str) or not workflow.strip():
        raise DomainError("workflow: required, the name of a workflow")
    if not workflow_exists(client.pk, workflow):
        raise DomainError(f"workflow: unknown workflow '{workflow}'")
    if not isinstance(parameters, dict):
        raise DomainError("parameters: must be a JSON object")
    check = validate_submission(workflow, parameters, client)
    priority = _priority(wanted.priority)
    semaphore_url = _semaphore_url(wanted.semaphore_url)
    persist = _bool("persist", wanted.persist)
    run_at = now if wanted.run_at is None else _aware("run_at", wanted.run_at)
    # A workflow may need to wait (a capture of a live stream, for its latest clip to be broadcast).
    if check.not_before is not None and check.not_before > run_at:
        run_at = check.not_before
    key = wanted.idempotency_key
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
        raise DomainError("Idempotency-Key: must be 1..200 characters")
    # One instant for the submission: a job given no run_at is due exactly when it was created, not
    # a few milliseconds before (the insert would otherwise read the clock again).
    job = _unsaved(
        Job,
        {
            "client_id": client.pk,
            "workflow": workflow,
            "priority": priority,
            "parameters": parameters,
            "queue_state": _initial_state(run_at, semaphore_url, now),
            "persist": persist,
            "run_at": run_at,
            "semaphore_url": semaphore_url,
            "idempotency_key": key or None,
            "created_at": now,
            "updated_at": now,
        },
        client=client,
    )
    message = _creation_message(job, wanted.request_meta)
    entry = _unsaved(LogEntry, {"message": message, "progname": "api", "created_at": now, "updated_at": now})
    return job, entry


@cache
def _defaults(model: Any) -> tuple[tuple[str, Callable[[], Any]], ...]:
    """``(attname, default)`` of each concrete field of ``model``: read from the fields once."""
    return tuple((field.attname, field.get_default) for field in model._meta.concrete_fields)


def _unsaved(model: Any, values: dict[str, Any], **related: Any) -> Any:
    """What ``model(**values, **related)`` makes (a new, unsaved instance; ``values`` by attname, every
    other concrete field at its default, each of ``related`` cached as its foreign key's object), without
    ``Model.__init__``'s handling of each argument in turn: the two constructors were 6 % of the gunicorn
    workers' samples during ``POST /job`` (py-spy, bench/README.md, issue 16, seventh pass, item 18).
    Neither model has ``pre_init``/``post_init`` receivers (tests/api/test_submission_rows.py compares the
    two ways)."""
    instance = model.__new__(model)
    instance._state = ModelState()
    fields = instance.__dict__
    for attname, default in _defaults(model):
        fields[attname] = values[attname] if attname in values else default()
    for name, value in related.items():
        instance._state.fields_cache[name] = value
    return instance


def job_submit(
    *,
    client: Client,
    workflow: str,
    parameters: Any,
    priority: Any = 5,
    run_at: datetime | None = None,
    semaphore_url: str | None = None,
    persist: bool = False,
    idempotency_key: str | None = None,
    request_meta: Mapping[str, Any] | None = None,
) -> tuple[Job, bool]:
    """Create a job; return ``(job, created)``.

    The job starts scheduled (``run_at`` in the future), pending (a semaphore URL, ``run_at`` passed) or
    queued, with its creation log entry (progname ``api``). A queued job is dispatched after commit. With
    an ``idempotency_key`` the same client's earlier job with that key is returned (``created`` False)
    instead of a second one, also when two submissions race.
    """
    wanted = SubmitRequest(
        workflow, parameters, priority, run_at, semaphore_url, persist, idempotency_key, request_meta
    )
    job, entry = _prepare(client, wanted, timezone.now())
    if idempotency_key:
        existing = Job.objects.filter(client=client, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    state = JobState(job.queue_state)
    # One statement is atomic on its own: a transaction of its own would only add BEGIN and COMMIT.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        inserted = first_statement(_insert_once(job, entry))
        if not inserted:  # a concurrent submission with the same idempotency key won
            return Job.objects.get(client=client, idempotency_key=idempotency_key), False
        job.pk = inserted[job.workflow_uuid]
        job._state.adding, job._state.db = False, connection.alias
        _after_state_change(job.pk, state)
    return job, True


MAX_BATCH = 1000


def jobs_submit(*, client: Client, requests: Sequence[SubmitRequest | DomainError]) -> list[Submitted]:
    """Create several jobs in one transaction; one outcome per request, in order.

    Each request is checked as ``job_submit`` checks one; a refused request (or a ``DomainError`` its
    caller already found, such as a malformed item of ``POST /jobs``) is answered with its error and
    does not keep the others out. The jobs are written by one statement (with their creation log
    entries), and whatever they set in motion (one dispatch for the queued, the scheduler for the
    others) happens after the commit. An ``idempotency_key`` already used by the client, or used twice in
    the batch, answers the first job's id with ``created`` False, also when a concurrent submission wins.
    """
    if len(requests) > MAX_BATCH:
        raise DomainError(f"jobs: at most {MAX_BATCH} jobs per batch, got {len(requests)}")
    now = timezone.now()
    outcomes = [Submitted() for _ in requests]
    prepared_jobs: list[tuple[int, Job, LogEntry]] = []
    for index, wanted in enumerate(requests):
        if isinstance(wanted, DomainError):
            outcomes[index].error = wanted.message
            continue
        try:
            job, entry = _prepare(client, wanted, now)
        except DomainError as exc:
            outcomes[index].error = exc.message
            continue
        prepared_jobs.append((index, job, entry))
    keys = {job.idempotency_key for _, job, _ in prepared_jobs if job.idempotency_key}
    known = dict(
        Job.objects.filter(client=client, idempotency_key__in=keys).values_list("idempotency_key", "pk")
        if keys
        else []
    )
    to_insert: list[tuple[int, Job, LogEntry]] = []
    first_with_key: dict[str, int] = {}
    repeats: list[tuple[int, str]] = []
    for index, job, entry in prepared_jobs:
        key = job.idempotency_key
        if key and key in known:
            outcomes[index].job_id = known[key]
        elif key and key in first_with_key:
            repeats.append((index, key))
        else:
            if key:
                first_with_key[key] = index
            to_insert.append((index, job, entry))
    with transaction.atomic():
        inserted = _insert_many([(job, entry) for _, job, entry in to_insert])
        lost: list[str] = []
        for index, job, _ in to_insert:
            job_id = inserted.get(job.workflow_uuid)
            if job_id is None:  # a concurrent submission with the same key won
                lost.append(str(job.idempotency_key))
                continue
            outcomes[index].job_id, outcomes[index].created = job_id, True
        if lost:
            winners = dict(
                Job.objects.filter(client=client, idempotency_key__in=lost).values_list(
                    "idempotency_key", "pk"
                )
            )
            for index, job, _ in to_insert:
                if outcomes[index].job_id is None and job.idempotency_key in winners:
                    outcomes[index].job_id = winners[job.idempotency_key]
        for index, key in repeats:
            outcomes[index].job_id = outcomes[first_with_key[key]].job_id
        created = [(outcomes[index].job_id, JobState(job.queue_state)) for index, job, _ in to_insert]
        if any(state == JobState.QUEUED and job_id for job_id, state in created):
            request_dispatch()
        for job_id, state in created:
            if job_id and state in (JobState.SCHEDULED, JobState.PENDING):
                _notify_scheduler(job_id)
    return outcomes


@cache
def _column_plan(model: Any, prefix: str) -> tuple[tuple[str, str, str], ...]:
    """``(attname, column key, kind)`` of each column ``_column_values`` writes for new ``model`` rows,
    kind ``stamp`` (``auto_now``), ``json`` or ``plain``: read from the model's fields once, not for each
    submission (the fields' attributes were a third of the insert's CPU)."""
    plan = []
    for field in model._meta.concrete_fields:
        if field.primary_key or (prefix and field.name == "job"):
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            kind = "stamp"
        elif field.get_internal_type() == "JSONField":
            kind = "json"
        else:
            kind = "plain"
        plan.append((field.attname, f"{prefix}{field.column}", kind))
    return tuple(plan)


def _column_values(model_objects: list[Any], prefix: str, now: datetime) -> dict[str, list[Any]]:
    """Each concrete column of ``model_objects`` (new rows of one model) as a list, the values a save
    would write: ``auto_now`` times are ``now`` unless already set (``_prepare`` sets the submission's
    instant), and set on the objects too, as a save does; JSON is text (the statement casts it), the rest
    as set."""
    columns: dict[str, list[Any]] = {}
    for attname, column, kind in _column_plan(model_objects[0]._meta.model, prefix):
        if kind == "stamp":
            values: list[Any] = []
            for model_object in model_objects:
                stamp = getattr(model_object, attname) or now
                setattr(model_object, attname, stamp)
                values.append(stamp)
        elif kind == "json":
            values = [None if (v := getattr(o, attname)) is None else json.dumps(v) for o in model_objects]
        else:
            values = [getattr(o, attname) for o in model_objects]
        columns[column] = values
    return columns


def _insert_once(job: Job, entry: LogEntry) -> Callable[[], dict[Any, int]]:
    """``_insert_many([(job, entry)])``, safe to run twice: a second run first looks for the job the first
    may have written (its ``created_at`` and ``workflow_uuid``, both set before the insert, through the
    index on ``created_at``), so the insert can be a request's first statement and check the kept
    connection in place of ``SELECT 1`` (``taskengine_site.connections``; after an API key this process
    remembers, ``POST /job`` has read nothing from Postgres before it)."""
    runs: list[int] = []

    def insert() -> dict[Any, int]:
        if runs:
            found = (
                Job.objects.filter(created_at=job.created_at, workflow_uuid=job.workflow_uuid)
                .values_list("pk", flat=True)
                .first()
            )
            if found is not None:
                return {job.workflow_uuid: found}
        runs.append(1)
        return _insert_many([(job, entry)])

    return insert


def _insert_many(rows: list[tuple[Job, LogEntry]]) -> dict[Any, int]:
    """Insert new jobs and their creation log entries in one statement (``insert_job`` for one,
    ``insert_jobs`` for more); the id of each by its ``workflow_uuid`` (a job whose idempotency key was
    taken meanwhile is left out)."""
    if not rows:
        return {}
    now = timezone.now()
    columns = _column_values([job for job, _ in rows], "", now)
    columns.update(_column_values([entry for _, entry in rows], "entry_", now))
    with prepared.cursor() as cursor:
        if len(rows) == 1:
            # One job: scalar parameters, which psycopg adapts for a fraction of the arrays' cost.
            cursor.execute(sql("insert_job"), {name: values[0] for name, values in columns.items()})
        else:
            cursor.execute(sql("insert_jobs"), columns)
        return {job_uuid: int(job_id) for job_uuid, job_id in cursor.fetchall()}


def _creation_message(job: Job, request_meta: Mapping[str, Any] | None, path: str = "POST /job") -> str:
    meta = request_meta or {}
    body = meta.get("body")
    if body is None:
        job_fields: dict[str, Any] = {
            "workflow": job.workflow,
            "priority": job.priority,
            "persist": job.persist,
        }
        if job.semaphore_url:
            job_fields["semaphore_url"] = job.semaphore_url
        body = {"client": job.client.name, "job": job_fields, "parameters": job.parameters}
    message = {
        "path": meta.get("path") or path,
        "remote_addr": meta.get("remote_addr"),
        "headers": mask_headers(meta.get("headers") or {}),
        "parameters": body,
        "payload": "job_created",
    }
    return json.dumps(message, default=str)


def _after_state_change(job_id: int, state: int) -> None:
    """What a job entering ``state`` sets in motion, after commit."""
    if state == JobState.QUEUED:
        request_dispatch()
    elif state in (JobState.SCHEDULED, JobState.PENDING):
        _notify_scheduler(job_id)


def _notify_scheduler(job_id: int) -> None:
    """Let the scheduler arm a promotion (a job due before its next sweep) or a semaphore check."""
    signals.job_waiting.send(sender=None, job_id=job_id)


# --- update ----------------------------------------------------------------------------------------


def job_update(*, job: Job, changes: Mapping[str, Any]) -> list[str]:
    """Apply operator changes to a job; return the names of the updates performed.

    ``changes`` may hold ``queue_state`` ("paused", "broken", or "queued" to resume a paused job),
    ``run_at`` (aware datetime), ``priority``, ``semaphore_url`` (str or None), ``persist`` and
    ``top_of_queue``. Either every change applies or none: a refused one raises ``DomainError`` (with
    the job id) saying why. Changes that can free or fill a slot dispatch after commit.
    """
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise DomainError(
            f"cannot update {', '.join(unknown)}: updatable fields are {', '.join(UPDATABLE)}", job_id=job.pk
        )
    if not changes:
        raise DomainError(f"nothing to update: send one of {', '.join(UPDATABLE)}", job_id=job.pk)
    try:
        with transaction.atomic():
            # The row lock keeps the engine's compare-and-set moves out until this update commits.
            locked = Job.objects.select_for_update().get(pk=job.pk)
            performed = _apply(locked, changes)
    except DomainError as exc:
        exc.job_id = job.pk
        raise
    job.refresh_from_db()
    return performed


def _refuse(message: str) -> DomainError:
    return DomainError(message)


def _apply(job: Job, changes: Mapping[str, Any]) -> list[str]:
    state = JobState(job.queue_state)
    now = timezone.now()
    fields: dict[str, Any] = {}
    performed: list[str] = []

    if "persist" in changes:
        fields["persist"] = _bool("persist", changes["persist"])
        performed.append("persist")

    terminal = state in TERMINAL
    for name in ("priority", "top_of_queue", "semaphore_url", "run_at"):
        if name in changes and terminal:
            raise _refuse(f"cannot change {name} of a {state.label} job")
    if "priority" in changes:
        fields["priority"] = _priority(changes["priority"])
        performed.append("priority")
    if "top_of_queue" in changes:
        fields["top_of_queue"] = _bool("top_of_queue", changes["top_of_queue"])
        performed.append("top_of_queue")

    target: JobState | None = None
    if "queue_state" in changes:
        target = _requested_state(state, changes["queue_state"])

    # Scheduling fields only matter before a job starts; a started job already passed them.
    if state == JobState.STARTED and ("run_at" in changes or "semaphore_url" in changes):
        name = "run_at" if "run_at" in changes else "semaphore_url"
        raise _refuse(f"cannot change {name} of a started job")
    semaphore = job.semaphore_url
    if "semaphore_url" in changes:
        semaphore = _semaphore_url(changes["semaphore_url"])
        fields["semaphore_url"] = semaphore
        performed.append("semaphore_url")
    run_at = job.run_at
    if "run_at" in changes:
        run_at = _aware("run_at", changes["run_at"])
        fields["run_at"] = run_at
        performed.append("run_at")

    # The waiting state follows run_at and the semaphore unless the operator holds or breaks the job.
    if target is None and state in (JobState.QUEUED, JobState.SCHEDULED, JobState.PENDING):
        if "run_at" in changes or "semaphore_url" in changes:
            wanted = _initial_state(run_at, semaphore, now)
            if state == JobState.PENDING and wanted == JobState.PENDING and "semaphore_url" not in changes:
                wanted = state
            if wanted != state:
                target = wanted
    elif target == JobState.QUEUED and run_at > now:
        # Resuming a job paused before its time: it goes back to waiting for run_at.
        target = JobState.SCHEDULED

    if target is not None and target != state:
        if fields:
            # The row is locked and a refused move below undoes this with the whole update.
            Job.objects.filter(pk=job.pk).update(updated_at=now, **fields)
        if target == JobState.SCHEDULED and state == JobState.PAUSED:
            moved = job_transition(job.pk, source=[state], target=JobState.QUEUED)
            moved = moved and job_transition(job.pk, source=[JobState.QUEUED], target=JobState.SCHEDULED)
        else:
            moved = job_transition(job.pk, source=[state], target=target)
        if not moved:
            raise _refuse(f"cannot change queue_state from {state.label} to {target.label}")
        if "queue_state" in changes:
            performed.insert(0, "queue_state")
        if target == JobState.BROKEN:
            _cancel_waiting_tasks(job.pk, now)
        if target == JobState.BROKEN or state == JobState.STARTED:
            request_dispatch()  # a slot was freed
        _after_state_change(job.pk, target)
    elif fields:
        Job.objects.filter(pk=job.pk).update(updated_at=now, **fields)
        if ("run_at" in changes and state == JobState.SCHEDULED) or (
            "semaphore_url" in changes and state == JobState.PENDING
        ):
            _notify_scheduler(job.pk)  # a new run_at may fall before the next sweep; a new URL to check
    if state == JobState.QUEUED and target is None and ("priority" in changes or "top_of_queue" in changes):
        request_dispatch()  # the order or the slot class of a waiting job changed
    return performed


def _requested_state(state: JobState, value: Any) -> JobState:
    names = [target.label for target in OPERATOR_TARGETS]
    if not isinstance(value, str) or value not in NAME_TO_STATE:
        raise _refuse(f"queue_state: unknown state {value!r} (one of {', '.join(names)})")
    target = NAME_TO_STATE[value]
    if target not in OPERATOR_TARGETS:
        choice = f"{', '.join(names[:-1])} or {names[-1]}"
        raise _refuse(f"queue_state: can only be set to {choice}, not {value}")
    if state == target:
        raise _refuse(
            f"cannot change queue_state from {state.label} to {target.label}: it is {state.label} already"
        )
    if target == JobState.QUEUED and state != JobState.PAUSED:
        raise _refuse(
            f"cannot change queue_state from {state.label} to queued: only a paused job can be resumed"
        )
    if state == JobState.COMPLETED and target == JobState.BROKEN:
        raise _refuse("cannot change queue_state from completed to broken: rerun the job instead")
    if not can_transition(state, target):
        raise _refuse(f"cannot change queue_state from {state.label} to {target.label}")
    return target


def _cancel_waiting_tasks(job_id: int, now: datetime) -> None:
    Task.objects.filter(job_id=job_id, state__in=TASK_WAITING).update(
        state=TaskState.CANCELLED, updated_at=now, finished_at=now
    )


# --- rerun -----------------------------------------------------------------------------------------


def job_rerun(*, job: Job, request_meta: Mapping[str, Any] | None = None) -> Job:
    """Submit a new job with the same client, workflow, priority and parameters, and break the original.

    The original becomes broken from any state (a started one stops after its running task); the new
    job is queued now and dispatched after commit.
    """
    if not workflow_exists(job.client_id, job.workflow):
        raise DomainError(f"workflow: unknown workflow '{job.workflow}'", job_id=job.pk)
    now = timezone.now()
    with transaction.atomic():
        original = Job.objects.select_for_update().select_related("client").get(pk=job.pk)
        state = JobState(original.queue_state)
        if state != JobState.BROKEN:
            if not job_transition(original.pk, source=[state], target=JobState.BROKEN):
                raise DomainError(f"cannot rerun a {state.label} job", job_id=job.pk)
            _cancel_waiting_tasks(original.pk, now)
        new = Job.objects.create(
            client=original.client,
            workflow=original.workflow,
            priority=original.priority,
            parameters=original.parameters,
            queue_state=JobState.QUEUED,
            run_at=now,
            rerun_of=original,
        )
        meta = dict(request_meta or {})
        meta.setdefault("path", f"POST /jobs/{original.pk}/rerun")
        job_log(new.pk, _creation_message(new, meta), progname="api")
        job_log(original.pk, f"job broken: rerun as job {new.pk}", progname="api")
        request_dispatch()
    job.refresh_from_db()
    return new


# --- workflow definitions --------------------------------------------------------------------------


def workflow_definition_validate(*, steps: Any) -> list[dict[str, Any]]:
    """``steps`` as a definition is stored: storable JSON, a non-empty list of known steps on known
    queues (``jobs.workflows.registry.validate_definition``), normalised. Refusals name the step."""
    # A form's JSON parser accepts what the jsonb column refuses (NaN, a NUL character, …).
    problem = json_problem(steps, root="steps")
    if problem is not None:
        raise DomainError(problem.message)
    return validate_definition(steps)


def workflow_definition_save(
    *, client: Client, name: str, steps: Any, definition: WorkflowDefinition | None = None
) -> WorkflowDefinition:
    """Create client ``client``'s workflow definition ``name``, or change ``definition``, with ``steps``
    validated and normalised first; the saved row is returned."""
    normalised = workflow_definition_validate(steps=steps)
    row = definition if definition is not None else WorkflowDefinition()
    row.client, row.name, row.steps = client, name, normalised
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        raise DomainError(f"name: client {client.name} already has a workflow named {name!r}") from None
    return row
