"""Input and output shapes of the job endpoints (reference: task-engine-api.md, JOB ENDPOINTS).

Input serializers check syntax only (types, formats, bounds); what the engine refuses (an unknown
workflow, a transition the state machine forbids) is decided by jobs.services and raised as DomainError.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from jobs import selectors
from jobs.models import Job, Task
from jobs.services import MAX_BATCH
from jobs.states import OPERATOR_TARGETS, JobState, TaskState
from taskengine_site import outbound
from taskengine_site.api import StrictCharField, StrictKeysMixin, TimestampField
from taskengine_site.outbound import validate_url

MAX_REST_ENDPOINTS = 10
MAX_URL_LENGTH = 2000
SEMAPHORE_SPELLINGS = ("semaphore_url", "sempahore_url", "semphore_url")
RUN_AT_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})?$"
_RUN_AT = re.compile(RUN_AT_PATTERN)
_URL = re.compile(r"^https?://\S+$", re.IGNORECASE)


def priority_value(data: Any) -> int:
    """A priority as ``PriorityField`` takes it (``ValidationError`` saying why not)."""
    # bool is an int in Python; true is not a priority.
    if isinstance(data, bool) or not isinstance(data, int | str):
        raise serializers.ValidationError(f"must be an integer from 1 to 10, got {data!r}")
    try:
        value = int(str(data).strip())
    except ValueError:
        raise serializers.ValidationError(f"must be an integer from 1 to 10, got {data!r}") from None
    if not 1 <= value <= 10:
        raise serializers.ValidationError(f"must be an integer from 1 to 10, got {value}")
    return value


def run_at_value(data: Any) -> datetime:
    """A ``run_at`` as ``RunAtField`` takes it: an aware time in UTC (``ValidationError`` saying why not)."""
    if not isinstance(data, str) or not _RUN_AT.match(data):
        raise serializers.ValidationError(f"must be a UTC time as yyyy-MM-ddTHH:mm:ss.fff, got {data!r}")
    try:
        value = datetime.fromisoformat(data)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # In UTC: Postgres refuses offsets beyond ±15:59, and a far-off date with an offset can
        # overflow, which is refused here.
        value = value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise serializers.ValidationError(f"is not a valid time: {exc}") from None
    return value


# --- Fields -----------------------------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 1, "maximum": 10},
            {"type": "string", "pattern": r"^\s*([1-9]|10)\s*$"},
        ],
        "description": "1..10, lower is more urgent (default 5). A string holding an integer is accepted.",
    }
)
class PriorityField(serializers.Field):
    def to_internal_value(self, data: Any) -> int:
        return priority_value(data)

    def to_representation(self, value: int) -> int:
        return value


@extend_schema_field(
    {
        "type": "string",
        "pattern": RUN_AT_PATTERN,
        "example": "2040-06-06T10:00:00.000",
        "description": "UTC, yyyy-MM-ddTHH:mm:ss.fff; a trailing Z or offset is accepted.",
    }
)
class RunAtField(serializers.Field):
    def to_internal_value(self, data: Any) -> datetime:
        return run_at_value(data)

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


@extend_schema_field({"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH, "nullable": True})
class OutboundUrlField(serializers.Field):
    """An http(s) URL the engine will call, refused at once when it aims at a forbidden address."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        return check_url(data, what=self.field_name or "url")

    def to_representation(self, value: str) -> str:
        return value


def check_url(data: Any, *, what: str) -> str:
    if not isinstance(data, str) or len(data) > MAX_URL_LENGTH or not _URL.match(data):
        raise serializers.ValidationError(f"must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    validate_url(data, what=what)
    return data


@extend_schema_field({"type": "string", "enum": [state.label for state in JobState]})
class QueueStateField(serializers.Field):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: int) -> str:
        return JobState(value).label


@extend_schema_field({"type": "object", "additionalProperties": True})
class ParametersField(serializers.JSONField):
    pass


