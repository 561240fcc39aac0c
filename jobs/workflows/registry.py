"""Steps registered by name, workflow definitions as data, and their resolution for a client
(DESIGN.md §4).

A step is ``fn(ctx: StepContext) -> JSON-able result``; it raises ``PermanentError`` to fail the job at
once or ``TransientError`` (or any other exception) to be retried up to ``retry_limit`` times.

Apps that bring workflows of their own (``media``) register them from their ``AppConfig.ready`` with
``register_workflows``: their common definitions, and a validation hook that ``job_submit`` runs on the
parameters of a job of one of those workflows. ``register_job_cleanup`` adds what the engine's clean-up
must also remove for a deleted job (the media app's staged files); ``register_job_callback_fields`` adds
secret fields to a signed job callback (the media app's content keys). The engine, the job services and
the callbacks call these hooks and never import the apps that register them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.models import WorkflowDefinition
from jobs.workflows.definitions import COMMON_DEFINITIONS
from taskengine_site.errors import DomainError

if TYPE_CHECKING:
    from clients.models import Client

QUEUES = ("work", "windows_capture")


class StepError(Exception):
    """Base of the errors a step raises on purpose; the message goes to the log and the callbacks."""


class PermanentError(StepError):
    """Retrying cannot help (bad input, missing file): the job fails at once."""


class TransientError(StepError):
    """May succeed later (network, busy resource): retried up to retry_limit times."""


@dataclass
class StepContext:
    job_id: int
    task_id: int
    client_name: str
    workflow: str
    job_parameters: dict[str, Any]
    step_parameters: dict[str, Any]
    # Results of the earlier steps of this job, by step name.
    results: dict[str, Any]
    # ``log(message, severity=1)``: a line in the job's log (progname worker, this task's id).
    log: Callable[..., None]
    # ``heartbeat(progress=None)``: proves the step is alive, optionally records progress (0..100).
    # It raises ``StepCancelled`` when the job was broken, so long steps stop promptly; a paused job
    # lets its running step finish (DESIGN §1). It raises ``StepInterrupted`` when the worker is
    # stopping and the step cannot end within the grace (its progress says when it will end).
    heartbeat: Callable[..., None]
    # The storage root of the whole engine; a step reaches only its client's area under it.
    storage_root: Path
    attempt: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str, default: Any = None) -> Any:
        """A step parameter, else a job parameter, else ``default``."""
        if name in self.step_parameters:
            return self.step_parameters[name]
        return self.job_parameters.get(name, default)


class StepCancelled(Exception):  # not an error: the job was broken
    """Raised by ``heartbeat`` when the job no longer wants this step to run (it was broken)."""


class StepInterrupted(BaseException):  # not an error: the worker is stopping
    """Raised in a step when its worker stops and the step cannot end within the shutdown grace: the
    runner hands the attempt back (not counted) and the step runs again on another worker.

    A ``BaseException``, like ``KeyboardInterrupt``, so that a step's ``except Exception`` around its
    own work cannot mistake it for a failure of that work; a step that starts a child process stops it
    on the way out (``media.ffmpeg`` does).
    """


StepFn = Callable[[StepContext], Any]


@dataclass(frozen=True)
class StepSpec:
    name: str
    fn: StepFn
    queue: str
    description: str


STEPS: dict[str, StepSpec] = {}


def step(name: str, *, queue: str = "work") -> Callable[[StepFn], StepFn]:
    """Register ``fn`` as the step ``name`` whose default queue is ``queue``."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")

    def decorator(fn: StepFn) -> StepFn:
        if name in STEPS and STEPS[name].fn is not fn:
            raise ValueError(f"step {name!r} registered twice")
        STEPS[name] = StepSpec(name=name, fn=fn, queue=queue, description=(fn.__doc__ or "").strip())
        return fn

    return decorator


def load_steps() -> dict[str, StepSpec]:
    """Every registered step. The apps import their step modules in ``AppConfig.ready`` (the jobs app
    its basic steps, the media app its own), so by the time anything runs, all are registered."""
    return STEPS


def get_step(name: str) -> StepSpec:
    steps = load_steps()
    if name not in steps:
        raise PermanentError(f"unknown step {name!r}")
    return steps[name]


