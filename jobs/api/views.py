"""Job endpoints: POST /job, GET /jobs, GET|PUT|PATCH /jobs/<id>, POST /jobs/<id>/rerun, GET /dashboard.

Views are thin: an input serializer checks syntax, one service or selector acts, an output serializer
renders. Access (DESIGN.md §7) is applied by jobs.selectors: a non-operator never reaches another
client's job, which answers 404 exactly like a missing one.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from clients.models import Client
from jobs import selectors
from jobs.api.serializers import (
    AcceptedSerializer,
    BatchAcceptedSerializer,
    BatchItemSerializer,
    CallbackDeliveryItemSerializer,
    JobBatchSerializer,
    JobDetailQuerySerializer,
    JobDetailSerializer,
    JobDetailWithTasksSerializer,
    JobListItemSerializer,
    JobSubmitSerializer,
    JobSummarySerializer,
    JobUpdateSerializer,
    TaskItemSerializer,
    UpdatedSerializer,
    plain_submission,
    render_job_list,
    render_job_summaries,
)
from jobs.filters import JobFilter, several_statements
from jobs.models import Job
from jobs.services import SubmitRequest, job_rerun, job_submit, job_update, jobs_submit
from settings_app.services import settings_get_ints
from taskengine_site.api import ApiView, ApiViewSet, BatchJSONParser, optional_requester, requester
from taskengine_site.errors import DomainError, error_message
from taskengine_site.inputs import json_problem
from taskengine_site.version import VERSION

IDEMPOTENCY_KEY_MAX = 200
# The creation log keeps the request's headers like the original; these can carry credentials other than
# the API key (which the service masks), so they are left out altogether.
UNLOGGED_HEADERS = frozenset({"HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION"})

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="Makes a retried submission return the first job instead of creating a second "
    f"(printable ASCII, at most {IDEMPOTENCY_KEY_MAX} characters).",
)


def idempotency_key(meta: dict[str, Any]) -> str | None:
    """The ``Idempotency-Key`` header of a request's ``META``, checked (``DomainError`` saying why not)."""
    value: str | None = meta.get("HTTP_IDEMPOTENCY_KEY")
    if value is None:
        return None
    if not value or len(value) > IDEMPOTENCY_KEY_MAX or not value.isascii() or not value.isprintable():
        raise DomainError(f"Idempotency-Key: must be 1..{IDEMPOTENCY_KEY_MAX} printable ASCII characters")
    return value


def request_meta(method: str, path: str, meta: dict[str, Any], body: Any) -> dict[str, Any]:
    """What the creation log entry records (the service masks the keys among the headers)."""
    return {
        "path": f"{method} {path}",
        "remote_addr": meta.get("REMOTE_ADDR"),
        "headers": {
            name: value
            for name, value in meta.items()
            if name.startswith("HTTP_") and name not in UNLOGGED_HEADERS
        },
        "body": body,
    }


def submit_checked(
    client: Client, validated: dict[str, Any], *, idempotency_key: str | None, request_meta: dict[str, Any]
) -> Job:
    """Submit one checked ``POST /job`` body (``plain_submission``'s or the serializer's): what both
    paths of that endpoint (this view and ``jobs.api.submit``) do once the request is accepted."""
    job, _created = job_submit(
        client=client, **job_fields(validated), idempotency_key=idempotency_key, request_meta=request_meta
    )
    return job


def job_fields(validated: dict[str, Any]) -> dict[str, Any]:
    """The job a checked submission body asks for (``POST /job``, or an item of ``POST /jobs``), with
    the values of what it leaves out."""
    spec = validated["job"]
    return {
        "workflow": spec["workflow"],
        "parameters": validated["parameters"],
        "priority": spec.get("priority", 5),
        "run_at": spec.get("run_at"),
        "semaphore_url": spec.get("semaphore_url"),
        "persist": spec.get("persist", False),
    }


def _request_meta(request: Request) -> dict[str, Any]:
    return request_meta(request.method or "", request.path, request.META, request.data)


def _with_job_id(exc: DomainError, job: Job) -> DomainError:
    # Refusals about one job answer {"id", "error"} (reference: PUT /jobs/<id>).
    if exc.job_id is None:
        exc.job_id = job.pk
    return exc