def single_semaphore(attrs: dict[str, Any]) -> dict[str, Any]:
    """Fold the accepted spellings into ``semaphore_url``; two different values are ambiguous."""
    given = {name: attrs.pop(name) for name in SEMAPHORE_SPELLINGS if name in attrs}
    if len(set(given.values())) > 1:
        raise serializers.ValidationError(
            {"semaphore_url": [f"given twice with different values ({', '.join(given)})"]}
        )
    if given:
        attrs["semaphore_url"] = next(iter(given.values()))
    return attrs


# --- POST /job ----------------------------------------------------------------------------------------------


class JobSpecSerializer(StrictKeysMixin):
    """The ``job`` object of a submission: the workflow and how and when to run it."""

    workflow = StrictCharField(max_length=100)
    priority = PriorityField(required=False)
    run_at = RunAtField(required=False, allow_null=True)
    semaphore_url = OutboundUrlField(required=False)
    sempahore_url = OutboundUrlField(required=False, help_text="Accepted misspelling of semaphore_url.")
    semphore_url = OutboundUrlField(required=False, help_text="Accepted misspelling of semaphore_url.")
    persist = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return single_semaphore(attrs)


class JobSubmitSerializer(StrictKeysMixin):
    """POST /job: ``{"client", "job": {...}, "parameters": {...}}``."""

    client = StrictCharField(
        required=False, max_length=100, help_text="Must be the client named in the client header."
    )
    job = JobSpecSerializer()
    parameters = serializers.DictField(
        required=False, default=dict, help_text="The workflow's parameters (see the workflow documentation)."
    )

    def validate_client(self, value: str) -> str:
        requester = self.context["request"].user
        if value != requester.name:
            raise serializers.ValidationError("does not match the client header")
        return value

    def validate_parameters(self, value: dict[str, Any]) -> dict[str, Any]:
        return check_parameters(value)


def check_parameters(value: dict[str, Any]) -> dict[str, Any]:
    """The syntax checks of a submission's ``parameters`` (its callback URLs), ``ValidationError`` if not."""
    endpoints = value.get("rest_endpoints")
    if endpoints is not None:
        if not isinstance(endpoints, list):
            raise serializers.ValidationError({"rest_endpoints": ["must be a list of URLs"]})
        if len(endpoints) > MAX_REST_ENDPOINTS:
            raise serializers.ValidationError(
                {"rest_endpoints": [f"at most {MAX_REST_ENDPOINTS} URLs, got {len(endpoints)}"]}
            )
        for index, url in enumerate(endpoints):
            try:
                check_url(url, what=f"parameters.rest_endpoints[{index}]")
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({f"rest_endpoints[{index}]": exc.detail}) from None
    return value


_SUBMIT_KEYS = frozenset({"client", "job", "parameters"})
_JOB_KEYS = frozenset({"workflow", "priority", "run_at", *SEMAPHORE_SPELLINGS, "persist"})