def validate_definition(steps: Any) -> list[dict[str, Any]]:
    """Check a definition's shape and that every step exists; return it normalised.

    A definition is a non-empty list of ``{"step": name, "queue": optional, "parameters": optional}``.
    """
    known = load_steps()
    if not isinstance(steps, list) or not steps:
        raise DomainError("a workflow definition is a non-empty list of steps")
    normalised: list[dict[str, Any]] = []
    for index, item in enumerate(steps):
        if isinstance(item, str):
            item = {"step": item}
        if not isinstance(item, dict) or not isinstance(item.get("step"), str):
            raise DomainError(f"step {index}: expected an object with a 'step' name")
        extra = set(item) - {"step", "queue", "parameters"}
        if extra:
            raise DomainError(f"step {index}: unknown keys {sorted(extra)}")
        name = item["step"]
        if name not in known:
            raise DomainError(f"step {index}: unknown step {name!r}")
        queue = item.get("queue") or known[name].queue
        if queue not in QUEUES:
            raise DomainError(f"step {index}: unknown queue {queue!r} (one of {', '.join(QUEUES)})")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise DomainError(f"step {index}: parameters must be an object")
        normalised.append({"step": name, "queue": queue, "parameters": parameters})
    return normalised


@dataclass(frozen=True)
class SubmissionCheck:
    """What a workflow's validation hook tells ``job_submit`` beyond refusing (``DomainError``)."""

    # The job cannot run before this moment (a capture of a live stream waits for its last clip).
    not_before: datetime | None = None


# ``validate(workflow, parameters, client)``: raises ``DomainError`` naming the parameter it refuses.
Validator = Callable[[str, dict[str, Any], "Client"], SubmissionCheck | None]
VALIDATORS: dict[str, Validator] = {}
JOB_CLEANUPS: list[Callable[[int], None]] = []
JOB_CALLBACK_FIELDS: list[Callable[[int], dict[str, Any]]] = []


def register_workflows(definitions: dict[str, list[dict[str, Any]]], *, validate: Validator | None) -> None:
    """Add common ``definitions`` and the hook that checks the parameters of a job of each of them."""
    for name, steps in definitions.items():
        if name in COMMON_DEFINITIONS and COMMON_DEFINITIONS[name] != steps:
            raise ValueError(f"workflow {name!r} registered twice")
        COMMON_DEFINITIONS[name] = steps
        if validate is not None:
            VALIDATORS[name] = validate


def validate_submission(workflow: str, parameters: dict[str, Any], client: Client) -> SubmissionCheck:
    """Run ``workflow``'s validation hook on a submission's ``parameters`` (``DomainError`` refuses it).

    A client definition that reuses a common workflow's name is checked by that workflow's hook: its
    steps read the same parameters.
    """
    validate = VALIDATORS.get(workflow)
    checked = validate(workflow, parameters, client) if validate is not None else None
    return checked or SubmissionCheck()


def register_job_cleanup(fn: Callable[[int], None]) -> None:
    """``fn(job_id)`` runs when the engine's clean-up deletes a job (after the rows are gone)."""
    if fn not in JOB_CLEANUPS:
        JOB_CLEANUPS.append(fn)


def cleanup_job(job_id: int) -> None:
    for fn in JOB_CLEANUPS:
        fn(job_id)


def register_job_callback_fields(fn: Callable[[int], dict[str, Any]]) -> None:
    """``fn(job_id)`` returns secret fields that a **signed** job callback of that job carries.

    They are added to the body only as it is signed and sent, never to the body stored with the
    delivery, and never to an unsigned callback: a secret must not rest in plaintext in the database
    nor travel to an endpoint that cannot tell the engine's requests from anyone else's.
    """
    if fn not in JOB_CALLBACK_FIELDS:
        JOB_CALLBACK_FIELDS.append(fn)


def job_callback_fields(job_id: int) -> dict[str, Any]:
    """Every registered hook's fields for job ``job_id``'s signed job callback, merged in order."""
    fields: dict[str, Any] = {}
    for fn in JOB_CALLBACK_FIELDS:
        fields.update(fn(job_id))
    return fields


def resolve_steps(workflow: str, own: Any) -> tuple[list[dict[str, Any]], bool] | None:
    """The definition ``workflow`` runs for a client: (steps, is_client_definition), or None if unknown.

    ``own`` is the steps of the client's own definition of ``workflow`` (None when it has none), read
    by the caller with the job: a client definition overrides the common one of the same name.
    """
    if own is not None:
        return validate_definition(own), True
    if workflow in COMMON_DEFINITIONS:
        return validate_definition(COMMON_DEFINITIONS[workflow]), False
    return None


def workflow_exists(client_id: int, workflow: str) -> bool:
    return (
        workflow in COMMON_DEFINITIONS
        or WorkflowDefinition.objects.filter(client_id=client_id, name=workflow).exists()
    )