class JobViewSet(ApiViewSet):
    queryset = Job.objects.none()  # the real one is per requester (jobs.selectors)
    filter_backends = [DjangoFilterBackend]
    filterset_class = JobFilter

    def get_permissions(self) -> list[Any]:
        if self.action == "list" and settings.TASKENGINE_PUBLIC_JOB_LIST:
            return [permissions.AllowAny()]
        return [permissions.IsAuthenticated()]

    @extend_schema(
        operation_id="job_submit",
        summary="Submit a job",
        request=JobSubmitSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: AcceptedSerializer},
        tags=["jobs"],
    )
    def create(self, request: Request) -> Response:
        key = idempotency_key(request.META)
        client = requester(request)
        validated = plain_submission(request.data, client.name)
        if validated is None:  # not a plain body: the serializer decides, and words any refusal
            checked = JobSubmitSerializer(data=request.data, context={"request": request})
            checked.is_valid(raise_exception=True)
            validated = checked.validated_data
        job = submit_checked(client, validated, idempotency_key=key, request_meta=_request_meta(request))
        # What AcceptedSerializer renders, built directly.
        return Response({"id": job.pk, "result": "accepted"})

    def initialize_request(self, request: Any, *args: Any, **kwargs: Any) -> Request:
        # DRF picks the parsers before it names the action: a batch is told apart by its method here.
        self.batch = self.action_map.get(request.method.lower()) == "create_batch"
        if self.batch:
            # DRF reads a JSON body through Django's request.body, which refuses anything over the limit
            # of one job's body (DATA_UPLOAD_MAX_MEMORY_SIZE). A batch has its own limit: its body is read
            # here, at most one byte past that limit, and BatchJSONParser refuses it if it got there.
            request._body = request.read(settings.TASKENGINE_MAX_BATCH_BODY_BYTES + 1)
        return super().initialize_request(request, *args, **kwargs)

    def get_parsers(self) -> list[Any]:
        if getattr(self, "batch", False):
            return [BatchJSONParser()]
        return super().get_parsers()

    @extend_schema(
        operation_id="job_submit_batch",
        summary="Submit up to 1,000 jobs in one request",
        description="Each job is checked as POST /job checks one; the answer lists, in the order sent, "
        "each job's id or why it was refused. The accepted jobs are written in one transaction and "
        "dispatched once. Each item may carry its own idempotency_key.",
        request=JobBatchSerializer,
        responses={200: BatchAcceptedSerializer},
        tags=["jobs"],
    )
    def create_batch(self, request: Request) -> Response:
        envelope = JobBatchSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        client = requester(request)
        meta = _request_meta(request)
        wanted: list[SubmitRequest | DomainError] = []
        # One serializer checks every item in turn (what a ListSerializer does with its child): its
        # fields are built once, not once per job.
        check = BatchItemSerializer(context={"request": request})
        for item in envelope.validated_data["jobs"]:
            problem = json_problem(item)
            if problem is not None:
                wanted.append(DomainError(problem.message))
                continue
            try:
                data = check.run_validation(item)
            except serializers.ValidationError as exc:
                wanted.append(DomainError(error_message(exc.detail)))
                continue
            wanted.append(
                SubmitRequest(
                    **job_fields(data),
                    idempotency_key=data.get("idempotency_key"),
                    request_meta={**meta, "path": "POST /jobs", "body": item},
                )
            )
        outcomes = jobs_submit(client=client, requests=wanted)
        answers = [
            {"id": o.job_id, "result": "accepted", "created": o.created}
            if o.error is None
            else {"result": "refused", "error": o.error}
            for o in outcomes
        ]
        # The shape of BatchAcceptedSerializer, built directly: up to 1,000 answers.
        return Response({"jobs": answers})

    @extend_schema(
        operation_id="job_list",
        summary="List jobs (newest first by default)",
        responses={200: JobListItemSerializer(many=True)},
        tags=["jobs"],
    )
    def list(self, request: Request) -> Response:
        # Some filter sets take a few statements (jobs.filters); they share one snapshot.
        with selectors.listing_snapshot(enabled=several_statements(request.query_params)):
            jobs = self.filter_queryset(selectors.job_list(requester=optional_requester(request)))
            rows = selectors.job_rows(jobs, selectors.LIST_COLUMNS)
        # What JobListItemSerializer(jobs, many=True) renders, built by hand (up to 1,000 jobs).
        return Response(render_job_list(rows))

    @extend_schema(
        operation_id="job_retrieve",
        summary="One job (with its steps and callback deliveries when asked: ?tasks=1, ?callbacks=1)",
        parameters=[JobDetailQuerySerializer],
        responses={200: JobDetailWithTasksSerializer},
        tags=["jobs"],
    )
    def retrieve(self, request: Request, pk: int) -> Response:
        query = JobDetailQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        job = selectors.job_get(requester=requester(request), job_id=int(pk))
        if not (query.validated_data["tasks"] or query.validated_data["callbacks"]):
            return Response(JobDetailSerializer(job).data)
        # The documented shape stays the default; the lists are opt-in (a progress bar wants the tasks,
        # a client wondering about a callback its deliveries).
        body = JobDetailSerializer(job).data
        if query.validated_data["tasks"]:
            body["tasks"] = TaskItemSerializer(selectors.job_tasks(job=job), many=True).data
        if query.validated_data["callbacks"]:
            deliveries = selectors.job_detail_part(job=job, name="callbacks")
            body["callbacks"] = CallbackDeliveryItemSerializer(deliveries, many=True).data
        return Response(body)

    @extend_schema(
        operation_id="job_update",
        summary="Update a job's queue_state, run_at, priority, semaphore_url or persist",
        request=JobUpdateSerializer,
        responses={200: UpdatedSerializer},
        tags=["jobs"],
    )
    def update(self, request: Request, pk: int) -> Response:
        job = selectors.job_get(requester=requester(request), job_id=int(pk))
        data = JobUpdateSerializer(data=request.data, context={"request": request, "job": job})
        data.is_valid(raise_exception=True)
        try:
            performed = job_update(job=job, changes=dict(data.validated_data))
        except DomainError as exc:
            raise _with_job_id(exc, job) from None
        result = f"Performed updates: {', '.join(performed)}"
        return Response(UpdatedSerializer({"id": job.pk, "result": result}).data)

    @extend_schema(
        operation_id="job_partial_update",
        summary="Update a job (same as PUT: only the fields given change)",
        request=JobUpdateSerializer,
        responses={200: UpdatedSerializer},
        tags=["jobs"],
    )
    def partial_update(self, request: Request, pk: int) -> Response:
        return self.update(request, pk)

    @extend_schema(
        operation_id="job_rerun",
        summary="Rerun a job with the same workflow, priority and parameters; the original becomes broken",
        request=None,
        responses={200: AcceptedSerializer},
        tags=["jobs"],
    )
    def rerun(self, request: Request, pk: int) -> Response:
        job = selectors.job_get(requester=requester(request), job_id=int(pk))
        new = job_rerun(job=job, request_meta=_request_meta(request))
        return Response(AcceptedSerializer({"id": new.pk, "result": "accepted"}).data)


DashboardSerializer = inline_serializer(
    "Dashboard",
    fields={
        "max_jobs": serializers.IntegerField(),
        "priority_slots": serializers.IntegerField(),
        "started": JobSummarySerializer(many=True),
        "queued": JobSummarySerializer(many=True, help_text="In dispatch order."),
        "scheduled": JobSummarySerializer(many=True, help_text="Soonest run_at first."),
        "version": serializers.CharField(),
    },
)


class DashboardView(ApiView):
    """GET /dashboard: the engine's queue at a glance (a non-operator sees only its own jobs)."""

    @extend_schema(operation_id="dashboard", responses={200: DashboardSerializer}, tags=["status"])
    def get(self, request: Request) -> Response:
        lists = selectors.dashboard_rows(requester=requester(request))
        numbers = settings_get_ints("max_jobs", "priority_slots")
        body = {
            "max_jobs": numbers["max_jobs"],
            "priority_slots": numbers["priority_slots"],
            # What JobSummarySerializer(many=True) renders, built by hand (up to 3,000 jobs).
            **{name: render_job_summaries(rows) for name, rows in lists.items()},
            "version": VERSION,
        }
        return Response(body)