def plain_submission(data: Any, client_name: str) -> dict[str, Any] | None:
    """What ``JobSubmitSerializer(data=data)`` validates to, for the bodies most submissions are; else None.

    Most ``POST /job`` bodies are plain: known keys, a workflow name, a priority given as a number, a
    boolean ``persist``. For those this builds the serializer's ``validated_data`` (same keys, same
    values) through the same rules (``priority_value``, ``run_at_value``, ``check_url``,
    ``check_parameters``) without building the serializer's fields for each request, which cost about
    a quarter of a millisecond of CPU, as much as the job's insert. Anything else (a missing or unknown
    key, a wrong type, a value a rule refuses, two spellings of the semaphore URL, ``"true"`` for a
    boolean) answers None, and the caller lets ``JobSubmitSerializer`` decide and word the refusal, so an
    error reads as it always did. tests/api/test_plain_submission.py holds the two to the same answers.
    """
    if type(data) is not dict or not data.keys() <= _SUBMIT_KEYS:
        return None
    job = data.get("job")
    if type(job) is not dict or "workflow" not in job or not job.keys() <= _JOB_KEYS:
        return None
    if "client" in data:
        name = data["client"]
        # CharField strips whitespace before comparing and bounds the length: only the exact name passes.
        if type(name) is not str or name != client_name or name != name.strip() or not 0 < len(name) <= 100:
            return None
    workflow = job["workflow"]
    if (
        type(workflow) is not str
        or not 0 < len(workflow) <= 100
        or workflow != workflow.strip()
        or "\x00" in workflow
    ):
        return None
    spec: dict[str, Any] = {"workflow": workflow}
    try:
        if "priority" in job:
            spec["priority"] = priority_value(job["priority"])
        if "run_at" in job:
            run_at = job["run_at"]
            spec["run_at"] = None if run_at is None else run_at_value(run_at)
        spellings = [name for name in SEMAPHORE_SPELLINGS if name in job]
        if len(spellings) > 1:
            return None
        if spellings:
            url = job[spellings[0]]
            spec["semaphore_url"] = None if url is None else check_url(url, what=spellings[0])
        if "persist" in job:
            if type(job["persist"]) is not bool:
                return None
            spec["persist"] = job["persist"]
        parameters = data.get("parameters", {})
        if type(parameters) is not dict:
            return None
        parameters = check_parameters(dict(parameters))  # a DictField's value is a new dict too
    except Exception:
        return None
    validated: dict[str, Any] = {"job": spec, "parameters": parameters}
    if "client" in data:
        validated["client"] = data["client"]
    return validated


class AcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    result = serializers.CharField(help_text='"accepted"')


class BatchItemSerializer(JobSubmitSerializer):
    """One job of ``POST /jobs``: a ``POST /job`` body, and its own idempotency key."""

    idempotency_key = StrictCharField(
        required=False,
        min_length=1,
        max_length=200,
        help_text="Makes a retried batch return this item's first job instead of creating a second.",
    )

    def validate_idempotency_key(self, value: str) -> str:
        if not value.isascii() or not value.isprintable():
            raise serializers.ValidationError("must be printable ASCII")
        return value


@extend_schema_field(OpenApiTypes.OBJECT)
class AnyValue(serializers.Field):
    """A value taken as it is: each batch item is checked on its own, after the envelope. In the schema,
    an object (a POST /job body and its idempotency_key)."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class JobBatchSerializer(StrictKeysMixin):
    """POST /jobs: ``{"jobs": [<POST /job body, with an optional idempotency_key>, …]}``.

    Only the envelope is checked here; each item is checked on its own (``BatchItemSerializer``), so
    one refused job does not refuse the others."""

    jobs = serializers.ListField(
        child=AnyValue(),
        min_length=1,
        max_length=MAX_BATCH,
        help_text=f"1 to {MAX_BATCH} job bodies, each as POST /job takes it, plus an optional "
        "idempotency_key.",
    )


class BatchOutcomeSerializer(serializers.Serializer):
    id = serializers.IntegerField(required=False, help_text="The job's id (absent when refused).")
    result = serializers.CharField(help_text='"accepted" or "refused"')
    created = serializers.BooleanField(
        required=False, help_text="False when an idempotency key named a job made earlier."
    )
    error = serializers.CharField(required=False, help_text="Why the job was refused, naming the field.")


class BatchAcceptedSerializer(serializers.Serializer):
    jobs = BatchOutcomeSerializer(many=True, help_text="One outcome per job, in the order sent.")


# --- PUT / PATCH /jobs/<id> --------------------------------------------------------------------------------


class JobUpdateSerializer(StrictKeysMixin):
    """PUT/PATCH /jobs/<id>: only the fields given change; any other field is refused."""

    unknown_key_message = (
        "cannot be updated; the updatable fields are queue_state, run_at, priority, semaphore_url, persist"
    )

    client = StrictCharField(required=False, max_length=100, help_text="If given, must be your client.")
    queue_state = serializers.ChoiceField(
        required=False,
        choices=[state.label for state in OPERATOR_TARGETS],
        help_text="paused, broken, or queued to resume.",
    )
    run_at = RunAtField(required=False)
    priority = PriorityField(required=False)
    semaphore_url = OutboundUrlField(required=False)
    sempahore_url = OutboundUrlField(required=False, help_text="Accepted misspelling of semaphore_url.")
    semphore_url = OutboundUrlField(required=False, help_text="Accepted misspelling of semaphore_url.")
    persist = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = single_semaphore(attrs)
        client = attrs.pop("client", None)
        if client is not None:
            requester = self.context["request"].user
            job = self.context["job"]
            # An operator acting on another client's job may name either client.
            if client != requester.name and not (requester.is_operator and client == job.client.name):
                raise serializers.ValidationError({"client": ["does not match the client header"]})
        if not attrs:
            raise serializers.ValidationError(
                "nothing to update: give one of queue_state, run_at, priority, semaphore_url, persist"
            )
        return attrs


class UpdatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    result = serializers.CharField(help_text="Performed updates: <list of updates>")


# --- Job renderings -----------------------------------------------------------------------------------------


def _field(column: str) -> str:
    """A serializer field from the selector's column (``client__name`` is rendered as ``client``)."""
    return column.split("__", 1)[0]


