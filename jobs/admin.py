"""Operator admin for jobs, tasks and client workflow definitions.

Jobs change only through the services (pause, resume, break, rerun), so the admin cannot bypass the
state machine; client definitions are validated with the registry before they are saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs.models import Job, Task, WorkflowDefinition
from jobs.services import job_rerun, job_update
from jobs.workflows.registry import validate_definition
from taskengine_site.errors import DomainError


class TaskInline(admin.TabularInline[Task, Job]):
    model = Task
    extra = 0
    can_delete = False
    fields = (
        "id",
        "position",
        "name",
        "queue",
        "state",
        "attempts",
        "progress",
        "error",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _each(
    modeladmin: admin.ModelAdmin[Job],
    request: HttpRequest,
    queryset: QuerySet[Job],
    act: Callable[[Job], str],
) -> None:
    done = 0
    for job in queryset:
        try:
            act(job)
            done += 1
        except DomainError as exc:
            modeladmin.message_user(request, f"job {job.pk}: {exc.message}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{done} job(s) updated.", messages.SUCCESS)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = ("id", "client", "workflow", "priority", "queue_state", "failed", "run_at", "created_at")
    list_filter = ("queue_state", "failed", "persist", "workflow")
    search_fields = ("=id", "workflow", "client__name")
    ordering = ("-id",)
    inlines = [TaskInline]
    actions = ["pause", "resume", "break_jobs", "rerun", "persist"]
    readonly_fields = [field.name for field in Job._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the clean-up schedule deletes jobs; operators break them

    @admin.action(description="Pause the selected jobs")
    def pause(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(
            self, request, queryset, lambda job: str(job_update(job=job, changes={"queue_state": "paused"}))
        )

    @admin.action(description="Resume the selected paused jobs")
    def resume(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(
            self, request, queryset, lambda job: str(job_update(job=job, changes={"queue_state": "queued"}))
        )

    @admin.action(description="Break the selected jobs")
    def break_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(
            self, request, queryset, lambda job: str(job_update(job=job, changes={"queue_state": "broken"}))
        )

    @admin.action(description="Rerun the selected jobs (the originals become broken)")
    def rerun(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: str(job_rerun(job=job).pk))

    @admin.action(description="Keep the selected jobs (persist)")
    def persist(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: str(job_update(job=job, changes={"persist": True})))


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin[Task]):
    list_display = ("id", "job", "position", "name", "queue", "state", "attempts", "updated_at")
    list_filter = ("state", "queue", "name")
    search_fields = ("=id", "=job__id", "name")
    readonly_fields = [field.name for field in Task._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WorkflowDefinitionForm(forms.ModelForm[WorkflowDefinition]):
    class Meta:
        model = WorkflowDefinition
        fields = ("client", "name", "steps")

    def clean_steps(self) -> list[dict[str, Any]]:
        try:
            return validate_definition(self.cleaned_data.get("steps"))
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(WorkflowDefinition)
class WorkflowDefinitionAdmin(admin.ModelAdmin[WorkflowDefinition]):
    form = WorkflowDefinitionForm
    list_display = ("client", "name", "updated_at")
    list_filter = ("client",)
    search_fields = ("name", "client__name")
