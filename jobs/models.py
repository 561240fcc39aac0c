"""Jobs and their tasks: the system of record (DESIGN.md §1, §4)."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from clients.models import Client
from jobs.states import DISPATCH_ORDER, JobState, TaskState


class Job(models.Model):
    # No index of its own: the (client, id) index (Meta) serves every lookup by client, and each
    # index on this table is written on every insert and every state change.
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="jobs", db_index=False)
    workflow = models.CharField(max_length=100)
    priority = models.PositiveSmallIntegerField(default=5)
    position = models.IntegerField(default=1)
    top_of_queue = models.BooleanField(default=False)
    parameters = models.JSONField(default=dict)
    queue_state = models.PositiveSmallIntegerField(choices=JobState.choices, default=JobState.QUEUED)
    failed = models.BooleanField(default=False)
    persist = models.BooleanField(default=False)
    run_at = models.DateTimeField()
    semaphore_url = models.URLField(max_length=2000, null=True, blank=True)
    # Sent as the Workflow-Id header of every callback of this job.
    workflow_uuid = models.UUIDField(default=uuid.uuid4, editable=False)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    # The workflow definition resolved when the job started (client or common), kept for reruns/debugging.
    definition = models.JSONField(null=True, blank=True)
    # Indexed where set only (job_rerun_of_id): nearly every job is no rerun, and an index of every row
    # is written again at each of the job's state changes.
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns", db_index=False
    )
    message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["queue_state", "id"], name="job_state_id"),
            models.Index(fields=["client", "id"], name="job_client_id"),
            models.Index(fields=["run_at"], name="job_due", condition=Q(queue_state=JobState.SCHEDULED)),
            # In DISPATCH_ORDER exactly (top_of_queue descending, the rest ascending), so the dispatcher's
            # candidates and the dashboard's first 1,000 queued jobs are read in order, not sorted.
            models.Index(
                fields=list(DISPATCH_ORDER),
                name="job_dispatch_order",
                condition=Q(queue_state=JobState.QUEUED),
            ),
            # GET /jobs?search= reads JobSearchText (below), not an index of this table.
            # GET /jobs?order_by=run_at|priority: the first page without sorting the whole table.
            models.Index(fields=["run_at", "id"], name="job_run_at_id"),
            models.Index(fields=["priority", "id"], name="job_priority_id"),
            # The reruns of a job (and the foreign key's check when one is deleted): only jobs that are one.
            models.Index(fields=["rerun_of"], name="job_rerun_of_id", condition=Q(rerun_of__isnull=False)),
            # GET /jobs?failed=1&client=…: a client's failed jobs newest first, and an empty answer at once.
            models.Index(
                fields=["client", "id"],
                name="job_failed_client_id",
                condition=Q(failed=True, queue_state=JobState.COMPLETED),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "idempotency_key"],
                name="job_idempotency_key",
                condition=Q(idempotency_key__isnull=False),
            ),
            models.CheckConstraint(condition=Q(priority__gte=1, priority__lte=10), name="job_priority_1_10"),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.workflow}, {self.get_queue_state_display()})"


class JobSearchText(models.Model):
    """What ``GET /jobs?search=`` matches for a job: its parameters as JSON text (``parameters::text``), with
    a trigram index on its upper case. Written by triggers on ``jobs_job`` (migration 0010) when a job is
    inserted or its parameters change, deleted with it; never by the application. A table of its own, so
    that a job's changes of state do not write its parameters' trigrams again."""

    job_id = models.BigIntegerField(primary_key=True)
    text = models.TextField()

    class Meta:
        managed = False
        db_table = "jobs_job_search"

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.text}"


class Task(models.Model):
    """One step of a job's workflow; rows are made when the job starts, their ids are stable."""

    # No index of its own: the unique (job, position) index (Meta) serves every lookup by job.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="tasks", db_index=False)
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    queue = models.CharField(max_length=50, default="work")
    parameters = models.JSONField(default=dict, blank=True)
    state = models.PositiveSmallIntegerField(choices=TaskState.choices, default=TaskState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    progress = models.FloatField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="task_job_position")]
        indexes = [
            models.Index(
                fields=["state", "updated_at"],
                name="task_active",
                condition=Q(state__in=[TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRYING]),
            )
        ]

    def __str__(self) -> str:
        return f"task {self.pk} {self.name} of job {self.job_id}"

    @property
    def shown_progress(self) -> float | None:
        """The progress as people read it, wherever it is shown: a percentage with at most one
        decimal (31.4, not the 31.370715999999277 a step's arithmetic stored)."""
        return None if self.progress is None else round(self.progress, 1)


class WorkflowDefinition(models.Model):
    """A client's own definition of a workflow; it overrides the common one of the same name."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="workflow_definitions")
    name = models.CharField(max_length=100)
    steps = models.JSONField(help_text='[{"step": "noop", "queue": "work", "parameters": {}}, …]')
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["client__name", "name"]
        constraints = [models.UniqueConstraint(fields=["client", "name"], name="workflow_client_name")]

    def __str__(self) -> str:
        return f"{self.client.name}/{self.name}"