class JobSummarySerializer(serializers.ModelSerializer):
    """A job in the dashboard lists."""

    client = serializers.CharField(source="client.name", read_only=True)
    created_at = TimestampField()
    updated_at = TimestampField()
    queue_state = QueueStateField()
    run_at = TimestampField()

    class Meta:
        model = Job
        # The columns jobs.selectors reads for a summary, in the reference's order.
        fields = [_field(column) for column in selectors.SUMMARY_COLUMNS]
        read_only_fields = fields


class JobListItemSerializer(JobSummarySerializer):
    """A job in GET /jobs: the summary with its parameters."""

    parameters = ParametersField(read_only=True)

    class Meta(JobSummarySerializer.Meta):
        fields = [_field(column) for column in selectors.LIST_COLUMNS]
        read_only_fields = fields


class JobDetailSerializer(JobListItemSerializer):
    """GET /jobs/<id>."""

    class Meta(JobSummarySerializer.Meta):
        fields = [
            "id",
            "client",
            "workflow",
            "priority",
            "position",
            "top_of_queue",
            "parameters",
            "created_at",
            "updated_at",
            "queue_state",
            "failed",
            "run_at",
        ]
        read_only_fields = fields


# --- Hand-written renderings of the job lists -------------------------------------------------------------
# GET /jobs?limit=1000 and GET /dashboard render up to 1,000-3,000 jobs; through DRF that is ≈35 µs a job.
# These build exactly what JobListItemSerializer / JobSummarySerializer build (same keys in the same order,
# same values) from rows of jobs.selectors.job_rows (timestamps come formatted by Postgres) of its
# LIST_COLUMNS / SUMMARY_COLUMNS; tests/api/test_fast_rendering.py
# compares them with the serializers on varied jobs so they cannot drift apart.

_STATE_LABELS = {state.value: state.label for state in JobState}


# The keys of JobListItemSerializer and JobSummarySerializer, in their order: the order of
# jobs.selectors.LIST_COLUMNS / SUMMARY_COLUMNS.
LIST_KEYS = tuple(JobListItemSerializer.Meta.fields)
SUMMARY_KEYS = tuple(JobSummarySerializer.Meta.fields)


def _render(rows: list[tuple[Any, ...]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    state = keys.index("queue_state")
    labels = _STATE_LABELS
    rendered = []
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        item["queue_state"] = labels[row[state]]  # in place: the key keeps its position
        rendered.append(item)
    return rendered


def render_job_list(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """JobListItemSerializer(many=True).data for rows of ``LIST_COLUMNS``."""
    return _render(rows, LIST_KEYS)


def render_job_summaries(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """JobSummarySerializer(many=True).data for rows of ``SUMMARY_COLUMNS``."""
    return _render(rows, SUMMARY_KEYS)


@extend_schema_field(
    {"type": "string", "enum": [state.label for state in TaskState]}, component_name="TaskState"
)
class TaskStateField(serializers.Field):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: int) -> str:
        return TaskState(value).label


class TaskItemSerializer(serializers.ModelSerializer):
    """One step of a job in GET /jobs/<id>?tasks=1, in workflow order."""

    state = TaskStateField()
    progress = serializers.FloatField(
        source="shown_progress",
        read_only=True,
        allow_null=True,
        help_text="Percent done (0..100, at most one decimal) as the step last reported it; 100 once "
        "completed.",
    )
    started_at = TimestampField(allow_null=True)
    finished_at = TimestampField(allow_null=True)

    class Meta:
        model = Task
        fields = [
            "id",
            "name",
            "queue",
            "state",
            "position",
            "attempts",
            "progress",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class JobDetailQuerySerializer(serializers.Serializer):
    """The query string of GET /jobs/<id>."""

    tasks = serializers.BooleanField(
        required=False,
        default=False,
        help_text="1 adds the job's steps as a tasks list (empty until the job first starts).",
    )
    callbacks = serializers.BooleanField(
        required=False,
        default=False,
        help_text="1 adds the job's callback deliveries as a callbacks list, in the order of their events.",
    )


@extend_schema_field(
    {"type": "string", "enum": ["pending", "sent", "failed"]}, component_name="CallbackDeliveryState"
)
class DeliveryStateField(serializers.Field):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str:
        return str(value.get_state_display())


class CallbackDeliveryItemSerializer(serializers.Serializer):
    """One callback delivery of a job in GET /jobs/<id>?callbacks=1 (rows of the callbacks room)."""

    id = serializers.IntegerField(read_only=True)
    kind = serializers.CharField(read_only=True, help_text="task or job")
    event = serializers.CharField(
        read_only=True, help_text="start, complete, fail (task); completed, failed (job)"
    )
    task_id = serializers.IntegerField(read_only=True, help_text="The task the event is about (0: none).")
    url = serializers.SerializerMethodField(help_text="The endpoint, without credentials, query or fragment.")
    state = DeliveryStateField(source="*")
    attempts = serializers.IntegerField(read_only=True, help_text="Attempts made (one in flight counts).")
    last_status = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="HTTP status of the last answer."
    )
    last_error = serializers.CharField(read_only=True, help_text="Why the last attempt failed, if it did.")
    next_attempt_at = TimestampField(
        allow_null=True, help_text="When a pending delivery is due (null: now, or not pending)."
    )
    created_at = TimestampField(help_text="When its event happened.")
    sent_at = TimestampField(allow_null=True, help_text="When the receiver answered 2xx.")

    def get_url(self, row: Any) -> str:
        return outbound.redact(row.url)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        if data["state"] != "pending":
            data["next_attempt_at"] = None
        return data


# Published as JobDetail: the one documented shape of GET /jobs/<id>, where tasks is optional.
@extend_schema_serializer(component_name="JobDetail")
class JobDetailWithTasksSerializer(JobDetailSerializer):
    """GET /jobs/<id>?tasks=1: the detail followed by the job's tasks (for the schema; the view appends
    the list to JobDetailSerializer's output)."""

    # Not read-only so the schema does not list it as always present (this serializer only documents).
    tasks = TaskItemSerializer(many=True, required=False, help_text="Only with ?tasks=1; in workflow order.")
    callbacks = CallbackDeliveryItemSerializer(
        many=True, required=False, help_text="Only with ?callbacks=1; in the order of their events."
    )

    class Meta(JobDetailSerializer.Meta):
        fields = [*JobDetailSerializer.Meta.fields, "tasks", "callbacks"]
        read_only_fields = fields
